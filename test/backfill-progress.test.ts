/**
 * Issue 15: a long backfill's progress (gateway/fetch/progress.ts), as an admin sees it: the
 * retriever's own count poll after poll against a real Dovecot, the log, the gauge, and
 * `mailgate serve` showing it in `aliases list --json`, the REST API and the console's aliases
 * page while it runs, and nothing once it is done.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { BackfillProgress, backfillText, type Backfill } from '../gateway/fetch/progress.js';
import { GatewayEvents, type GatewayEvent } from '../gateway/events.js';
import type { AliasRow } from '../gateway/admin/api.js';
import type { Retriever } from '../gateway/fetch/retriever.js';
import { dovecotIncoming, ensureDovecot, startDovecot, type TestDovecot } from './helpers/dovecot.js';
import { retrieveFrom } from './helpers/retrieve.js';
import { runCli, spawnServe, testConfigText } from './helpers/gateway.js';
import { tempDir } from './helpers/paths.js';
import { freePorts } from './helpers/ports.js';
import { hashPassword } from '../gateway/config/password.js';
import { startDelayProxy } from './bench/delay-proxy.js';
import { loadConfigFile } from '../gateway/config/load.js';
import { startGateway } from '../gateway/gateway.js';
import { silentLogger } from '../lib/logger.js';
import { openTestStore, testStoreKind } from './helpers/test-store.js';

const USERS = ['bulk-imap', 'bulk-pop3', 'served', 'paused'];
let dovecot: TestDovecot;

before(async () => {
  await ensureDovecot();
  dovecot = await startDovecot({ users: USERS.map((name) => ({ name, password: `pw-${name}` })) });
});
after(async () => {
  await dovecot?.stop();
});

function message(user: string, n: number): string {
  return `From: customer${n}@example.net\r\nTo: ${user}@example.com\r\nSubject: Backlog ${n}\r\nMessage-ID: <backlog-${user}-${n}@example.net>\r\n\r\nOld mail number ${n}.\r\n`;
}

test('the tracker: done and left from the polls, the rate over the last minute, the time left, a log line every 30 s and one at the end', () => {
  let now = 1_000_000;
  const lines: { obj: Record<string, unknown>; msg: string }[] = [];
  const progress = new BackfillProgress({
    alias: 'support',
    logger: { info: (obj, msg = '') => lines.push({ obj: obj as Record<string, unknown>, msg }) },
    batch: 50,
    now: () => now,
  });
  let stored = 0;
  // No more than one poll's worth: no backfill.
  progress.listed(50, () => stored);
  progress.polled(0);
  assert.equal(progress.view(), undefined);

  let waiting = 1000;
  const poll = (count: number, seconds: number) => {
    stored = 0;
    progress.listed(waiting, () => stored);
    stored = count;
    now += seconds * 1000;
    waiting -= count;
    progress.polled(waiting);
  };
  poll(100, 10);
  assert.deepEqual(progress.view(), { done: 100, left: 900, total: 1000, ratePerSecond: 10, etaSeconds: 90, since: new Date(1_000_000).toISOString() });
  assert.equal(backfillText(progress.view()!), '100 of 1,000, 10/s, about 2 min left');
  // Read in the middle of a poll: the poll's live count.
  stored = 0;
  progress.listed(waiting, () => stored);
  stored = 40;
  assert.deepEqual([progress.view()!.done, progress.view()!.left, progress.view()!.total], [140, 860, 1000]);
  stored = 100;
  now += 10_000;
  waiting -= 100;
  progress.polled(waiting);
  for (let i = 0; i < 5; i++) poll(100, 10);
  // Then the server slows down to 1 a second: the last minute's rate follows it.
  for (let i = 0; i < 6; i++) poll(10, 10);
  const slow = progress.view()!;
  assert.deepEqual([slow.done, slow.left, slow.ratePerSecond, slow.etaSeconds], [760, 240, 1, 240]);
  assert.equal(backfillText(slow), '760 of 1,000, 1/s, about 4 min left');
  // 13 polls over 130 s: a line after the first, then at the first poll's end 30 s or more after the last line.
  const progressLines = lines.filter((l) => l.obj['backfill'] === 'progress');
  assert.deepEqual(
    progressLines.map((l) => l.obj['done']),
    [100, 400, 700, 730, 760],
  );
  assert.equal(progressLines[0]!.msg, 'backfill of alias support: 100 of 1,000, 10/s, about 2 min left');
  assert.deepEqual(progressLines[0]!.obj, { backfill: 'progress', done: 100, left: 900, rate_per_s: 10, eta_s: 90 });
  // Mail arrives meanwhile: the total grows.
  waiting += 30;
  poll(100, 10);
  assert.deepEqual([progress.view()!.done, progress.view()!.left, progress.view()!.total], [860, 170, 1030]);
  // A poll that stores nothing (the server refuses, every alias paused): no line says the same again.
  const before = lines.length;
  poll(0, 40);
  poll(0, 40);
  assert.deepEqual(
    lines.slice(before).map((l) => l.obj['done']),
    [860],
    'the line for what the last poll did, then none',
  );
  assert.equal(progress.view()!.ratePerSecond, 0);
  assert.equal(backfillText(progress.view()!), '860 of 1,030, no message stored in the last minute');
  // The mailbox is empty: one line, and nothing shown.
  poll(170, 17);
  assert.equal(progress.view(), undefined);
  const last = lines.at(-1)!;
  assert.deepEqual(last.obj, { backfill: 'done', done: 1030, duration_s: 237 });
  assert.equal(last.msg, 'backfill of alias support done: 1,030 messages in 4 min');
  progress.stop();
});

test('the tracker tells the console at most every 2 s however fast the polls end, and once when it is done', () => {
  let now = 0;
  const events = new GatewayEvents();
  const seen: GatewayEvent[] = [];
  events.listen((e) => seen.push(e));
  const progress = new BackfillProgress({ alias: 'support', logger: { info: () => {} }, events, batch: 10, now: () => now });
  let waiting = 100;
  // Ten polls of 10, half a second each.
  for (let i = 0; i < 10; i++) {
    let stored = 0;
    progress.listed(waiting, () => stored);
    stored = 10;
    waiting -= 10;
    now += 500;
    progress.polled(waiting);
  }
  assert.deepEqual(
    seen.map((e) => (e.type === 'backfill-progress' ? (e.backfill?.done ?? 'done') : e.type)),
    [10, 50, 90, 'done'],
  );
  progress.stop();
});

for (const type of ['imap', 'pop3'] as const) {
  test(`${type.toUpperCase()}: a backlog of 23 in polls of 5 is shown poll by poll (done + left = 23, rate > 0), logged, gauged, and gone once fetched`, async (t) => {
    const user = `bulk-${type}`;
    for (let i = 0; i < 23; i++) await dovecot.deliver(user, message(user, i));
    const seen: (Backfill | undefined)[] = [];
    let retriever: Retriever | undefined;
    const r = await retrieveFrom(
      dovecot,
      t,
      user,
      { max_items: 5, ...(type === 'pop3' ? { type: 'pop3', port: dovecot.pop3Port } : {}) },
      { afterPoll: (alias) => seen.push(retriever!.backfill(alias)) },
    );
    retriever = r.retriever;
    await r.waitForPolls(5);
    assert.deepEqual(
      r.polls.map((p) => [p.stored, p.deferred]),
      [
        [5, 18],
        [5, 13],
        [5, 8],
        [5, 3],
        [3, 0],
      ],
    );
    assert.deepEqual(
      seen.map((b) => b && [b.done, b.left, b.total]),
      [[5, 18, 23], [10, 13, 23], [15, 8, 23], [20, 3, 23], undefined],
    );
    for (const b of seen.slice(0, 4)) {
      assert.ok(b!.ratePerSecond > 0, `a positive rate: ${b!.ratePerSecond}`);
      assert.ok(b!.etaSeconds !== undefined && b!.etaSeconds >= 0);
      assert.ok(!Number.isNaN(Date.parse(b!.since)));
    }
    const first = r.log.entries.find((e) => e['backfill'] === 'progress');
    assert.ok(first, 'a progress line');
    assert.equal(first['alias'], user);
    assert.deepEqual([first['done'], first['left']], [5, 18]);
    assert.ok((first['rate_per_s'] as number) > 0);
    assert.match(first['msg'] as string, new RegExp(`^backfill of alias ${user}: 5 of 23, [\\d.]+/s, about .+ left$`));
    const done = r.log.entries.filter((e) => e['backfill'] === 'done');
    assert.equal(done.length, 1);
    assert.equal(done[0]!['done'], 23);
    assert.equal(r.log.entries.filter((e) => e['backfill'] === 'progress').length < 5, true, 'not a line per poll');
    assert.match(await r.metrics.render(), new RegExp(`^mailgate_mailbox_waiting_messages\\{alias="${user}"\\} 0$`, 'm'));
  });
}

test('mailgate serve: aliases list --json, the REST API and the console show the backfill growing while it runs, the log has its lines, and nothing is shown after', async (t) => {
  const user = 'served';
  const total = 160;
  for (let i = 0; i < total; i++) await dovecot.deliver(user, message(user, i));
  // Round trips of 30 ms, as a cloud mailbox: long enough a backfill to look at several times.
  const proxy = await startDelayProxy(dovecot.imapPort, 15);
  t.after(() => proxy.close());
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const configFile = path.join(dir, 'mailgate.toml');
  // Known before the start: the log lines naming them come before this test reads the log.
  const [metricsPort, adminPort] = await freePorts(2);
  await writeFile(
    configFile,
    testConfigText(
      dir,
      [
        '[[alias]]',
        `name = "${user}"`,
        `address = "${user}@example.com"`,
        ...dovecotIncoming(dovecot, user, { password: `pw-${user}`, port: proxy.port }),
        'max_items = 4',
        'poll_interval = 3600',
        '[metrics]',
        `listen = "127.0.0.1:${metricsPort}"`,
        '[admin]',
        `listen = "127.0.0.1:${adminPort}"`,
        '[[admin.user]]',
        'name = "alice"',
        `password_hash = "${hashPassword('correct horse')}"`,
        'role = "auditor"',
      ].join('\n'),
    ),
  );
  const { child, exited } = await spawnServe(configFile);
  t.after(async () => {
    child.kill('SIGTERM');
    await exited;
  });
  const log: Record<string, unknown>[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      log.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // the sign-in link's plain line
    }
  });
  // An auditor's session reads the API and the pages.
  const base = `http://127.0.0.1:${adminPort}`;
  const signedIn = await fetch(`${base}/api/v1/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user: 'alice', password: 'correct horse' }),
  });
  assert.equal(signedIn.status, 200, await signedIn.clone().text());
  const cookie = signedIn.headers.get('set-cookie')!.split(';')[0]!;
  // The console's live refresh: the events it listens to, gathered while the backfill runs.
  const abort = new AbortController();
  t.after(() => abort.abort());
  const stream = await fetch(`${base}/api/v1/events`, { headers: { cookie }, signal: abort.signal });
  assert.equal(stream.status, 200);
  const events: { alias: string; backfill?: Backfill }[] = [];
  void (async () => {
    let text = '';
    for await (const chunk of stream.body!) {
      text += Buffer.from(chunk).toString();
      for (let m; (m = /event: backfill-progress\ndata: (.*)\n\n/.exec(text)); text = text.slice(m.index + m[0].length))
        events.push(JSON.parse(m[1]!) as { alias: string; backfill?: Backfill });
    }
  })().catch(() => {});

  const fromCli: Backfill[] = [];
  let fromApi: Backfill | undefined;
  let page: string | undefined;
  const deadline = Date.now() + 180_000;
  for (;;) {
    assert.ok(Date.now() < deadline, `the backfill ends; log: ${log.map((e) => String(e['msg'])).join(' | ')}`);
    const api = (await (await fetch(`${base}/api/v1/aliases`, { headers: { cookie } })).json()) as AliasRow[];
    fromApi ??= api[0]!.backfill;
    const html = await (await fetch(`${base}/aliases`, { headers: { cookie } })).text();
    if (page === undefined && html.includes('<progress')) page = html;
    const listed = await runCli(['aliases', 'list', '--json', '--config', configFile]);
    assert.equal(listed.code, 0, listed.stderr);
    const backfill = (JSON.parse(listed.stdout.toString()) as AliasRow[])[0]!.backfill;
    if (!backfill) {
      if (log.some((e) => e['backfill'] === 'done')) break;
      continue;
    }
    fromCli.push(backfill);
  }
  assert.ok(fromCli.length >= 2, `aliases list showed the backfill ${fromCli.length} time(s)`);
  for (const b of [...fromCli, fromApi!]) {
    assert.equal(b.done + b.left, b.total);
    assert.equal(b.total, total);
  }
  assert.ok(
    fromCli.every((b, i) => i === 0 || b.done >= fromCli[i - 1]!.done),
    `done never goes back: ${fromCli.map((b) => b.done).join(', ')}`,
  );
  assert.ok(fromCli.at(-1)!.done > fromCli[0]!.done, `done grows: ${fromCli.map((b) => b.done).join(', ')}`);
  const moving = fromCli.filter((b) => b.done > 0);
  assert.ok(moving.length > 0 && moving.every((b) => b.ratePerSecond > 0), 'a positive rate once messages are stored');
  assert.ok(fromApi, 'GET /api/v1/aliases showed it');
  assert.ok(page, "the console's aliases page showed it");
  assert.match(page, new RegExp(`<progress value="\\d+" max="${total}" aria-label="Backfill of served">`));
  assert.match(page, new RegExp(`backfill \\d+ of ${total}, `));
  assert.match(page, /data-live="alias-status backfill-progress"/);

  const progress = log.find((e) => e['backfill'] === 'progress');
  assert.ok(progress, 'a progress line in the log');
  assert.equal(progress['alias'], user);
  assert.equal((progress['done'] as number) + (progress['left'] as number), total);
  assert.ok((progress['rate_per_s'] as number) > 0);
  const done = log.find((e) => e['backfill'] === 'done')!;
  assert.equal(done['done'], total);
  assert.match(done['msg'] as string, new RegExp(`^backfill of alias served done: ${total} messages in \\d+ (s|min)$`));
  assert.equal(log.filter((e) => e['backfill'] === 'progress').length < total / 4, true, 'not a line per message or per poll');

  // The console was told as it went, and told when it ended.
  while (!events.some((e) => e.backfill === undefined)) {
    assert.ok(Date.now() < deadline, `a backfill-progress event without a backfill at the end; got ${events.length}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const moved = events.filter((e) => e.backfill);
  assert.ok(moved.length > 0, 'backfill-progress events while it ran');
  for (const e of events) assert.equal(e.alias, user);
  for (const e of moved) assert.equal(e.backfill!.done + e.backfill!.left, total);

  // Done: nothing shown anywhere, the gauge at 0.
  const after = await runCli(['aliases', 'list', '--json', '--config', configFile]);
  assert.equal((JSON.parse(after.stdout.toString()) as AliasRow[])[0]!.backfill, undefined);
  assert.doesNotMatch(await (await fetch(`${base}/aliases`, { headers: { cookie } })).text(), /<progress/);
  assert.match(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text(), /^mailgate_mailbox_waiting_messages\{alias="served"\} 0$/m);
  assert.equal((await dovecot.listMessages(user, 'Processed')).length, total);
});

test('aliases list through the control socket, held at a known moment of the backfill (the 7th of 12 being stored, polls of 5): 6 of 12 in the table and in JSON; nothing once done', async (t) => {
  const user = 'paused';
  for (let i = 0; i < 12; i++) await dovecot.deliver(user, message(user, i));
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(
    configFile,
    testConfigText(
      dir,
      [
        '[[alias]]',
        `name = "${user}"`,
        `address = "${user}@example.com"`,
        ...dovecotIncoming(dovecot, user, { password: `pw-${user}` }),
        'max_items = 5',
        'poll_interval = 3600',
      ].join('\n'),
    ),
  );
  const config = loadConfigFile(configFile);
  const store = await openTestStore(config.data_dir);
  let stored = 0;
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let reached!: () => void;
  const seventh = new Promise<void>((resolve) => (reached = resolve));
  const polls: number[] = [];
  const gateway = await startGateway({
    config,
    store,
    logger: silentLogger(),
    retrieverHooks: {
      // The 7th message is durable and not yet counted: the retriever waits here until released.
      // So do the ones after it, stored meanwhile in the same range (the fetch is pipelined).
      afterStore: async () => {
        if (++stored < 7) return;
        if (stored === 7) reached();
        await gate;
      },
      afterPoll: (_alias, r) => polls.push(r.deferred),
    },
  });
  t.after(async () => {
    release();
    await gateway.stop();
    await store.close();
  });
  await seventh;
  const table = await runCli(['aliases', 'list', '--config', configFile]);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout.toString(), /\n {2}backfill 6 of 12, [\d.]+\/s, about \d+ (s|min) left\n/);
  const json = await runCli(['aliases', 'list', '--json', '--config', configFile]);
  const row = (JSON.parse(json.stdout.toString()) as AliasRow[])[0]!;
  assert.deepEqual([row.backfill?.done, row.backfill?.left, row.backfill?.total], [6, 6, 12]);
  assert.ok(row.backfill!.ratePerSecond > 0);

  release();
  while (polls.at(-1) !== 0) await new Promise((r) => setTimeout(r, 50));
  const after = await runCli(['aliases', 'list', '--config', configFile]);
  assert.doesNotMatch(after.stdout.toString(), /backfill/);
  // On PostgreSQL (a store several nodes may share) the alias also names the node fetching it.
  const lines = testStoreKind === 'postgres' ? ['heading', 'alias', 'fetched by node'] : ['heading', 'alias'];
  assert.equal(after.stdout.toString().split('\n').length, lines.length + 1, `${lines.join(', ')}: ${after.stdout.toString()}`);
});
