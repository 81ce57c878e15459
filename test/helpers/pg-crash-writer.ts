/**
 * A process that writes one endless message into a PostgreSQL store and never commits it, for
 * test/postgres-store.test.ts to SIGKILL in the middle: `node pg-crash-writer.js URL DIR NODE`.
 * First a quarantine spool of two chunks (a blocked part kept while its message streams), then
 * the message, chunk after chunk, until the process is killed.
 */
import { randomBytes } from 'node:crypto';
import { PgStore } from '../../storage/postgres/store.js';
import { newMessageId } from '../../storage/ids.js';

const [url, dir, node] = process.argv.slice(2) as [string, string, string];
const store = await PgStore.open({ url, dir, node });
const id = newMessageId();
const spool = store.createQuarantineSpool(`${id}.1`);
await spool.write(randomBytes(300 * 1024));
await spool.close();
const writer = store.createMessageWriter(id);
const piece = randomBytes(64 * 1024);
for (;;) {
  await new Promise<void>((resolve, reject) => writer.write(piece, (err) => (err ? reject(err) : resolve())));
}
