/**
 * The policy stages of one message as plain handlers that one object-mode stream calls in
 * turn. A stage used to be a Transform of its own: six streams a message, each with its
 * buffers, events and callbacks for every MIME chunk, cost more than the stages' own work on
 * a 4 KB message (a third of the gateway's time went to stream plumbing). Here a chunk goes
 * from stage to stage by function call; a stage that has to wait (a quarantine write, a slice
 * of masking deferred to the next turn) returns a promise, and what it hands on meanwhile
 * queues in order at the next stage.
 */
import { Transform, type TransformCallback } from 'node:stream';
import type { SplitterChunk } from '@zone-eu/mailsplit';

/**
 * Hands a chunk to the next stage. A promise back means the next stage is still busy: a stage
 * that hands on many chunks at once (playing back a spooled part) waits for it between them.
 * Never throws and never rejects: a stage's failure fails the message, not its caller.
 */
export type Emit = (chunk: SplitterChunk) => Promise<void> | undefined;

/** One stage's work on one message. Calls for a message never overlap: the next chunk comes once the last one settled. */
export interface ChunkHandler {
  /** Takes one chunk and hands on, with `emit`, what goes downstream (the same chunk, others, or none). */
  chunk(chunk: SplitterChunk, emit: Emit): void | Promise<void>;
  /** The message has ended: hand on whatever is still held and record findings. */
  end(emit: Emit): void | Promise<void>;
}

/**
 * A base for stages written as a class: `push` hands a chunk on, as in a Transform, and
 * returns the next stage's promise when it is busy.
 */
export abstract class ChunkStage implements ChunkHandler {
  #emit: Emit = noEmit;

  chunk(chunk: SplitterChunk, emit: Emit): void | Promise<void> {
    this.#emit = emit;
    return this.transform(chunk);
  }

  end(emit: Emit): void | Promise<void> {
    this.#emit = emit;
    return this.flush();
  }

  protected push(chunk: SplitterChunk): Promise<void> | undefined {
    return this.#emit(chunk);
  }

  protected abstract transform(chunk: SplitterChunk): void | Promise<void>;

  protected flush(): void | Promise<void> {}
}

function noEmit(): undefined {
  throw new Error('a stage handed on a chunk outside a call of its own');
}

const failedStage = new WeakMap<object, string>();

/** The name of the stage an error came from, when it came from one. */
export function stageOf(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null ? failedStage.get(err) : undefined;
}

/** A stage's handler under its name, as the chain runs it. */
export interface NamedHandler {
  name: string;
  handler: ChunkHandler;
}

/** How long the stages may keep the event loop in one turn before the next chunk waits for the next turn. */
const TURN_BUDGET_MS = 10;

/**
 * Runs the handlers in order over the mailsplit chunks written to it and passes on what the
 * last one hands on. The first failure of any stage fails the stream with that error
 * ({@link stageOf} names the stage). Chunks wait for the next turn of the event loop once the
 * current turn has run for 10 ms, so one message of many small parts (16 KiB holding 1800
 * empty parts kept the loop busy for 400 ms) cannot hold up every other session.
 */
export class StageChain extends Transform {
  readonly #links: Link[] = [];
  readonly #first: Emit;
  #failure: Error | undefined;
  #closed = false;
  #readWaiters: (() => void)[] = [];
  /** When the current turn was first seen here; 0 once a later turn has begun. */
  #turnStart = 0;

  constructor(stages: readonly NamedHandler[]) {
    super({ objectMode: true });
    let next: Emit = (chunk) => this.#out(chunk);
    for (let i = stages.length - 1; i >= 0; i--) {
      const link = new Link(stages[i]!, next, (err, name) => this.#fail(err, name));
      this.#links.unshift(link);
      next = link.take;
    }
    this.#first = next;
  }

  override _transform(chunk: SplitterChunk, _enc: BufferEncoding, done: TransformCallback): void {
    const now = performance.now();
    if (this.#turnStart === 0) {
      this.#turnStart = now;
      setImmediate(() => (this.#turnStart = 0));
    } else if (now - this.#turnStart > TURN_BUDGET_MS) {
      setImmediate(() => this.#feed(chunk, done));
      return;
    }
    this.#feed(chunk, done);
  }

  override _flush(done: TransformCallback): void {
    this.#finish().then(() => done(this.#failure), done);
  }

  override _read(size: number): void {
    const waiters = this.#readWaiters;
    this.#readWaiters = [];
    for (const w of waiters) w();
    super._read(size);
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    // A stage waiting for a reader that is gone must not wait for ever; nothing more goes out.
    this.#closed = true;
    if (err) this.#failure ??= err;
    const waiters = this.#readWaiters;
    this.#readWaiters = [];
    for (const w of waiters) w();
    done(err);
  }

  #feed(chunk: SplitterChunk, done: TransformCallback): void {
    if (this.#failure) return done(this.#failure);
    this.#first(chunk);
    if (!this.#busy()) return done(this.#failure);
    this.#idle().then(() => done(this.#failure));
  }

  async #finish(): Promise<void> {
    for (const link of this.#links) {
      await this.#idle();
      if (this.#failure) return;
      const ending = link.end();
      if (ending) await ending;
    }
    await this.#idle();
  }

  /** Hands a chunk out of the chain, waiting for the reader when its buffer is full. */
  #out(chunk: SplitterChunk): Promise<void> | undefined {
    if (this.#failure || this.#closed) return undefined;
    if (this.push(chunk)) return undefined;
    return new Promise((resolve) => this.#readWaiters.push(resolve));
  }

  #fail(err: unknown, name: string): void {
    const error = err instanceof Error ? err : new Error(String(err));
    if (!failedStage.has(error)) failedStage.set(error, name);
    this.#failure ??= error;
  }

  #busy(): boolean {
    return this.#links.some((l) => l.busy !== undefined);
  }

  /** Resolves once no stage is working on a chunk and nothing waits at any stage. */
  async #idle(): Promise<void> {
    for (let i = 0; i < this.#links.length;) {
      const busy = this.#links[i]!.busy;
      if (busy) {
        await busy;
        i = 0;
      } else i++;
    }
  }
}

/** One stage in the chain: calls its handler one chunk at a time, queueing what arrives while it waits. */
class Link {
  /** Set while the handler works on a chunk that returned a promise; resolves (never rejects) once the queue is empty. */
  busy: Promise<void> | undefined;
  readonly #queue: SplitterChunk[] = [];
  readonly #stage: NamedHandler;
  readonly #next: Emit;
  readonly #fail: (err: unknown, name: string) => void;
  #failed = false;

  constructor(stage: NamedHandler, next: Emit, fail: (err: unknown, name: string) => void) {
    this.#stage = stage;
    this.#next = next;
    this.#fail = fail;
  }

  readonly take: Emit = (chunk) => {
    if (this.#failed) return undefined;
    if (this.busy) {
      this.#queue.push(chunk);
      return this.busy;
    }
    const pending = this.#call(chunk);
    if (!pending) return undefined;
    this.busy = this.#drain(pending);
    return this.busy;
  };

  /** Ends the stage; the queue is empty by then. */
  end(): Promise<void> | undefined {
    if (this.#failed) return undefined;
    try {
      const ending = this.#stage.handler.end(this.#next);
      return ending ? ending.then(noop, (err: unknown) => this.#failWith(err)) : undefined;
    } catch (err) {
      this.#failWith(err);
      return undefined;
    }
  }

  async #drain(first: Promise<void>): Promise<void> {
    await first;
    while (this.#queue.length > 0 && !this.#failed) {
      const pending = this.#call(this.#queue.shift()!);
      if (pending) await pending;
    }
    this.#queue.length = 0;
    this.busy = undefined;
  }

  /** Calls the handler on one chunk; a promise back (never rejecting) while it works. */
  #call(chunk: SplitterChunk): Promise<void> | undefined {
    try {
      const result = this.#stage.handler.chunk(chunk, this.#next);
      return result ? result.then(noop, (err: unknown) => this.#failWith(err)) : undefined;
    } catch (err) {
      this.#failWith(err);
      return undefined;
    }
  }

  #failWith(err: unknown): void {
    this.#failed = true;
    this.#fail(err, this.#stage.name);
  }
}

function noop(): void {}
