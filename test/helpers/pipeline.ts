import { createReadStream } from 'node:fs';
import { Readable, Writable } from 'node:stream';
import { runPipeline, type PipelineLimits } from '../../policy/chain/pipeline.js';
import type { Direction, MessageContext, Stage } from '../../policy/chain/stage.js';
import type { MessageSummary } from '../../policy/chain/summary.js';
import type { Envelope } from '../../storage/records.js';
import { silentLogger } from '../../lib/logger.js';
import { MimeNode } from '@zone-eu/mailsplit';

/** Options for {@link runStages} and {@link dryRunContext}. */
export interface StageRunOptions {
  department?: string;
  direction?: Direction;
  envelope?: Envelope;
  /** Splitter limits; default as the gateway's. */
  limits?: PipelineLimits;
}

/** What running stages on one message gave. */
export interface StageRun {
  /** The bytes the store would get (as far as the pipeline got before an error). */
  output: Buffer;
  /** The context the stages saw: findings, tags, sideRecords. */
  ctx: MessageContext;
  /** Header summary of the output; absent when the pipeline failed. */
  summary?: MessageSummary;
  /** What the pipeline failed with, if it did. */
  error?: unknown;
}

/** A hand-made context for a dry run (no store), as `mailgate policy test` uses. */
export function dryRunContext(opts: StageRunOptions = {}): MessageContext {
  return { ...messageContext(opts), id: 'dry-run', dryRun: true };
}

/** A hand-made context for stages run as ingest runs them (they act), without a store. */
export function messageContext(opts: StageRunOptions = {}): MessageContext {
  return {
    id: 'test',
    envelope: opts.envelope ?? { mailFrom: 'sender@example.org', rcptTo: ['support@example.com'] },
    source: { kind: 'cli' },
    direction: opts.direction ?? 'inbound',
    ...(opts.department ? { department: opts.department } : {}),
    findings: {},
    tags: new Set(),
    log: silentLogger(),
    dryRun: false,
    sideRecords: [],
  };
}

/**
 * Runs `stages` on one message in a dry run: `input` is a file path (a string) or the bytes
 * themselves. Never throws for a pipeline failure: it comes back as `error`, next to what the
 * stages recorded, so a test can assert on both.
 */
export async function runStages(input: string | Buffer, stages: readonly Stage[], opts: StageRunOptions = {}): Promise<StageRun> {
  const ctx = dryRunContext(opts);
  const parts: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      parts.push(chunk);
      done();
    },
  });
  const source = typeof input === 'string' ? createReadStream(input) : Readable.from([input]);
  try {
    const summary = await runPipeline(source, ctx, stages, sink, opts.limits);
    return { output: Buffer.concat(parts), ctx, summary };
  } catch (error) {
    return { output: Buffer.concat(parts), ctx, error };
  }
}

/** A stage that fails after passing a few chunks, as a buggy stage would. */
export function failingStage(afterChunks = 2, name = 'flaky'): Stage {
  return {
    name,
    create() {
      let seen = 0;
      return {
        chunk(chunk, emit) {
          if (++seen > afterChunks) throw new TypeError('Cannot read properties of undefined (reading "charset")');
          emit(chunk);
        },
        end() {},
      };
    },
  };
}

/** A mailsplit node with this Content-Transfer-Encoding (or none), for code that takes a part's node. */
export function mimeNode(encoding?: string): MimeNode {
  const node = new MimeNode(false);
  node.addHeaderChunk(Buffer.from(`${encoding ? `Content-Transfer-Encoding: ${encoding}\r\n` : ''}\r\n`));
  node.parseHeaders();
  return node;
}
