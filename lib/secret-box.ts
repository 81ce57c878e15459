/**
 * mailgate's one secret key and what it seals: AES-256-GCM (node:crypto) under a 32-byte key
 * from MAILGATE_SECRET_KEY or a key file. The OAuth token cache (gateway/oauth/cache.ts) and the
 * `enc:v1:` secrets of mailgate.toml (gateway/config/secrets.ts) both use it, so an admin keeps
 * one key.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** The secret key is missing or malformed, or a sealed value does not open with it. */
export class SecretKeyError extends Error {
  constructor(message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = 'SecretKeyError';
  }
}

/** Where the key may come from: the environment (MAILGATE_SECRET_KEY wins) and the configured key file. */
export interface SecretKeySources {
  env?: Readonly<Record<string, string | undefined>>;
  keyFile?: string;
}

/** True when SOURCES name a key at all (whether or not it is usable). */
export function secretKeyConfigured(sources: SecretKeySources): boolean {
  return Boolean((sources.env ?? process.env).MAILGATE_SECRET_KEY?.trim()) || sources.keyFile !== undefined;
}

/**
 * The 32-byte secret key: MAILGATE_SECRET_KEY (64 hex digits or base64), else the contents of
 * the key file (same encodings, or exactly 32 raw bytes). Synchronous, so the config loader can
 * open `enc:v1:` values while it validates. Throws SecretKeyError with MISSING when neither is
 * given, or saying what is wrong with the one given.
 */
export function readSecretKey(sources: SecretKeySources, missing: string): Buffer {
  const env = sources.env ?? process.env;
  const fromEnv = env.MAILGATE_SECRET_KEY?.trim();
  if (fromEnv) return decodeKey(fromEnv, 'MAILGATE_SECRET_KEY');
  if (sources.keyFile === undefined) throw new SecretKeyError(missing);
  let raw: Buffer;
  try {
    raw = readFileSync(sources.keyFile);
  } catch (err) {
    throw new SecretKeyError(`cannot read the secret key file ${sources.keyFile}: ${(err as Error).message}`, { cause: err });
  }
  if (raw.length === 32) return raw;
  return decodeKey(raw.toString('utf8').trim(), `key file ${sources.keyFile}`);
}

function decodeKey(text: string, source: string): Buffer {
  const key = /^[0-9a-fA-F]{64}$/.test(text) ? Buffer.from(text, 'hex') : /^[A-Za-z0-9+/_-]+={0,2}$/.test(text) ? Buffer.from(text, 'base64') : Buffer.alloc(0);
  if (key.length !== 32)
    throw new SecretKeyError(`${source} must hold 32 bytes as 64 hex digits or base64 (e.g. \`openssl rand -hex 32\`); it decodes to ${key.length} bytes`);
  return key;
}

const IV_BYTES = 12;
const TAG_BYTES = 16;

/** PLAIN sealed under KEY: 12-byte IV | 16-byte GCM tag | ciphertext. CONTEXT is authenticated, not stored: opening needs the same. */
export function seal(key: Buffer, plain: Buffer, context: string): Buffer {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(context, 'utf8'));
  const body = Buffer.concat([cipher.update(plain), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), body]);
}

/** What seal() sealed, or undefined when SEALED is too short, was sealed under another key or context, or was altered. */
export function open(key: Buffer, sealed: Buffer, context: string): Buffer | undefined {
  if (sealed.length < IV_BYTES + TAG_BYTES) return undefined;
  const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, IV_BYTES));
  decipher.setAAD(Buffer.from(context, 'utf8'));
  decipher.setAuthTag(sealed.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
  try {
    return Buffer.concat([decipher.update(sealed.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]);
  } catch {
    return undefined;
  }
}
