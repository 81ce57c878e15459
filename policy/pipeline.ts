import { pipeline } from 'node:stream/promises';
import type { Readable, Writable } from 'node:stream';
import { Splitter, Joiner } from '@zone-eu/mailsplit';
import type { MessageContext, Stage } from './stage.js';
import { SummaryCollector, type MessageSummary } from './summary.js';
import { ContentFieldGuard } from './content-field-guard.js';
import { StageChain, type NamedHandler } from './stage-chain.js';

export { stageOf } from './stage-chain.js';

/** Limits the MIME splitter enforces while the message streams through. */
export interface PipelineLimits {
  /** Largest header block of one MIME node, in bytes. */
  maxHeadSize: number;
  /** Most child nodes one multipart may have (mailsplit and Haraka default: 1000). */
  maxChildNodes: number;
}

export const defaultPipelineLimits: PipelineLimits = { maxHeadSize: 1024 * 1024, maxChildNodes: 1000 };

/**
 * Runs one message through the stages: bytes -> MIME chunks -> stages -> summary -> bytes -> sink.
 * The stages and the summary are handlers in one stream (stage-chain.ts).
 * Everything is a stream, so memory stays flat whatever the message size; the sink sees the
 * rewritten message. With no stage altering anything the output is byte-identical to the input
 * (mailsplit's Joiner rebuilds exactly what its Splitter took apart).
 */
export async function runPipeline(
  input: Readable,
  ctx: MessageContext,
  stages: readonly Stage[],
  sink: Writable,
  limits: PipelineLimits = defaultPipelineLimits,
): Promise<MessageSummary> {
  const splitter = new Splitter({ maxHeadSize: limits.maxHeadSize, maxChildNodes: limits.maxChildNodes });
  const handlers: NamedHandler[] = [];
  for (const stage of stages) {
    const handler = stage.create(ctx);
    if (handler) handlers.push({ name: stage.name, handler });
  }
  const summary = new SummaryCollector();
  handlers.push({ name: 'summary', handler: summary });
  await pipeline([input, new ContentFieldGuard(), splitter, new StageChain(handlers), new Joiner(), sink]);
  return summary.summary;
}
