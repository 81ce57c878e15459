import { randomBytes, scrypt, scryptSync, timingSafeEqual } from 'node:crypto';

/** scrypt cost parameters for new hashes: N = 2^14, r = 8, p = 1 (the RFC 7914 interactive-login example). */
const COST = { N: 16384, r: 8, p: 1 };
const SALT_BYTES = 16;
const KEY_BYTES = 32;
/** Upper bound on N read from a hash, so a hand-edited config cannot make each login take minutes. */
const MAX_N = 2 ** 20;

const HASH_SHAPE = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/;

/** The parts of a stored hash `scrypt$N$r$p$saltB64$hashB64`, or undefined when it has another shape. */
function hashParts(hash: string): { N: number; r: number; p: number; salt: Buffer; key: Buffer } | undefined {
  const m = HASH_SHAPE.exec(hash);
  if (!m) return undefined;
  const [N, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  // N must be a power of two above 1 (RFC 7914 section 2).
  if (N < 2 || N > MAX_N || (N & (N - 1)) !== 0 || r < 1 || p < 1 || r * p >= 2 ** 30) return undefined;
  const salt = Buffer.from(m[4] ?? '', 'base64');
  const key = Buffer.from(m[5] ?? '', 'base64');
  if (salt.length === 0 || key.length < 16) return undefined;
  return { N, r, p, salt, key };
}

/** True when `hash` has the shape `scrypt$N$r$p$saltB64$hashB64` with sane parameters. */
export function isPasswordHash(hash: string): boolean {
  return hashParts(hash) !== undefined;
}

/** scrypt needs 128 * N * r bytes; node's default maxmem (32 MiB) is too small above N = 2^14. */
const memoryFor = (N: number, r: number) => 256 * N * r + 1024 * 1024;

/** A new salted scrypt hash of `plain`, in the form stored as `[[smtp.user]] password_hash`. */
export function hashPassword(plain: string): string {
  const { N, r, p } = COST;
  const salt = randomBytes(SALT_BYTES);
  const key = scryptSync(plain.normalize('NFC'), salt, KEY_BYTES, { N, r, p, maxmem: memoryFor(N, r) });
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

/** True when `plain` matches `hash`; false for a wrong password or a malformed hash. Compares in constant time. */
export function verifyPassword(plain: string, hash: string): boolean {
  const parts = hashParts(hash);
  if (!parts) return false;
  const { N, r, p, salt, key } = parts;
  const derived = scryptSync(plain.normalize('NFC'), salt, key.length, { N, r, p, maxmem: memoryFor(N, r) });
  return timingSafeEqual(derived, key);
}

/**
 * verifyPassword off the event loop (libuv's thread pool): a login's scrypt takes tens of
 * milliseconds, which would stall every other session of the listener.
 */
export function verifyPasswordAsync(plain: string, hash: string): Promise<boolean> {
  const parts = hashParts(hash);
  if (!parts) return Promise.resolve(false);
  const { N, r, p, salt, key } = parts;
  return new Promise((resolve, reject) => {
    scrypt(plain.normalize('NFC'), salt, key.length, { N, r, p, maxmem: memoryFor(N, r) }, (err, derived) =>
      err ? reject(err) : resolve(timingSafeEqual(derived, key)),
    );
  });
}
