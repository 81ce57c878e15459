/**
 * How the gateway and the commands get a store: the one place that knows which
 * implementation stands behind the storage interface (today LevelDB in the data directory).
 */
import type { Store } from './store.js';
import { LevelStore, type StoreOptions } from './leveldb/store.js';

export type { StoreOptions } from './leveldb/store.js';

/**
 * Opens (creating if needed) the store in data directory `dir`. Rejects with code
 * `STORE_LOCKED` when another process holds it (the CLI then asks the running gateway),
 * `STORE_SCHEMA_TOO_NEW` when a newer mailgate wrote it.
 */
export function openStore(dir: string, opts: StoreOptions = {}): Promise<Store> {
  return LevelStore.open(dir, opts);
}
