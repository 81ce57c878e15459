import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { MessageMeta } from '../storage/records.js';
import type { QueueEntry } from '../storage/records.js';
import { runCli, spawnServe, testConfigText } from './helpers/gateway.js';
import { tempDir } from './helpers/paths.js';
import { closedPort, startUpstream, type Upstream } from './helpers/upstream.js';

/** Aliases whose outgoing servers are on `ports`; an hour between attempts, so only `queue retry` brings the next one. */
const aliasesToml = (ports: Record<string, number>) =>
  `[queue]\nretry_intervals = [3600]\nretry_jitter = 0.0\n` +
  Object.entries(ports)
    .map(([name, port]) => `[[alias]]\nname = "${name}"\naddress = "${name}@example.com"\n[alias.outgoing]\nhost = "127.0.0.1"\nport = ${port}\n`)
    .join('\n');

/** A config file, `mailgate serve` on it when wanted, and cleanup in the right order (gateway, upstreams, files). */
async function setup(t: { after(fn: () => Promise<void>): void }, toml: string) {
  const { dir, cleanup } = await tempDir();
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(configFile, testConfigText(dir, toml));
  let serve: Awaited<ReturnType<typeof spawnServe>> | undefined;
  const upstreams: Upstream[] = [];
  const stop = async () => {
    serve?.child.kill('SIGTERM');
    await serve?.exited;
    serve = undefined;
  };
  t.after(async () => {
    await stop();
    for (const u of upstreams) await u.close();
    await cleanup();
  });
  const cli = (...args: string[]) => runCli([...args, '--config', configFile]);
  return {
    cli,
    async json<T>(...args: string[]): Promise<T> {
      const r = await cli(...args, '--json');
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout.toString()) as T;
    },
    async serve() {
      serve = await spawnServe(configFile);
    },
    stop,
    async upstream(port: number) {
      const u = await startUpstream({ port });
      upstreams.push(u);
      return u;
    },
    async send(from: string, to: string): Promise<string> {
      const r = await cli('send', '--from', from, '--to', to, '--subject', `from ${from}`, '--text', 'Hello.');
      assert.equal(r.code, 0, r.stderr);
      return /^queued as (\S+)/.exec(r.stdout.toString())![1]!;
    },
  };
}

/** Polls `queue show --json` until the entry satisfies `done`. */
async function untilEntry(json: <T>(...args: string[]) => Promise<T>, id: string, done: (e: QueueEntry) => boolean): Promise<QueueEntry> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const entry = await json<QueueEntry>('queue', 'show', id);
    if (done(entry)) return entry;
    assert.ok(Date.now() < deadline, `queue entry ${id} not as expected: ${JSON.stringify(entry)}`);
    await sleep(200);
  }
}

/** Polls `messages show --json` until the message has left the queue. */
async function untilFinished(json: <T>(...args: string[]) => Promise<T>, id: string): Promise<NonNullable<MessageMeta['delivery']>> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const meta = await json<MessageMeta>('messages', 'show', id);
    if (meta.delivery) return meta.delivery;
    assert.ok(Date.now() < deadline, `message ${id} did not leave the queue`);
    await sleep(200);
  }
}

test('through the running gateway: a message whose server is down shows its error; retry delivers it once the server is back; drop takes one out', async (t) => {
  const ports = { support: await closedPort(), billing: await closedPort() };
  const q = await setup(t, aliasesToml(ports));
  await q.serve();
  const id = await q.send('support', 'customer@example.org');
  const failed = await untilEntry(q.json, id, (e) => e.attempts >= 1);
  assert.match(failed.lastError?.message ?? '', /ECONNREFUSED/);
  assert.equal(failed.recipients[0]!.status, 'pending');

  const show = await q.cli('queue', 'show', id);
  assert.equal(show.code, 0, show.stderr);
  const text = show.stdout.toString();
  assert.match(text, new RegExp(`^id: +${id}\\n`));
  assert.match(text, /^kind: +outbound, alias support$/m);
  assert.match(text, /^attempts: +1$/m);
  assert.match(text, /^last error: +alias "support" via 127\.0\.0\.1:\d+ \(SMTP[^)]*\): connect ECONNREFUSED.* \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)$/m);
  assert.match(text, /^recipients:\n {2}customer@example\.org {2}pending +1 attempt; last: the last error above$/m);
  const list = await q.cli('queue', 'list');
  assert.match(list.stdout.toString(), /^ID +QUEUED +ATTEMPTS +NEXT +KIND +ALIAS\/RELAY +PENDING +HELD\/LAST ERROR\n/);
  assert.match(list.stdout.toString(), new RegExp(`^${id} +[\\d-]+ [\\d:]+ +1 +[\\d-]+ [\\d:]+ +outbound +support +1/1 +alias "support" via`, 'm'));

  const upstream = await q.upstream(ports.support);
  const retry = await q.cli('queue', 'retry', id);
  assert.equal(retry.code, 0, retry.stderr);
  assert.equal(retry.stdout.toString(), '1 queued message made due now\n');
  const [got] = await upstream.waitFor(1);
  assert.deepEqual([got!.mailFrom, got!.rcptTo], ['support@example.com', ['customer@example.org']]);
  assert.equal((await untilFinished(q.json, id)).status, 'delivered');

  const billing = await q.send('billing', 'payer@example.org');
  await untilEntry(q.json, billing, (e) => e.attempts >= 1);
  const drop = await q.cli('queue', 'drop', billing);
  assert.equal(drop.code, 0, drop.stderr);
  assert.equal(drop.stdout.toString(), `dropped ${billing}; not sent to payer@example.org\n`);
  const record = await untilFinished(q.json, billing);
  assert.deepEqual([record.status, record.reason, record.attempts], ['dropped', 'dropped by an admin (mailgate queue drop)', 1]);
  // Not "pending": nothing will try them again.
  assert.deepEqual(
    record.recipients.map((r) => [r.address, r.status]),
    [['payer@example.org', 'dropped']],
  );
  assert.match(
    (await q.cli('messages', 'show', billing)).stdout.toString(),
    /^delivery: +dropped .*\n {2}payer@example\.org {2}dropped; last: alias "billing" via .*ECONNREFUSED/m,
  );
  assert.deepEqual(await q.json('queue', 'list'), []);
  assert.equal((await q.cli('queue', 'list')).stdout.toString(), '', 'an empty queue prints nothing');

  const gone = await q.cli('queue', 'show', billing);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, new RegExp(`no queued message with id ${billing}`));
  const unknown = await q.cli('queue', 'drop', 'nope');
  assert.deepEqual([unknown.code, unknown.stderr], [1, 'mailgate: no queued message with id nope\n']);
  assert.equal((await q.cli('queue', 'retry', '--all')).stdout.toString(), '0 queued messages made due now\n');
});

test('with the gateway stopped: list, show, retry and drop work on the store; the gateway sends what was retried when it starts', async (t) => {
  const ports = { support: await closedPort() };
  const q = await setup(t, aliasesToml(ports));
  await q.serve();
  const kept = await q.send('support', 'first@example.org');
  const dropped = await q.send('support', 'second@example.org');
  for (const id of [kept, dropped]) await untilEntry(q.json, id, (e) => e.attempts >= 1);
  await q.stop();

  const list = (await q.cli('queue', 'list')).stdout.toString().split('\n');
  assert.equal(list.length, 4, 'a header, two rows, and the final newline');
  assert.match(list[1]!, new RegExp(`^${kept} .* 1/1 +alias "support" via .*ECONNREFUSED`));
  const show = await q.cli('queue', 'show', kept);
  assert.match(show.stdout.toString(), /^last error: +.*ECONNREFUSED/m);

  const drop = await q.cli('queue', 'drop', dropped);
  assert.equal(drop.stdout.toString(), `dropped ${dropped}; not sent to second@example.org\n`);
  const meta = await q.json<MessageMeta>('messages', 'show', dropped);
  assert.deepEqual([meta.delivery?.status, meta.delivery?.reason], ['dropped', 'dropped by an admin (mailgate queue drop)']);
  assert.deepEqual(
    meta.delivery?.recipients.map((r) => [r.address, r.status]),
    [['second@example.org', 'dropped']],
  );
  assert.match(
    (await q.cli('messages', 'show', dropped)).stdout.toString(),
    /^delivery: +dropped .* after 1 attempt\(s\); dropped by an admin.*\n {2}second@example\.org {2}dropped;/m,
  );
  assert.deepEqual(
    (await q.json<QueueEntry[]>('queue', 'list')).map((e) => e.id),
    [kept],
  );

  const usage = await Promise.all([q.cli('queue', 'retry'), q.cli('queue', 'retry', kept, '--all')]);
  for (const r of usage) {
    assert.equal(r.code, 2);
    assert.match(r.stderr, /give a message id or --all, not both and not neither/);
  }
  const missing = await q.cli('queue', 'show', 'nope');
  assert.deepEqual([missing.code, missing.stderr], [1, 'mailgate: no queued message with id nope\n']);

  const before = Date.now();
  const retry = await q.cli('queue', 'retry', kept);
  assert.equal(retry.stdout.toString(), '1 queued message made due now; the gateway is not running: they are tried when it starts\n');
  const due = await q.json<QueueEntry>('queue', 'show', kept);
  assert.ok(Date.parse(due.nextAttemptAt) >= before - 1000 && Date.parse(due.nextAttemptAt) <= Date.now(), `due now, not in an hour: ${due.nextAttemptAt}`);

  const upstream = await q.upstream(ports.support);
  await q.serve();
  const [got] = await upstream.waitFor(1);
  assert.deepEqual(got!.rcptTo, ['first@example.org']);
  assert.equal((await untilFinished(q.json, kept)).status, 'delivered');
  assert.equal(upstream.received.length, 1, 'the dropped message never went out');
});

test('queue retry --held makes only the held messages due, running or stopped; messages show --timeline tells why one waits', async (t) => {
  const port = await closedPort();
  // desk has no server to send through: its mail is held until an admin acts.
  const q = await setup(t, aliasesToml({ support: port }) + '\n[[alias]]\nname = "desk"\naddress = "desk@example.com"\n');
  await q.serve();
  const waiting = await q.send('support', 'customer@example.org');
  const held = await q.send('desk', 'customer@example.org');
  const tried = await untilEntry(q.json, waiting, (e) => e.attempts >= 1);
  await untilEntry(q.json, held, (e) => e.held !== undefined);

  const retry = await q.cli('queue', 'retry', '--held');
  assert.deepEqual([retry.code, retry.stdout.toString()], [0, '1 queued message made due now\n']);
  assert.equal((await q.json<QueueEntry>('queue', 'show', waiting)).nextAttemptAt, tried.nextAttemptAt, 'the one not held still waits its hour');
  // No route yet: held again at once.
  await untilEntry(q.json, held, (e) => e.held !== undefined);
  const timeline = (await q.cli('messages', 'show', held, '--timeline')).stdout.toString();
  assert.match(timeline, /^ {2}\S+ \S+ {2}received by cli for alias desk, \d+ bytes$/m);
  assert.match(timeline, /^ {2}\S+ \S+ {2}queued \(outbound\) for customer@example\.org$/m);
  assert.match(timeline, /^ {23}held until an admin acts: alias "desk" has no \[alias\.outgoing\] server/m);
  const waitingLine = (await q.cli('messages', 'show', waiting, '--timeline')).stdout.toString();
  assert.match(waitingLine, /^ {2}\S+ \S+ {2}attempt 1 for customer@example\.org: to be tried again: alias "support" via .*ECONNREFUSED/m);
  assert.match(waitingLine, /^ {2}\S+ \S+ {2}next attempt due \d{4}-/m);

  await q.stop();
  const stopped = await q.cli('queue', 'retry', '--held');
  assert.deepEqual(
    [stopped.code, stopped.stdout.toString()],
    [0, '1 queued message made due now; the gateway is not running: they are tried when it starts\n'],
  );
  const usage = await Promise.all([q.cli('queue', 'retry', '--held', '--all'), q.cli('queue', 'retry', held, '--held')]);
  for (const r of usage) assert.deepEqual([r.code, r.stderr], [2, 'mailgate: queue retry: --held goes alone, without a message id or --all\n']);
});
