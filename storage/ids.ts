/**
 * Message ids: ULID-shaped (https://github.com/ulid/spec), 26 characters of Crockford
 * base32, 10 for a 48-bit millisecond time and 16 for an 80-bit random part. Crockford's
 * alphabet is in ASCII order, so ids sort as strings by the time they were made, which
 * lets the store list newest first and stop at a date without reading every message.
 */
import { randomFillSync } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const TIME_LENGTH = 10;
const RANDOM_LENGTH = 16;
/** Length of a message id. */
export const MESSAGE_ID_LENGTH = TIME_LENGTH + RANDOM_LENGTH;
const MAX_TIME = 2 ** 48 - 1;
const RANDOM_LIMIT = 1n << 80n;
const RANDOM_BYTES = 10;
// One randomFillSync per ~400 ids: a randomBytes call per id showed in the ingest profile.
const RANDOM_POOL_SIZE = 4096;
const ID_PATTERN = /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/;

function encodeTime(ms: number): string {
  if (!Number.isInteger(ms) || ms < 0 || ms > MAX_TIME) throw new RangeError(`time out of range for a message id: ${ms}`);
  let out = '';
  for (let i = 0; i < TIME_LENGTH; i++) {
    out = ALPHABET.charAt(ms % 32) + out;
    ms = Math.floor(ms / 32);
  }
  return out;
}

function encodeRandom(value: bigint): string {
  let out = '';
  for (let i = 0; i < RANDOM_LENGTH; i++) {
    out = ALPHABET.charAt(Number(value & 31n)) + out;
    value >>= 5n;
  }
  return out;
}

/** A source of 80-bit random values, drawn from a pool of random bytes refilled as it runs out. */
function randomSource(): () => bigint {
  const pool = Buffer.allocUnsafeSlow(RANDOM_POOL_SIZE);
  let offset = RANDOM_POOL_SIZE;
  return () => {
    if (offset + RANDOM_BYTES > RANDOM_POOL_SIZE) {
      randomFillSync(pool);
      offset = 0;
    }
    // 48 + 32 bits, big-endian: the same value as the 10 bytes read as one number.
    const value = (BigInt(pool.readUIntBE(offset, 6)) << 32n) | BigInt(pool.readUInt32BE(offset + 6));
    offset += RANDOM_BYTES;
    return value;
  };
}

/**
 * A generator of message ids that are strictly increasing for this generator: within one
 * millisecond, or when the clock steps back, the random part of the last id is
 * incremented instead of drawn afresh (the ULID spec's monotonic mode).
 */
export function createIdGenerator(now: () => number = Date.now): () => string {
  const freshRandom = randomSource();
  let lastTime = -1;
  let lastRandom = 0n;
  return () => {
    const time = now();
    if (time > lastTime) {
      lastTime = time;
      lastRandom = freshRandom();
    } else {
      lastRandom += 1n;
      // 2^80 ids in one millisecond will not happen; if it did, borrow the next millisecond.
      if (lastRandom >= RANDOM_LIMIT) {
        lastTime += 1;
        lastRandom = freshRandom();
      }
    }
    return encodeTime(lastTime) + encodeRandom(lastRandom);
  };
}

// One generator for the whole process: "ids made later sort after earlier ones" can only
// hold if every caller draws from the same counter, so this is deliberate module state.
const processIds = createIdGenerator();

/** A new message id, sorting after every id this process made before. */
export function newMessageId(): string {
  return processIds();
}

/** Whether `id` has the shape of a message id. */
export function isMessageId(id: string): boolean {
  return ID_PATTERN.test(id);
}

/** The millisecond time an id was made at. */
export function idTime(id: string): number {
  if (!isMessageId(id)) throw new TypeError(`not a message id: ${JSON.stringify(id)}`);
  let ms = 0;
  for (const c of id.slice(0, TIME_LENGTH)) ms = ms * 32 + ALPHABET.indexOf(c);
  return ms;
}

/** The lowest possible id made at or after `time`: a range bound for "since". */
export function idFloor(time: Date | number): string {
  const ms = typeof time === 'number' ? time : time.getTime();
  return encodeTime(Math.min(Math.max(Math.ceil(ms), 0), MAX_TIME)) + '0'.repeat(RANDOM_LENGTH);
}
