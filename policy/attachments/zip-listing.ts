/**
 * Lists the file names inside a zip archive as its bytes stream past, without extracting
 * and without holding the archive: names come from the local file headers (APPNOTE.TXT
 * 4.3.7) and again from the central directory (4.3.12), since an attacker can make the two
 * disagree and different unzip tools trust different ones. Zip archives stored or deflated
 * inside the archive are listed too, down to a depth limit; the declared sizes are checked
 * against a compression-ratio limit, and the entry count against a limit, so a zip bomb is
 * reported instead of expanded.
 */
import { createInflateRaw, type InflateRaw } from 'node:zlib';

/** Limits on inspecting archives. */
export interface ZipLimits {
  /** Archives inside archives listed down to this depth (1: only the attachment itself). */
  maxDepth: number;
  /** More entries than this in one archive is reported as a problem. */
  maxEntries: number;
  /** Declared uncompressed size over compressed size above this is reported as a zip bomb. */
  maxRatio: number;
  /** Most bytes inflated to look inside nested archives, per attachment. */
  maxInflatedBytes: number;
}

/** What listing found. */
export interface ZipListing {
  /** Entry names with their path inside nested archives (`outer.zip/inner.exe`). */
  names: string[];
  /** Reasons the archive cannot be inspected safely (limits reached, suspected bomb). */
  problems: string[];
}

const LOCAL = 0x04034b50;
const CENTRAL = 0x02014b50;
const END = 0x06054b50;
const NESTED_ARCHIVE = /\.(zip|jar|docx|xlsx|pptx|odt)$/i;

/** Feeds decoded archive bytes to `push`, then awaits `end()` for the listing. */
export class ZipLister {
  readonly #limits: ZipLimits;
  readonly #depth: number;
  readonly #prefix: string;
  readonly #shared: { inflated: number; listing: ZipListing };
  #buf: Buffer = Buffer.alloc(0);
  #skip = 0;
  #scanning = false;
  #done = false;
  #entries = new Set<string>();
  #child: { lister: ZipLister; inflate?: InflateRaw; remaining: number } | undefined;
  #pendingChildren: Promise<void>[] = [];
  #room: Promise<unknown> | undefined;

  constructor(limits: ZipLimits, depth = 1, prefix = '', shared?: { inflated: number; listing: ZipListing }) {
    this.#limits = limits;
    this.#depth = depth;
    this.#prefix = prefix;
    this.#shared = shared ?? { inflated: 0, listing: { names: [], problems: [] } };
  }

  push(chunk: Buffer): void {
    if (this.#done || chunk.length === 0) return;
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, chunk]) : chunk;
    while (!this.#done && this.#buf.length > 0) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, this.#buf.length);
        this.#feedChild(this.#buf.subarray(0, n));
        this.#skip -= n;
        this.#buf = this.#buf.subarray(n);
        if (this.#skip === 0) this.#endChild();
        continue;
      }
      if (this.#scanning && !this.#scan()) return;
      if (!this.#record()) return;
    }
  }

  /** Resolves when a nested archive's inflater has caught up, so input cannot pile up in memory. */
  async room(): Promise<void> {
    const room = this.#room;
    this.#room = undefined;
    await room;
  }

  /** The listing, once nested archives have been inflated. */
  async end(): Promise<ZipListing> {
    this.#endChild();
    await Promise.all(this.#pendingChildren);
    return this.#shared.listing;
  }

  // Looks for the next header signature when sizes are unknown (data descriptors) or the
  // structure is not what we expect. Returns false when more bytes are needed.
  #scan(): boolean {
    for (let i = 0; i + 3 < this.#buf.length; i++) {
      if (this.#buf[i] === 0x50 && this.#buf[i + 1] === 0x4b) {
        const sig = this.#buf.readUInt32LE(i);
        if (sig === LOCAL || sig === CENTRAL || sig === END) {
          this.#buf = this.#buf.subarray(i);
          this.#scanning = false;
          return true;
        }
      }
    }
    this.#buf = Buffer.from(this.#buf.subarray(Math.max(0, this.#buf.length - 3)));
    return false;
  }

  // Parses one header at the start of the buffer. Returns false when more bytes are needed.
  #record(): boolean {
    const b = this.#buf;
    if (b.length < 4) return false;
    const sig = b.readUInt32LE(0);
    if (sig === LOCAL) {
      if (b.length < 30) return false;
      const nameLen = b.readUInt16LE(26);
      const extraLen = b.readUInt16LE(28);
      if (b.length < 30 + nameLen + extraLen) return false;
      const flags = b.readUInt16LE(6);
      const method = b.readUInt16LE(8);
      const compressed = b.readUInt32LE(18);
      const size = b.readUInt32LE(22);
      const name = decodeName(b.subarray(30, 30 + nameLen), flags);
      this.#buf = b.subarray(30 + nameLen + extraLen);
      this.#entry(name, compressed, size);
      if (flags & 0x08 && compressed === 0) {
        this.#scanning = true; // sizes follow the data (a data descriptor): find the next header
      } else if (compressed === 0xffffffff) {
        this.#scanning = true; // zip64: the real size is in the extra field; scanning is simpler and safe
      } else {
        this.#skip = compressed;
        if (compressed > 0) this.#startChild(name, method, compressed);
      }
      return true;
    }
    if (sig === CENTRAL) {
      if (b.length < 46) return false;
      const nameLen = b.readUInt16LE(28);
      const total = 46 + nameLen + b.readUInt16LE(30) + b.readUInt16LE(32);
      if (b.length < total) return false;
      this.#entry(decodeName(b.subarray(46, 46 + nameLen), b.readUInt16LE(8)), b.readUInt32LE(20), b.readUInt32LE(24));
      this.#buf = b.subarray(total);
      return true;
    }
    if (sig === END) {
      this.#done = true; // the archive comment and anything after it are not entries
      this.#buf = Buffer.alloc(0);
      return true;
    }
    this.#scanning = true;
    this.#buf = b.subarray(1);
    return true;
  }

  #entry(name: string, compressed: number, size: number): void {
    const full = this.#prefix + name;
    const { names, problems } = this.#shared.listing;
    if (!this.#entries.has(name)) {
      this.#entries.add(name);
      if (this.#entries.size > this.#limits.maxEntries) {
        problems.push(`${this.#prefix || 'the archive '}has more than ${this.#limits.maxEntries} entries`);
        this.#done = true;
        return;
      }
      names.push(full);
    }
    if (compressed > 0 && size / compressed > this.#limits.maxRatio && size !== 0xffffffff) {
      problems.push(`${full} expands ${Math.round(size / compressed)} times (limit ${this.#limits.maxRatio}): suspected zip bomb`);
    }
  }

  #startChild(name: string, method: number, compressed: number): void {
    if (!NESTED_ARCHIVE.test(name)) return;
    if (this.#depth >= this.#limits.maxDepth) {
      this.#shared.listing.problems.push(`${this.#prefix}${name} is nested deeper than ${this.#limits.maxDepth} archive levels`);
      return;
    }
    if (method !== 0 && method !== 8) return;
    const lister = new ZipLister(this.#limits, this.#depth + 1, `${this.#prefix}${name}/`, this.#shared);
    const child: { lister: ZipLister; inflate?: InflateRaw; remaining: number } = { lister, remaining: compressed };
    if (method === 8) {
      const inflate = createInflateRaw();
      child.inflate = inflate;
      const shared = this.#shared;
      const limit = this.#limits.maxInflatedBytes;
      this.#pendingChildren.push(
        new Promise<void>((resolve) => {
          inflate.on('data', (data: Buffer) => {
            shared.inflated += data.length;
            if (shared.inflated > limit) {
              shared.listing.problems.push(`nested archives expand to more than ${limit} bytes`);
              inflate.destroy();
              return resolve();
            }
            lister.push(data);
          });
          inflate.on('error', () => resolve()); // a damaged inner archive lists what it could
          inflate.on('close', () => resolve());
          inflate.on('end', () => void lister.end().then(() => resolve()));
        }),
      );
    }
    this.#child = child;
  }

  #feedChild(data: Buffer): void {
    const child = this.#child;
    if (!child) return;
    if (child.inflate) {
      const inflate = child.inflate;
      if (!inflate.destroyed && !inflate.write(Buffer.from(data))) {
        this.#room = new Promise((resolve) => {
          inflate.once('drain', resolve);
          inflate.once('close', resolve);
        });
      }
    } else child.lister.push(data);
  }

  #endChild(): void {
    const child = this.#child;
    this.#child = undefined;
    if (!child) return;
    if (child.inflate) {
      if (!child.inflate.destroyed) child.inflate.end();
    } else this.#pendingChildren.push(child.lister.end().then(() => undefined));
  }
}

// APPNOTE appendix D: bit 11 means UTF-8, otherwise IBM code page 437; latin1 keeps ASCII
// (and every extension we match) intact.
function decodeName(bytes: Buffer, flags: number): string {
  return bytes.toString(flags & 0x800 ? 'utf8' : 'latin1');
}
