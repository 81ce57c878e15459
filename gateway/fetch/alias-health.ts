/**
 * Alias health (Cisco guide, "Changing the Status of Aliases"): the retriever tries to connect
 * three times (`auto_connect_retries`, CCaaS); after the third failure in a row the alias becomes inactive. When the cause was
 * the network or the server being unreachable, or the mailbox being in use elsewhere, it tries
 * again after `health_retry_interval` (the guide's ten minutes) and makes the alias active when
 * it connects. Bad credentials or the IMAP/POP3 service not running keep it inactive until an
 * admin reactivates it. Failures are counted with a reason in words (Enate, "Missing Emails");
 * failures.ts says, kind by kind, which is which and in what words.
 */
import { fingerprint } from '../../lib/fingerprint.js';
import type { IncomingServerConfig } from '../config/schema.js';
import type { Metrics } from '../../lib/metrics.js';
import type { Store } from '../../storage/store.js';
import { fetchFailures, type FetchFailureKind } from './failures.js';
import type { AliasChangedBy, AliasState, AliasStatus } from '../../storage/records.js';

/** Fingerprint of the incoming settings: when an admin edits them, a state reached with the old ones no longer holds. */
export function incomingHash(server: IncomingServerConfig): string {
  const { host, port, type, security, ca_file, user, password, folder, oauth2, auth_identity } = server;
  return fingerprint({ host, port, type, security, ca_file, user, password, folder, oauth2, auth_identity });
}

/** Where health changes are reported. */
export interface HealthDeps {
  store: Store;
  logger: { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void };
  metrics?: Metrics;
  /** The clock, for tests. */
  now?: () => number;
}

/**
 * One alias's health, in memory and in the store. The retriever's worker is its only writer
 * while the gateway runs (admin changes reach it through the worker), so no write is lost.
 * With several nodes, an admin on another node records the change in the store and then
 * notifies this one; a notice can be missed (storage/store.ts, Notice), so before writing its
 * own state the worker reads the store and takes in an admin's change it has not applied
 * rather than overwrite it.
 */
export class AliasHealth {
  #state: AliasState;
  readonly #now: () => number;

  readonly #deps: HealthDeps;
  readonly #server: IncomingServerConfig;

  private constructor(
    deps: HealthDeps,
    readonly alias: string,
    server: IncomingServerConfig,
    state: AliasState,
  ) {
    this.#deps = deps;
    this.#server = server;
    this.#state = state;
    this.#now = deps.now ?? Date.now;
  }

  /** Loads the stored state; a state the retriever reached with other incoming settings starts afresh. */
  static async load(deps: HealthDeps, alias: string, server: IncomingServerConfig): Promise<AliasHealth> {
    const hash = incomingHash(server);
    const stored = await deps.store.getAliasState(alias);
    const now = new Date((deps.now ?? Date.now)()).toISOString();
    const fresh: AliasState = { status: 'active', failures: 0, changedAt: now, changedBy: 'retriever', configHash: hash };
    const health = new AliasHealth(deps, alias, server, stored ?? fresh);
    if (stored && stored.configHash !== undefined && stored.configHash !== hash && stored.changedBy === 'retriever' && stored.status === 'inactive') {
      await health.#change({ ...fresh, reason: 'incoming settings changed' }, 'info', 'alias active again: its incoming settings were changed');
    }
    return health;
  }

  /** A copy of the current state. */
  get state(): AliasState {
    return { ...this.#state };
  }

  get active(): boolean {
    return this.#state.status === 'active';
  }

  /** Milliseconds to wait before the next connection: 0 when active or a retry is due, Infinity when only an admin can bring it back. */
  holdMs(): number {
    if (this.#state.status === 'active') return 0;
    if (this.#state.changedBy === 'admin' || !this.#state.retryAt) return Infinity;
    return Math.max(0, Date.parse(this.#state.retryAt) - this.#now());
  }

  /** A connection and poll succeeded: failures back to 0, and active again if the retriever had made it inactive. */
  async succeeded(): Promise<void> {
    if (this.#state.status === 'active' && this.#state.failures === 0) return;
    if (await this.#adminChangedMeanwhile()) return;
    const s = this.#state;
    // A poll that was under way when an admin deactivated the alias (here or, recorded
    // meanwhile, on another node) does not undo the admin.
    if (s.status === 'inactive' && s.changedBy === 'admin') return;
    const next: AliasState = { status: 'active', failures: 0, changedAt: s.changedAt, changedBy: s.changedBy, configHash: incomingHash(this.#server) };
    if (s.status === 'inactive') {
      await this.#change(
        { ...next, changedAt: this.#iso(), changedBy: 'retriever', reason: `connected again after: ${s.reason ?? 'a failure'}` },
        'info',
        'alias active again: the retriever connected',
      );
    } else {
      this.#state = next;
      await this.#deps.store.putAliasState(this.alias, next);
    }
  }

  /** A connection or poll failed with KIND (failures.ts fetchFailureKind): counted unless ours; the `auto_connect_retries`th in a row makes the alias inactive. */
  async failed(err: unknown, kind: FetchFailureKind): Promise<void> {
    const { recovery, reason } = fetchFailures[kind];
    if (recovery === 'ours') return;
    // An admin's reset, or deactivation, recorded meanwhile on another node wins over this count.
    if (await this.#adminChangedMeanwhile()) return;
    const s = this.#state;
    const failures = s.failures + 1;
    const lastError = errorText(err);
    const retry = recovery === 'retry';
    const base: AliasState = { ...s, failures, lastError, lastErrorKind: kind, reason, configHash: incomingHash(this.#server) };
    delete base.retryAt;
    // CCaaS "Auto connect retries" (default 3, the Cisco guide's three): attempts before failing.
    if (s.status === 'active' && failures >= this.#server.auto_connect_retries) {
      const next: AliasState = { ...base, status: 'inactive', changedAt: this.#iso(), changedBy: 'retriever', ...(retry ? { retryAt: this.#retryAt() } : {}) };
      await this.#change(
        next,
        'warn',
        retry
          ? `alias inactive after ${failures} failed connections: ${reason}; trying again in ${this.#server.health_retry_interval} s`
          : `alias inactive after ${failures} failed connections: ${reason}; an admin must fix it and run \`mailgate aliases activate ${this.alias}\``,
      );
      return;
    }
    // Still active (fewer than auto_connect_retries), or the timed retry of an inactive alias failed again.
    const next: AliasState = s.status === 'inactive' && retry ? { ...base, retryAt: this.#retryAt() } : base;
    this.#state = next;
    await this.#deps.store.putAliasState(this.alias, next);
  }

  /** An admin's change (`mailgate aliases activate|deactivate`): failures reset, no timed retry. */
  async setByAdmin(status: AliasStatus): Promise<AliasState> {
    const next: AliasState = {
      status,
      failures: 0,
      changedAt: this.#iso(),
      changedBy: 'admin',
      reason: status === 'active' ? 'activated by an admin' : 'deactivated by an admin',
      configHash: incomingHash(this.#server),
    };
    await this.#change(next, 'info', `alias ${status === 'active' ? 'activated' : 'deactivated'} by an admin`);
    return this.state;
  }

  /**
   * Takes in STORED when it is an admin's record this worker does not hold (made on another
   * node, its notice missed or not yet arrived). Returns it when it changes the status (the
   * caller logs it and wakes the worker); one that only resets the failures is taken in quietly.
   */
  adoptAdminChange(stored: AliasState | undefined): AliasState | undefined {
    const s = this.#state;
    // By content, not by clock (nodes' clocks may differ): the worker's own writes are what it
    // holds, so an admin's record that differs from it is one the worker never applied.
    if (!stored || stored.changedBy !== 'admin' || (s.changedBy === 'admin' && s.changedAt === stored.changedAt && s.status === stored.status))
      return undefined;
    this.#state = { ...stored };
    if (s.status === stored.status) return undefined;
    this.#deps.metrics?.inc('mailgate_alias_status_changes_total', {
      alias: this.alias,
      to: stored.status,
      by: 'admin',
      kind: stored.status === 'inactive' ? 'admin' : 'none',
    });
    return this.state;
  }

  /** Before the worker records its own state: true when an admin's change recorded meanwhile was taken in instead (and logged). */
  async #adminChangedMeanwhile(): Promise<boolean> {
    // One node on its own store: admin changes come only through this worker.
    if (!this.#deps.store.leases.shared) return false;
    const adopted = this.adoptAdminChange(await this.#deps.store.getAliasState(this.alias));
    if (!adopted) return false;
    this.#deps.logger.info(unheardAdminChangeFields(this.alias, adopted), unheardAdminChangeText(this.alias, adopted));
    return true;
  }

  async #change(next: AliasState, level: 'info' | 'warn', msg: string): Promise<void> {
    const from = this.#state.status;
    this.#state = next;
    await this.#deps.store.putAliasState(this.alias, next);
    this.#deps.logger[level](
      {
        alias: this.alias,
        from,
        to: next.status,
        by: next.changedBy,
        reason: next.reason,
        kind: next.lastErrorKind,
        failures: next.failures,
        ...(next.retryAt ? { retry_at: next.retryAt } : {}),
      },
      msg,
    );
    if (from !== next.status)
      this.#deps.metrics?.inc('mailgate_alias_status_changes_total', {
        alias: this.alias,
        to: next.status,
        by: next.changedBy,
        kind: next.status === 'inactive' ? (next.lastErrorKind ?? 'admin') : 'none',
      });
  }

  #iso(): string {
    return new Date(this.#now()).toISOString();
  }

  #retryAt(): string {
    return new Date(this.#now() + this.#server.health_retry_interval * 1000).toISOString();
  }
}

/** An admin change made while no retriever runs the alias (gateway stopped, or the alias not fetched). */
export async function setAliasStatusInStore(store: Store, alias: string, status: AliasStatus, by: AliasChangedBy = 'admin'): Promise<AliasState> {
  const next: AliasState = {
    status,
    failures: 0,
    changedAt: new Date().toISOString(),
    changedBy: by,
    reason: status === 'active' ? 'activated by an admin' : 'deactivated by an admin',
    ...(by === 'admin' ? adminNode(store) : {}),
  };
  await store.putAliasState(alias, next);
  return next;
}

/** With several nodes, the node an admin's change is made on, for the log of the node that applies it. */
function adminNode(store: Store): { changedOn?: string } {
  return store.leases.shared ? { changedOn: store.leases.node } : {};
}

/** The log line of an admin's change recorded on another node that this node applies late (its notice missed). */
export function unheardAdminChangeText(alias: string, state: AliasState): string {
  const on = state.changedOn ? `on node ${state.changedOn}` : 'on another node';
  return `alias ${alias} ${state.status === 'active' ? 'activated' : 'deactivated'} by an admin ${on} while its notice was not reaching this node; applied now`;
}

/** The fields of that log line. */
export function unheardAdminChangeFields(alias: string, state: AliasState): Record<string, unknown> {
  return { alias, status: state.status, changed_at: state.changedAt, ...(state.changedOn ? { from: state.changedOn } : {}) };
}

function errorText(err: unknown): string {
  const e = err as { message?: unknown; responseText?: unknown };
  const text =
    typeof e?.responseText === 'string' && e.responseText
      ? `${String(e.message)}: ${e.responseText}`
      : typeof e?.message === 'string'
        ? e.message
        : String(err);
  return text.split('\n')[0]!.slice(0, 500);
}
