import type { Readable, Transform, Writable } from 'node:stream';
import { Joiner, type SplitterChunk } from '@zone-eu/mailsplit';
import type { MessageContext, Stage } from './stage.js';
import { SummaryCollector, type MessageSummary } from './summary.js';
import { PipelineSplitter } from '../mime/splitter.js';
import { ChunkStage, StageChain, type NamedHandler } from './stage-chain.js';
import { UnparsableMessage } from '../mime/unparsable.js';

export { stageOf } from './stage-chain.js';

/** Limits the MIME splitter enforces while the message streams through. */
export interface PipelineLimits {
  /** Largest header block of one MIME node, in bytes. */
  maxHeadSize: number;
  /** Most MIME nodes one message may have, its root included (mailsplit and Haraka default: 1000). */
  maxChildNodes: number;
}

export const defaultPipelineLimits: PipelineLimits = { maxHeadSize: 1024 * 1024, maxChildNodes: 1000 };

/**
 * Runs one message through the stages: bytes -> MIME chunks -> stages -> summary -> bytes -> sink.
 * The stages and the summary are handlers in one stream (stage-chain.ts).
 * Everything is a stream, so memory stays flat whatever the message size; the sink sees the
 * rewritten message. With no stage altering anything the output is byte-identical to the input
 * (mailsplit's Joiner rebuilds exactly what its Splitter took apart). `output`, when given, is
 * called with each chunk the sink is given, in order.
 */
export async function runPipeline(
  input: Readable,
  ctx: MessageContext,
  stages: readonly Stage[],
  sink: Writable,
  limits: PipelineLimits = defaultPipelineLimits,
  output?: (chunk: Buffer) => void,
): Promise<MessageSummary> {
  // The limit on MIME nodes is kept by the first handler of the chain, not by the splitter: the
  // splitter parses a whole read at once (one read can hold a thousand part headers) while the
  // chain takes the nodes in order a turn at a time, so a splitter's error would overtake the
  // verdict of a stage on an earlier node (a 2000-deep nesting reported as too many parts or as
  // too deep depending on how the bytes arrived). The splitter keeps ten times the limit, so that
  // one read cannot make it hold an unbounded number of nodes.
  // The splitter checks the Content-Type and Content-Disposition fields' size first, and hands leaf bodies on without reading them line by line (splitter.ts).
  const splitter = new PipelineSplitter({ maxHeadSize: limits.maxHeadSize, maxChildNodes: limits.maxChildNodes * 10 });
  const handlers: NamedHandler[] = [{ name: 'MIME splitter', handler: new NodeLimit(limits.maxChildNodes) }];
  for (const stage of stages) {
    const handler = stage.create(ctx);
    if (handler) handlers.push({ name: stage.name, handler });
  }
  const summary = new SummaryCollector();
  handlers.push({ name: 'summary', handler: summary });
  const joiner = new Joiner() as unknown as Transform;
  // mailsplit types its streams narrower than Transform; they are Transforms.
  const connected = connect([input, splitter as unknown as Transform, new StageChain(handlers), joiner, sink]);
  // Once piped: a second 'data' listener then sees each chunk pipe() hands the sink and changes nothing about the flow.
  if (output) joiner.on('data', output);
  await connected;
  return summary.summary;
}

/** Fails a message of more than MAX MIME nodes as mailsplit would, but in the order of the nodes (see runPipeline). */
class NodeLimit extends ChunkStage {
  #nodes = 0;
  readonly #max: number;

  constructor(max: number) {
    super();
    this.#max = max;
  }

  protected transform(chunk: SplitterChunk): void | Promise<void> {
    if (chunk.type === 'node' && ++this.#nodes > this.#max) {
      throw new UnparsableMessage('too_many_parts', `More MIME parts than the splitter allows (more than ${this.#max} nodes)`);
    }
    return this.push(chunk);
  }
}

/**
 * Pipes `streams` one into the next and settles when the last has finished, or rejects with
 * the first error (or an early close) of any of them, having destroyed them all. What
 * `stream.pipeline` does, without its per-call cost: in Node 20 every call makes an
 * AbortController and aborts it at the end, which builds a DOMException with a stack trace,
 * about 4% of the CPU of a 4 KB message.
 */
function connect(streams: readonly (Readable | Writable)[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const last = streams[streams.length - 1] as Writable;
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      for (const s of streams) if (!s.destroyed) s.destroy(err);
      reject(err);
    };
    for (let i = 0; i < streams.length; i++) {
      const s = streams[i]!;
      // Listeners stay on after the end: a late error must not go unheard and crash the gateway.
      s.on('error', fail);
      const done = s === last ? () => last.writableFinished : () => (s as Readable).readableEnded;
      s.once('close', () => {
        if (!settled && !done()) fail(prematureClose());
      });
      if (i > 0) (streams[i - 1] as Readable).pipe(s as Writable);
    }
    last.once('finish', () => {
      if (settled) return;
      settled = true;
      resolve();
    });
  });
}

// Node's own error for an early close (what stream.pipeline gives), not one of mailgate's codes.
function prematureClose(): Error {
  return Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
}
