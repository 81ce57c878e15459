/**
 * `mailgate storage migrate` against a real PostgreSQL (test/helpers/postgres.ts), the checks a
 * node makes before it uses a database, and `mailgate storage copy` from LevelDB into a new
 * LevelDB directory and into PostgreSQL, everything compared through the storage interface.
 *
 * @store-pinned: each config it writes names its store.
 */
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, chown, copyFile, readFile, writeFile } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import pg from 'pg';
import { openStore } from '../storage/open.js';
import { checkDatabase, readSchemaVersion } from '../storage/postgres/migrate.js';
import { SCHEMA_VERSION } from '../storage/postgres/schema.js';
import { createIdGenerator, newMessageId } from '../storage/ids.js';
import type { MessageMeta, QueueEntry } from '../storage/records.js';
import type { Store } from '../storage/store.js';
import { runCli, startTestGateway } from './helpers/gateway.js';
import { fixture, tempDir } from './helpers/paths.js';
import { loadConfigText } from '../gateway/config/load.js';
import { configuredStore } from '../gateway/config/storage.js';
import { startPostgres, type TestPostgres } from './helpers/postgres.js';
import { sampleMeta } from './helpers/store-contract.js';

const run = promisify(execFile);

let postgres: TestPostgres;
before(async () => {
  postgres = await startPostgres({ fsync: false });
});
after(() => postgres?.stop());

/** A config file in a new directory: LevelDB in `data` there unless URL is given, node `NODE`. */
async function configFor(lines: string[] = [], env?: { url: string }): Promise<{ file: string; dir: string; cleanup(): Promise<void> }> {
  const { dir, cleanup } = await tempDir('mailgate-storage-');
  const file = path.join(dir, 'mailgate.toml');
  const storage = env ? ['[storage]', `postgres = ${JSON.stringify(env.url)}`] : [];
  await writeFile(file, [`data_dir = ${JSON.stringify(path.join(dir, 'data'))}`, ...lines, ...storage, ''].join('\n'));
  return { file, dir, cleanup };
}

async function schemaRows(url: string): Promise<{ version: number; description: string; applied_by: string }[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (
      await client.query<{ version: number; description: string; applied_by: string }>(
        'SELECT version, description, applied_by FROM mailgate_schema ORDER BY version',
      )
    ).rows;
  } finally {
    await client.end();
  }
}

test('storage migrate creates the schema on an empty database, recording which node did, and finds it up to date the next time', async (t) => {
  const url = await postgres.createDatabase();
  const { file, cleanup } = await configFor(['[node]', 'name = "mx-a"'], { url });
  t.after(cleanup);
  const first = await runCli(['storage', 'migrate', '--config', file]);
  assert.equal(first.code, 0, first.stderr);
  assert.equal(first.stdout.toString(), 'schema 0 -> 1: the store for one node or a fleet\n');
  assert.deepEqual(await schemaRows(url), [{ version: 1, description: 'the store for one node or a fleet', applied_by: 'mx-a' }]);
  const again = await runCli(['storage', 'migrate', '--config', file]);
  assert.equal(again.code, 0, again.stderr);
  assert.equal(again.stdout.toString(), `schema is up to date (${SCHEMA_VERSION})\n`);
  assert.equal((await schemaRows(url)).length, 1);
});

test('two storage migrate at once: both succeed, one of them migrates, one set of tables', async () => {
  const url = await postgres.createDatabase();
  const runs = await Promise.all([1, 2].map(() => runCli(['storage', 'migrate', '--url', url])));
  for (const r of runs) assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(runs.map((r) => r.stdout.toString()).sort(), ['schema 0 -> 1: the store for one node or a fleet\n', 'schema is up to date (1)\n']);
  assert.equal((await schemaRows(url)).length, 1);
  const tables = await postgres.query(
    `SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public' AND tablename = 'messages'`,
    new URL(url).pathname.slice(1),
  );
  assert.equal(tables.rows[0].n, 1);
});

test('a database a newer mailgate migrated: storage migrate exits 1 with STORE_SCHEMA_TOO_NEW, and no command opens it', async (t) => {
  const url = await postgres.createDatabase();
  const { file, cleanup } = await configFor([], { url });
  t.after(cleanup);
  assert.equal((await runCli(['storage', 'migrate', '--config', file])).code, 0);
  await postgres.query(`INSERT INTO mailgate_schema (version, description, applied_by) VALUES (2, 'from the future', 'mx-z')`, new URL(url).pathname.slice(1));
  const r = await runCli(['storage', 'migrate', '--config', file]);
  assert.equal(r.code, 1);
  assert.equal(r.stdout.length, 0);
  assert.match(
    r.stderr,
    /^mailgate: storage migrate: STORE_SCHEMA_TOO_NEW: The store at postgres:\/\/\S+ has layout version 2, newer than the 1 this mailgate knows: upgrade mailgate$/m,
  );
  const list = await runCli(['messages', 'list', '--config', file]);
  assert.equal(list.code, 1);
  assert.match(list.stderr, /newer than the 1 this mailgate knows/);
});

test('storage migrate on a LevelDB configuration says LevelDB migrates itself; a bad --url is a usage error', async (t) => {
  const { file, cleanup } = await configFor();
  t.after(cleanup);
  const r = await runCli(['storage', 'migrate', '--config', file]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout.toString(), /keeps its store in LevelDB \(.*data\), which migrates itself when it is opened: nothing to do/);
  const bad = await runCli(['storage', 'migrate', '--url', 'mysql://db/mailgate']);
  assert.equal(bad.code, 2);
});

test('the database password from ${ENV} logs in to a server that asks for one; a wrong one is refused with its SQLSTATE', async (t) => {
  const database = `pw_${process.pid}`;
  await postgres.query(`CREATE ROLE gateway LOGIN PASSWORD 'Corr3ct horse:@/'`);
  await postgres.query(`CREATE DATABASE ${database} OWNER gateway`);
  // Only this role must give a password (scram-sha-256); the tests' superuser stays trusted.
  const hba = path.join(postgres.dir, 'data', 'pg_hba.conf');
  await writeFile(hba, `host all gateway 127.0.0.1/32 scram-sha-256\n${await readFile(hba, 'utf8')}`);
  await postgres.query('SELECT pg_reload_conf()');
  const url = `postgres://gateway@127.0.0.1:${postgres.port}/${database}`;
  const { file, cleanup } = await configFor(['[storage]', `postgres = ${JSON.stringify(url)}`, 'password = "${MAILGATE_DB_PASSWORD}"']);
  t.after(cleanup);
  const ok = await runCli(['storage', 'migrate', '--config', file], { env: { MAILGATE_DB_PASSWORD: 'Corr3ct horse:@/', PGPASSWORD: undefined } });
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout.toString(), /schema 0 -> 1/);
  const wrong = await runCli(['storage', 'migrate', '--config', file], { env: { MAILGATE_DB_PASSWORD: 'wrong', PGPASSWORD: undefined } });
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /storage migrate: 28P01: password authentication failed for user "gateway"/);
  assert.doesNotMatch(wrong.stderr, /Corr3ct|wrong/, 'no password in the error');
});

test('before a node uses a database: an empty one is made only when asked (as serve does), otherwise STORE_SCHEMA_TOO_OLD names storage migrate; synchronous_commit off is refused', async (t) => {
  const url = await postgres.createDatabase();
  const { file, cleanup } = await configFor([], { url });
  t.after(cleanup);
  // A command on a stopped node does not make the tables: upgrading a fleet's database is the admin's call.
  const list = await runCli(['messages', 'list', '--config', file]);
  assert.equal(list.code, 1);
  assert.match(list.stderr, /has no mailgate tables: run `mailgate storage migrate` to create them/);

  const db = new pg.Pool({ connectionString: url, max: 1 });
  t.after(() => db.end());
  const where = 'the test database';
  await assert.rejects(checkDatabase(db, { where, node: 'mx-a' }), { code: 'STORE_SCHEMA_TOO_OLD' });
  assert.equal(await readSchemaVersion(db), 0);
  await checkDatabase(db, { where, node: 'mx-a', createIfEmpty: true });
  assert.equal(await readSchemaVersion(db), SCHEMA_VERSION, 'a first serve on an empty database just works');
  await checkDatabase(db, { where, node: 'mx-a' });

  const name = new URL(url).pathname.slice(1);
  await postgres.query(`ALTER DATABASE "${name}" SET synchronous_commit = off`);
  const unsafe = new pg.Pool({ connectionString: url, max: 1 });
  t.after(() => unsafe.end());
  await assert.rejects(checkDatabase(unsafe, { where, node: 'mx-a' }), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'STORE_UNSAFE_COMMIT');
    assert.match(err.message, /synchronous_commit = off: .* set synchronous_commit = on/);
    return true;
  });
});

// A store with one of everything a copy must carry.

const ids = createIdGenerator(() => Date.parse('2026-03-01T08:00:00.000Z'));

/** The contract's sample record, fetched by a retriever. */
function meta(id: string, over: Partial<MessageMeta> = {}): MessageMeta {
  return sampleMeta(id, { source: { kind: 'imap', alias: 'sales' }, ...over });
}

async function store(target: Store, id: string, bytes: Buffer, m: MessageMeta, quarantined: Buffer[] = []): Promise<void> {
  const writer = target.createMessageWriter(id);
  const records = [];
  for (const [i, part] of quarantined.entries()) {
    const spool = target.createQuarantineSpool(`${id}.${i + 1}`);
    await spool.write(part);
    await spool.close();
    records.push({
      type: 'quarantine' as const,
      record: {
        id: `${id}.${i + 1}`,
        messageId: id,
        fileName: 'invoice.exe',
        contentType: 'application/octet-stream',
        size: part.length,
        storedBytes: part.length,
        rule: 'blocked extension .exe',
        evidence: ['name invoice.exe'],
        date: '2026-03-01T08:00:00.000Z',
      },
    });
  }
  writer.end(bytes);
  await new Promise((resolve) => writer.on('finish', resolve));
  await writer.commit(m, records);
}

async function fillStore(target: Store): Promise<void> {
  // Bigger than a chunk of either store, and not a multiple of one.
  const big = randomBytes(700_000 + 123);
  const first = ids();
  await store(
    target,
    first,
    big,
    meta(first, {
      subject: 'Big',
      _AttachmentFileNames: ['invoice.exe'],
      attachments: [{ fileName: 'invoice.exe', contentType: 'application/octet-stream', size: 9000, blocked: true }],
    }),
    [randomBytes(9000)],
  );
  for (let i = 0; i < 5; i++) {
    const id = ids();
    await store(target, id, Buffer.from(`Subject: ${i}\r\n\r\nbody ${i}\r\n`), meta(id, { subject: `Message ${i}` }));
    await target.putFetched({ alias: 'sales', key: `1700000000:${i}` }, { id });
  }
  const outbound = ids();
  const entry: QueueEntry = {
    id: outbound,
    kind: 'outbound',
    alias: 'sales',
    mailFrom: 'sales@example.com',
    requestedRecipients: ['customer@example.org', 'other@example.org'],
    recipients: [
      { address: 'customer@example.org', status: 'delivered', attempts: 1, deliveredAt: '2026-03-01T08:01:00.000Z' },
      { address: 'other@example.org', status: 'pending', attempts: 1 },
    ],
    queuedAt: '2026-03-01T08:00:00.000Z',
    attempts: 1,
    nextAttemptAt: '2026-03-01T08:10:00.000Z',
  };
  await store(
    target,
    outbound,
    Buffer.from('Subject: reply\r\n\r\nthanks\r\n'),
    meta(outbound, { direction: 'outbound', source: { kind: 'cli', alias: 'sales' } }),
  );
  await target.putQueueEntries([entry]);
  await target.putAliasState('sales', {
    status: 'inactive',
    failures: 3,
    lastError: 'login refused',
    changedAt: '2026-03-01T08:00:00.000Z',
    changedBy: 'retriever',
  });
  await target.writeTokenCache('sales', randomBytes(512));
  await target.claimAutoReply('sales', 'customer@example.org', new Date('2026-03-01T08:00:00.000Z'), new Date(0));
  for (const action of ['sign-in', 'restore', 'retry']) {
    await target.appendAudit({ at: '2026-03-01T08:00:00.000Z', who: 'user alice', action, from: '127.0.0.1', outcome: 'ok' });
  }
}

/** A config whose LevelDB store holds one of everything (`fillStore`), and those contents. */
async function filledSource(t: TestContext, opts: { audit?: number } = {}): Promise<{ file: string; dir: string; before: unknown }> {
  const { file, dir, cleanup } = await configFor();
  t.after(cleanup);
  const source = await openStore(path.join(dir, 'data'));
  await fillStore(source);
  await Promise.all(
    Array.from({ length: opts.audit ?? 0 }, (_, i) =>
      source.appendAudit({ at: '2026-03-01T08:00:00.000Z', who: 'user alice', action: 'retry', target: `entry ${i}`, from: '127.0.0.1', outcome: 'ok' }),
    ),
  );
  const before = await contents(source);
  await source.close();
  return { file, dir, before };
}

/** Everything in S through the interface, bytes included, in an order both stores agree on. */
async function contents(s: Store): Promise<unknown> {
  const messages = await s.listMessages({ limit: 1000 });
  const all = async <T>(items: AsyncIterable<T>) => {
    const out: T[] = [];
    for await (const item of items) out.push(item);
    return out;
  };
  const quarantine = await s.listQuarantine();
  return {
    messages: await Promise.all(messages.map(async (m) => ({ meta: m, bytes: (await buffer(s.openRaw(m.id))).toString('base64') }))),
    quarantine: await Promise.all(quarantine.map(async (r) => ({ record: r, bytes: (await buffer(s.openQuarantined(r.id))).toString('base64') }))),
    queue: await s.listQueue(),
    aliasStates: await s.listAliasStates(),
    fetched: (await all(s.listFetched())).sort((a, b) => a.key.key.localeCompare(b.key.key)),
    tokenCaches: (await all(s.listTokenCaches())).map((c) => ({ alias: c.alias, sealed: Buffer.from(c.sealed).toString('base64') })),
    autoReplies: (await all(s.listAutoReplies())).map((r) => ({ ...r, at: r.at.toISOString() })),
    audit: await s.listAudit({ limit: 1000 }),
  };
}

test('storage copy into a new directory: every message with its bytes and quarantined attachment, the queue, alias states, fetched keys, token cache, auto-reply and audit', async (t) => {
  // More audit entries than the copy reads at a time: a long-kept log comes over page by page, every entry once.
  const { file, dir, before } = await filledSource(t, { audit: 250 });

  const copyDir = path.join(dir, 'copy');
  const r = await runCli(['storage', 'copy', '--config', file, '--to', copyDir]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stdout.toString(),
    /^copied 7 messages \(0\.7 MB\), 1 quarantined attachments, 1 queue entries, 1 alias states, 5 fetched keys, 1 token caches, 1 auto-replies, 253 audit entries$/m,
  );
  assert.match(r.stdout.toString(), /^checked: .*copy holds what .*data does \(7 messages, 0\.7 MB\)$/m);

  const copy = await openStore(copyDir);
  t.after(() => copy.close());
  assert.deepEqual(await contents(copy), before);
  const reopened = await openStore(path.join(dir, 'data'));
  t.after(() => reopened.close());
  assert.deepEqual(await contents(reopened), before, 'the source is as it was');
});

test('storage copy refuses a target that is not empty, and its own store', async (t) => {
  const { file, dir } = await filledSource(t);
  await writeFile(path.join(dir, 'notes.txt'), 'mine\n');
  const busy = await runCli(['storage', 'copy', '--config', file, '--to', dir]);
  assert.equal(busy.code, 1);
  assert.match(busy.stderr, /storage copy: STORE_COPY_TARGET_NOT_EMPTY: The target .* already holds files/);
  const self = await runCli(['storage', 'copy', '--config', file, '--to', path.join(dir, 'data')]);
  assert.equal(self.code, 2);
  assert.match(self.stderr, /is the store being copied/);

  // A running gateway changes its store under the copy: stop it first.
  const gw = await startTestGateway();
  t.after(() => gw.cleanup());
  const running = await runCli(['storage', 'copy', '--config', gw.configFile, '--to', path.join(dir, 'elsewhere')]);
  assert.equal(running.code, 1);
  assert.match(running.stderr, /storage copy: GATEWAY_RUNNING: another mailgate is already running on .*: stop it first/);
});

test('storage copy refuses a database that already holds records', async (t) => {
  const { file } = await filledSource(t);
  const url = await postgres.createDatabase();
  assert.equal((await runCli(['storage', 'migrate', '--url', url])).code, 0);
  await postgres.query(
    `INSERT INTO audit (id, entry) VALUES ('${newMessageId()}', '{"at":"2026-03-01T08:00:00.000Z","who":"x","action":"sign-in","from":"::1","outcome":"ok"}')`,
    new URL(url).pathname.slice(1),
  );
  const full = await runCli(['storage', 'copy', '--config', file, '--to', url]);
  assert.equal(full.code, 1);
  assert.match(full.stderr, /STORE_COPY_TARGET_NOT_EMPTY: The target postgres:.* already holds audit entries/);
});

test('storage copy from LevelDB into PostgreSQL: migrated first, everything equal through the interface', async (t) => {
  const { file, before } = await filledSource(t);
  const url = await postgres.createDatabase();
  const r = await runCli(['storage', 'copy', '--config', file, '--to', url]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout.toString(), /^copied 7 messages/m);
  assert.match(r.stdout.toString(), /^checked: postgres:/m);
  const { dir: spool, cleanup: cleanSpool } = await tempDir('mailgate-pg-');
  t.after(cleanSpool);
  const copy = await openStore(spool, { postgres: { url, connections: 2 }, node: 'test' });
  t.after(() => copy.close());
  assert.deepEqual(await contents(copy), before);
});

test('TLS as the documented sslmode values give it: verify-full with sslrootcert checks the server, no-verify encrypts, disable does not', async (t) => {
  const { dir, cleanup } = await tempDir('mailgate-pg-tls-');
  t.after(cleanup);
  // PostgreSQL reads its key only when the server's user owns it and nobody else may read it.
  const cert = path.join(dir, 'server.pem');
  const key = path.join(dir, 'server.key');
  await copyFile(fixture('tls', 'cert.pem'), cert);
  await copyFile(fixture('tls', 'key.pem'), key);
  await chmod(key, 0o600);
  if (process.getuid?.() === 0) {
    const [uid, gid] = await Promise.all(['-u', '-g'].map(async (flag) => Number((await run('id', [flag, 'postgres'])).stdout.trim())));
    for (const f of [dir, cert, key]) await chown(f, uid!, gid!);
  }
  const tls = await startPostgres({ fsync: false, settings: { ssl: 'on', ssl_cert_file: cert, ssl_key_file: key } });
  t.after(() => tls.stop());
  await tls.createDatabase('mailgate');
  // The CA file is named relative to the config file, as every path in it is.
  await copyFile(fixture('tls', 'cert.pem'), path.join(dir, 'db-ca.pem'));
  const encrypted = async (query: string): Promise<boolean> => {
    const config = loadConfigText(`[storage]\npostgres = "postgres://mailgate@127.0.0.1:${tls.port}/mailgate?${query}"\n`, path.join(dir, 'mailgate.toml'), {});
    const client = new pg.Client({ connectionString: configuredStore(config).postgres!.url });
    await client.connect();
    try {
      return (await client.query<{ ssl: boolean }>('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')).rows[0]!.ssl;
    } finally {
      await client.end();
    }
  };
  assert.equal(await encrypted('sslmode=verify-full&sslrootcert=db-ca.pem'), true);
  assert.equal(await encrypted('sslmode=no-verify'), true);
  assert.equal(await encrypted('sslmode=disable'), false);
  await assert.rejects(encrypted('sslmode=verify-full'), /self[- ]signed certificate/, 'without the CA the server is not trusted');
});
