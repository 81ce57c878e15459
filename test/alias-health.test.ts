import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect, type Server, type Socket, type AddressInfo } from 'node:net';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfigText } from '../gateway/config/load.js';
import { startRetriever } from '../gateway/fetch/retriever.js';
import { AliasHealth } from '../gateway/fetch/alias-health.js';
import { openTestStore } from './helpers/test-store.js';
import type { AliasState } from '../storage/records.js';
import { ensureDovecot, startDovecot, type TestDovecot } from './helpers/dovecot.js';
import { capturingLogger } from './helpers/gateway.js';
import { tempDir } from './helpers/paths.js';
import { dovecotIncoming, retrieveFrom, type Incoming } from './helpers/retrieve.js';
import { closedPort } from './helpers/upstream.js';

const USERS = ['auth', 'net', 'refused', 'pause', 'team'];
let dovecot: TestDovecot;

before(async () => {
  await ensureDovecot();
  // Logins fail here on purpose: without the penalty each later login would wait 4 s or more.
  dovecot = await startDovecot({ users: USERS.map((name) => ({ name, password: `pw-${name}` })), authPenalty: false });
});
after(async () => {
  await dovecot?.stop();
});

/** Changes a Dovecot user's password by rewriting its passwd-file (Dovecot rereads it when it changes). */
async function setDovecotPassword(d: TestDovecot, user: string, password: string): Promise<void> {
  const file = path.join(d.dir, 'users.passwd');
  const lines = (await readFile(file, 'utf8'))
    .split('\n')
    .map((l) => (l.startsWith(`${user}:`) ? l.replace(/^([^:]*):\{PLAIN\}[^:]*:/, `$1:{PLAIN}${password}:`) : l));
  await writeFile(file, lines.join('\n'));
}

const message = (n: number) =>
  `From: c${n}@example.net\r\nTo: desk@example.com\r\nSubject: Health ${n}\r\nMessage-ID: <health-${n}-${Date.now()}@example.net>\r\n\r\nBody ${n}\r\n`;

/** A retriever for alias NAME (test/helpers/retrieve.ts) that polls, reconnects and retries an inactive alias every second unless told. */
async function retrieve(t: { after(fn: () => Promise<void>): void }, name: string, incoming: Incoming) {
  const { store, log, metrics, retriever, waitForPolls } = await retrieveFrom(dovecot, t, name, {
    poll_interval: 1,
    reconnect_interval: 1,
    health_retry_interval: 1,
    ...incoming,
  });
  const failuresLogged = () => log.entries.filter((e) => e.msg === `fetching for alias ${name} failed; connecting again later`).length;
  const waitForState = async (match: (s: AliasState) => boolean, timeoutMs = 30_000): Promise<AliasState> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await store.getAliasState(name);
      if (s && match(s)) return s;
      if (Date.now() > deadline)
        throw new Error(
          `alias state not reached in ${timeoutMs} ms: ${JSON.stringify(s)}; log: ${log.entries.map((e) => `${String(e.msg)} ${String(e.kind ?? '')}`).join(' | ')}`,
        );
      await sleep(50);
    }
  };
  return { store, log, metrics, retriever, failuresLogged, waitForState, waitForPolls };
}

/** A TCP proxy to TARGET that can be "down" (accepts, then closes at once: the server appears stopped) or "up". */
async function startProxy(target: number): Promise<{ port: number; up: boolean; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const state = { up: false };
  const server: Server = createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => {});
    if (!state.up) return void client.destroy();
    const upstream = connect(target, '127.0.0.1');
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    get up() {
      return state.up;
    },
    set up(v: boolean) {
      state.up = v;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

test('wrong password: inactive after the third failure with an authentication reason, no retry; an admin activates it once the password is fixed', async (t) => {
  await setDovecotPassword(dovecot, 'auth', 'changed-on-the-server');
  await dovecot.deliver('auth', message(1));
  const r = await retrieve(t, 'auth', {});
  const state = await r.waitForState((s) => s.status === 'inactive');
  assert.equal(state.failures, 3);
  assert.equal(state.lastErrorKind, 'auth');
  assert.match(state.reason ?? '', /^authentication failed: check user and password/);
  assert.equal(state.changedBy, 'retriever');
  assert.equal(state.retryAt, undefined, 'bad credentials are not retried');
  const change = r.log.entries.find((e) => e.level === 40 && e.alias === 'auth' && e.to === 'inactive');
  assert.ok(change, 'the change is logged as a warning');
  assert.equal(change.kind, 'auth');
  assert.match(String(change.reason), /authentication failed/);
  assert.match(await r.metrics.render(), /mailgate_alias_status_changes_total\{alias="auth",to="inactive",by="retriever",kind="auth"\} 1/);

  // Well past health_retry_interval (1 s): no further attempt.
  await sleep(2500);
  assert.equal(r.failuresLogged(), 3);
  assert.equal((await r.store.getAliasState('auth'))?.status, 'inactive');
  assert.equal((await dovecot.listMessages('auth')).length, 1, 'not fetched');

  await setDovecotPassword(dovecot, 'auth', 'pw-auth');
  const activated = await r.retriever.setStatus('auth', 'active');
  assert.equal(activated?.status, 'active');
  assert.equal(activated?.changedBy, 'admin');
  await r.waitForState((s) => s.status === 'active' && s.failures === 0);
  const deadline = Date.now() + 15_000;
  while ((await r.store.listMessages({ alias: 'auth' })).length === 0) {
    assert.ok(Date.now() < deadline, 'fetched after activation');
    await sleep(50);
  }
  assert.match(await r.metrics.render(), /mailgate_alias_status_changes_total\{alias="auth",to="active",by="admin",kind="none"\} 1/);
});

test('server unreachable (accepts then closes): inactive with a retry time, active again by itself once the server answers', async (t) => {
  const proxy = await startProxy(dovecot.pop3Port);
  t.after(() => proxy.close());
  await dovecot.deliver('net', message(2));
  const r = await retrieve(t, 'net', { type: 'pop3', port: proxy.port, health_retry_interval: 2 });
  const state = await r.waitForState((s) => s.status === 'inactive');
  assert.equal(state.failures, 3);
  assert.equal(state.lastErrorKind, 'network');
  assert.match(state.reason ?? '', /server unreachable/);
  assert.ok(state.retryAt && Date.parse(state.retryAt) > Date.now() - 2000, `retry time set: ${state.retryAt}`);
  proxy.up = true;
  const back = await r.waitForState((s) => s.status === 'active', 15_000);
  assert.equal(back.failures, 0);
  assert.equal(back.changedBy, 'retriever');
  assert.ok(
    r.log.entries.some((e) => e.level === 30 && e.alias === 'net' && e.to === 'active'),
    'the recovery is logged',
  );
  const deadline = Date.now() + 10_000;
  while ((await r.store.listMessages({ alias: 'net' })).length === 0) {
    assert.ok(Date.now() < deadline, 'fetched after recovery');
    await sleep(50);
  }
});

test('service not running (connection refused): inactive, reason says so, and it stays inactive after the retry interval', async (t) => {
  const r = await retrieve(t, 'refused', { type: 'pop3', port: await closedPort() });
  const state = await r.waitForState((s) => s.status === 'inactive');
  assert.equal(state.lastErrorKind, 'tcp_refused');
  assert.match(state.reason ?? '', /^TCP connection refused: is the POP3\/IMAP service running\?/);
  assert.equal(state.retryAt, undefined);
  await sleep(2500);
  assert.equal(r.failuresLogged(), 3);
  assert.equal((await r.store.getAliasState('refused'))?.status, 'inactive');
});

test('DNS failure (.invalid) counts as the network: inactive with a retry time', async (t) => {
  const r = await retrieve(t, 'dns', { type: 'pop3', host: 'mail.mailgate-test.invalid', port: 110, security: 'starttls', health_retry_interval: 600 });
  const state = await r.waitForState((s) => s.status === 'inactive');
  assert.equal(state.lastErrorKind, 'dns');
  assert.match(state.reason ?? '', /^DNS: host not found/);
  assert.ok(state.retryAt && Date.parse(state.retryAt) > Date.now() + 500_000, 'retried after health_retry_interval');
});

test('an admin deactivation pauses the worker at once; activation resumes it', async (t) => {
  const r = await retrieve(t, 'pause', {});
  await r.waitForPolls(1); // it polls while active
  await r.retriever.setStatus('pause', 'inactive');
  await sleep(300);
  await dovecot.deliver('pause', message(3));
  await sleep(2000);
  assert.equal((await r.store.listMessages({ alias: 'pause' })).length, 0, 'not fetched while inactive');
  assert.equal((await r.store.getAliasState('pause'))?.changedBy, 'admin');
  await r.retriever.setStatus('pause', 'active');
  const deadline = Date.now() + 10_000;
  while ((await r.store.listMessages({ alias: 'pause' })).length === 0) {
    assert.ok(Date.now() < deadline, 'fetched after activation');
    await sleep(50);
  }
  assert.equal(await r.retriever.setStatus('nobody', 'active'), undefined, 'an alias the retriever does not run');
});

test('persisted across restarts: an admin deactivation holds; a retriever-made inactive state is dropped when the incoming settings change', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const store = await openTestStore(path.join(dir, 'data'));
    const server = loadConfigText(
      ['[[alias]]', 'name = "a"', 'address = "a@example.com"', '[alias.incoming]', 'host = "127.0.0.1"', 'password = "one"'].join('\n'),
      path.join(dir, 'm.toml'),
      {},
    ).alias[0]!.incoming!;
    const log = capturingLogger();
    const deps = { store, logger: log.logger };
    const h = await AliasHealth.load(deps, 'a', server);
    for (let i = 0; i < 3; i++) await h.failed(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }), 'tcp_refused');
    assert.equal((await AliasHealth.load(deps, 'a', server)).holdMs(), Infinity, 'still inactive after a restart with the same settings');
    const edited = await AliasHealth.load(deps, 'a', { ...server, password: 'two' });
    assert.equal(edited.active, true);
    assert.equal((await store.getAliasState('a'))?.status, 'active');
    await edited.setByAdmin('inactive');
    assert.equal((await AliasHealth.load(deps, 'a', { ...server, password: 'three' })).holdMs(), Infinity, 'an admin decision is not undone by an edit');
    await store.close();
  } finally {
    await cleanup();
  }
});

test('a shared mailbox: failed connections make each of its aliases inactive with the reason; after the fix each comes back on its own activation', async (t) => {
  await setDovecotPassword(dovecot, 'team', 'changed-on-the-server');
  const { dir, cleanup } = await tempDir();
  const incoming = {
    ...dovecotIncoming(dovecot, 'team'),
    poll_interval: 1,
    reconnect_interval: 1,
    health_retry_interval: 1,
    idle: false,
  };
  const alias = (name: string) => [
    '[[alias]]',
    `name = "${name}"`,
    `address = "${name}@example.com"`,
    '[alias.incoming]',
    ...Object.entries(incoming).map(([k, v]) => `${k} = ${JSON.stringify(v)}`),
  ];
  const config = loadConfigText(
    [`data_dir = ${JSON.stringify(path.join(dir, 'data'))}`, ...alias('sales'), ...alias('billing')].join('\n'),
    path.join(dir, 'mailgate.toml'),
    {},
  );
  const store = await openTestStore(config.data_dir);
  const retriever = startRetriever({ config, store, logger: capturingLogger().logger, stages: () => [] });
  t.after(async () => {
    await retriever.stop();
    await store.close();
    await cleanup();
  });
  const waitFor = async <T>(what: string, get: () => Promise<T | undefined>): Promise<T> => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const v = await get();
      if (v !== undefined) return v;
      assert.ok(Date.now() < deadline, what);
      await sleep(50);
    }
  };
  const inactive = (name: string) =>
    waitFor(`${name} inactive`, async () => {
      const s = await store.getAliasState(name);
      return s?.status === 'inactive' ? s : undefined;
    });
  /** INBOX and Processed message counts. */
  const folders = async () => `${(await dovecot.listMessages('team')).length} ${(await dovecot.listMessages('team', 'Processed')).length}`;
  const stored = (name: string) =>
    waitFor(`mail stored for ${name}`, async () => {
      const found = await store.listMessages({ alias: name });
      return found.length ? found : undefined;
    });

  // Both aliases fetch the mailbox whose login fails: each is made inactive, each says why.
  for (const s of [await inactive('sales'), await inactive('billing')]) {
    assert.equal(s.failures, 3);
    assert.equal(s.lastErrorKind, 'auth');
    assert.equal(s.changedBy, 'retriever');
    assert.match(s.reason ?? '', /^authentication failed/);
  }

  // Delivered now: Dovecot rereads its passwd-file at most once a second, so a first login
  // may still have passed with the old password.
  await dovecot.deliver('team', 'From: c@example.net\r\nTo: sales@example.com\r\nSubject: For sales\r\nMessage-ID: <team-sales@example.net>\r\n\r\nHi\r\n');
  await dovecot.deliver(
    'team',
    'From: c@example.net\r\nTo: billing@example.com\r\nSubject: For billing\r\nMessage-ID: <team-billing@example.net>\r\n\r\nHi\r\n',
  );
  // The password is fixed and one alias activated: the mailbox is fetched for it alone.
  await setDovecotPassword(dovecot, 'team', 'pw-team');
  await retriever.setStatus('billing', 'active');
  assert.deepEqual(
    (await stored('billing')).map((m) => m.subject),
    ['For billing'],
  );
  assert.equal((await store.getAliasState('sales'))?.status, 'inactive', 'the other alias keeps its own status');
  // Moved at the end of the poll that stored it (a MOVE copies, then expunges): billing's
  // message in Processed, the inactive alias's left in INBOX.
  await waitFor('one message moved, one left in INBOX', async () => (await folders()) === '1 1' || undefined);
  assert.equal((await store.listMessages({ alias: 'sales' })).length, 0);

  await retriever.setStatus('sales', 'active');
  assert.deepEqual(
    (await stored('sales')).map((m) => m.subject),
    ['For sales'],
  );
  await waitFor('both messages moved', async () => (await folders()) === '0 2' || undefined);
});
