/**
 * Leases on LevelDB: a data directory is opened by one process at a time (STORE_LOCKED), so
 * the store is one node by construction and that node holds every mailbox it fetches, at
 * epoch 0, always confirmed. Kept in memory only: nothing to share, nothing to recover.
 */
import type { FleetNode, LeaseState, Leases, MailboxLease } from '../store.js';

export class OneNodeLeases implements Leases {
  readonly node: string;
  readonly shared = false;
  readonly #startedAt = new Date();
  #seenAt = this.#startedAt;
  readonly #held = new Map<string, MailboxLease>();
  #config: Record<string, unknown> | undefined;

  constructor(node: string) {
    this.node = node;
  }

  balance(mailboxes: readonly string[], ttlMs: number): Promise<MailboxLease[]> {
    this.#seenAt = new Date();
    const expiresAt = new Date(this.#seenAt.getTime() + ttlMs);
    this.#held.clear();
    for (const mailbox of mailboxes) this.#held.set(mailbox, { mailbox, holder: this.node, epoch: 0, expiresAt });
    return Promise.resolve([...this.#held.values()]);
  }

  confirm(): Promise<boolean> {
    return Promise.resolve(true);
  }

  release(mailboxes?: readonly string[]): Promise<MailboxLease[]> {
    const gone = [...this.#held.values()].filter((l) => !mailboxes || mailboxes.includes(l.mailbox));
    for (const lease of gone) this.#held.delete(lease.mailbox);
    return Promise.resolve(gone);
  }

  list(): Promise<LeaseState[]> {
    const rows = [...this.#held.values()].map((l): LeaseState => ({ ...l, held: true }));
    return Promise.resolve(rows.sort((a, b) => (a.mailbox < b.mailbox ? -1 : 1)));
  }

  nodes(): Promise<FleetNode[]> {
    return Promise.resolve([
      { name: this.node, startedAt: this.#startedAt, seenAt: this.#seenAt, live: true, ...(this.#config ? { config: this.#config } : {}) },
    ]);
  }

  announce(config: Record<string, unknown>): Promise<void> {
    this.#config = config;
    return Promise.resolve();
  }
}
