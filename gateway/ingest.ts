import { Transform, type Readable, type TransformCallback } from 'node:stream';
import type { Logger } from 'pino';
import type { Store } from '../storage/store.js';
import { newMessageId } from '../storage/ids.js';
import type { Envelope, MessageMeta, MessageSource } from '../storage/message-meta.js';
import { runPipeline, stageOf, type PipelineLimits } from '../policy/pipeline.js';
import type { Direction, MessageContext, Stage } from '../policy/stage.js';
import { errors, MailgateError } from './errors.js';

/** What ingest needs from the running gateway. Stages are read per message so a policy reload applies to the next one. */
export interface IngestDeps {
  store: Store;
  logger: Logger;
  stages: () => readonly Stage[];
  limits?: PipelineLimits;
}

/** One message to take in. */
export interface IngestRequest {
  envelope: Envelope;
  source: MessageSource;
  direction?: Direction;
  department?: string;
  /** Refuse (552) a message whose bytes exceed this many. */
  maxSize?: number;
}

/**
 * Counts bytes as they pass and fails the moment the message goes over the limit, so an
 * oversized message stops reaching the store at the limit instead of at its end.
 */
class SizeGuard extends Transform {
  bytes = 0;
  constructor(private readonly limit: number) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.limit) return done(errors.messageTooBig(this.limit));
    done(null, chunk);
  }
}

/**
 * Takes one message from a byte stream through the policy pipeline into the store, and
 * resolves only once message and metadata are durable. Any failure rejects with an error
 * carrying an SMTP reply (4xx unless the message itself is at fault) and leaves nothing
 * visible in the store. The input is always read to its end, so an SMTP session can answer.
 */
export async function ingestMessage(deps: IngestDeps, input: Readable, req: IngestRequest): Promise<MessageMeta> {
  const id = newMessageId();
  const receivedAt = new Date();
  const guard = new SizeGuard(req.maxSize ?? Number.POSITIVE_INFINITY);
  // The input is piped rather than handed to pipeline(): pipeline would destroy it on a
  // failure, and an SMTP data stream must instead be drained so the session can reply.
  const onInputGone = () => {
    if (!input.readableEnded) guard.destroy(new MailgateError('CLIENT_GONE', 421, '4.4.2', 'The client went away before the end of the message'));
  };
  input.once('close', onInputGone);
  input.once('error', (err) => guard.destroy(err));
  input.pipe(guard);

  const ctx: MessageContext = {
    id,
    envelope: req.envelope,
    source: req.source,
    direction: req.direction ?? 'inbound',
    ...(req.department ? { department: req.department } : {}),
    findings: {},
    tags: new Set(),
    log: deps.logger.child({ msg_id: id }),
    dryRun: false,
    store: deps.store,
    commitOps: [],
  };
  const writer = deps.store.createMessageWriter(id);
  try {
    const summary = await runPipeline(guard, ctx, deps.stages(), writer, deps.limits);
    const meta: MessageMeta = {
      id,
      version: 1,
      receivedAt: receivedAt.toISOString(),
      size: writer.bytesWritten,
      receivedSize: guard.bytes,
      envelope: req.envelope,
      source: req.source,
      ...summary,
      _AttachmentFileNames: summary.attachments.map((a) => a.fileName),
      findings: ctx.findings,
      tags: [...ctx.tags],
    };
    try {
      await writer.commit(meta, ctx.commitOps);
    } catch (err) {
      throw errors.storeFailed(err);
    }
    return meta;
  } catch (err) {
    input.unpipe(guard);
    if (!input.readableEnded && !input.destroyed) input.resume();
    await writer.abort().catch((abortErr: unknown) => ctx.log.error({ err: abortErr }, 'could not discard a refused message from the store'));
    if (err instanceof MailgateError) throw err;
    if (writer.errored === err) throw errors.storeFailed(err);
    // Not the store and not a stage: the MIME splitter refused the message.
    throw errors.pipelineFailed(stageOf(err) ?? 'MIME parsing', err);
  } finally {
    input.off('close', onInputGone);
  }
}
