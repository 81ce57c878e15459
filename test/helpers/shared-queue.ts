/**
 * A queue shared by several "nodes" in one process, for the dispatcher's tests before a
 * PostgreSQL store stands behind it: one LevelDB store, seen by each node through a view whose
 * `queueClaims` is that node's, over one table of claims kept in memory with the semantics of
 * storage/postgres/queue-claims.ts (a claim is a node and an expiry; a claim is checked and
 * taken in one step; the entry is read once the claim is held, so it is the one the last
 * holder saved). test/postgres-queue-claims.test.ts checks the real thing.
 */
import type { DeliveryRecord, QueueEntry } from '../../storage/records.js';
import type { QueueClaims, Store } from '../../storage/store.js';

/** The claims of every node: queue entry id → holder and expiry (ms since the epoch). */
export class ClaimTable {
  readonly claims = new Map<string, { node: string; until: number }>();

  /** Makes NODE's claims expire now, as if it had been paused past its lease. */
  expire(node: string): void {
    for (const claim of this.claims.values()) if (claim.node === node) claim.until = 0;
  }

  /** A view of STORE for NODE: everything is the store's, except its queue claims. */
  nodeView(store: Store, node: string): Store {
    const claims = new MemoryClaims(store, this, node);
    return new Proxy(store, {
      get(target, prop) {
        if (prop === 'queueClaims') return claims;
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
  }
}

class MemoryClaims implements QueueClaims {
  readonly shared = true;
  readonly #store: Store;
  readonly #table: ClaimTable;
  readonly #node: string;

  constructor(store: Store, table: ClaimTable, node: string) {
    this.#store = store;
    this.#table = table;
    this.#node = node;
  }

  /** Takes the claim on ID if it is free; the previous holder, or undefined; false when not free. */
  #take(id: string, leaseMs: number): string | undefined | false {
    const claim = this.#table.claims.get(id);
    if (claim && claim.until > Date.now()) return false;
    this.#table.claims.set(id, { node: this.#node, until: Date.now() + leaseMs });
    return claim?.node;
  }

  #mine(id: string): boolean {
    return this.#table.claims.get(id)?.node === this.#node;
  }

  async claimDue(limit: number, leaseMs: number): Promise<{ entry: QueueEntry; tookOverFrom?: string }[]> {
    const now = Date.now();
    const due = (await this.#store.listQueue())
      .filter((e) => e.held === undefined && Date.parse(e.nextAttemptAt) <= now)
      .sort((a, b) => Date.parse(a.nextAttemptAt) - Date.parse(b.nextAttemptAt));
    const out: { entry: QueueEntry; tookOverFrom?: string }[] = [];
    for (const candidate of due) {
      if (out.length >= limit) break;
      const was = this.#take(candidate.id, leaseMs);
      if (was === false) continue;
      const entry = await this.#store.getQueueEntry(candidate.id);
      if (!entry || Date.parse(entry.nextAttemptAt) > Date.now()) {
        this.#table.claims.delete(candidate.id);
        continue;
      }
      out.push({ entry, ...(was !== undefined ? { tookOverFrom: was } : {}) });
    }
    return out;
  }

  claims(): Promise<{ id: string; node: string }[]> {
    const now = Date.now();
    return Promise.resolve([...this.#table.claims].filter(([, c]) => c.until > now).map(([id, c]) => ({ id, node: c.node })));
  }

  async claim(id: string, leaseMs: number, opts: { onlyIfDue?: boolean } = {}): Promise<QueueEntry | undefined> {
    if (this.#take(id, leaseMs) === false) return undefined;
    const entry = await this.#store.getQueueEntry(id);
    if (!entry || (opts.onlyIfDue && Date.parse(entry.nextAttemptAt) > Date.now())) {
      this.#table.claims.delete(id);
      return undefined;
    }
    return entry;
  }

  renew(ids: readonly string[], leaseMs: number): Promise<string[]> {
    const kept = ids.filter((id) => this.#mine(id));
    for (const id of kept) this.#table.claims.get(id)!.until = Date.now() + leaseMs;
    return Promise.resolve(kept);
  }

  release(ids: readonly string[]): Promise<void> {
    for (const id of ids) if (this.#mine(id)) this.#table.claims.delete(id);
    return Promise.resolve();
  }

  async saveClaimed(entry: QueueEntry, opts: { release?: boolean } = {}): Promise<boolean> {
    if (!this.#mine(entry.id)) return false;
    await this.#store.putQueueEntries([entry]);
    // Given up only once written: whoever claims next reads what this node saved.
    if (opts.release && this.#mine(entry.id)) this.#table.claims.delete(entry.id);
    return true;
  }

  async finishClaimed(id: string, delivery: DeliveryRecord): Promise<boolean> {
    if (!this.#mine(id)) return false;
    await this.#store.finishQueueEntry(id, delivery);
    this.#table.claims.delete(id);
    return true;
  }
}
