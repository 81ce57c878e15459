import { Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { Logger } from 'pino';
import type { MessageWriter, SideRecord, Store } from '../storage/store.js';
import { newMessageId } from '../storage/ids.js';
import type { Envelope, MessageMeta, MessageSource } from '../storage/records.js';
import { defaultPipelineLimits, runPipeline, stageOf, type PipelineLimits } from '../policy/chain/pipeline.js';
import type { Direction, MessageContext, Stage } from '../policy/chain/stage.js';
import { SpoolTee, fileSpool, reopenableSpool, spoolDir, type Spool } from './spool.js';
import { unparsableFrom, type UnparsableMessage } from '../policy/mime/unparsable.js';
import { readHeaderBlock, wrappingMessage } from '../policy/wrapping/wrapping-message.js';
import { blockedOriginal } from '../policy/attachments/original.js';
import { defaultMimeLimits } from '../policy/mime/mime-check.js';
import { attachmentFileNames } from '../policy/chain/summary.js';
import { threadOf } from '../policy/threading/stage.js';
import { asMailgateError, errors, isDiskFull, MailgateError, type SmtpError } from '../lib/errors.js';

/** What ingest needs from the running gateway. Stages are read per message so a policy reload applies to the next one. */
export interface IngestDeps {
  store: Store;
  logger: Logger;
  /** The stages for a message of this department (the partition's policy when none). */
  stages: (department?: string) => readonly Stage[];
  limits?: PipelineLimits;
  /** Asked about each message about to be committed, wrapped or not (quarantine forwarding: gateway/quarantine-forward/). */
  commitHook?: CommitHook;
}

/**
 * The last word on a message before its commit: it may add to the metadata and give records
 * to commit with it, so that what it starts is durable with the message or not at all.
 */
export type CommitHook = (meta: MessageMeta) => { sideRecords: readonly SideRecord[]; committed(): void } | undefined;

/** One message to take in. */
export interface IngestRequest {
  envelope: Envelope;
  source: MessageSource;
  direction?: Direction;
  department?: string;
  /** Refuse (552) a message whose bytes exceed this many. */
  maxSize?: number;
  /** Domain of `unknown@<domain>`, the From of a wrapping message whose original has no valid From (Genesys `default_domain`). Default `localhost`. */
  defaultDomain?: string;
  /** The id to store the message under (from `newMessageId()`), when the caller must know it before the commit. Default: a new one. */
  id?: string;
  /** Records that must become durable with the message, in its one commit (the retriever records the fetched UID so, submission its queue entry). */
  sideRecords?: readonly SideRecord[];
  /** Tags the message starts with (e.g. `oversize` on the record of a message too big to fetch). */
  tags?: readonly string[];
  /**
   * Store a wrapping message when this one cannot be processed (default true). Outbound mail
   * passes false: a wrapper must not go out to a customer, so the submitter is refused (554)
   * and keeps the message.
   */
  wrapUnparsable?: boolean;
  /**
   * For a caller that sends the message on at once (submission): the bytes as stored, given to
   * `stored` once committed when they are no more than `maxBytes`, so they need not be read back.
   */
  keepStored?: { maxBytes: number; stored(raw: Buffer): void };
  /**
   * The original can be read again from where it came (a fetched message held in memory whole):
   * then nothing is spooled, and a wrapping message takes its original from here.
   */
  reopen?: () => Readable;
  /** Last check before the commit, with the message as it will be stored; throw an error of the catalogue with an SMTP reply to refuse it (nothing is stored). */
  beforeCommit?: (meta: MessageMeta) => void;
}

/**
 * Takes one message from a byte stream through the policy pipeline into the store, and
 * resolves only once message and metadata are durable. The received bytes are teed into the
 * spool; if the pipeline fails for any reason other than the store, the size limit or the
 * client going away, a wrapping message with the original attached is stored instead (Genesys
 * seed, "Handling Unparsable E-Mails"), so no message is lost because it could not be parsed.
 * Any other failure rejects with an error carrying an SMTP reply (4xx unless the message
 * itself is at fault) and leaves nothing visible in the store. The input is always read to its
 * end, so an SMTP session can answer.
 */
export async function ingestMessage(deps: IngestDeps, input: Readable, req: IngestRequest): Promise<MessageMeta> {
  const id = req.id ?? newMessageId();
  const receivedAt = new Date();
  // The spool counts the bytes and fails the moment the message goes over the limit, so an
  // oversized message stops reaching the store at the limit instead of at its end.
  const spool = storeSpool(req.reopen ? reopenableSpool(req.reopen) : fileSpool(spoolDir(deps.store.dir)), req.maxSize ?? Number.POSITIVE_INFINITY);
  const tee = new SpoolTee(spool);
  // Resolves once every received byte is in the spool; rejects with the size limit or the client gone.
  const spooled = finished(tee);
  spooled.catch(() => {});
  // The input is piped rather than handed to pipeline(): pipeline would destroy it on a
  // failure, and an SMTP data stream must instead be drained so the session can reply.
  const onInputGone = () => {
    if (!input.readableEnded) tee.destroy(errors.clientGone());
  };
  input.once('close', onInputGone);
  // An input that fails (a guard in front of ingest refusing the bytes) is refused as it says, never wrapped.
  let inputError: unknown;
  input.once('error', (err) => {
    inputError = err;
    tee.destroy(err);
  });
  input.pipe(tee);

  const ctx = messageContext(deps, req, id);
  // One policy for the whole message, wrapping included, even if a reload lands meanwhile.
  const stages = deps.stages(req.department);
  const log = ctx.log;
  let writer = deps.store.createMessageWriter(id);
  const base = { id, version: 1 as const, receivedAt: receivedAt.toISOString(), envelope: req.envelope, source: req.source };
  const drain = () => {
    input.unpipe(tee);
    if (!input.readableEnded && !input.destroyed) input.resume();
  };
  const discard = async () => {
    await writer.abort().catch((err: unknown) => log.error({ err }, 'could not discard a refused message from the store'));
    await spool.discard().catch((err: unknown) => log.error({ err }, 'could not discard the spool of a refused message'));
  };
  try {
    let failure: unknown;
    let summary: Awaited<ReturnType<typeof runPipeline>> | undefined;
    const keep = req.keepStored && keeper(req.keepStored.maxBytes);
    try {
      summary = await runPipeline(tee.branch, ctx, stages, writer, deps.limits, keep?.add);
    } catch (err) {
      failure = err;
    }
    if (summary) {
      let committed: MessageMeta;
      try {
        await spooled;
        // Before the commit: nothing unmasked may outlive the message's one durable write.
        await spool.discard();
        const meta: MessageMeta = {
          ...base,
          size: writer.bytesWritten,
          receivedSize: spool.bytes,
          ...summary,
          _AttachmentFileNames: attachmentFileNames(summary.attachments),
          findings: ctx.findings,
          tags: [...ctx.tags],
          ...(req.direction === 'outbound' ? { direction: 'outbound' as const } : {}),
          ...threadOf(ctx.findings),
        };
        req.beforeCommit?.(meta);
        committed = await commitMessage(deps, req, writer, meta, ctx.sideRecords);
      } catch (err) {
        drain();
        await discard();
        throw storeFailure(err);
      }
      // After the commit, outside it: nothing here may undo a durable message.
      const raw = keep?.bytes();
      if (raw?.length === committed.size) req.keepStored!.stored(raw);
      return committed;
    }
    if (inputError !== undefined || !isWrappable(deps.store, failure)) {
      failure = inputError ?? failure;
      drain();
      await discard();
      throw storeFailure(failure);
    }

    // The message itself could not be processed: store a wrapping message instead.
    const unparsable = unparsableFrom(failure, stageOf(failure) ?? 'MIME splitter');
    if (req.wrapUnparsable === false) {
      drain();
      await discard();
      throw errors.unprocessable(unparsable.detail, failure);
    }
    try {
      await writer.abort();
      await spooled;
      writer = deps.store.createMessageWriter(id);
      const meta = await storeWrapped(deps, req, stages, writer, spool, unparsable, { ...base, receivedSize: spool.bytes });
      log.warn(
        { reason: unparsable.reason, detail: unparsable.detail, err: failure, size: meta.receivedSize },
        'message could not be processed; stored a wrapping message with the original attached',
      );
      return meta;
    } catch (wrapErr) {
      drain();
      await discard();
      if (wrapErr instanceof MailgateError && (wrapErr.responseCode === 552 || wrapErr.responseCode === 421)) throw wrapErr;
      if (isDiskFull(wrapErr)) throw storeFailure(wrapErr);
      // Never drop: the client keeps the message and tries again.
      log.error({ err: wrapErr, reason: unparsable.reason }, 'could not store a wrapping message');
      throw errors.pipelineFailed('wrapping', wrapErr);
    }
  } finally {
    input.off('close', onInputGone);
  }
}

/** Chunks kept while they add up to no more than `maxBytes`; none once they go over. */
function keeper(maxBytes: number): { add(chunk: Buffer): void; bytes(): Buffer | undefined } {
  let chunks: Buffer[] | undefined = [];
  let size = 0;
  return {
    add(chunk) {
      size += chunk.length;
      if (size > maxBytes) chunks = undefined;
      else chunks?.push(chunk);
    },
    bytes: () => chunks && Buffer.concat(chunks, size),
  };
}

function messageContext(deps: IngestDeps, req: IngestRequest, id: string): MessageContext {
  return {
    id,
    envelope: req.envelope,
    source: req.source,
    direction: req.direction ?? 'inbound',
    ...(req.department ? { department: req.department } : {}),
    findings: {},
    tags: new Set(req.tags),
    log: deps.logger.child({ msg_id: id }),
    dryRun: false,
    store: deps.store,
    sideRecords: [],
  };
}

/**
 * The message's one commit, stored or wrapped alike: with the records of its own passage
 * (`own`), the caller's (the retriever's record of the fetched message must be durable with
 * whatever is stored for it) and the commit hook's, which has the last word on the metadata.
 */
async function commitMessage(deps: IngestDeps, req: IngestRequest, writer: MessageWriter, meta: MessageMeta, own: readonly SideRecord[]): Promise<MessageMeta> {
  const hooked = deps.commitHook?.(meta);
  await writer.commit(meta, [...own, ...(req.sideRecords ?? []), ...(hooked?.sideRecords ?? [])]);
  hooked?.committed();
  return meta;
}

/**
 * Whether a pipeline failure is the message's own (wrap it) rather than ours or the client's:
 * not the size limit (552), not the client going away or a shutdown (421), not the store's
 * (from the writer, the spool or a stage that writes, e.g. quarantine; the store knows its own).
 */
function isWrappable(store: Store, err: unknown): boolean {
  if (err instanceof MailgateError) {
    return !(err.responseCode === 552 || err.responseCode === 421 || err.code.startsWith('STORE_'));
  }
  return !store.isStoreFailure(err);
}

/**
 * The reply for a message we could not store: 452 when the disk is full (RFC 5321 section
 * 4.2.3 "insufficient system storage"; 4.3.1 "mail system full", RFC 3463, as Postfix
 * answers), else 451 (a store error too: it has no reply of its own); a refusal that already
 * carries its reply keeps it.
 */
function storeFailure(err: unknown): SmtpError {
  if (isDiskFull(err)) return errors.storageFull(err);
  return asMailgateError(err);
}

/**
 * The spool with the size limit, and with its failures made store failures: a spool that
 * cannot be written (a full disk) is ours to fix, not the message's, so it must not be
 * wrapped, and the client retries. It also never discards while a write is in flight, so a
 * discard never races a write into a file being removed (a discard that landed mid-write once
 * hung the whole gateway when a store failure or a vanished client cut a large message short).
 */
function storeSpool(spool: Spool, maxSize: number): Spool & { readonly bytes: number } {
  let writing: Promise<void> = Promise.resolve();
  let bytes = 0;
  return {
    get bytes() {
      return bytes;
    },
    write(chunk) {
      bytes += chunk.length;
      if (bytes > maxSize) return Promise.reject(errors.messageTooBig(maxSize));
      const written = spool.write(chunk).catch((err: unknown) => {
        throw isDiskFull(err) ? errors.storageFull(err) : errors.storeFailed(err);
      });
      writing = written.then(noop, noop);
      return written;
    },
    open: () => spool.open(),
    async discard() {
      // A write may start while we wait for one; discard only once none is in flight.
      for (let w = writing; ; w = writing) {
        await w;
        if (w === writing) break;
      }
      await spool.discard();
    },
  };
}

function noop(): void {}

/**
 * Writes the wrapping message for `unparsable` from the spool through `writer` (no policy
 * stage runs on it: they are what failed) and commits it. The spool is removed first, so that
 * nothing unmasked outlives the commit.
 */
async function storeWrapped(
  deps: IngestDeps,
  req: IngestRequest,
  stages: readonly Stage[],
  writer: MessageWriter,
  spool: Spool,
  unparsable: UnparsableMessage,
  base: Pick<MessageMeta, 'id' | 'version' | 'receivedAt' | 'envelope' | 'source' | 'receivedSize'>,
): Promise<MessageMeta> {
  const wrapCtx = messageContext(deps, req, base.id);
  const limits = { maxHeaderSize: deps.limits?.maxHeadSize ?? defaultPipelineLimits.maxHeadSize, maxHeaderLine: defaultMimeLimits.maxHeaderLine };
  // Masking promises nothing unmasked is stored; where it is on, that wins over "byte for
  // byte" and the attached original is masked as raw text (it cannot be parsed).
  const direction = req.direction ?? 'inbound';
  const rawMasker = stages.map((s) => s.wrappedOriginal?.rawMasker).find((m) => m !== undefined);
  const maskedOriginal = (into: Record<string, number>) => {
    const raw = spool.open();
    const masker = rawMasker?.(direction, into);
    return masker ? raw.pipe(masker) : raw;
  };
  let counts: Record<string, number> = {};
  // The wrapper reads the original twice (header, then whole): count the last pass.
  const original = () => maskedOriginal((counts = {}));
  // Wrapping is no way around attachment blocking: the original is judged by the rules first.
  const blocked = await blockedOriginal({ store: deps.store, stages, id: base.id, direction, department: req.department, original: () => spool.open() });
  const wrapper = wrappingMessage({
    failure: unparsable,
    original,
    defaultDomain: req.defaultDomain ?? 'localhost',
    limits,
    ...(blocked ? { blocked: blocked.wrapping } : {}),
  });
  let summary: Awaited<ReturnType<typeof runPipeline>>;
  try {
    summary = await runPipeline(wrapper, wrapCtx, [], writer, deps.limits);
    await blocked?.close();
  } catch (err) {
    throw deps.store.isStoreFailure(err) ? storeFailure(err) : err;
  }
  // Tagging reads the header once more: with a counter of its own, so the wrapper's counts stand.
  const tagged = await tagWrapped(deps, req, base.id, stages, () => maskedOriginal({}), limits.maxHeaderSize);
  try {
    await spool.discard();
    const meta: MessageMeta = {
      ...base,
      size: writer.bytesWritten,
      ...summary,
      _AttachmentFileNames: attachmentFileNames(summary.attachments),
      _WrappingMessageReason: `${unparsable.reason}: ${unparsable.detail}`,
      findings: {
        wrapping: {
          summary: [
            blocked
              ? `Stored as a wrapping message without the original, which the attachment policy blocks (${blocked.outcome}): ${unparsable.detail}.`
              : `Stored as a wrapping message with the original attached: ${unparsable.detail}.`,
          ],
          reason: unparsable.reason,
          detail: unparsable.detail,
        },
        ...(blocked ? { attachments: blocked.findings() } : {}),
        ...(Object.keys(counts).length
          ? {
              masking: {
                summary: [
                  `Masked the attached original as raw text, since it could not be parsed: ${Object.entries(counts)
                    .map(([k, v]) => `${k} ${v}`)
                    .join(', ')}.`,
                ],
                masked: counts,
                raw: true,
              },
            }
          : {}),
        ...tagged.findings,
      },
      tags: ['wrapped', ...tagged.tags, ...(req.tags ?? [])],
    };
    return await commitMessage(deps, req, writer, meta, blocked?.sideRecords() ?? []);
  } catch (err) {
    throw storeFailure(err);
  }
}

/**
 * Delivery-exception tagging for a wrapped message, from the original's own header block (not
 * the wrapper's, whose From may be a synthesized `unknown@`, which the guide's address phrase
 * "unknown" would match): a truncated bounce (an unterminated multipart/report is common) is
 * still a bounce. The report's body is not read, so phrases and header signals decide. No
 * tagging when the header has no end or is over the limit. Never fails the wrap.
 */
async function tagWrapped(
  deps: IngestDeps,
  req: IngestRequest,
  id: string,
  stages: readonly Stage[],
  original: () => Readable,
  maxHeaderSize: number,
): Promise<{ findings: MessageMeta['findings']; tags: string[] }> {
  const tagging = stages.filter((s) => s.wrappedOriginal?.tagsFromHeader);
  if (tagging.length === 0) return { findings: {}, tags: [] };
  const ctx = messageContext(deps, req, id);
  try {
    const header = await readHeaderBlock(original(), maxHeaderSize);
    if (!header) return { findings: {}, tags: [] };
    const discard = new Writable({ write: (_c, _e, done) => done() });
    await runPipeline(Readable.from([header, Buffer.from('\r\n\r\n')]), ctx, tagging, discard, deps.limits);
    return { findings: ctx.findings, tags: [...ctx.tags] };
  } catch (err) {
    ctx.log.warn({ err }, 'could not tag a wrapped message from its original header');
    return { findings: {}, tags: [] };
  }
}
