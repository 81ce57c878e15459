/**
 * The retriever's lease keeper (issue 16, "Several nodes: Fetching"): with a store shared by
 * several nodes, each mailbox is fetched by the one node holding its lease. The keeper
 * balances at start and every third of `[retriever] lease_ttl` (renewing well before expiry),
 * tells the retriever which mailboxes it gained and lost, and gives them all back on shutdown.
 * Only the mailboxes this node's configuration fetches are ever asked for.
 */
import type { Logger } from '../../lib/logger.js';
import type { Leases, MailboxLease } from '../../storage/store.js';

/** What the keeper tells the retriever. */
export interface LeaseKeeperOptions {
  leases: Leases;
  /** The identities of the mailboxes this node fetches (recipients.ts `mailboxIdentity`). */
  mailboxes: readonly string[];
  ttlMs: number;
  /** The gateway's logger, which puts the node's name on every line (lib/logger.ts). */
  logger: Logger;
  /** Names a mailbox in log lines (its leading alias). */
  aliasOf(mailbox: string): string;
  /** This node now holds LEASE: start fetching it. */
  taken(lease: MailboxLease): void;
  /** This node no longer holds LEASE: stop fetching it (no new fetch, no move, no delete). */
  lost(lease: MailboxLease): void;
}

export class LeaseKeeper {
  readonly #opts: LeaseKeeperOptions;
  readonly #held = new Map<string, MailboxLease>();
  #timer: NodeJS.Timeout | undefined;
  #round: Promise<void> = Promise.resolve();
  #stopped = false;
  /** When the last round that reached the database began, by this node's clock. */
  #renewedAt = 0;

  constructor(opts: LeaseKeeperOptions) {
    this.#opts = opts;
  }

  /** Balances now, then every third of the lease time. */
  start(): void {
    const tick = () => {
      this.#round = this.#balance().finally(() => {
        if (!this.#stopped) this.#timer = setTimeout(tick, Math.max(1, Math.floor(this.#opts.ttlMs / 3)));
      });
    };
    tick();
  }

  /** The lease held on MAILBOX, if any. */
  held(mailbox: string): MailboxLease | undefined {
    return this.#held.get(mailbox);
  }

  /** A worker found LEASE gone (its confirm failed, or a commit was refused): stop fetching now, not at the next round. */
  dropped(lease: { mailbox: string; epoch: number }): void {
    const held = this.#held.get(lease.mailbox);
    if (!held || held.epoch !== lease.epoch) return;
    this.#held.delete(lease.mailbox);
    this.#log('warn', held, 'mailbox lease lost: another node may fetch it now; this node stops fetching it');
    this.#opts.lost(held);
  }

  /** No more rounds (the mailboxes stay held until `release`). */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#round;
  }

  /** Gives every lease back, so the other nodes take the mailboxes at their next round rather than after the lease time. */
  async release(): Promise<void> {
    try {
      for (const lease of await this.#opts.leases.release()) this.#log('info', lease, 'mailbox lease released');
    } catch (err) {
      this.#opts.logger.error({ err }, 'cannot give the mailbox leases back; the other nodes take them once they lapse');
    }
    this.#held.clear();
  }

  async #balance(): Promise<void> {
    const { leases, mailboxes, ttlMs } = this.#opts;
    const began = Date.now();
    let now: MailboxLease[];
    try {
      now = await leases.balance(mailboxes, ttlMs);
    } catch (err) {
      this.#opts.logger.error({ err }, 'cannot renew the mailbox leases; fetching goes on until they lapse');
      // Not renewed within the lease time: by now another node may hold them. Stop, whatever
      // the database says later (fencing refuses this node's records anyway).
      if (Date.now() - this.#renewedAt >= ttlMs) {
        for (const lease of [...this.#held.values()]) {
          this.#held.delete(lease.mailbox);
          this.#log('warn', lease, 'mailbox lease lapsed: not renewed within lease_ttl; this node stops fetching it');
          this.#opts.lost(lease);
        }
      }
      return;
    }
    this.#renewedAt = began;
    if (this.#stopped) return;
    const current = new Map(now.map((l) => [l.mailbox, l]));
    const gone = [...this.#held.values()].filter((lease) => current.get(lease.mailbox)?.epoch !== lease.epoch);
    // Who holds them now says why they went: nobody (this round gave them back for another
    // node's share) or another node (they lapsed first: this node was paused or cut off).
    const rows = gone.length ? await leases.list().catch(() => []) : [];
    for (const lease of gone) {
      this.#held.delete(lease.mailbox);
      const row = rows.find((r) => r.mailbox === lease.mailbox);
      if (row?.held && row.holder !== leases.node)
        this.#log('warn', lease, `mailbox lease lost to node ${row.holder}: it lapsed before this node renewed it; this node stops fetching it`, {
          to: row.holder,
          to_epoch: row.epoch,
        });
      else this.#log('info', lease, 'mailbox lease given back so another node gets its share; this node stops fetching it');
      this.#opts.lost(lease);
    }
    for (const lease of now) {
      if (this.#held.has(lease.mailbox)) {
        this.#held.set(lease.mailbox, lease);
        continue;
      }
      this.#held.set(lease.mailbox, lease);
      this.#log('info', lease, 'mailbox lease taken: this node fetches it');
      this.#opts.taken(lease);
    }
  }

  #log(level: 'info' | 'warn', lease: { mailbox: string; epoch: number }, msg: string, more: object = {}): void {
    this.#opts.logger[level]({ mailbox: lease.mailbox, alias: this.#opts.aliasOf(lease.mailbox), epoch: lease.epoch, ...more }, msg);
  }
}
