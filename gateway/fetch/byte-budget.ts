/**
 * A bound on the bytes of fetched messages held in memory at once: one per mailbox worker
 * (`[alias.incoming] bytes_in_flight`) and one shared by all of them (`[retriever]
 * bytes_in_flight`), so 500 mailboxes fetching at once cannot exhaust memory (issue 15).
 * The retriever takes a message's size before reading it off the wire and gives it back once
 * the message is stored.
 */

/** A counting semaphore over bytes, first come first served. */
export class ByteBudget {
  /** The most bytes held at once. */
  readonly limit: number;
  #used = 0;
  readonly #waiting: { bytes: number; grant: () => void }[] = [];
  readonly #onChange: ((used: number) => void) | undefined;

  /** ON_CHANGE is told the bytes held after each change (a test seam, and room for a gauge). */
  constructor(limit: number, onChange?: (used: number) => void) {
    this.limit = limit;
    this.#onChange = onChange;
  }

  /** The bytes held now. */
  get used(): number {
    return this.#used;
  }

  /**
   * Waits until BYTES fit, then holds them. More than the limit is taken as the whole limit
   * (alone), so one big message waits for the rest to finish instead of waiting forever.
   * Returns what was held, to give back with `release`.
   */
  async acquire(bytes: number): Promise<number> {
    const held = Math.min(Math.max(bytes, 0), this.limit);
    // Behind anyone already waiting, so a large request is not passed over by smaller ones forever.
    if (this.#waiting.length === 0 && this.#used + held <= this.limit) {
      this.#take(held);
      return held;
    }
    await new Promise<void>((grant) => this.#waiting.push({ bytes: held, grant }));
    return held;
  }

  /** Gives back BYTES taken by `acquire`. */
  release(bytes: number): void {
    this.#used -= bytes;
    this.#onChange?.(this.#used);
    while (this.#waiting.length && this.#used + this.#waiting[0]!.bytes <= this.limit) {
      const next = this.#waiting.shift()!;
      this.#take(next.bytes);
      next.grant();
    }
  }

  #take(bytes: number): void {
    this.#used += bytes;
    this.#onChange?.(this.#used);
  }
}

/** Holds BYTES of every budget in BUDGETS (the mailbox's first, then the shared one); resolves to a release function. */
export async function acquireAll(budgets: readonly ByteBudget[], bytes: number): Promise<() => void> {
  const held: [ByteBudget, number][] = [];
  for (const budget of budgets) held.push([budget, await budget.acquire(bytes)]);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    for (const [budget, n] of held) budget.release(n);
  };
}
