/**
 * The batch operations that write side records (storage/store.ts `SideRecord`) in the layout
 * of layout.ts. They go into the batch that commits their message, or a batch of their own.
 */
import type { DeliveryRecord, MessageMeta } from '../records.js';
import type { SideRecord } from '../store.js';
import { fetchedKey, type StoreOp, type Sublevels } from './layout.js';

/** The operations writing `records`, in order. Reads the metadata a `queue-finished` record updates. */
export async function sideRecordOps(sublevels: Sublevels, records: readonly SideRecord[]): Promise<StoreOp[]> {
  const ops: StoreOp[] = [];
  for (const record of records) {
    switch (record.type) {
      case 'queue-entry':
        ops.push({ type: 'put', sublevel: sublevels.queue, key: record.entry.id, value: record.entry });
        break;
      case 'queue-finished':
        ops.push(...(await queueFinishedOps(sublevels, record.id, record.delivery)));
        break;
      case 'quarantine':
        ops.push({ type: 'put', sublevel: sublevels.quarantine, key: record.record.id, value: record.record });
        break;
      case 'fetched':
        ops.push({ type: 'put', sublevel: sublevels.fetched, key: fetchedKey(record.key), value: record.record });
        break;
    }
  }
  return ops;
}

/** Takes message `id` out of the queue and records `delivery` on its metadata. */
async function queueFinishedOps(sublevels: Sublevels, id: string, delivery: DeliveryRecord): Promise<StoreOp[]> {
  const { queue, messages } = sublevels;
  const ops: StoreOp[] = [{ type: 'del', sublevel: queue, key: id }];
  // Read now, at the commit, not earlier: a quarantine restore may have rewritten the metadata
  // meanwhile. Read on this thread: the record of a delivery is what stands between the
  // server's 250 and a second copy after a crash, and an async read would queue it behind
  // the thread pool's file and database work (a queued message's metadata is recent, in
  // LevelDB's memory or the page cache, so this is a lookup, not a disk wait).
  const meta = messages.getSync(id);
  // A message removed meanwhile has nothing to record on; the queue entry still goes.
  if (meta) ops.push({ type: 'put', sublevel: messages, key: id, value: { ...meta, delivery } satisfies MessageMeta });
  return ops;
}
