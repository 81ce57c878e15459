/**
 * The health of each alias's incoming mailbox, kept in the `alias-state` sublevel (layout.ts):
 * what the retriever or an admin last decided, so `mailgate aliases list` can show it and a
 * restart does not forget that an alias was made inactive (Cisco guide, "Changing the Status
 * of Aliases"; Enate "Missing Emails": a failure count with a reason).
 */
import type { Store } from './store.js';

/** Whether the retriever fetches the alias. */
export type AliasStatus = 'active' | 'inactive';

/** Who changed the status last. */
export type AliasChangedBy = 'retriever' | 'admin';

/** One alias's health, as stored. */
export interface AliasState {
  /** `inactive`: not fetched (except the retriever's timed retry when `retryAt` is set). */
  status: AliasStatus;
  /** Consecutive failed connections or polls; 0 after a success. */
  failures: number;
  /** The last failure's message, as the client library or server gave it. */
  lastError?: string;
  /** The last failure's kind (fetchErrorKind: `auth`, `dns`, `tcp_refused`, ...). */
  lastErrorKind?: string;
  /** The last failure in words a mail admin can act on, or why an admin changed the status. */
  reason?: string;
  /** ISO time of the last change of status (or of the first record). */
  changedAt: string;
  /** Who made the last change of status. */
  changedBy: AliasChangedBy;
  /** ISO time of the retriever's next attempt while inactive; absent when only an admin can bring it back. */
  retryAt?: string;
  /** Fingerprint of the `[alias.incoming]` settings the state was reached with: an edited table starts afresh. */
  configHash?: string;
}

/** The stored state of ALIAS, or undefined when none was ever recorded. */
export async function getAliasState(store: Store, alias: string): Promise<AliasState | undefined> {
  return (await store.sublevels.aliasState.get(alias)) as AliasState | undefined;
}

/** Every stored alias state, by alias name. */
export async function listAliasStates(store: Store): Promise<Record<string, AliasState>> {
  const out: Record<string, AliasState> = {};
  for await (const [name, state] of store.sublevels.aliasState.iterator()) out[name] = state as AliasState;
  return out;
}

/** Records ALIAS's state durably (a synced write shared with concurrent commits). */
export async function putAliasState(store: Store, alias: string, state: AliasState): Promise<void> {
  await store.commitBatch([{ type: 'put', sublevel: store.sublevels.aliasState, key: alias, value: state }]);
}
