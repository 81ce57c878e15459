/**
 * The records beside the messages in PostgreSQL: the side records a message's commit writes
 * in its transaction, the outbound queue, alias states, fetched keys, OAuth token caches,
 * auto-reply claims and the audit log. Functions over a pool or a transaction's client;
 * PgStore (store.ts) serves the storage interface through them.
 */
import type pg from 'pg';
import type { AliasState, AuditEntry, DeliveryRecord, FetchedKey, FetchedRecord, QueueEntry } from '../records.js';
import type { SideRecord } from '../store.js';

/** A pool, or the client of a transaction in progress. */
export type Db = pg.Pool | pg.PoolClient;

function todo(): never {
  throw new Error('not built yet');
}

/**
 * Writes SIDE records inside transaction TX (begun by the caller, who commits): queue entries,
 * finished entries (the entry goes, `delivery` is set on the message's meta), quarantine
 * records, fetched keys (checking a record's `lease` against `mailbox_leases` for NODE).
 */
export async function applySideRecords(_tx: pg.PoolClient, _records: readonly SideRecord[], _node: string): Promise<void> {
  todo();
}

export async function putQueueEntries(_db: pg.Pool, _entries: readonly QueueEntry[]): Promise<void> {
  todo();
}
export async function getQueueEntry(_db: Db, _id: string): Promise<QueueEntry | undefined> {
  todo();
}
export async function listQueue(_db: Db): Promise<QueueEntry[]> {
  todo();
}
export async function finishQueueEntry(_db: pg.Pool, _id: string, _delivery: DeliveryRecord, _node: string): Promise<void> {
  todo();
}
export async function getAliasState(_db: Db, _alias: string): Promise<AliasState | undefined> {
  todo();
}
export async function listAliasStates(_db: Db): Promise<Record<string, AliasState>> {
  todo();
}
export async function putAliasState(_db: Db, _alias: string, _state: AliasState): Promise<void> {
  todo();
}
export async function getFetched(_db: Db, _keys: readonly FetchedKey[]): Promise<(FetchedRecord | undefined)[]> {
  todo();
}
export async function putFetched(_db: pg.Pool, _key: FetchedKey, _record: FetchedRecord, _node: string): Promise<void> {
  todo();
}
export function listFetched(_db: pg.Pool): AsyncIterable<{ key: FetchedKey; record: FetchedRecord }> {
  todo();
}
export async function readTokenCache(_db: Db, _alias: string): Promise<Buffer | undefined> {
  todo();
}
export async function writeTokenCache(_db: Db, _alias: string, _sealed: Buffer): Promise<void> {
  todo();
}
export function listTokenCaches(_db: pg.Pool): AsyncIterable<{ alias: string; sealed: Buffer }> {
  todo();
}
export async function claimAutoReply(_db: Db, _alias: string, _sender: string, _at: Date, _notBefore: Date): Promise<boolean> {
  todo();
}
export function listAutoReplies(_db: pg.Pool): AsyncIterable<{ alias: string; sender: string; at: Date }> {
  todo();
}
export async function appendAudit(_db: Db, _entry: Omit<AuditEntry, 'id'> & { id?: string }): Promise<AuditEntry> {
  todo();
}
export async function listAudit(_db: Db, _opts: { limit?: number; since?: Date }): Promise<AuditEntry[]> {
  todo();
}
export async function deleteAuditBefore(_db: Db, _before: Date): Promise<number> {
  todo();
}
