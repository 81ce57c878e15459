/**
 * Runs test files on PostgreSQL (`npm run test:postgres`, `npm run test:postgres:store-dependent`):
 * starts one cluster for the whole run, hands it to every test process through
 * MAILGATE_TEST_POSTGRES (test/helpers/test-store.ts makes a database per data directory on it,
 * and drops them as the process exits), runs `node --test` on the files given, and stops the
 * cluster once it is done, with its exit code. One cluster instead of one per file saves an
 * initdb and a server start (about 5 s) per file. Tests that stop and start a server, or look
 * at its log, still start their own. Not a test itself (no `.test.` in the name):
 *   node dist/test/run-postgres.js FILE...
 */
import { spawn } from 'node:child_process';
import { SHARED_CLUSTER_ENV, startPostgres } from './helpers/postgres.js';

const files = process.argv.slice(2);
if (files.length === 0) {
  process.stderr.write('usage: node dist/test/run-postgres.js FILE...\n');
  process.exit(2);
}
// Two test files at once, each with gateways of two pools: more than PostgreSQL's 100.
const cluster = await startPostgres({ fsync: false, settings: { max_connections: '500' } });
const base = new URL(cluster.url('postgres'));
// Three files at once, as `npm test`: on two cores the tests' waits (polls, retries, servers
// starting) leave room for a third (measured: the PostgreSQL pass 385 s at two, 338 s at three).
const child = spawn(process.execPath, ['--test', '--test-concurrency=3', ...files], {
  stdio: 'inherit',
  env: { ...process.env, MAILGATE_TEST_STORE: 'postgres', [SHARED_CLUSTER_ENV]: `postgres://${base.username}@${base.host}` },
});
// Ctrl-C reaches the whole process group; a TERM from a CI runner is passed on, so the run
// ends through its own cleanup and the cluster is stopped after it.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => child.kill(signal));
const code = await new Promise<number>((resolve) => child.on('exit', (c, s) => resolve(c ?? (s ? 1 : 0))));
await cluster.stop();
process.exit(code);
