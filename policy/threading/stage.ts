/**
 * Reply threading (Enate "Inbound Email": "Look for [the] reference in Subject or first 5000
 * characters of Body"). Every stored message belongs to a conversation, named by a short
 * reference (reference.ts). A message joins the conversation of a message we stored or sent
 * that its In-Reply-To or References names; else the one whose reference is in its subject;
 * else, coming in, the one whose reference is in the first 5000 characters of its decoded text;
 * else it starts a new one. A reference counts only when the store has its conversation: a
 * token quoted from another system's mail does not join strangers.
 *
 * Going out, the reference is added to the subject unless it is there, and a message without a
 * Message-ID gets one (we keep it: the reply will name it).
 *
 * The stage also notes from the root header what RFC 3834 asks before answering a message
 * automatically (who to answer, and whether it is machine or list mail), for gateway/auto-reply/.
 *
 * Streaming: the root header, and at most 5000 characters of text parts, read as they pass.
 */
import { randomUUID } from 'node:crypto';
import libmime from 'libmime';
import type { MimeNode, SplitterChunk } from '@zone-eu/mailsplit';
import type { MessageContext, Stage, StageFindings } from '../chain/stage.js';
import { ChunkStage, type ChunkHandler } from '../chain/stage-chain.js';
import { decodedHead, headAddresses, headerHead } from '../mime/header-text.js';
import { bodyDecoder, type BodyDecoder } from '../mime/transfer-decode.js';
import type { MessageMeta } from '../../storage/records.js';
import { ReferenceFormat, newReference } from './reference.js';

export { ReferenceFormat, isReference, newReference } from './reference.js';

/** The stage's fixed name: the key of its findings. */
export const THREADING = 'threading';
/** Characters of body text searched for a reference (Enate "Inbound Email"). */
export const BODY_SEARCH_CHARS = 5000;
/** Message-IDs of In-Reply-To and References looked up, newest first: a long thread's oldest do not matter. */
const MAX_LOOKUPS = 10;

/** How a message came to its conversation. */
export type JoinedBy = 'in-reply-to' | 'references' | 'subject' | 'body' | 'new';

/** What the stage records on the message (its findings, and `conversation`/`inReplyTo` on the metadata). */
export interface ThreadingFindings extends StageFindings {
  conversation: string;
  joinedBy: JoinedBy;
  /** Id of the stored message this one answers. */
  inReplyTo?: string;
  /** RFC 3834 section 3.1: where an automatic answer would go (envelope sender, Return-Path, else From). */
  replyTo?: string;
  /** Why no automatic answer may go to it (null sender, Auto-Submitted, a mailing list); absent when one may. */
  noAutoReply?: string;
}

/** The stage's settings, from `[partition]`. */
export interface ThreadingOptions {
  format: ReferenceFormat;
  /** Domain of the Message-IDs we make when the sender's address has none. */
  defaultDomain: string;
}

/** The threading stage; it runs after the policy stages and changes only the root header of mail going out. */
export function threadingStage(opts: ThreadingOptions): Stage {
  return {
    name: THREADING,
    // A delivery status notification is ours about a message, not a turn in a conversation.
    create: (ctx: MessageContext): ChunkHandler | null => (ctx.source.kind === 'dsn' ? null : new ThreadingScan(opts, ctx)),
  };
}

/**
 * STAGES with the threading stage after them, in the partition's reference format: what the
 * gateway (and the CLI on a stopped gateway) runs every message through.
 */
export function withThreading(
  partition: { reference_format: string; default_domain: string },
  stages: (department?: string) => readonly Stage[],
): (department?: string) => readonly Stage[] {
  const threading = threadingStage({ format: new ReferenceFormat(partition.reference_format), defaultDomain: partition.default_domain });
  return (department) => [...stages(department), threading];
}

/** `conversation` and `inReplyTo` for a message's metadata, from its findings. */
export function threadOf(findings: MessageMeta['findings']): Pick<MessageMeta, 'conversation' | 'inReplyTo'> {
  const t = findings[THREADING] as Partial<ThreadingFindings> | undefined;
  if (!t?.conversation) return {};
  return { conversation: t.conversation, ...(t.inReplyTo ? { inReplyTo: t.inReplyTo } : {}) };
}

const TEXT_TYPES = new Set(['text/plain', 'text/html', '']);

class ThreadingScan extends ChunkStage {
  readonly #opts: ThreadingOptions;
  readonly #ctx: MessageContext;
  #sawRoot = false;
  #decided: { conversation: string; joinedBy: JoinedBy; inReplyTo?: string } | undefined;
  #replyTo: string | undefined;
  #noAutoReply: string | undefined;
  /** Body text read so far (inbound, when the header did not decide). */
  #text = '';
  #reading: { node: MimeNode; decoder: BodyDecoder } | undefined;
  #lookupNote: string | undefined;

  constructor(opts: ThreadingOptions, ctx: MessageContext) {
    super();
    this.#opts = opts;
    this.#ctx = ctx;
  }

  protected async transform(chunk: SplitterChunk): Promise<void> {
    if (chunk.type === 'node') {
      this.#reading = undefined;
      if (!this.#sawRoot && chunk.root && !chunk.parentNode) {
        this.#sawRoot = true;
        if (chunk.headers) await this.#root(chunk);
      }
      if (!this.#decided && this.#ctx.direction === 'inbound' && this.#text.length < BODY_SEARCH_CHARS && isTextPart(chunk)) {
        this.#reading = { node: chunk, decoder: bodyDecoder(chunk) };
      }
    } else if (chunk.type === 'body' && this.#reading && chunk.node === this.#reading.node) {
      this.#read(this.#reading.decoder.push(chunk.value));
      // Enough text to search: the rest of the part is not decoded a second time (masking decodes it too).
      if (this.#text.length >= BODY_SEARCH_CHARS) this.#reading = undefined;
    }
    this.push(chunk);
  }

  protected override async flush(): Promise<void> {
    if (this.#reading) this.#read(this.#reading.decoder.end());
    this.#reading = undefined;
    if (!this.#decided) {
      const bodyRefs = this.#opts.format.find(this.#text.slice(0, BODY_SEARCH_CHARS));
      const known = await this.#known(bodyRefs);
      this.#decided = known ? { conversation: known, joinedBy: 'body' } : { conversation: newReference(), joinedBy: 'new' };
    }
    const d = this.#decided;
    const findings: ThreadingFindings = {
      summary: [describe(d, this.#opts.format), ...(this.#lookupNote ? [this.#lookupNote] : [])],
      conversation: d.conversation,
      joinedBy: d.joinedBy,
      ...(d.inReplyTo ? { inReplyTo: d.inReplyTo } : {}),
      ...(this.#replyTo ? { replyTo: this.#replyTo } : {}),
      ...(this.#noAutoReply ? { noAutoReply: this.#noAutoReply } : {}),
    };
    this.#ctx.findings[THREADING] = findings;
  }

  #read(decoded: Buffer): void {
    // Latin-1 keeps a byte a character: the reference is ASCII whatever the part's charset.
    const room = BODY_SEARCH_CHARS - this.#text.length;
    if (room > 0) this.#text += decoded.subarray(0, room).toString('latin1');
  }

  async #root(node: MimeNode): Promise<void> {
    const headers = node.headers as Exclude<MimeNode['headers'], false>;
    const first = (key: string) => headers.getFirst(key);
    const subject = decodedHead(first('subject'));
    this.#autoReplyFacts(headers);

    // The message it answers: In-Reply-To first, then References from the newest (RFC 5322 section 3.6.4).
    const inReplyTo = messageIds(first('in-reply-to'));
    const references = messageIds(headers.get('references').join(' ')).reverse();
    const candidates = [...new Set([...inReplyTo, ...references])].slice(0, MAX_LOOKUPS);
    const answered = await this.#answered(candidates);
    if (answered) {
      const how: JoinedBy = inReplyTo.includes(answered.messageId ?? '') ? 'in-reply-to' : 'references';
      // A message stored before threading has no conversation: the reply starts one that names it.
      this.#decided = { conversation: answered.conversation ?? newReference(), joinedBy: how, inReplyTo: answered.id };
    } else {
      const known = await this.#known(this.#opts.format.find(subject));
      if (known) this.#decided = { conversation: known, joinedBy: 'subject' };
    }
    if (this.#ctx.direction !== 'outbound') return;
    this.#decided ??= { conversation: newReference(), joinedBy: 'new' };
    const withRef = this.#opts.format.subjectWith(subject, this.#decided.conversation);
    if (withRef !== subject) headers.update('Subject', encoded(withRef));
    if (!messageIds(first('message-id')).length) headers.update('Message-ID', `<${randomUUID()}@${this.#messageIdDomain()}>`);
  }

  /** The newest stored message one of `ids` names, trying them in order. */
  async #answered(ids: readonly string[]): Promise<MessageMeta | undefined> {
    const store = this.#ctx.store;
    if (!store || ids.length === 0) return undefined;
    for (const id of ids) {
      const found = await store.findByMessageId(id);
      // The copy this alias holds when there are several (one per alias of a shared mailbox).
      const own = found.filter((m) => m.id !== this.#ctx.id);
      const pick = own.find((m) => m.conversation && m.source.alias === this.#ctx.source.alias) ?? own.find((m) => m.conversation) ?? own[own.length - 1];
      if (pick) return pick;
    }
    return undefined;
  }

  /** The first of `refs` whose conversation the store has. */
  async #known(refs: readonly string[]): Promise<string | undefined> {
    const store = this.#ctx.store;
    if (refs.length === 0) return undefined;
    if (!store) {
      this.#lookupNote = `A dry run does not look up references (${refs.join(', ')}).`;
      return undefined;
    }
    for (const ref of refs) {
      if ((await store.listMessages({ thread: ref, limit: 1 })).length > 0) return ref;
    }
    this.#lookupNote = `References to no known conversation were not followed: ${refs.join(', ')}.`;
    return undefined;
  }

  /** RFC 3834: who to answer (section 3.1.1) and whether to answer at all (sections 2 and 5). */
  #autoReplyFacts(headers: Exclude<MimeNode['headers'], false>): void {
    const first = (key: string) => headers.getFirst(key);
    const ctx = this.#ctx;
    const returnPath = first('return-path');
    const returnAddress = /<([^>]*)>/.exec(returnPath)?.[1]?.trim() ?? returnPath.trim();
    const envelopeKnown = ctx.source.kind === 'smtp' || ctx.source.kind === 'submission';
    if ((envelopeKnown && ctx.envelope.mailFrom === '') || (returnPath && returnAddress === '')) this.#noAutoReply = 'the sender is the null sender (a bounce)';
    const auto = first('auto-submitted');
    if (!this.#noAutoReply && auto && (auto.toLowerCase().split(/[\s;(]/)[0] ?? '') !== 'no') this.#noAutoReply = `Auto-Submitted: ${headerHead(auto, 60)}`;
    const list = headers.getList().find((l) => l.key.startsWith('list-'));
    if (!this.#noAutoReply && list) this.#noAutoReply = `a mailing list (${list.key} header)`;
    const precedence = first('precedence').trim();
    if (!this.#noAutoReply && /^(bulk|list|junk|auto_reply)$/i.test(precedence)) this.#noAutoReply = `Precedence: ${precedence}`;
    for (const key of ['x-autoreply', 'x-autorespond']) {
      const value = first(key);
      if (!this.#noAutoReply && value && !/^(no|false|0)$/i.test(value)) this.#noAutoReply = `${key}: ${headerHead(value, 60)}`;
    }
    const from = headers.get('from').flatMap((line) => headAddresses(line.slice(line.indexOf(':') + 1)));
    const to = envelopeKnown && ctx.envelope.mailFrom ? ctx.envelope.mailFrom : returnAddress || from[0];
    if (to && /^[^\s<>@"]+@[^\s<>@"]+$/.test(to)) this.#replyTo = to;
  }

  #messageIdDomain(): string {
    const domain = /@([A-Za-z0-9.-]+)$/.exec(this.#ctx.envelope.mailFrom)?.[1];
    return domain || this.#opts.defaultDomain;
  }
}

/** Message-IDs in a header value, without angle brackets. */
function messageIds(value: string): string[] {
  return [...headerHead(value).matchAll(/<([^<>\s]+)>/g)].map((m) => m[1]!);
}

/** A body part whose text a person reads: text/plain or text/html, not an attachment. */
function isTextPart(node: MimeNode): boolean {
  if (node.multipart || node.disposition === 'attachment' || node.filename) return false;
  if (node.parentNode && node.parentNode.contentType === 'message/rfc822') return false;
  return TEXT_TYPES.has(node.contentType || '');
}

function encoded(subject: string): string {
  return /^[\x20-\x7e]*$/.test(subject) ? subject : libmime.encodeWords(subject, 'Q', 52);
}

function describe(d: { conversation: string; joinedBy: JoinedBy; inReplyTo?: string }, format: ReferenceFormat): string {
  const ref = format.write(d.conversation);
  switch (d.joinedBy) {
    case 'in-reply-to':
      return `Joined conversation ${ref}: In-Reply-To names stored message ${d.inReplyTo}.`;
    case 'references':
      return `Joined conversation ${ref}: References names stored message ${d.inReplyTo}.`;
    case 'subject':
      return `Joined conversation ${ref}: its reference is in the subject.`;
    case 'body':
      return `Joined conversation ${ref}: its reference is in the first ${BODY_SEARCH_CHARS} characters of the text.`;
    default:
      return `Started conversation ${ref}.`;
  }
}
