/**
 * Alias health as an admin reads it (Cisco guide, "Changing the Status of Aliases" and "Test
 * Connection"): each configured alias beside the state the retriever or an admin recorded.
 */
import type { AliasConfig } from '../config/schema.js';
import type { AliasState, AliasStatus } from './api.js';
import type { ConnectionStep } from '../fetch/connection-test.js';
import type { Backfill } from '../fetch/progress.js';

export { backfillText, type Backfill } from '../fetch/progress.js';

/** One row of `mailgate aliases list`. */
export interface AliasRow {
  name: string;
  address: string;
  department?: string;
  /** `type host:port` of the incoming server, when there is one. */
  incoming?: string;
  /** `status` in the configuration file. */
  configuredStatus: AliasStatus;
  /** What the retriever does now: inactive when the config says so, else the recorded health. */
  status: AliasStatus;
  failures: number;
  lastError?: string;
  lastErrorKind?: string;
  reason?: string;
  changedAt?: string;
  changedBy?: AliasState['changedBy'];
  retryAt?: string;
  /** What the admin should act on before it breaks the alias, e.g. its OAuth app's client secret expiring; absent when nothing. */
  warnings?: string[];
  /** The backlog the running retriever is working through in the alias's mailbox (issue 15); absent when none. */
  backfill?: Backfill;
  /** Several nodes on one store: the node fetching the alias's mailbox now; absent when none holds it (or one node alone). */
  node?: string;
}

/** What `mailgate aliases test` found. */
export interface AliasTestReport {
  alias: string;
  /** Every step passed; a login that could not be tried (no OAuth2 tokens here) is not a pass. */
  ok: boolean;
  steps: ConnectionStep[];
}

/** The row of ALIAS, with its recorded STATE when there is one, WARNINGS (none: no key) and its mailbox's BACKFILL. */
export function aliasRow(alias: AliasConfig, state: AliasState | undefined, warnings: string[] = [], backfill?: Backfill): AliasRow {
  const r: AliasRow = {
    name: alias.name,
    address: alias.address,
    configuredStatus: alias.status,
    status: alias.status === 'inactive' ? 'inactive' : (state?.status ?? 'active'),
    failures: state?.failures ?? 0,
  };
  if (alias.department) r.department = alias.department;
  if (alias.incoming) r.incoming = `${alias.incoming.type} ${alias.incoming.host}:${alias.incoming.port}`;
  if (state) {
    for (const key of ['lastError', 'lastErrorKind', 'reason', 'changedAt', 'changedBy', 'retryAt'] as const) {
      if (state[key] !== undefined) (r as unknown as Record<string, unknown>)[key] = state[key];
    }
  }
  if (alias.status === 'inactive') r.reason = 'status = "inactive" in the configuration';
  if (warnings.length) r.warnings = warnings;
  if (backfill) r.backfill = backfill;
  return r;
}

/** The report of a connection test: ok only when no step failed and every login was tried. */
export function aliasTestReport(alias: string, steps: ConnectionStep[]): AliasTestReport {
  return { alias, ok: steps.every((s) => s.result !== 'fail' && !(s.step === 'login' && s.result === 'skip')), steps };
}
