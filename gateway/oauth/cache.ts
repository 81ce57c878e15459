/**
 * Where an OAuth app's msal token cache lives between runs, encrypted at rest: refresh tokens
 * are as good as a mailbox password. AES-256-GCM under a 32-byte key from MAILGATE_SECRET_KEY or
 * a key file; without a key nothing is read or written.
 */
import { randomBytes } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { open, readSecretKey, seal, SecretKeyError } from '../../lib/secret-box.js';

/** Keeps one serialized msal token cache (a JSON string). The retriever keeps it in the store; tests and the CLI may use a file. */
export interface TokenCacheStore {
  /** The serialized cache saved last, or undefined when nothing was saved yet. */
  load(): Promise<string | undefined>;
  /** Replaces the saved cache. */
  save(serialized: string): Promise<void>;
}

/** Raw bytes behind an encrypted store: a file path, or callbacks (e.g. a LevelDB key). */
export type CacheBytes = string | { read(): Promise<Buffer | undefined>; write(bytes: Buffer): Promise<void> };

export { SecretKeyError };

const MISSING_KEY =
  'the OAuth token cache is encrypted at rest and no key is configured: set MAILGATE_SECRET_KEY to 32 random bytes (64 hex digits or base64, e.g. `openssl rand -hex 32`) or name a key file';

/**
 * The 32-byte secret key: MAILGATE_SECRET_KEY (64 hex digits or base64) from ENV, else the
 * contents of KEYFILE (same encodings, or exactly 32 raw bytes). Throws SecretKeyError saying
 * what is wrong when neither gives a key. The one key loading of lib/secret-box.ts.
 */
export async function loadSecretKey(opts: { env?: NodeJS.ProcessEnv; keyFile?: string } = {}): Promise<Buffer> {
  return readSecretKey({ env: opts.env ?? process.env, ...(opts.keyFile ? { keyFile: opts.keyFile } : {}) }, MISSING_KEY);
}

// Layout: MAGIC | sealed (lib/secret-box.ts: 12-byte IV | 16-byte GCM tag | ciphertext). The magic names the format version.
const MAGIC = Buffer.from('MGTC1');

/**
 * A TokenCacheStore that encrypts with AES-256-GCM under KEY. The CONTEXT (e.g. the OAuth app
 * and alias names) is authenticated too, so one alias's cache cannot be swapped for another's.
 * With KEY undefined, load and save throw SecretKeyError instead of touching clear text.
 */
export function encryptedCacheStore(target: CacheBytes, key: Buffer | undefined, context = 'mailgate-oauth-cache'): TokenCacheStore {
  const bytes = typeof target === 'string' ? fileBytes(target) : target;
  const needKey = (): Buffer => {
    if (!key) throw new SecretKeyError(MISSING_KEY);
    if (key.length !== 32) throw new SecretKeyError(`the secret key must be 32 bytes, got ${key.length}`);
    return key;
  };
  return {
    async load() {
      const k = needKey();
      const sealed = await bytes.read();
      if (!sealed || sealed.length === 0) return undefined;
      if (!sealed.subarray(0, MAGIC.length).equals(MAGIC)) {
        throw new SecretKeyError("the saved OAuth token cache is not in mailgate's encrypted format; authorize again to replace it");
      }
      const plain = open(k, sealed.subarray(MAGIC.length), context);
      if (plain === undefined) {
        throw new SecretKeyError(
          'the saved OAuth token cache does not decrypt with this secret key (the key changed, or the data was altered); restore the old key or authorize again',
        );
      }
      return plain.toString('utf8');
    },
    async save(serialized) {
      const k = needKey();
      await bytes.write(Buffer.concat([MAGIC, seal(k, Buffer.from(serialized, 'utf8'), context)]));
    },
  };
}

function fileBytes(file: string): { read(): Promise<Buffer | undefined>; write(b: Buffer): Promise<void> } {
  return {
    read: () =>
      readFile(file).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return undefined;
        throw err;
      }),
    async write(b) {
      // Write then rename: a crash mid-write never leaves half a cache, which would lose the refresh token.
      const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
      await writeFile(tmp, b, { mode: 0o600 });
      await rename(tmp, file);
    },
  };
}
