import { pipeline } from 'node:stream/promises';
import type { Readable, Transform, Writable } from 'node:stream';
import { Splitter, Joiner } from '@zone-eu/mailsplit';
import type { MessageContext, Stage } from './stage.js';
import { SummaryCollector, type MessageSummary } from './summary.js';
import { ContentFieldGuard } from './content-field-guard.js';
import { TurnPacer } from './turn-pacer.js';

/** Limits the MIME splitter enforces while the message streams through. */
export interface PipelineLimits {
  /** Largest header block of one MIME node, in bytes. */
  maxHeadSize: number;
  /** Most child nodes one multipart may have (mailsplit and Haraka default: 1000). */
  maxChildNodes: number;
}

export const defaultPipelineLimits: PipelineLimits = { maxHeadSize: 1024 * 1024, maxChildNodes: 1000 };

const failedStage = new WeakMap<object, string>();

/** The name of the stage an error came from, when it came from one. */
export function stageOf(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null ? failedStage.get(err) : undefined;
}

/**
 * Runs one message through the stages: bytes -> MIME chunks -> stages -> summary -> bytes -> sink.
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
  const transforms: Transform[] = [];
  for (const stage of stages) {
    const transform = stage.create(ctx);
    if (!transform) continue;
    // Note where an error starts: pipeline() rejects with that same error object.
    transform.once('error', (err) => {
      if (!failedStage.has(err)) failedStage.set(err, stage.name);
    });
    transforms.push(transform);
  }
  const summary = new SummaryCollector();
  await pipeline([input, new ContentFieldGuard(), splitter, new TurnPacer(), ...transforms, summary, new Joiner(), sink]);
  return summary.summary;
}
