import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { ChildProcess } from 'node:child_process';
import { buffer } from 'node:stream/consumers';
import { openTestStore } from './helpers/test-store.js';
import { ensureDovecot, startDovecot, dovecotIncoming } from './helpers/dovecot.js';
import { spawnServe, testConfigText } from './helpers/gateway.js';
import { tempDir } from './helpers/paths.js';

const COUNT = 300;

/**
 * Resolves once serve's log (CHILD's stdout) has said `message fetched` COUNT times, or when it
 * exits, or after half a minute (nothing left to fetch). Killing then lands while the pipelined
 * fetch has other messages on the wire and in the store: a moment in the fetch itself, however
 * slow the machine is to start or log in.
 */
function afterFetched(child: ChildProcess, count: number): Promise<void> {
  return new Promise((resolve) => {
    setTimeout(resolve, 30_000).unref();
    let seen = 0;
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      if (line.includes('"msg":"message fetched"') && ++seen === count) resolve();
    });
    child.on('exit', () => resolve());
  });
}

function message(n: number): string {
  return `From: customer${n}@example.net\r\nTo: support@example.com\r\nSubject: crash ${n}\r\nMessage-ID: <crash-${n}@example.net>\r\n\r\n${`body of ${n} `.repeat(1 + (n % 50))}\r\n`;
}

/** A mixed mailbox as real mail is: mostly small, some over lightweight_size, a few of 100 KB and more. */
function mixed(n: number): string {
  const size = n % 10 === 9 ? 120_000 + n * 100 : n % 3 === 0 ? 20_000 + n * 10 : 800 + n * 7;
  const head = `From: customer${n}@example.net\r\nTo: support@example.com\r\nSubject: in flight ${n}\r\nMessage-ID: <in-flight-${n}@example.net>\r\n\r\n`;
  const line = `line of message ${n} `.padEnd(76, '=') + '\r\n';
  return head + line.repeat(Math.max(1, Math.round((size - head.length) / line.length)));
}

/** One crash scenario: a mailbox of TOTAL messages made by MESSAGE (its Message-ID ends `-N@example.net`). */
interface CrashScenario {
  total: number;
  message(n: number): string;
  /** `[alias.incoming]` keys beyond the common ones. */
  incoming?: string[];
  /** The kill of run RUN (0 first) comes after this many messages fetched in that run; undefined: no more kills. */
  killAfter(run: number): number | undefined;
  /** How long the last run may take to empty the mailbox. */
  finishMs: number;
}

/**
 * `mailgate serve` fetches the mailbox and is SIGKILLed at the scenario's moments, then runs to
 * the end: at least one kill landed mid-fetch, each message is stored exactly once (by
 * Message-ID) with its bytes intact, and every message was moved to Processed.
 */
async function fetchThroughKills(t: TestContext, scenario: CrashScenario): Promise<void> {
  const { total } = scenario;
  await ensureDovecot();
  const dovecot = await startDovecot({ users: [{ name: 'support', password: 'pw' }] });
  t.after(() => dovecot.stop());
  for (let n = 0; n < total; n++) await dovecot.deliver('support', scenario.message(n));
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(
    configFile,
    testConfigText(
      dir,
      [
        '[[alias]]',
        'name = "support"',
        'address = "support@example.com"',
        ...dovecotIncoming(dovecot, 'support'),
        'poll_interval = 1',
        'reconnect_interval = 1',
        'max_items = 100',
        ...(scenario.incoming ?? []),
      ].join('\n'),
    ),
  );
  const left: number[] = [];
  for (let run = 0, after = scenario.killAfter(0); after !== undefined; after = scenario.killAfter(++run)) {
    const { child, exited } = await spawnServe(configFile);
    await afterFetched(child, after);
    child.kill('SIGKILL');
    await exited;
    left.push((await dovecot.listMessages('support')).length);
    if (left.at(-1) === 0) break;
  }
  t.diagnostic(`messages left in INBOX after each kill: ${left.join(', ')}`);
  assert.ok(
    left.some((n) => n > 0 && n < total),
    `at least one kill landed mid-fetch (${left.join(', ')})`,
  );

  // A last run to the end.
  const { child, exited } = await spawnServe(configFile);
  const deadline = Date.now() + scenario.finishMs;
  while ((await dovecot.listMessages('support')).length > 0) {
    assert.ok(Date.now() < deadline, 'the mailbox is emptied');
    await new Promise((r) => setTimeout(r, 200));
  }
  child.kill('SIGTERM');
  assert.equal(await exited, 0);

  const store = await openTestStore(path.join(dir, 'data'));
  t.after(() => store.close());
  const stored = await store.listMessages({ limit: 100_000 });
  const ids = stored.map((m) => m.messageId);
  assert.equal(new Set(ids).size, ids.length, 'no message stored twice (by Message-ID)');
  assert.equal(stored.length, total, 'every message stored');
  for (const m of stored) {
    const n = Number(/-(\d+)@example\.net>?$/.exec(m.messageId ?? '')?.[1]);
    assert.equal((await buffer(store.openRaw(m.id))).toString(), scenario.message(n), `message ${n} intact`);
  }
  assert.equal((await dovecot.listMessages('support', 'Processed')).length, total, 'all moved to Processed');
}

test('SIGKILL while fetching a mailbox of hundreds: after restart each message is stored exactly once and the mailbox is empty', (t) =>
  fetchThroughKills(t, {
    total: COUNT,
    message,
    // Kills spread over the fetch: after that many messages fetched in the run, give or take
    // (what a run stored, the next moves first).
    killAfter: (run) => {
      const after = [40, 70, 50, 90][run];
      return after === undefined ? undefined : after + Math.floor(Math.random() * 10);
    },
    finishMs: 60_000,
  }));

test('SIGKILL with many messages in flight (pipelined ranges over two sessions, mixed sizes), several times: each stored exactly once, the mailbox emptied into Processed', (t) =>
  fetchThroughKills(t, {
    total: 320,
    message: mixed,
    // Small enough that a range holds a few dozen messages and the big ones are streamed on their own.
    incoming: ['bytes_in_flight = 1000000'],
    // A random moment in the fetch: after 1 to 45 messages of the run were stored, six times.
    killAfter: (run) => (run < 6 ? 1 + Math.floor(Math.random() * 45) : undefined),
    finishMs: 120_000,
  }));
