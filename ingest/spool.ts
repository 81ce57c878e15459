/**
 * The spool: the message as received, kept while its pipeline runs so that a wrapping message
 * can still be built from the original when the pipeline fails (policy/wrapping/stage.ts).
 *
 * It is a file in `<data_dir>/spool/`, not a LevelDB record: the bytes live only for the
 * length of one pipeline, and writing them through LevelDB doubled its write and compaction
 * load and grew the gateway's resident memory by a hundred MB for a 100 MB message (LevelDB
 * maps the tables it compacts). Data masking promises that unmasked text never reaches
 * storage, so the file is encrypted with AES-256-CTR under a random key that lives only in
 * this process's memory: after a crash it cannot be read by anyone, and the gateway removes
 * left-over spool files when it starts. The last bytes (under 128 KiB) stay in memory only, so a
 * message under 128 KiB (most mail, and the 100 KB class the ingest bench measures) costs the
 * spool no file at all: opening, writing, closing and removing one was a sixth of the
 * gateway's CPU on 100 KB messages, besides the thread pool's.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { createReadStream, mkdirSync, rmSync } from 'node:fs';
import { mkdir, open as openFile, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';

/**
 * The spool holds received bytes in memory until they reach this many, then writes them to
 * its file; a message smaller than it never reaches the file. Memory per message stays
 * bounded by it (and one chunk more), whatever the message's size.
 */
export const SPOOL_WRITE = 128 * 1024;

/** Where the received bytes go while the pipeline runs, and how to read them back. */
export interface Spool {
  /**
   * Takes the next bytes; resolves when it can take more. The buffer is kept as it is, not
   * copied, until written: the caller must not reuse it (SpoolTee hands the same buffers to
   * the pipeline, which holds them too).
   */
  write(chunk: Buffer): Promise<void>;
  /** The original bytes from the first, as received. Only after every write has resolved. */
  open(): Readable;
  /** Removes the spooled bytes. Safe to call twice. */
  discard(): Promise<void>;
}

/** The spool directory under a data directory. */
export const spoolDir = (dataDir: string) => path.join(dataDir, 'spool');

/** Empties the spool directory at start: files left by a crash are unreadable without their key. */
export function resetSpoolDir(dataDir: string): void {
  rmSync(spoolDir(dataDir), { recursive: true, force: true });
  mkdirSync(spoolDir(dataDir), { recursive: true, mode: 0o700 });
}

/** A spool file in `dir`, encrypted under a key held in memory only. */
export function fileSpool(dir: string): Spool {
  // Key, iv and file are made when the held bytes first reach SPOOL_WRITE: most mail never gets that far.
  let sealing: { file: string; key: Buffer; iv: Buffer; cipher: ReturnType<typeof createCipheriv>; handle: Promise<FileHandle> } | undefined;
  // The received chunks themselves, not copies: the pipeline holds the same buffers (SpoolTee
  // hands each to both), so copying them into a buffer of our own was a copy and an
  // allocation more per chunk for nothing.
  let held: Buffer[] = [];
  let heldBytes = 0;
  let written = 0;
  let discarded = false;
  const seal = () => {
    // One draw of randomness for key, iv and name.
    const random = randomBytes(60);
    const key = random.subarray(0, 32);
    const iv = random.subarray(32, 48);
    const file = path.join(dir, `${random.subarray(48).toString('hex')}.spool`);
    // The directory exists (made at start); it is made again only if someone removed it.
    const handle = openFile(file, 'wx', 0o600).catch(async (err: unknown) => {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      await mkdir(dir, { recursive: true, mode: 0o700 });
      return openFile(file, 'wx', 0o600);
    });
    return { file, key, iv, cipher: createCipheriv('aes-256-ctr', key, iv), handle };
  };

  return {
    async write(chunk) {
      if (discarded) throw new Error('spool: write after discard');
      if (chunk.length === 0) return;
      held.push(chunk);
      heldBytes += chunk.length;
      if (heldBytes < SPOOL_WRITE) return;
      sealing ??= seal();
      // Many small chunks are joined first: a cipher call and an iovec each would cost more than the copy.
      const plain = held.length > 16 ? [Buffer.concat(held, heldBytes)] : held;
      const bytes = heldBytes;
      // Encrypted now, in order, before anything is awaited: CTR mode's counter runs with the calls.
      const sealed = plain.map((piece) => sealing!.cipher.update(piece));
      held = [];
      heldBytes = 0;
      await (await sealing.handle).writev(sealed);
      // Discarded during that write: the file is gone, and writing on would refill a dropped spool.
      if (discarded) throw new Error('spool: discarded while writing');
      written += bytes;
    },
    open() {
      const tail = [...held];
      if (!sealing || written === 0) return Readable.from(tail);
      const decipher = createDecipheriv('aes-256-ctr', sealing.key, sealing.iv);
      const out = new PassThrough();
      // Reads exactly what was written so far, then the chunks still held in memory.
      const sealed = createReadStream(sealing.file, { start: 0, end: written - 1 });
      sealed.on('error', (err) => out.destroy(err));
      sealed
        .pipe(decipher)
        .on('end', () => {
          for (const piece of tail) out.write(piece);
          out.end();
        })
        .pipe(out, { end: false });
      out.on('close', () => sealed.destroy());
      return out;
    },
    async discard() {
      if (discarded) return;
      discarded = true;
      held = [];
      heldBytes = 0;
      if (sealing) {
        await (await sealing.handle).close().catch(() => {});
        // unlink, not rm: rm looks the path up first, a system call more per message.
        await unlink(sealing.file).catch((err: unknown) => {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        });
      }
    },
  };
}

/**
 * A spool that writes nothing and reads the original again from where it came from, for a
 * dry run (`mailgate policy test FILE` reopens the file).
 */
export function reopenableSpool(reopen: () => Readable): Spool {
  return {
    async write() {},
    open: reopen,
    async discard() {},
  };
}

/**
 * Copies every byte it is given into a spool and on to `branch`, the stream the pipeline reads.
 * When the pipeline fails and destroys `branch`, the tee goes on spooling to the end of the
 * input, so the wrapper gets the whole original. Waits for both the spool and the branch,
 * so backpressure from either reaches the sender. Destroying the tee with an error (the size
 * limit, the client gone) destroys the branch with it, which fails the pipeline.
 */
export class SpoolTee extends Writable {
  /** The bytes for the pipeline. */
  readonly branch = new PassThrough();
  readonly #spool: Spool;

  constructor(spool: Spool) {
    super();
    this.#spool = spool;
    // The pipeline reports the branch's errors; after it has settled nobody else listens.
    this.branch.on('error', () => {});
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    Promise.all([this.#spool.write(chunk), this.#forward(chunk)]).then(
      () => done(),
      (err: unknown) => done(err instanceof Error ? err : new Error(String(err))),
    );
  }

  override _final(done: (err?: Error | null) => void): void {
    if (!this.branch.destroyed) this.branch.end();
    done();
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    if (err && !this.branch.destroyed) this.branch.destroy(err);
    done(err);
  }

  #forward(chunk: Buffer): Promise<void> {
    const branch = this.branch;
    if (branch.destroyed || branch.writableEnded) return Promise.resolve();
    if (branch.write(chunk)) return Promise.resolve();
    return new Promise((resolve) => {
      const go = () => {
        branch.off('drain', go);
        branch.off('close', go);
        resolve();
      };
      branch.on('drain', go);
      branch.on('close', go);
    });
  }
}
