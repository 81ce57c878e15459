import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { createConnection, type Socket } from 'node:net';
import { loadConfigText } from '../gateway/config/load.js';
import type { FetchedMessage, MailboxItem } from '../gateway/fetch/mailbox.js';
import { Pop3Client, type Pop3Options } from '../gateway/fetch/pop3/client.js';
import { Pop3Mailbox } from '../gateway/fetch/pop3/mailbox.js';
import { Pop3Error } from '../gateway/fetch/pop3/errors.js';
import { DotDecoder } from '../gateway/fetch/pop3/stream.js';
import { startDovecot, type TestDovecot } from './helpers/dovecot.js';

// One user per test, so no test sees another's mailbox.
const USERS = ['logins', 'wrongpw', 'oauth', 'uidl', 'retr', 'top', 'dele', 'rset', 'big', 'abandon', 'order', 'range', 'gone', 'early', 'cut'];
// Microsoft's access tokens run to well over a thousand characters: longer than an AUTH line may be (RFC 5034).
const GOOD_TOKEN = 'eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.' + 'a'.repeat(1500);

let dovecot: TestDovecot;
let introspection: HttpServer;

before(async () => {
  // Dovecot's oauth2 passdb asks this endpoint about every token (RECIPES.md, OAuth2 section).
  introspection = createHttpServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const token = new URLSearchParams(body).get('token');
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(token === GOOD_TOKEN ? { active: true, username: 'oauth' } : { active: false }));
    });
  });
  await new Promise<void>((resolve) => introspection.listen(0, '127.0.0.1', resolve));
  const introspectionUrl = `http://127.0.0.1:${(introspection.address() as AddressInfo).port}/introspect`;
  dovecot = await startDovecot({ users: USERS.map((name) => ({ name, password: `pw-${name}` })), oauth: { introspectionUrl } });
});

after(async () => {
  await dovecot?.stop();
  await new Promise((resolve) => introspection?.close(resolve));
});

/** Options for the test Dovecot's POP3 port for SECURITY, trusting its certificate. */
function pop3(security: Pop3Options['security'], extra: Partial<Pop3Options> = {}): Pop3Options {
  return {
    host: '127.0.0.1',
    port: security === 'tls' ? dovecot.pop3sPort : dovecot.pop3Port,
    security,
    tls: { ca: dovecot.certPem },
    connectTimeoutMs: 10_000,
    commandTimeoutMs: 10_000,
    ...extra,
  };
}

let lastLocal = 10;
/**
 * A loopback source address of its own, for a login meant to fail: Dovecot's auth penalty delays
 * every later login from an address that failed, which would slow the tests after it.
 */
const elsewhere = () => ({ localAddress: `127.0.0.${++lastLocal}` });

async function session(user: string, security: Pop3Options['security'] = 'starttls'): Promise<Pop3Client> {
  const client = await Pop3Client.connect(pop3(security));
  await client.login(user, `pw-${user}`);
  return client;
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Rejects with a Pop3Error of KIND, and returns it for further checks. */
async function failsWith(promise: Promise<unknown>, kind: Pop3Error['kind']): Promise<Pop3Error> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof Pop3Error, `expected a Pop3Error, got ${String(err)}`);
    assert.equal(err.kind, kind, err.message);
    return err;
  }
  assert.fail(`expected a Pop3Error of kind ${kind}`);
}

/** A message whose body has lines that POP3 must dot-stuff: ".", "..", ".x". */
function dottedMessage(subject: string): Buffer {
  return Buffer.from(
    [
      'From: Customer <customer@example.org>',
      'To: support@example.com',
      `Subject: ${subject}`,
      `Message-ID: <${subject.replace(/\W/g, '')}@test.example>`,
      '',
      'Line one.',
      '.',
      '..',
      '.hidden line',
      '...three dots',
      ' . not at the start',
      '.',
      '',
    ].join('\r\n'),
  );
}

/** A message of about SIZE bytes: base64 lines, with dotted lines sprinkled in. */
function bigMessage(subject: string, size: number): Buffer {
  const head = Buffer.from(`From: a@example.org\r\nTo: b@example.com\r\nSubject: ${subject}\r\n\r\n`);
  const lines = randomBytes(Math.ceil((size * 3) / 4))
    .toString('base64')
    .match(/.{1,76}/g)!;
  for (let i = 0; i < lines.length; i += 997) lines[i] = i % 2 ? '.' : '.' + lines[i];
  return Buffer.concat([head, Buffer.from(lines.join('\r\n') + '\r\n')]);
}

async function deliveredBytes(user: string, name: string): Promise<Buffer> {
  return readFile(path.join(dovecot.dir, 'home', user, 'Maildir', 'new', name));
}

test('logs in with USER/PASS and AUTH PLAIN, over STLS and over TLS on connect', async () => {
  await dovecot.deliver('logins', dottedMessage('login check'));
  for (const security of ['starttls', 'tls'] as const) {
    for (const method of ['USER/PASS', 'AUTH PLAIN'] as const) {
      const client = await Pop3Client.connect(pop3(security));
      assert.equal(client.secure, true, `${security}: the session is encrypted`);
      assert.ok(client.capabilities.has('UIDL'), 'CAPA after TLS is known');
      if (method === 'USER/PASS') await client.login('logins', 'pw-logins');
      else await client.authPlain('logins', 'pw-logins');
      assert.equal((await client.stat()).count, 1, `${security} ${method}`);
      await client.quit();
    }
  }
});

test('security none talks in clear, where the server allows it', async () => {
  const client = await Pop3Client.connect(pop3('none'));
  assert.equal(client.secure, false);
  assert.ok(client.capabilities.has('STLS'));
  await client.authPlain('logins', 'pw-logins');
  await client.noop();
  await client.quit();
});

test('a wrong password is kind auth and carries the server text', async () => {
  const viaPass = await Pop3Client.connect(pop3('starttls', elsewhere()));
  const err = await failsWith(viaPass.login('wrongpw', 'nope'), 'auth');
  assert.match(err.serverText ?? '', /Authentication failed/);
  viaPass.close();
  const viaPlain = await Pop3Client.connect(pop3('tls', elsewhere()));
  await failsWith(viaPlain.authPlain('wrongpw', 'nope'), 'auth');
  viaPlain.close();
});

test('AUTH XOAUTH2 logs in with a valid token and reports a refused one as auth', async () => {
  await dovecot.deliver('oauth', dottedMessage('oauth'));
  const good = await Pop3Client.connect(pop3('tls'));
  await good.authXoauth2('oauth', GOOD_TOKEN);
  assert.equal((await good.stat()).count, 1);
  await good.quit();

  // The server answers a bad token with a JSON status as a continuation, then -ERR (RFC 7628 section 3.2.2).
  const bad = await Pop3Client.connect(pop3('tls', elsewhere()));
  const err = await failsWith(bad.authXoauth2('oauth', 'expired-token'), 'auth');
  assert.match(err.message, /"status"/, 'the decoded status from the error continuation is in the message');
  bad.close();
});

test('connection refused is kind tcp_refused', async () => {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  const err = await failsWith(Pop3Client.connect({ host: '127.0.0.1', port, security: 'none' }), 'tcp_refused');
  assert.equal(err.code, 'ECONNREFUSED');
});

test('a host name that does not resolve is kind dns', async () => {
  await failsWith(Pop3Client.connect({ host: 'pop.mailgate-test.invalid', port: 110, security: 'none', connectTimeoutMs: 10_000 }), 'dns');
});

test('a self-signed certificate that is not trusted is kind tls_certificate, on connect and after STLS', async () => {
  for (const security of ['tls', 'starttls'] as const) {
    const err = await failsWith(Pop3Client.connect({ ...pop3(security), tls: {} }), 'tls_certificate');
    assert.match(err.message, /not trusted/);
  }
});

test('TLS on connect against a clear-text port is kind tls', async () => {
  await failsWith(Pop3Client.connect({ ...pop3('tls'), port: dovecot.pop3Port }), 'tls');
});

test('no greeting within the connect timeout is kind timeout; so is a command left unanswered', async (t) => {
  let answer = true;
  const server: Server = createServer((socket) => {
    socket.on('error', () => undefined);
    if (!answer) return; // never greets
    socket.write('+OK fake\r\n');
    socket.on('data', (d: Buffer) => {
      if (d.toString().startsWith('CAPA')) socket.write('+OK\r\nUIDL\r\n.\r\n');
      // NOOP: silence
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => server.close(resolve)));
  const port = (server.address() as AddressInfo).port;
  const client = await Pop3Client.connect({ host: '127.0.0.1', port, security: 'none', commandTimeoutMs: 300 });
  const err = await failsWith(client.noop(), 'timeout');
  assert.match(err.message, /NOOP/);
  answer = false;
  await failsWith(Pop3Client.connect({ host: '127.0.0.1', port, security: 'none', connectTimeoutMs: 300 }), 'timeout');
});

test('STLS is required with security starttls: a server without it is refused, nothing sent in clear', async (t) => {
  const plain = await startDovecot({ ssl: 'no', users: [{ name: 'clear', password: 'pw-clear' }] });
  t.after(() => plain.stop());
  const err = await failsWith(Pop3Client.connect({ host: '127.0.0.1', port: plain.pop3Port, security: 'starttls' }), 'tls');
  assert.match(err.message, /does not offer STLS/);
  assert.doesNotMatch(await plain.readLog(), /user=<clear>/, 'no login was attempted');
  // The same server is fine when clear text is what the admin chose.
  const clear = await Pop3Client.connect({ host: '127.0.0.1', port: plain.pop3Port, security: 'none' });
  await clear.login('clear', 'pw-clear');
  await clear.quit();
});

test('a mailbox locked by another session is kind in_use', async (t) => {
  const locking = await startDovecot({ pop3LockSession: true, users: [{ name: 'shared', password: 'pw-shared' }] });
  t.after(() => locking.stop());
  const opts = { host: '127.0.0.1', port: locking.pop3Port, security: 'none' as const, commandTimeoutMs: 30_000 };
  const first = await Pop3Client.connect(opts);
  await first.login('shared', 'pw-shared');
  const second = await Pop3Client.connect(opts);
  const err = await failsWith(second.login('shared', 'pw-shared'), 'in_use');
  assert.match(err.serverText ?? '', /IN-USE/);
  second.close();
  await first.quit();
});

test('UIDL is stable across sessions and as mail arrives', async () => {
  for (let i = 0; i < 3; i++) await dovecot.deliver('uidl', dottedMessage(`uidl ${i}`));
  const one = await session('uidl');
  const first = (await one.uidlAndList()).uids;
  assert.equal(first.length, 3);
  assert.deepEqual(
    first.map((u) => u.msgno),
    [1, 2, 3],
  );
  assert.equal(new Set(first.map((u) => u.uid)).size, 3, 'UIDs are unique');
  await one.quit();

  await dovecot.deliver('uidl', dottedMessage('uidl 3'));
  const two = await session('uidl', 'tls');
  const second = (await two.uidlAndList()).uids;
  assert.equal(second.length, 4);
  assert.deepEqual(second.slice(0, 3), first);
  await two.quit();
});

test('RETR gives the delivered bytes exactly, dotted lines and a message of several MB included', async () => {
  const small = dottedMessage('retr dots');
  const big = bigMessage('retr big', 3 * 1024 * 1024);
  // Read back from Maildir/new before a session moves the files to cur/.
  const expected = [await deliveredBytes('retr', await dovecot.deliver('retr', small)), await deliveredBytes('retr', await dovecot.deliver('retr', big))];
  const client = await session('retr');
  const sizes = (await client.uidlAndList()).sizes;
  for (const [i, bytes] of expected.entries()) {
    assert.equal(sizes[i]?.size, bytes.length, 'LIST counts the bytes as stored (CRLF)');
    const got = await readAll(await client.retr(i + 1));
    assert.ok(got.equals(bytes), `message ${i + 1}: ${got.length} bytes read, ${bytes.length} delivered`);
  }
  await client.quit();
});

test('TOP n 0 gives the header only', async () => {
  const raw = dottedMessage('top');
  await dovecot.deliver('top', raw);
  const client = await session('top', 'tls');
  const head = await readAll(await client.top(1, 0));
  const end = raw.indexOf('\r\n\r\n') + 4;
  assert.equal(head.toString(), raw.subarray(0, end).toString());
  await client.quit();
});

test('DELE then QUIT removes the message; DELE then RSET keeps it; DELE without QUIT keeps it', async () => {
  await dovecot.deliver('dele', dottedMessage('dele 1'));
  await dovecot.deliver('dele', dottedMessage('dele 2'));
  const client = await session('dele');
  const [, second] = (await client.uidlAndList()).uids;
  await client.dele(1);
  await client.quit();
  assert.equal((await dovecot.listMessages('dele')).length, 1);
  const again = await session('dele');
  assert.deepEqual(
    (await again.uidlAndList()).uids.map((u) => u.uid),
    [second!.uid],
  );
  await again.dele(1);
  again.close(); // no QUIT, no UPDATE state: nothing is removed (RFC 1939 section 6)
  await sleep(200);
  assert.equal((await dovecot.listMessages('dele')).length, 1);

  await dovecot.deliver('rset', dottedMessage('rset'));
  const r = await session('rset');
  await r.dele(1);
  await r.rset();
  await r.quit();
  assert.equal((await dovecot.listMessages('rset')).length, 1);
  // Deleting a message twice is a protocol error from the server, and the session goes on.
  const d = await session('rset');
  await d.dele(1);
  await failsWith(d.dele(1), 'protocol');
  await d.quit();
  assert.equal((await dovecot.listMessages('rset')).length, 0);
});

test('RETR of a 20 MB message streams with bounded buffering and the same hash', async () => {
  let raw: Buffer | null = bigMessage('big', 20 * 1024 * 1024);
  const expectedHash = createHash('sha256').update(raw).digest('hex');
  const length = raw.length;
  await dovecot.deliver('big', raw);
  // Let the 20 MB go before the download, so the memory bound below measures the stream alone.
  // eslint-disable-next-line no-useless-assignment
  raw = null;
  const client = await session('big', 'none');
  const stream = await client.retr(1);
  const hash = createHash('sha256');
  let bytes = 0;
  let most = 0;
  let chunks = 0;
  for await (const chunk of stream) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
    // The iterator takes everything buffered at once, so a chunk's size is what the stream held.
    most = Math.max(most, (chunk as Buffer).length + stream.readableLength);
    // A slow reader: the client must stop reading the socket rather than queue the message.
    if (++chunks % 20 === 0) await sleep(1);
  }
  assert.equal(bytes, length);
  assert.equal(hash.digest('hex'), expectedHash);
  // highWaterMark (64 KiB) plus at most one socket chunk past it.
  assert.ok(most <= 256 * 1024, `the stream held at most ${most} bytes`);
  await client.quit();
});

test('a RETR stream dropped halfway leaves the session usable', async () => {
  const big = bigMessage('abandoned', 2 * 1024 * 1024);
  const small = dottedMessage('after abandon');
  await dovecot.deliver('abandon', big);
  const expected = await deliveredBytes('abandon', await dovecot.deliver('abandon', small));
  const client = await session('abandon', 'tls');
  const stream = await client.retr(1);
  for await (const _ of stream) break; // for await destroys the stream on break
  const got = await readAll(await client.retr(2));
  assert.ok(got.equals(expected));
  await client.noop();
  await client.quit();
});

test('commands issued while a RETR stream is unread run after it, in order', async () => {
  const first = dottedMessage('order 1');
  await dovecot.deliver('order', first);
  await dovecot.deliver('order', dottedMessage('order 2'));
  const client = await session('order');
  const retr = client.retr(1);
  const uidl = client.uidlAndList();
  const stream = await retr;
  await sleep(50);
  const body = await readAll(stream);
  assert.equal((await uidl).uids.length, 2);
  assert.equal(body.toString(), first.toString());
  await client.quit();
  await failsWith(client.noop(), 'network');
});

test('the dot decoder handles every split of a response across chunks', () => {
  const wire = Buffer.from('line\r\n..stuffed\r\n.\r\r\n.x\r\n\r\n...\r\nend\r\n.\r\n+OK next\r\n');
  const decoded = 'line\r\n.stuffed\r\n\r\r\nx\r\n\r\n..\r\nend\r\n';
  for (let a = 0; a <= wire.length; a++) {
    for (let b = a; b <= wire.length; b++) {
      const decoder = new DotDecoder();
      const out: Buffer[] = [];
      let rest: Buffer | null = null;
      for (const piece of [wire.subarray(0, a), wire.subarray(a, b), wire.subarray(b)]) {
        if (decoder.done) {
          rest = Buffer.concat([rest!, piece]);
          continue;
        }
        const r = decoder.write(piece);
        out.push(...r.out);
        if (r.rest) rest = r.rest;
      }
      assert.equal(Buffer.concat(out).toString(), decoded, `split at ${a}, ${b}`);
      assert.equal(rest?.toString(), '+OK next\r\n', `split at ${a}, ${b}`);
    }
  }
});

/** One command line the client sent, and how many bytes of answers had reached the client when it arrived at the proxy. */
interface SeenCommand {
  line: string;
  answeredBytes: number;
}

/**
 * A loopback TCP proxy in front of Dovecot's clear-text POP3 port that notes every command the
 * client sends and how many answer bytes it had passed to the client by then: commands that
 * arrive with the same count were written before the client could read any answer in between,
 * i.e. pipelined. With `cutAfter`, it drops both connections once that many answer bytes passed.
 */
async function recordingProxy(target: number, cutAfter = Infinity): Promise<{ port: number; commands: SeenCommand[]; close(): Promise<void> }> {
  const commands: SeenCommand[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = createConnection(target, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    let answered = 0;
    let partial = '';
    client.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString('latin1')).split('\r\n');
      partial = lines.pop()!;
      for (const line of lines) commands.push({ line, answeredBytes: answered });
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (answered + chunk.length > cutAfter) {
        client.write(chunk.subarray(0, cutAfter - answered));
        client.destroy();
        upstream.destroy();
        return;
      }
      answered += chunk.length;
      client.write(chunk);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    commands,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** The retriever's POP3 mailbox for USER (password `pw-USER`) at 127.0.0.1:PORT, in clear so a proxy can read the commands. */
function pop3Mailbox(port: number, user: string): Pop3Mailbox {
  const toml = [
    'data_dir = "data"',
    '[[alias]]',
    `name = "${user}"`,
    `address = "${user}@example.com"`,
    '[alias.incoming]',
    'type = "pop3"',
    'host = "127.0.0.1"',
    `port = ${port}`,
    'security = "none"',
    `user = "${user}"`,
    `password = "pw-${user}"`,
  ].join('\n');
  return new Pop3Mailbox(loadConfigText(toml, '/nonexistent/mailgate.toml', {}).alias[0]!.incoming!);
}

async function collect(messages: AsyncIterable<FetchedMessage>): Promise<FetchedMessage[]> {
  const got: FetchedMessage[] = [];
  for await (const m of messages) got.push(m);
  return got;
}

/** The commands seen that begin with VERB. */
const named = (commands: SeenCommand[], verb: string) => commands.filter((c) => c.line.startsWith(verb + ' ') || c.line === verb);

test('a range of mixed sizes comes back byte-exact and in order, RETRs, DELEs, UIDL and LIST pipelined; the DELEs apply at QUIT', async (t) => {
  const raws = [
    dottedMessage('range 1'),
    bigMessage('range 2', 100 * 1024),
    dottedMessage('range 3'),
    bigMessage('range 4', 300 * 1024),
    bigMessage('range 5', 70 * 1024),
    dottedMessage('range 6'),
  ];
  const expected: Buffer[] = [];
  for (const raw of raws) expected.push(await deliveredBytes('range', await dovecot.deliver('range', raw)));
  const proxy = await recordingProxy(dovecot.pop3Port);
  t.after(() => proxy.close());
  const mailbox = pop3Mailbox(proxy.port, 'range');
  await mailbox.open();
  const items = await mailbox.list();
  assert.deepEqual(
    items.map((i) => i.size),
    expected.map((e) => e.length),
  );
  const got = await collect(mailbox.messages(items));
  assert.deepEqual(
    got.map((m) => m.item),
    items,
    'every message, in mailbox order',
  );
  for (const [i, m] of got.entries())
    assert.ok(m.content.equals(expected[i]!), `message ${i + 1}: ${m.content.length} bytes, ${expected[i]!.length} delivered`);
  await mailbox.markStored(items);
  assert.equal((await dovecot.listMessages('range')).length, raws.length, 'DELE marks; nothing is removed before QUIT');
  await mailbox.close();
  assert.equal((await dovecot.listMessages('range')).length, 0, 'QUIT removed every message marked');

  // Commands that reached the proxy before any answer byte in between was passed on were written without waiting.
  for (const verb of ['RETR', 'DELE']) {
    const sent = named(proxy.commands, verb);
    assert.equal(sent.length, raws.length, `one ${verb} per message`);
    assert.deepEqual(
      new Set(sent.map((c) => c.answeredBytes)).size,
      1,
      `every ${verb} was written before the first answer to them was read: ${JSON.stringify(sent)}`,
    );
  }
  const listing = [...named(proxy.commands, 'UIDL'), ...named(proxy.commands, 'LIST')];
  assert.equal(listing.length, 2);
  assert.equal(listing[0]!.answeredBytes, listing[1]!.answeredBytes, 'UIDL and LIST went out together');
});

test('a message deleted by another session between LIST and RETR is left out, the others come', async () => {
  const expected: Buffer[] = [];
  for (const n of [1, 2, 3]) expected.push(await deliveredBytes('gone', await dovecot.deliver('gone', bigMessage(`gone ${n}`, 80 * 1024))));
  const mailbox = pop3Mailbox(dovecot.pop3Port, 'gone');
  await mailbox.open();
  const items = await mailbox.list();
  assert.equal(items.length, 3);
  const other = await session('gone', 'none');
  await other.dele(2);
  await other.quit();
  assert.equal((await dovecot.listMessages('gone')).length, 2, 'the other session removed message 2');
  const got = await collect(mailbox.messages(items));
  assert.deepEqual(
    got.map((m) => m.item),
    [items[0], items[2]],
  );
  assert.ok(got[0]!.content.equals(expected[0]!));
  assert.ok(got[1]!.content.equals(expected[2]!));
  await mailbox.markStored(got.map((m) => m.item));
  await mailbox.close();
  assert.equal((await dovecot.listMessages('gone')).length, 0);
});

test('ending a range early leaves the session usable: QUIT applies the DELE of what was taken, the rest stay', async () => {
  const expected: Buffer[] = [];
  for (const n of [1, 2, 3, 4]) expected.push(await deliveredBytes('early', await dovecot.deliver('early', bigMessage(`early ${n}`, 120 * 1024))));
  const mailbox = pop3Mailbox(dovecot.pop3Port, 'early');
  await mailbox.open();
  const items = await mailbox.list();
  let taken: MailboxItem | undefined;
  for await (const m of mailbox.messages(items)) {
    assert.ok(m.content.equals(expected[0]!));
    taken = m.item;
    break; // the other three RETRs are on the wire
  }
  assert.deepEqual(taken, items[0]);
  assert.deepEqual(await mailbox.list(), items, 'the session is in step after the early end');
  const again = await collect(mailbox.messages([items[3]!]));
  assert.ok(again[0]!.content.equals(expected[3]!));
  await mailbox.markStored([items[0]!]);
  await mailbox.close();
  assert.equal((await dovecot.listMessages('early')).length, 3);
});

test('a connection lost in the middle of a range rejects with kind network', async (t) => {
  for (const n of [1, 2, 3]) await dovecot.deliver('cut', bigMessage(`cut ${n}`, 200 * 1024));
  const direct = await session('cut', 'none');
  const listed = (await direct.uidlAndList()).sizes;
  await direct.quit();
  // Cut halfway through the second message's answer (the login and listing answers are small).
  const proxy = await recordingProxy(dovecot.pop3Port, 2000 + listed[0]!.size + listed[1]!.size / 2);
  t.after(() => proxy.close());
  const mailbox = pop3Mailbox(proxy.port, 'cut');
  await mailbox.open();
  const items = await mailbox.list();
  const got: MailboxItem[] = [];
  await failsWith(
    (async () => {
      for await (const m of mailbox.messages(items)) got.push(m.item);
    })(),
    'network',
  );
  assert.ok(got.length < items.length, `${got.length} of ${items.length} came before the cut`);
  await mailbox.close(); // never rejects
  assert.equal((await dovecot.listMessages('cut')).length, 3, 'nothing deleted');
});

/**
 * A minimal POP3 server without PIPELINING, speaking the real wire protocol (RFC 1939), for the
 * one branch the real Dovecot cannot show: it always offers PIPELINING and has no setting to
 * stop. MESSAGES are the mailbox; those numbered in GONE are listed, but their RETR answers -ERR
 * as when another session deleted them after our LIST. It
 * answers each command a moment after it arrives, and notes for each command how many earlier
 * ones were still unanswered: a client that waits for each answer always finds none.
 */
async function scriptedPop3(messages: Buffer[], gone: number[]) {
  const seen: { line: string; unanswered: number }[] = [];
  const waiters: { line: string; resolve: () => void }[] = [];
  const answer = (line: string): string => {
    const [verb = '', arg = ''] = line.split(' ');
    const n = Number(arg);
    const listing = (f: (m: Buffer, n: number) => string) => '+OK\r\n' + messages.map((m, i) => f(m, i + 1) + '\r\n').join('') + '.\r\n';
    switch (verb.toUpperCase()) {
      case 'CAPA':
        return '+OK\r\nTOP\r\nUIDL\r\nUSER\r\n.\r\n';
      case 'UIDL':
        return listing((_, i) => `${i} scripted-${i}`);
      case 'LIST':
        return listing((m, i) => `${i} ${m.length}`);
      case 'RETR': {
        const m = gone.includes(n) ? undefined : messages[n - 1];
        // RFC 1939 section 3: lines beginning with "." are stuffed; the answer ends with ".".
        return m ? `+OK ${m.length} octets\r\n${m.toString('latin1').replace(/^\./gm, '..')}.\r\n` : '-ERR no such message';
      }
      default:
        return verb.toUpperCase() === 'QUIT' ? '+OK bye\r\n' : '+OK\r\n';
    }
  };
  const server = createServer((socket) => {
    socket.on('error', () => undefined);
    socket.write('+OK scripted POP3 server\r\n');
    let partial = '';
    let unanswered = 0;
    socket.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString('latin1')).split('\r\n');
      partial = lines.pop()!;
      for (const line of lines) {
        seen.push({ line, unanswered: unanswered++ });
        for (const w of waiters.filter((w) => w.line === line)) w.resolve();
        setTimeout(() => {
          const text = answer(line);
          socket.write(text.endsWith('\r\n') ? text : text + '\r\n', 'latin1');
          unanswered--;
          if (line === 'QUIT') socket.end();
        }, 5);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    /** Resolves once LINE has arrived. */
    received: (line: string) => new Promise<void>((resolve) => (seen.some((s) => s.line === line) ? resolve() : waiters.push({ line, resolve }))),
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

test(
  'without PIPELINING one command at a time, the next RETR sent while the caller handles the last; a gone message is left out',
  { timeout: 30_000 },
  async (t) => {
    const raws = [dottedMessage('scripted 1'), dottedMessage('scripted 2'), bigMessage('scripted 3', 100 * 1024), dottedMessage('scripted 4')];
    const server = await scriptedPop3(raws, [2]);
    t.after(() => server.close());
    // The scripted server's users are whatever the mailbox logs in as: this one's name is in no Dovecot.
    const mailbox = pop3Mailbox(server.port, 'scripted');
    await mailbox.open();
    const items = await mailbox.list();
    assert.equal(items.length, 4);
    const got: FetchedMessage[] = [];
    for await (const m of mailbox.messages(items)) {
      // The next RETR is already on its way while this one is handled (a client that waited would never send it: the test times out).
      if (got.length === 0) await server.received('RETR 2');
      got.push(m);
    }
    assert.deepEqual(
      got.map((m) => m.content.toString('latin1')),
      [raws[0]!, raws[2]!, raws[3]!].map((r) => r.toString('latin1')),
    );
    await mailbox.markStored(got.map((m) => m.item));
    await mailbox.close();
    assert.deepEqual(
      server.seen.map((s) => s.line).filter((l) => /^(RETR|DELE|QUIT)/.test(l)),
      ['RETR 1', 'RETR 2', 'RETR 3', 'RETR 4', 'DELE 1', 'DELE 3', 'DELE 4', 'QUIT'],
    );
    assert.deepEqual(
      server.seen.filter((s) => s.unanswered > 0),
      [],
      'no command was sent before the answer to the one before it',
    );
  },
);
