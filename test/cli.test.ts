import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import nodemailer from 'nodemailer';
import type { MessageMeta } from '../storage/records.js';
import type { QuarantineRecord } from '../storage/records.js';
import { openTestStore } from './helpers/test-store.js';
import { runCli, startGatewayOn, startTestGateway, writeTestConfig } from './helpers/gateway.js';
import { projectRoot, tempDir } from './helpers/paths.js';
import { accepts } from './helpers/ports.js';

test('config check names the file, line and key of a typo and exits 2', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const file = path.join(dir, 'mailgate.toml');
  await writeFile(file, ['[smtp]', 'listen = ["127.0.0.1:2525"]', 'max_mesage_size = 1000', ''].join('\n'));
  const r = await runCli(['config', 'check', file]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /mailgate\.toml:3: smtp\.max_mesage_size: unknown key/);
  assert.equal(r.stdout.length, 0);
});

test('config check accepts config.example.toml and the built-in defaults', async () => {
  const example = await runCli(['config', 'check', path.join(projectRoot, 'config.example.toml')]);
  assert.equal(example.code, 0, example.stderr);
  assert.match(example.stdout.toString(), /config\.example\.toml: ok/);
  const { dir, cleanup } = await tempDir();
  try {
    const defaults = await runCli(['config', 'check'], { cwd: dir });
    assert.equal(defaults.code, 0, defaults.stderr);
    assert.match(defaults.stdout.toString(), /built-in defaults: ok .*127\.0\.0\.1:2525.*accepting any recipient/);
  } finally {
    await cleanup();
  }
});

test('--version prints the version in package.json', async () => {
  const { version } = JSON.parse(await readFile(path.join(projectRoot, 'package.json'), 'utf8')) as { version: string };
  const r = await runCli(['--version']);
  assert.equal(r.code, 0);
  assert.equal(r.stdout.toString(), `${version}\n`);
});

test('config check refuses a missing file with exit 2', async () => {
  const r = await runCli(['config', 'check', '/nonexistent/mailgate.toml']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /\/nonexistent\/mailgate\.toml/);
});

test('config schema prints a JSON Schema an editor can use', async () => {
  const r = await runCli(['config', 'schema']);
  assert.equal(r.code, 0, r.stderr);
  const schema = JSON.parse(r.stdout.toString()) as { properties: Record<string, { items?: { properties?: Record<string, unknown> } }> };
  assert.ok(schema.properties.smtp);
  assert.ok(schema.properties.alias?.items?.properties?.automatic_bcc);
});

test('every command has --help; usage errors exit 2', async () => {
  for (const args of [
    [],
    ['serve'],
    ['messages'],
    ['messages', 'list'],
    ['messages', 'show'],
    ['messages', 'raw'],
    ['config'],
    ['config', 'check'],
    ['config', 'schema'],
  ]) {
    const r = await runCli([...args, '--help']);
    assert.equal(r.code, 0, `${args.join(' ')} --help: ${r.stderr}`);
    assert.match(r.stdout.toString(), /Usage: mailgate/);
  }
  const unknown = await runCli(['frobnicate']);
  assert.equal(unknown.code, 2);
  const noId = await runCli(['messages', 'show']);
  assert.equal(noId.code, 2);
  assert.match(noId.stderr, /missing required argument/);
  const badLimit = await runCli(['messages', 'list', '--limit', 'many']);
  assert.equal(badLimit.code, 2);
  assert.match(badLimit.stderr, /--limit: expected a whole number/);
});

/** Every process below `pid` now (Linux: /proc/PID/task/TID/children), children before their own. */
async function descendants(pid: number): Promise<number[]> {
  const found: number[] = [];
  let tasks: string[];
  try {
    tasks = await readdir(`/proc/${pid}/task`);
  } catch {
    return found;
  }
  for (const task of tasks) {
    const children = await readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '');
    for (const child of children.split(/\s+/).filter(Boolean).map(Number)) found.push(child, ...(await descendants(child)));
  }
  return found;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The SMTP port from the gateway's "mailgate ready" log line, among whatever else is written to `out`. */
function readyPort(out: Readable): Promise<number> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: out });
    lines.on('line', (line) => {
      try {
        const entry = JSON.parse(line) as { msg?: string; smtp?: { port: number }[] };
        if (entry.msg === 'mailgate ready' && entry.smtp?.[0]) resolve(entry.smtp[0].port);
      } catch {
        // npm's own lines
      }
    });
    lines.on('close', () => reject(new Error('the output ended before the gateway was ready')));
  });
}

test('npm start: SIGTERM to the npm process stops the gateway (port free, store released), as a service manager stopping it expects', async (t) => {
  const { dir, cleanup } = await tempDir();
  const configFile = await writeTestConfig(dir);
  const npm = spawn('npm', ['start', '--', '--config', configFile], {
    cwd: projectRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, npm_config_update_notifier: 'false' },
  });
  const npmExited = new Promise((resolve) => npm.once('exit', resolve));
  let below: number[] = [];
  t.after(async () => {
    // Whatever this test started and is still there: the gateway left behind is the fault under test.
    for (const pid of below.filter(alive)) process.kill(pid, 'SIGKILL');
    if (npm.exitCode === null && npm.signalCode === null) npm.kill('SIGKILL');
    await cleanup();
  });
  let stderr = '';
  npm.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const port = await readyPort(npm.stdout).catch((err: Error) => assert.fail(`${err.message}: ${stderr}`));
  below = await descendants(npm.pid!);
  assert.ok(below.length > 0, 'npm runs the gateway as its child');

  npm.kill('SIGTERM');
  await npmExited;
  assert.equal(await accepts(port), false, 'nothing listens on the SMTP port any more');
  assert.deepEqual(below.filter(alive), [], 'no process npm started is left running');
  const store = await openTestStore(path.join(dir, 'data'));
  await store.close();
});

test('read-only commands run without the secrets in the shell; a command that uses one names its file, line and key and exits 2', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const configFile = await writeTestConfig(
    dir,
    [
      '[[smtp.user]]',
      'name = "relay"',
      'password_hash = "${MAILGATE_TEST_UNSET_HASH}"',
      '',
      '[[alias]]',
      'name = "support"',
      'address = "support@example.com"',
      '[alias.outgoing]',
      'type = "esmtp"',
      'host = "127.0.0.1"',
      'port = 2',
      'user = "support"',
      'password = "${MAILGATE_TEST_UNSET_PASSWORD}"',
      '',
    ].join('\n'),
  );
  const env = { ...process.env };
  delete env.MAILGATE_TEST_UNSET_HASH;
  delete env.MAILGATE_TEST_UNSET_PASSWORD;
  const cli = (...args: string[]) => runCli([...args, '--config', configFile], { env });
  // runCli adds process.env to env: make sure neither is there.
  assert.equal(process.env.MAILGATE_TEST_UNSET_HASH ?? process.env.MAILGATE_TEST_UNSET_PASSWORD, undefined);

  // send with the gateway stopped stores and queues: the gateway sends it, with its own environment.
  const sent = await cli('send', '--from', 'support', '--to', 'customer@example.org', '--subject', 'Hello', '--text', 'Hi.');
  assert.equal(sent.code, 0, sent.stderr);
  const id = /^queued as (\S+)/.exec(sent.stdout.toString())![1]!;
  for (const args of [
    ['messages', 'list'],
    ['messages', 'show', id],
    ['queue', 'list'],
    ['quarantine', 'list'],
    ['aliases', 'list'],
  ]) {
    const r = await cli(...args);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
  }
  assert.match((await cli('messages', 'list')).stdout.toString(), new RegExp(`^${id} .* Hello \\[ref:[2-9A-Z]{6}\\]$`, 'm'));

  const hashLine = `mailgate.toml:4: smtp.user[0].password_hash: expected environment variable MAILGATE_TEST_UNSET_HASH to be set`;
  const passwordLine = `mailgate.toml:14: alias[0].outgoing.password: expected environment variable MAILGATE_TEST_UNSET_PASSWORD to be set`;
  const check = await cli('config', 'check');
  assert.equal(check.code, 0, check.stderr);
  assert.match(check.stdout.toString(), /mailgate\.toml: ok/);
  assert.equal(
    check.stderr,
    `secrets not set in this environment (\`mailgate serve\` needs them where it runs):\n  ${configFile}:4: smtp.user[0].password_hash: expected environment variable MAILGATE_TEST_UNSET_HASH to be set\n  ${configFile}:14: alias[0].outgoing.password: expected environment variable MAILGATE_TEST_UNSET_PASSWORD to be set\n`,
  );

  // serve uses them all: refused before it listens or opens anything, as loading always said it.
  const serve = await runCli(['serve', '--config', 'mailgate.toml'], { env, cwd: dir });
  assert.equal(serve.code, 2);
  assert.equal(serve.stderr, `mailgate: ${hashLine}\n${passwordLine}\n`);
  // aliases test logs in with the alias's password: that one only.
  const aliasTest = await runCli(['aliases', 'test', 'support', '--config', 'mailgate.toml'], { env, cwd: dir });
  assert.equal(aliasTest.code, 2);
  assert.equal(aliasTest.stderr, `mailgate: ${passwordLine}\n`);
  assert.equal(aliasTest.stdout.length, 0, 'nothing was tried');
});

test('messages show and messages raw say the same for an unknown id, through the gateway and on the store', async (t) => {
  const gw = await startTestGateway();
  t.after(() => gw.cleanup());
  const cli = (...args: string[]) => runCli([...args, '--config', gw.configFile]);
  const compare = async (id: string) => {
    // One after the other: on a stopped gateway's store, two commands at once would contend for its lock.
    const show = await cli('messages', 'show', id);
    const raw = await cli('messages', 'raw', id);
    assert.deepEqual([show.code, show.stderr, show.stdout.length], [1, `mailgate: No such message: ${id}\n`, 0]);
    assert.deepEqual([raw.code, raw.stderr, raw.stdout.length], [show.code, show.stderr, 0]);
  };
  await compare('01ZZZZZZZZZZZZZZZZZZZZZZZZ');
  await compare('nope');
  await gw.stop();
  await compare('01ZZZZZZZZZZZZZZZZZZZZZZZZ');
});

/** Lines of 76 base64 characters, as mail clients write them. */
const base64Lines = (bytes: Buffer) => (bytes.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');

/** A Windows program's first bytes: what blocking by content and name both see as one. */
const PROGRAM = Buffer.concat([Buffer.from([0x4d, 0x5a, 0x90, 0, 3, 0, 0, 0]), Buffer.from('This program cannot be run in DOS mode.'.repeat(3))]);

const mime = (from: string, to: string, subject: string, parts: string[][]) =>
  [
    `From: ${from}`,
    `To: ${to}`,
    `Subject: ${subject}`,
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="part"',
    '',
    ...parts.flatMap((p) => ['--part', ...p]),
    '--part--',
    '',
  ].join('\r\n');

/** A gateway on a config with aliases support and sales, and a partition policy that quarantines .exe files. */
async function gatewayWithPolicy(t: { after(fn: () => Promise<void>): void }) {
  const { dir, cleanup } = await tempDir();
  await writeFile(path.join(dir, 'policy.toml'), '[attachments]\nblocked_extensions = [".exe"]\n');
  const configFile = await writeTestConfig(
    dir,
    [
      '[partition]',
      'policy = "policy.toml"',
      '',
      '[[alias]]',
      'name = "support"',
      'address = "support@example.com"',
      '',
      '[[alias]]',
      'name = "sales"',
      'address = "sales@example.com"',
      '',
    ].join('\n'),
  );
  const gw = await startGatewayOn(configFile, { retriever: false });
  t.after(async () => {
    await gw.stop();
    await cleanup();
  });
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: gw.gateway.smtp.addresses[0]!.port, ignoreTLS: true });
  return {
    ...gw,
    cli: (...args: string[]) => runCli([...args, '--config', configFile]),
    async send(to: string, raw: string): Promise<string> {
      const info = await transport.sendMail({ envelope: { from: 'customer@example.org', to: [to] }, raw });
      return /queued as (\S+)/.exec(info.response)![1]!;
    },
  };
}

test('messages list --tag: the exception queue as a list to work from; --alias naming no alias is a usage error', async (t) => {
  const gw = await gatewayWithPolicy(t);
  const plain = (subject: string) => ['Content-Type: text/plain', '', `${subject}.`];
  const awaySupport = await gw.send(
    'support@example.com',
    mime('Ann <ann@example.org>', 'support@example.com', 'Out of Office: back on Monday', [plain('Away')]),
  );
  const order = await gw.send('support@example.com', mime('Bob <bob@example.org>', 'support@example.com', 'Order 1234', [plain('Where is it')]));
  const awaySales = await gw.send('sales@example.com', mime('Cy <cy@example.org>', 'sales@example.com', 'Out of Office', [plain('Away')]));

  const tagged = await gw.cli('messages', 'list', '--tag', 'exception-queue', '--json');
  assert.equal(tagged.code, 0, tagged.stderr);
  assert.deepEqual(
    (JSON.parse(tagged.stdout.toString()) as MessageMeta[]).map((m) => m.id),
    [awaySales, awaySupport],
    'newest first, the order left out',
  );
  const text = (await gw.cli('messages', 'list', '--tag', 'exception-queue')).stdout.toString().split('\n');
  assert.match(text[0]!, /^ID +RECEIVED +SIZE +SOURCE +FROM +SUBJECT$/);
  assert.match(text[1]!, new RegExp(`^${awaySales} .* smtp:sales +Cy <cy@example\\.org> +Out of Office$`));
  assert.match(text[2]!, new RegExp(`^${awaySupport} .* smtp:support +Ann <ann@example\\.org> +Out of Office: back on Monday$`));
  assert.equal(text.length, 4);
  const one = await gw.cli('messages', 'list', '--tag', 'exception-queue', '--alias', 'support', '--json');
  assert.deepEqual(
    (JSON.parse(one.stdout.toString()) as MessageMeta[]).map((m) => m.id),
    [awaySupport],
  );
  const limited = await gw.cli('messages', 'list', '--tag', 'exception-queue', '--limit', '1', '--json');
  assert.deepEqual(
    (JSON.parse(limited.stdout.toString()) as MessageMeta[]).map((m) => m.id),
    [awaySales],
  );
  const none = await gw.cli('messages', 'list', '--tag', 'no-such-tag');
  assert.deepEqual([none.code, none.stdout.toString()], [0, '']);
  assert.ok(order);

  const typo = await gw.cli('messages', 'list', '--alias', 'suport');
  assert.deepEqual([typo.code, typo.stderr, typo.stdout.length], [2, 'mailgate: no alias named "suport"; known aliases: support, sales\n', 0]);

  // The same on the store, with the gateway stopped.
  await gw.stop();
  const direct = await gw.cli('messages', 'list', '--tag', 'exception-queue', '--alias', 'sales', '--json');
  assert.equal(direct.code, 0, direct.stderr);
  assert.deepEqual(
    (JSON.parse(direct.stdout.toString()) as MessageMeta[]).map((m) => m.id),
    [awaySales],
  );
});

test('messages show: each attachment with its decoded size (a blocked one: its quarantine record), findings in sentences', async (t) => {
  const gw = await gatewayWithPolicy(t);
  const report = randomBytes(3001);
  const notes = 'café = 1end';
  const id = await gw.send(
    'support@example.com',
    mime('Customer <customer@example.org>', 'support@example.com', 'Documents', [
      ['Content-Type: text/plain; charset=utf-8', '', 'See the files.'],
      [
        'Content-Type: application/octet-stream',
        'Content-Disposition: attachment; filename="report.bin"',
        'Content-Transfer-Encoding: base64',
        '',
        base64Lines(report),
      ],
      [
        'Content-Type: text/plain; charset=utf-8',
        'Content-Disposition: attachment; filename="notes.txt"',
        'Content-Transfer-Encoding: quoted-printable',
        '',
        'caf=C3=A9 =3D 1=',
        'end',
      ],
      [
        'Content-Type: application/octet-stream',
        'Content-Disposition: attachment; filename="tool.exe"',
        'Content-Transfer-Encoding: base64',
        '',
        base64Lines(PROGRAM),
      ],
    ]),
  );
  const [record] = JSON.parse((await gw.cli('quarantine', 'list', '--message', id, '--json')).stdout.toString()) as QuarantineRecord[];
  assert.ok(record);

  const show = await gw.cli('messages', 'show', id);
  assert.equal(show.code, 0, show.stderr);
  const text = show.stdout.toString();
  assert.ok(
    text.includes(
      'attachments:   report.bin (application/octet-stream, 3001 bytes)\n' +
        `               notes.txt (text/plain, ${Buffer.byteLength(notes)} bytes)\n` +
        `               tool.exe [blocked] (application/octet-stream, ${PROGRAM.length} bytes, in quarantine as ${record.id}: blocked extension .exe (partition policy))\n`,
    ),
    text,
  );
  assert.equal(record.size, PROGRAM.length, 'the size quarantine list gives');
  assert.doesNotMatch(text, /[{}]/, 'no JSON');
  assert.match(text, /^findings:\n/m);
  assert.match(
    text,
    /^ {2}attachments: +"report\.bin" allowed\.\n {2} +"notes\.txt" allowed\.\n {2} +"tool\.exe" quarantined: blocked extension \.exe \(partition policy\)\.$/m,
  );
  assert.match(text, /^ {2}delivery_exceptions: +Not a delivery exception: /m);

  const json = JSON.parse((await gw.cli('messages', 'show', id, '--json')).stdout.toString()) as { attachments: { fileName: string; decodedSize?: number }[] };
  assert.deepEqual(
    json.attachments.map((a) => [a.fileName, a.decodedSize]),
    [
      ['report.bin', 3001],
      ['notes.txt', Buffer.byteLength(notes)],
      ['tool.exe', PROGRAM.length],
    ],
  );

  const away = await gw.send(
    'support@example.com',
    mime('Ann <ann@example.org>', 'support@example.com', 'Out of Office: back on Monday', [['Content-Type: text/plain', '', 'Away.']]),
  );
  const bounce = (await gw.cli('messages', 'show', away)).stdout.toString();
  assert.match(bounce, /^tags: +email-permanent-undeliverable, exception-queue$/m);
  assert.match(
    bounce,
    /^ {2}delivery_exceptions: +Tagged email-permanent-undeliverable and put it in the exception queue; failure type decided by phrase \(the phrase: "Out of office" \(permanent\)\)\.\n {2} +Subject phrase "Out of office" \(predefined, permanent\) matched "Out of Office" in the subject\.$/m,
  );
});

test('messages list searches by text, attachment, wrapped and time, a page at a time; show prints the timeline; quarantine acts in bulk by filter', async (t) => {
  const gw = await gatewayWithPolicy(t);
  const plain = (text: string) => ['Content-Type: text/plain', '', text];
  const program = (name: string) => [
    'Content-Type: application/octet-stream',
    `Content-Disposition: attachment; filename="${name}"`,
    'Content-Transfer-Encoding: base64',
    '',
    base64Lines(PROGRAM),
  ];
  const tool = await gw.send('support@example.com', mime('Ann <ann@example.org>', 'support@example.com', 'Tools', [plain('See.'), program('tool.exe')]));
  const setup = await gw.send('sales@example.com', mime('Bob <bob@example.org>', 'sales@example.com', 'Setup', [plain('See.'), program('SETUP.EXE')]));
  const order = await gw.send('sales@example.com', mime('Cy <cy@example.org>', 'sales@example.com', 'Order 1234', [plain('Where is it?')]));
  const ids = async (...args: string[]) => {
    const r = await gw.cli('messages', 'list', ...args, '--json');
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout.toString()) as MessageMeta[]).map((m) => m.id);
  };
  assert.deepEqual(await ids('--text', 'ORDER 12'), [order]);
  assert.deepEqual(await ids('--text', 'bob@'), [setup]);
  assert.deepEqual(await ids('--attachment'), [setup, tool]);
  assert.deepEqual(await ids('--no-attachment'), [order]);
  assert.deepEqual(await ids('--attachment', '--alias', 'support'), [tool]);
  assert.deepEqual(await ids('--wrapped'), []);
  assert.deepEqual(await ids('--no-wrapped', '--since', '1h'), [order, setup, tool]);
  assert.deepEqual(await ids('--until', '2000-01-01T00:00:00Z'), []);
  const badUntil = await gw.cli('messages', 'list', '--until', 'soon');
  assert.deepEqual([badUntil.code, badUntil.stderr], [2, 'mailgate: --until: expected an ISO 8601 time or an age like 2h or 7d, got "soon"\n']);

  // A page: the table as before on stdout, the way to the next page on stderr.
  const first = await gw.cli('messages', 'list', '--limit', '2');
  assert.equal(first.stdout.toString().split('\n').length, 4, 'a header and two messages');
  const cursor = /^more messages: add --cursor (\S+) for the next page\n$/.exec(first.stderr)?.[1];
  assert.ok(cursor, first.stderr);
  const last = await gw.cli('messages', 'list', '--limit', '2', '--cursor', cursor, '--json');
  assert.deepEqual([(JSON.parse(last.stdout.toString()) as MessageMeta[]).map((m) => m.id), last.stderr], [[tool], '']);
  const badCursor = await gw.cli('messages', 'list', '--cursor', 'nope');
  assert.deepEqual([badCursor.code, badCursor.stderr], [1, 'mailgate: cursor: not one that a message list gave, got "nope"\n']);

  const show = (await gw.cli('messages', 'show', tool)).stdout.toString();
  assert.match(show, /^timeline:\n {2}\d{4}-\d\d-\d\d \d\d:\d\d:\d\d {2}received by smtp for alias support from 127\.0\.0\.1, \d+ bytes\n/m);
  assert.match(show, /^ {2}\d{4}-.{14} {2}attachments: .*"tool\.exe" quarantined: blocked extension \.exe/m);
  const timeline = (await gw.cli('messages', 'show', tool, '--timeline')).stdout.toString();
  assert.ok(show.endsWith(`timeline:\n${timeline}`), 'the same lines alone');
  const steps = JSON.parse((await gw.cli('messages', 'show', tool, '--timeline', '--json')).stdout.toString()) as { event: string }[];
  assert.deepEqual(steps[0], { ...steps[0], event: 'received', source: 'smtp', alias: 'support' });

  // Quarantine: list by pattern, restore and delete by filter.
  const listed = async (...args: string[]) =>
    (JSON.parse((await gw.cli('quarantine', 'list', ...args, '--json')).stdout.toString()) as QuarantineRecord[]).map((r) => r.messageId);
  assert.deepEqual((await listed('--file', '*.exe')).sort(), [tool, setup].sort());
  assert.deepEqual(await listed('--file', 'setup.*'), [setup]);
  assert.deepEqual(await listed('--rule', '.EXE', '--older-than', '1h'), []);
  const restore = await gw.cli('quarantine', 'restore', '--file', 'tool.exe');
  assert.deepEqual([restore.code, restore.stdout.toString()], [0, `restored "tool.exe" into message ${tool}\n`]);
  const usage = await Promise.all([gw.cli('quarantine', 'delete'), gw.cli('quarantine', 'delete', `${setup}.1`, '--rule', 'exe')]);
  assert.deepEqual(
    usage.map((r) => [r.code, r.stderr]),
    [
      [2, 'mailgate: quarantine delete: give a quarantine id, or at least one of --message, --rule, --file, --older-than\n'],
      [2, 'mailgate: quarantine delete: give a quarantine id or filters, not both\n'],
    ],
  );
  // Stopped: the same on the store.
  await gw.stop();
  const [record] = JSON.parse((await gw.cli('quarantine', 'list', '--json')).stdout.toString()) as QuarantineRecord[];
  const deleted = await gw.cli('quarantine', 'delete', '--rule', 'extension .exe', '--message', setup);
  assert.deepEqual([deleted.code, deleted.stdout.toString()], [0, `deleted "${record!.fileName}" (${record!.id})\n`]);
  const nothing = await gw.cli('quarantine', 'delete', '--rule', 'exe');
  assert.deepEqual([nothing.code, nothing.stdout.toString()], [0, 'nothing in quarantine matches: nothing to delete\n']);
  assert.deepEqual(await ids('--text', 'order'), [order]);
});
