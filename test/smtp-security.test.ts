import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { capturingLogger, runCli, startTestGateway } from './helpers/gateway.js';
import { rawSmtp } from './helpers/smtp-client.js';
import { startUpstream } from './helpers/upstream.js';
import { SUBMIT_PASSWORD, SUBMIT_USER, submissionToml, submit, waitDelivered, waitQueue } from './helpers/outbound.js';
import { hashPassword } from '../gateway/config/password.js';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { DataGuard } from '../gateway/smtp/data-guards.js';

const MX = `
[smtp]
accept_all = false
domains = ["ours.example", "xn--bcher-kva.example"]

[[alias]]
name = "support"
address = "support@ours.example"
`;

/** The reply to RCPT TO:<address> in a fresh transaction. */
async function rcpt(port: number, address: string): Promise<string> {
  const smtp = await rawSmtp(port);
  try {
    await smtp.command('EHLO client.example');
    await smtp.command('MAIL FROM:<sender@example.org>');
    return await smtp.command(`RCPT TO:<${address}>`);
  } finally {
    smtp.close();
  }
}

test('no open relay: the classic address tricks are refused, our own addresses in their variants accepted', async (t) => {
  const gw = await startTestGateway(MX);
  t.after(() => gw.cleanup());
  const refused: [string, RegExp][] = [
    ['user@other.example', /^550 5\.7\.1/],
    ['user%other.example@ours.example', /^550 5\.7\.1 .*local part/],
    ['other.example!user@ours.example', /^550 5\.7\.1 .*local part/],
    ['@ours.example:user@other.example', /^550 5\.7\.1 .*<user@other\.example>/], // source route: stripped, then refused
    ['@ours.example,@ours.example:user@other.example', /^550 5\.7\.1/],
    ['"user@other.example"@ours.example', /^5\d\d /],
    ['user@[127.0.0.1]', /^5\d\d /],
    ['user@ours.example.other.example', /^550 5\.7\.1/],
    ['user@otherours.example', /^550 5\.7\.1/],
    ['support@ours.example@other.example', /^5\d\d /],
    ['anyone@ours.example.', /^5\d\d /], // smtp-server: bad syntax; never a relay either way
  ];
  for (const [address, expected] of refused) assert.match(await rcpt(gw.port, address), expected, address);
  const accepted = ['support@ours.example', 'SUPPORT@OURS.EXAMPLE', 'anyone@Ours.Example', 'user@xn--bcher-kva.example', 'user@bücher.example'];
  for (const address of accepted) assert.match(await rcpt(gw.port, address), /^250/, address);
});

test('trusted networks and authenticated users may send to other domains, through the partition default SMTP; others may not', async (t) => {
  const smartHost = await startUpstream();
  const gw = await startTestGateway(`
[smtp]
accept_all = false
domains = ["ours.example"]
trusted_networks = ["127.0.0.0/8"]

[partition.default_smtp]
server = "127.0.0.1"
port = ${smartHost.port}

[queue]
retry_intervals = [1]
`);
  const noSmartHost = await startTestGateway(`
[smtp]
accept_all = false
domains = ["ours.example"]
trusted_networks = ["127.0.0.0/8"]
`);
  t.after(async () => {
    await gw.cleanup();
    await noSmartHost.cleanup();
    await smartHost.close();
  });
  assert.match(await rcpt(noSmartHost.port, 'user@other.example'), /^550 5\.7\.1/, 'without a smart host nothing is relayed, trusted or not');
  const smtp = await rawSmtp(gw.port);
  await smtp.command('EHLO client.example');
  await smtp.command('MAIL FROM:<app@ours.example>');
  assert.match(await smtp.command('RCPT TO:<user@other.example>'), /^250/);
  assert.match(await smtp.command('RCPT TO:<local@ours.example>'), /^250/);
  await smtp.command('DATA');
  const reply = await smtp.write('From: app@ours.example\r\nTo: user@other.example\r\nSubject: out\r\n\r\nhi\r\n.\r\n');
  smtp.close();
  const id = /queued as (\S+)/.exec(reply)![1]!;
  await waitDelivered(gw.store, id);
  const [got] = await smartHost.waitFor(1);
  assert.deepEqual(got!.rcptTo, ['user@other.example'], 'only the foreign recipient goes out; ours is stored');
});

test('SMTP smuggling: bare LF or CR in DATA is normalised by default, refused when set; "\\n.\\r\\n" never ends a message downstream', async (t) => {
  const downstream = await startUpstream();
  const relay = `
[[relay]]
name = "internal"
domains = ["ours.example"]
to = "smtp://127.0.0.1:${downstream.port}"
[queue]
retry_intervals = [1]
`;
  const normal = await startTestGateway(MX.replace('domains = ["ours.example", "xn--bcher-kva.example"]', 'domains = []') + relay);
  const strict = await startTestGateway(
    MX.replace('domains = ["ours.example", "xn--bcher-kva.example"]', 'domains = []') + relay + '\n[smtp.limits]\nbare_line_endings = "reject"\n',
  );
  t.after(async () => {
    await normal.cleanup();
    await strict.cleanup();
    await downstream.close();
  });
  const smuggled =
    'From: a@example.org\r\nTo: user@ours.example\r\nSubject: one\r\n\r\nfirst\n.\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@ours.example>\r\nDATA\r\nSubject: smuggled\r\n\r\nsecond\rbare CR\r\n.\r\n';
  const send = async (port: number) => {
    const smtp = await rawSmtp(port);
    await smtp.command('EHLO client.example');
    await smtp.command('MAIL FROM:<a@example.org>');
    await smtp.command('RCPT TO:<user@ours.example>');
    await smtp.command('DATA');
    const r = await smtp.write(smuggled);
    const next = await smtp.command('NOOP');
    smtp.close();
    return [r, next];
  };
  const [refused, after] = await send(strict.port);
  assert.match(refused!, /^554 5\.5\.2 .*bare LF/);
  assert.match(after!, /^250/, 'the session goes on');
  assert.equal((await strict.store.listMessages()).length, 0);

  const [accepted] = await send(normal.port);
  const id = /queued as (\S+)/.exec(accepted!)![1]!;
  await waitDelivered(normal.store, id);
  assert.equal(downstream.received.length, 1, 'one message downstream, not two');
  const raw = downstream.received[0]!.raw.toString('latin1');
  assert.doesNotMatch(raw.replace(/\r\n/g, ''), /[\r\n]/, 'no bare CR or LF left');
  assert.match(raw, /first\r\n\.\r\nMAIL FROM:<evil@example\.org>/, 'the would-be second message is text of the first');
  assert.deepEqual(downstream.received[0]!.rcptTo, ['user@ours.example']);
});

test('a bare LF in a command closes the connection with 421', async (t) => {
  const gw = await startTestGateway(MX);
  t.after(() => gw.cleanup());
  const smtp = await rawSmtp(gw.port);
  await smtp.command('EHLO client.example');
  assert.match(await smtp.write('MAIL FROM:<a@example.org>\n'), /^421 4\.5\.2 Bare LF/);
  smtp.close();
});

test('limits: recipients per message, hop count, connections per address, errors per session, failed logins per address', async (t) => {
  const gw = await startTestGateway(`
[smtp]
accept_all = false
domains = ["ours.example"]
[smtp.limits]
max_recipients = 2
max_received_headers = 3
max_connections_per_ip = 3
max_errors = 3
auth_failures_per_ip = 2
[smtp.auth]
allow_insecure_on_loopback = true
[[smtp.user]]
name = "app"
password_hash = "${hashPassword('right')}"
`);
  t.after(() => gw.cleanup());

  const smtp = await rawSmtp(gw.port);
  await smtp.command('EHLO client.example');
  await smtp.command('MAIL FROM:<a@example.org>');
  assert.match(await smtp.command('RCPT TO:<one@ours.example>'), /^250/);
  assert.match(await smtp.command('RCPT TO:<two@ours.example>'), /^250/);
  assert.match(await smtp.command('RCPT TO:<three@ours.example>'), /^452 4\.5\.3/);
  await smtp.command('DATA');
  const hops = Array.from({ length: 4 }, (_, i) => `Received: from hop${i}.example by hop${i + 1}.example; Mon, 23 Nov 2026 10:00:0${i} +0000\r\n`).join('');
  assert.match(await smtp.write(`${hops}Subject: loop\r\n\r\nround and round\r\n.\r\n`), /^554 5\.4\.6 Too many hops/);
  assert.equal((await gw.store.listMessages()).length, 0);

  // Connections per address: this one is the first; two more are allowed, the fourth is refused.
  const more = [await rawSmtp(gw.port), await rawSmtp(gw.port)];
  const fourth = await rawSmtp(gw.port);
  assert.match(fourth.greeting, /^421 4\.7\.0 Too many connections/);
  for (const c of [fourth, ...more]) c.close();
  smtp.close();
  await new Promise((r) => setTimeout(r, 200));
  // Every closed connection is given back, the refused one too: three fit again.
  const again = [await rawSmtp(gw.port), await rawSmtp(gw.port), await rawSmtp(gw.port)];
  for (const c of again) assert.match(c.greeting, /^220/);
  for (const c of again) c.close();
  await new Promise((r) => setTimeout(r, 200));

  // Errors per session: the third refusal closes it.
  const noisy = await rawSmtp(gw.port);
  await noisy.command('EHLO client.example');
  await noisy.command('MAIL FROM:<a@example.org>');
  assert.match(await noisy.command('RCPT TO:<x@elsewhere.example>'), /^550/);
  assert.match(await noisy.command('RCPT TO:<y@elsewhere.example>'), /^550/);
  assert.match(await noisy.command('RCPT TO:<z@elsewhere.example>'), /^421 4\.7\.0 Too many errors/);
  noisy.close();

  // Failed logins: after two failures from this address even the right password is refused for a while.
  const login = async (password: string) => {
    const c = await rawSmtp(gw.port);
    await c.command('EHLO client.example');
    const r = await c.command(`AUTH PLAIN ${Buffer.from(`\0app\0${password}`).toString('base64')}`);
    c.close();
    return r;
  };
  assert.match(await login('wrong'), /^535/);
  assert.match(await login('wrong'), /^535/);
  assert.match(await login('right'), /^454 4\.7\.0 Too many failed logins/);
});

test('a client sending DATA slower than min_data_rate is cut off, and others are served meanwhile', async (t) => {
  const gw = await startTestGateway(`
[smtp.limits]
idle_timeout = 1
min_data_rate = 1000
`);
  t.after(() => gw.cleanup());
  const slow = connect(gw.port, '127.0.0.1');
  const closed = new Promise<void>((resolve) => slow.once('close', () => resolve()));
  let greeting = '';
  slow.on('data', (c: Buffer) => (greeting += c.toString()));
  slow.on('error', () => undefined);
  await new Promise((r) => setTimeout(r, 300));
  slow.write('EHLO slow.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n');
  await new Promise((r) => setTimeout(r, 200));
  slow.write('DATA\r\n');
  await new Promise((r) => setTimeout(r, 200));
  const started = Date.now();
  const drip = setInterval(() => slow.write('x'), 200); // 5 bytes a second
  // Meanwhile another client is served.
  const other = await rawSmtp(gw.port);
  await other.command('EHLO fast.example');
  await other.command('MAIL FROM:<a@example.org>');
  await other.command('RCPT TO:<b@example.org>');
  await other.command('DATA');
  assert.match(await other.write('Subject: fast\r\n\r\nhello\r\n.\r\n'), /^250/);
  other.close();
  await closed;
  clearInterval(drip);
  const lasted = Date.now() - started;
  assert.ok(lasted < 10_000, `the slow client was cut off after ${lasted} ms`);
  assert.match(greeting, /354/);
  const stored = await gw.store.listMessages();
  assert.deepEqual(
    stored.map((m) => m.subject),
    ['fast'],
    'nothing of the slow message was stored',
  );
});

test('secrets stay out of logs, queue errors and config check', async (t) => {
  const upstream = await startUpstream({ users: { 'support-out': 'the-right-one' } });
  const log = capturingLogger();
  const gw = await startTestGateway(
    `
[partition.default_smtp]
server = "127.0.0.1"
protocol = "esmtp"
user = "partition"
password = "p4rtition-s3cret"
[[alias]]
name = "support"
address = "support@ours.example"
[alias.outgoing]
type = "esmtp"
host = "127.0.0.1"
port = ${upstream.port}
user = "support-out"
password = "wr0ng-s3cret"
[submission]
listen = ["127.0.0.1:0"]
[submission.auth]
allow_insecure_on_loopback = true
[[submission.user]]
name = "helpdesk"
password_hash = "${hashPassword('helpdesk-s3cret')}"
send_as = ["*"]
[queue]
retry_intervals = [3600]
`,
    { logger: log.logger },
  );
  t.after(async () => {
    await gw.cleanup();
    await upstream.close();
  });
  const id = await submit(
    gw.gateway.submission!.addresses[0]!.port,
    { from: 'support@ours.example', to: 'c@example.org', subject: 's', text: 'x' },
    { user: 'helpdesk', pass: 'helpdesk-s3cret' },
  );
  // The dispatcher saves the attempt after it logs it: wait for the saved entry, then the log line.
  const entry = await waitQueue(gw.store, id, (e) => e.attempts >= 1);
  await log.waitFor((e) => e.msg === 'delivery attempt');
  assert.match(entry.lastError?.message ?? '', /authentication failed/);
  const everything = JSON.stringify(log.entries) + JSON.stringify(entry);
  for (const secret of ['wr0ng-s3cret', 'p4rtition-s3cret', 'helpdesk-s3cret']) assert.ok(!everything.includes(secret), `${secret} leaked`);
  const check = await runCli(['config', 'check', gw.configFile]);
  assert.equal(check.code, 0, check.stderr);
  assert.ok(!(check.stdout.toString() + check.stderr).includes('s3cret'));
});

test('line endings: random text with CR, LF and CRLF, cut anywhere, comes out as the one-line-ending reference says', async () => {
  let seed = 20261203;
  const random = (n: number) => (seed = (seed * 1103515245 + 12345) % 2147483648) % n;
  const alphabet = ['a', 'b', '.', ' ', '\r', '\n', '\r\n', '\r\r', '\n\r'];
  for (let round = 0; round < 300; round++) {
    const input = Array.from({ length: 1 + random(40) }, () => alphabet[random(alphabet.length)]).join('');
    const chunks: Buffer[] = [];
    for (let at = 0; at < input.length;) {
      const size = 1 + random(8);
      chunks.push(Buffer.from(input.slice(at, at + size)));
      at += size;
    }
    const expected = input.replace(/\r\n|\r|\n/g, '\r\n');
    const guard = () => Readable.from(chunks).pipe(new DataGuard({ bareLineEndings: 'normalize', maxReceivedHeaders: 50 }));
    assert.equal(await text(guard()), expected, JSON.stringify(input));
    const strict = Readable.from(chunks).pipe(new DataGuard({ bareLineEndings: 'reject', maxReceivedHeaders: 50 }));
    if (expected === input) assert.equal(await text(strict), input, JSON.stringify(input));
    else await assert.rejects(text(strict), /bare (LF|CR)/, JSON.stringify(input));
  }
});

test('line endings are normalised the same whatever the chunking, CR at a chunk edge included', async () => {
  const input = 'a\r\nb\nc\rd\r\n\r\n.\r\ne\r';
  const expected = 'a\r\nb\r\nc\r\nd\r\n\r\n.\r\ne\r\n';
  for (let cut = 0; cut <= input.length; cut++) {
    const chunks = [input.slice(0, cut), input.slice(cut)].filter(Boolean).map((c) => Buffer.from(c));
    assert.equal(await text(Readable.from(chunks).pipe(new DataGuard({ bareLineEndings: 'normalize', maxReceivedHeaders: 50 }))), expected, `cut at ${cut}`);
  }
  const clean = 'a\r\nb\r\n';
  for (let cut = 0; cut <= clean.length; cut++) {
    const chunks = [clean.slice(0, cut), clean.slice(cut)].filter(Boolean).map((c) => Buffer.from(c));
    assert.equal(
      await text(Readable.from(chunks).pipe(new DataGuard({ bareLineEndings: 'reject', maxReceivedHeaders: 50 }))),
      clean,
      `clean input, cut at ${cut}`,
    );
  }
});

test('limits: the submission listener closes a session that keeps talking without logging in', async (t) => {
  const gw = await startTestGateway(`
[smtp.limits]
commands_before_auth = 4
${submissionToml()}`);
  t.after(() => gw.cleanup());
  const port = gw.gateway.submission!.addresses[0]!.port;
  const idle = await rawSmtp(port);
  assert.match(await idle.command('EHLO client.example'), /^250/);
  assert.match(await idle.command('NOOP'), /^250/);
  assert.match(await idle.command('MAIL FROM:<a@example.org>'), /^530/);
  assert.match(await idle.command('NOOP'), /^421 .*too many unauthenticated commands/i);
  idle.close();
  // A client that logs in in time goes on as usual.
  const app = await rawSmtp(port);
  assert.match(await app.command('EHLO client.example'), /^250/);
  assert.match(await app.command(`AUTH PLAIN ${Buffer.from(`\0${SUBMIT_USER}\0${SUBMIT_PASSWORD}`).toString('base64')}`), /^235/);
  for (let i = 0; i < 6; i++) assert.match(await app.command('NOOP'), /^250/);
  app.close();
});
