/**
 * Judges one MIME leaf part against the attachment rules: its names first (known at once),
 * then its first decoded bytes (content sniffing), then, for archives and attached
 * messages, what is inside (known only at the end of the part). The caller feeds the raw
 * encoded body chunks; nothing is kept beyond a few bytes and the names found.
 */
import { MimeNode, Splitter, type SplitterChunk } from '@zone-eu/mailsplit';
import { presentedNames, type PresentedName } from './names.js';
import { sniffContent, SNIFF_BYTES, type ContentKind } from './file-sniff.js';
import { bodyDecoder, transferDecoder, type BodyDecoder } from '../mime/transfer-decode.js';
import { ZipLister } from './zip-listing.js';
import { ContentFieldGuard } from '../mime/content-field-guard.js';
import type { AttachmentRules, BlockRule } from './rules.js';
import { normaliseName } from './names.js';

/** Encoded bytes decoded at a time until the first decoded bytes are known. */
const SNIFF_PIECE = 1024;

/** The judgement on a part. */
export interface PartVerdict {
  /** The rule that blocks it, or undefined when it passes. */
  rule: BlockRule | undefined;
  /** What was found on the way: normalisations, sniffed type, archive entries, problems. */
  evidence: string[];
}

// Parts that are the message's own text or machine reports, not files a user opens.
const NOT_FILES = new Set(['message/delivery-status', 'message/disposition-notification', 'text/rfc822-headers', 'message/global-delivery-status']);

/** Whether a leaf part is an attachment for blocking purposes (named, disposed as one, or not text). */
export function isAttachmentPart(node: MimeNode, names: readonly PresentedName[]): boolean {
  if (node.multipart || node.messageNode) return false;
  if (names.length > 0 || node.disposition === 'attachment') return true;
  const type = node.contentType || 'text/plain';
  return !type.startsWith('text/') && !NOT_FILES.has(type) && !(node.root && !node.parentNode && type === 'text/plain');
}

/** How {@link PartInspector} reads a part when it is not the stage's ordinary reading. */
export interface InspectOptions {
  /**
   * Decode the body as this transfer encoding instead of the one declared: the original of a
   * wrapped message is read every way a mail client might read it (policy/attachments/original-scan.ts).
   */
  decodeAs?: 'base64' | 'raw' | undefined;
  /** Sniff the content of a part that is not an attachment too (default: attachments only). */
  sniffAll?: boolean;
  /** Parse an attached message/rfc822 and judge what it holds (default true). */
  nestedMessages?: boolean;
}

/** Judges one part; see the module comment. */
export class PartInspector {
  readonly names: PresentedName[];
  readonly isAttachment: boolean;
  /** Set when the names (or block-all) already block the part, or it is an attached message nested too deep to inspect. */
  readonly nameVerdict: PartVerdict | undefined;
  /**
   * Bytes of decoded content seen, while they can matter: a part that can only pass once its
   * first bytes are known (see {@link push}) is not decoded further, and its size not counted.
   */
  decodedSize = 0;
  readonly #rules: AttachmentRules;
  readonly #decoder: BodyDecoder;
  #head = Buffer.alloc(0);
  #kind: ContentKind | undefined;
  #sniffed = false;
  /** Set once the first bytes showed the part passes and nothing more is read from it. */
  #settled = false;
  #zip: ZipLister | undefined;
  #message: NestedMessage | undefined;
  #evidence: string[] = [];
  readonly #sniffAll: boolean;

  constructor(node: MimeNode, rules: AttachmentRules, depth = 1, opts: InspectOptions = {}) {
    this.#rules = rules;
    this.names = presentedNames(node);
    this.isAttachment = isAttachmentPart(node, this.names);
    this.#decoder = opts.decodeAs ? transferDecoder(opts.decodeAs === 'base64' ? 'base64' : false) : bodyDecoder(node);
    this.#sniffAll = opts.sniffAll ?? false;
    for (const n of this.names) this.#evidence.push(...n.evidence.map((e) => `${n.source} "${n.given}": ${e}`));
    const distinct = new Set(this.names.map((n) => n.normalised.toLowerCase()));
    if (distinct.size > 1) this.#evidence.push(`the part gives different names: ${[...distinct].map((n) => `"${n}"`).join(', ')}; all are checked`);
    this.nameVerdict = this.#judgeNames(node);
    if (node.contentType === 'message/rfc822' && this.isAttachment && opts.nestedMessages !== false) {
      if (depth < rules.limits.maxDepth) this.#message = new NestedMessage(rules, depth + 1);
      // As an archive nested too deep: what is inside would go unjudged (a file hidden four
      // forwards down passed when the limit was three).
      else
        this.nameVerdict ??= {
          rule: `attached message cannot be inspected safely: it is nested deeper than ${rules.limits.maxDepth} message levels`,
          evidence: [...this.#evidence],
        };
    }
  }

  /** True once enough bytes were seen to know the content kind. */
  get sniffed(): boolean {
    return this.#sniffed;
  }

  /** What the first bytes showed the content to be, once {@link sniffed} (and sniffing applied to the part). */
  get kind(): ContentKind['id'] | undefined {
    return this.#kind?.id;
  }

  /** Whether the verdict needs the whole body (archives, attached messages). */
  get needsWholeBody(): boolean {
    return Boolean(this.#zip || this.#message);
  }

  /** The verdict from the first bytes, once {@link sniffed}: blocks disguised content. */
  get sniffVerdict(): PartVerdict | undefined {
    const kind = this.#kind;
    if (!kind) return undefined;
    const rule = this.#rules.blockedKinds.get(kind.id);
    const declared = this.names.map((n) => n.extension);
    // Content that matches its declared type was judged by its name already.
    if (!rule || (declared.length > 0 && declared.every((ext) => kind.extensions.includes(ext)))) return undefined;
    return { rule, evidence: [...this.#evidence, `content is a ${kind.label} (magic bytes) but is named ${declared.join(', ') || 'nothing'}`] };
  }

  /**
   * Feeds one raw (encoded) body chunk. Until the sniff it is decoded a piece at a time: a
   * fetched message's attachment comes as one chunk of its whole body, and decoding 150 KB of
   * base64 to read 8 bytes was the attachment stage's main cost. Once the first bytes leave
   * nothing to judge (no block by name or content, no archive or attached message to read),
   * the rest is not decoded at all.
   */
  push(raw: Buffer): void {
    if (this.#settled) return;
    if (!this.#sniffed) {
      let at = 0;
      while (!this.#sniffed && at < raw.length) {
        const piece = raw.subarray(at, at + SNIFF_PIECE);
        at += piece.length;
        this.#decoded(this.#decoder.push(piece));
      }
      if (this.#sniffed && this.nameVerdict === undefined && this.sniffVerdict === undefined && !this.needsWholeBody) this.#settled = true;
      if (this.#settled || at >= raw.length) return;
      raw = raw.subarray(at);
    }
    this.#decoded(this.#decoder.push(raw));
  }

  /** Counts the decoded size of a chunk of a part already judged, without inspecting it. */
  count(raw: Buffer): void {
    this.decodedSize += this.#decoder.push(raw).length;
  }

  /** Counts what the decoder held back, at the end of a part already judged. */
  endCount(): void {
    this.decodedSize += this.#decoder.end().length;
  }

  /** Resolves when nested parsers have caught up (backpressure). */
  async room(): Promise<void> {
    await this.#zip?.room();
    await this.#message?.room();
  }

  /** The final verdict, at the end of the part. */
  async end(): Promise<PartVerdict> {
    if (!this.#settled) this.#decoded(this.#decoder.end());
    if (!this.#sniffed) this.#sniff();
    if (this.nameVerdict) return this.nameVerdict;
    const sniff = this.sniffVerdict;
    if (sniff) return sniff;
    const evidence = [...this.#evidence];
    if (this.#zip) {
      const listing = await this.#zip.end();
      if (listing.names.length) evidence.push(`archive lists ${listing.names.length} entr${listing.names.length === 1 ? 'y' : 'ies'}`);
      for (const name of listing.names) {
        const entry = normaliseName('archive entry', name);
        const rule = this.#rules.extensionRule(entry.extension);
        if (rule) return { rule: `archive contains ${entry.normalised}: ${rule}`, evidence: [...evidence, ...entry.evidence, `entry "${entry.given}"`] };
      }
      if (listing.problems.length) return { rule: `archive cannot be inspected safely: ${listing.problems[0]}`, evidence: [...evidence, ...listing.problems] };
    }
    if (this.#message) {
      const inner = await this.#message.end();
      if (inner && 'problem' in inner) return { rule: `attached message cannot be inspected safely: ${inner.problem}`, evidence };
      if (inner) return { rule: `attached message contains ${inner.name}: ${inner.verdict.rule}`, evidence: [...evidence, ...inner.verdict.evidence] };
    }
    return { rule: undefined, evidence };
  }

  #judgeNames(node: MimeNode): PartVerdict | undefined {
    if (!this.isAttachment) return undefined;
    for (const name of this.names) {
      const rule = this.#rules.extensionRule(name.extension);
      if (rule) return { rule, evidence: [...this.#evidence, `${name.source} "${name.given}" ends in ${name.extension}`] };
    }
    const ext = this.names[0]?.extension ?? '';
    const all = this.#rules.blockAllRule(ext);
    if (all) return { rule: all, evidence: [...this.#evidence, `${node.contentType || 'part'} is an attachment`] };
    return undefined;
  }

  #decoded(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.decodedSize += bytes.length;
    if (!this.#sniffed) {
      const take = Math.min(SNIFF_BYTES - this.#head.length, bytes.length);
      this.#head = Buffer.concat([this.#head, bytes.subarray(0, take)]);
      bytes = bytes.subarray(take);
      if (this.#head.length < SNIFF_BYTES) return;
      this.#sniff();
    }
    if (bytes.length === 0) return;
    this.#zip?.push(bytes);
    this.#message?.push(bytes);
  }

  // Decides the content kind from the first bytes, then hands those bytes on to the archive
  // or message parser: they are the start of what it parses.
  #sniff(): void {
    this.#sniffed = true;
    if (this.isAttachment || this.#sniffAll) {
      this.#kind = sniffContent(this.#head);
      if (this.#kind?.id === 'zip') this.#zip = new ZipLister(this.#rules.limits, 1);
    }
    if (this.#head.length === 0) return;
    this.#zip?.push(this.#head);
    this.#message?.push(this.#head);
  }
}

/**
 * An attached `message/rfc822` part the splitter left whole (it parses only inline ones):
 * parsed here as it streams, every part inside judged like a top-level one. One whose
 * Content-Type or Content-Disposition is too long to parse safely (content-field-guard.ts)
 * is a problem, not a pass: what it hides would go unjudged.
 */
class NestedMessage {
  readonly #guard = new ContentFieldGuard();
  readonly #splitter = new Splitter({ maxChildNodes: 1000 });
  readonly #done: Promise<void>;
  #current: { node: MimeNode; inspector: PartInspector } | undefined;
  #finished: Promise<{ name: string; verdict: PartVerdict } | undefined>[] = [];
  #room: Promise<unknown> | undefined;
  #problem: string | undefined;

  constructor(rules: AttachmentRules, depth: number) {
    this.#guard.on('error', (err: Error) => {
      this.#problem = err.message;
      this.#splitter.end();
    });
    this.#guard.pipe(this.#splitter);
    this.#splitter.on('data', (chunk: SplitterChunk) => {
      if (chunk.type === 'node') {
        this.#close();
        const inspector = new PartInspector(chunk, rules, depth);
        if (inspector.isAttachment) this.#current = { node: chunk, inspector };
      } else if (chunk.type === 'body' && this.#current?.node === chunk.node) {
        this.#current.inspector.push(chunk.value);
      } else if (chunk.type === 'data') this.#close();
    });
    const events = this.#splitter as NodeJS.EventEmitter;
    this.#done = new Promise((resolve) => {
      events.on('end', resolve);
      // An attached message we cannot parse is judged by what was seen up to there.
      events.on('error', resolve);
    });
  }

  push(bytes: Buffer): void {
    // Past a failure the rest is not read: the verdict stands on what was seen.
    if (this.#problem !== undefined || this.#splitter.destroyed) return;
    // One waiter per full buffer: a nested message pushes again before anyone awaits room().
    if (this.#guard.write(bytes) || this.#room) return;
    const splitter = this.#splitter as NodeJS.EventEmitter;
    this.#room = new Promise<void>((resolve) => {
      // A failed guard or splitter never drains, it closes: waiting for a drain alone hung
      // the message for good when an attached message had more than 1000 parts.
      const go = () => {
        this.#guard.off('drain', go);
        this.#guard.off('close', go);
        splitter.off('close', go);
        resolve();
      };
      this.#guard.on('drain', go);
      this.#guard.on('close', go);
      splitter.on('close', go);
    });
  }

  async room(): Promise<void> {
    const room = this.#room;
    this.#room = undefined;
    await room;
  }

  async end(): Promise<{ name: string; verdict: PartVerdict } | { problem: string } | undefined> {
    if (this.#problem === undefined && !this.#splitter.destroyed) this.#guard.end();
    await this.#done;
    this.#close();
    if (this.#problem !== undefined) return { problem: this.#problem };
    for (const result of await Promise.all(this.#finished)) if (result) return result;
    return undefined;
  }

  #close(): void {
    const current = this.#current;
    this.#current = undefined;
    if (!current) return;
    const name = current.inspector.names[0]?.normalised || current.node.contentType || 'unnamed part';
    this.#finished.push(current.inspector.end().then((verdict) => (verdict.rule ? { name, verdict } : undefined)));
  }
}
