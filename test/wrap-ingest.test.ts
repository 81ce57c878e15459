import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { spoolDir } from '../ingest/spool.js';
import { Readable, Transform } from 'node:stream';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { simpleParser } from 'mailparser';
import { wrappingStage } from '../policy/wrapping/stage.js';
import type { Stage } from '../policy/chain/stage.js';
import { ingestMessage } from '../ingest/ingest.js';
import { silentLogger } from '../lib/logger.js';
import { MailgateError } from '../lib/errors.js';
import type { Store } from '../storage/store.js';
import { openTestStore, storeLeftovers } from './helpers/test-store.js';
import { runCli, startTestGateway, type TestGateway } from './helpers/gateway.js';
import { PE_PROGRAM, RawSmtpClient, base64Body, hiddenExecutableCases, type HiddenExecutable } from './helpers/fuzz.js';
import type { QuarantineRecord } from '../storage/records.js';
import { openQuarantinedContent, restoreQuarantined } from '../policy/attachments/quarantine.js';
import { fixture, tempDir } from './helpers/paths.js';
import { asReceivedOverSmtp, parseWrapped, storedMessage } from './helpers/wrapped.js';
import { failingStage } from './helpers/pipeline.js';

function transport(port: number) {
  return nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
}

/** Everything in the spool directory, concatenated. */
async function spoolContents(dataDir: string): Promise<Buffer> {
  const files = await readdir(spoolDir(dataDir));
  return Buffer.concat(await Promise.all(files.map((f) => readFile(path.join(spoolDir(dataDir), f)))));
}

async function send(gw: TestGateway, raw: Buffer): Promise<string> {
  const info = await transport(gw.port).sendMail({ envelope: { from: 'sender@example.org', to: ['support@example.com'] }, raw });
  const queued = /queued as (\S+)/.exec(info.response);
  assert.ok(queued, info.response);
  return queued[1]!;
}

async function assertNoSpoolLeft(store: Store): Promise<void> {
  assert.deepEqual(await readdir(spoolDir(store.dir)).catch(() => []), [], 'no spool file left');
  assert.deepEqual((await storeLeftovers(store)).unfinished, [], 'no pending mark left');
}

/** A message with `lines` lines of body, the card-like marker on each (to look for it in the spool). */
function bigMessage(subject: string, lines: number): Buffer {
  const line = 'SECRET-CARD 4111 1111 1111 1111 and some padding text to make the line longer\r\n';
  return Buffer.from(
    `From: Customer <customer@example.org>\r\nTo: support@example.com\r\nSubject: ${subject}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n${line.repeat(lines)}`,
  );
}

test('a stage that throws mid-message ends in a stored wrapping message, not a 4xx and not a lost message', async (t) => {
  const gw = await startTestGateway('[partition]\ndefault_domain = "support.example.com"\n', {
    stages: () => [wrappingStage(undefined, undefined), failingStage(3)],
  });
  t.after(() => gw.cleanup());
  const sent = readFileSync(fixture('unparsable', 'ok-multipart.eml'));
  const id = await send(gw, sent);
  const { meta, raw } = await storedMessage(gw.store, id);
  const view = await parseWrapped(raw, meta);
  const received = asReceivedOverSmtp(sent);
  assert.ok(view.original.equals(received), 'the attached original is what the gateway received');
  assert.equal(meta.receivedSize, received.length);
  assert.equal(meta.size, raw.length);
  assert.deepEqual(meta.tags, ['wrapped']);
  assert.match(meta._WrappingMessageReason ?? '', /^parser_exception: flaky failed: Cannot read properties/);
  assert.equal(meta.findings.wrapping?.reason, 'parser_exception');
  assert.equal(meta.subject, 'invoice', 'the original subject is kept');
  assert.equal(meta.from, 'Customer <customer@example.org>');
  assert.deepEqual(meta._AttachmentFileNames, ['original-message.eml']);
  assert.match(view.text, /^Error encountered during preprocessing of this message: processing failed with an error \[parser_exception\]/);
  await assertNoSpoolLeft(gw.store);
});

test('the quarantine test subject is wrapped end to end over SMTP; an invalid From becomes unknown@default_domain', async (t) => {
  const gw = await startTestGateway('[partition]\ndefault_domain = "support.example.com"\n', { stages: () => [wrappingStage(undefined, undefined)] });
  t.after(() => gw.cleanup());
  for (const file of ['quarantine-test.eml', 'pcemail-quarantine-test.eml', 'quarantine-test-invalid-from.eml']) {
    const sent = readFileSync(fixture('unparsable', file));
    const id = await send(gw, sent);
    const { meta, raw } = await storedMessage(gw.store, id);
    const view = await parseWrapped(raw, meta);
    assert.equal(meta.findings.wrapping?.reason, 'quarantine_test', file);
    assert.match(meta._WrappingMessageReason ?? '', /^quarantine_test: The subject holds the quarantine test marker/);
    assert.ok(view.original.equals(asReceivedOverSmtp(sent)), file);
    if (file === 'quarantine-test-invalid-from.eml') assert.equal(view.from, 'unknown@support.example.com');
    else assert.equal(view.from, 'customer@example.org', file);
  }
  // A NUL in the header: the header cannot be copied.
  const id = await send(gw, readFileSync(fixture('unparsable', 'header-nul.eml')));
  const { meta } = await storedMessage(gw.store, id);
  assert.equal(meta.subject, 'Unknown subject');
  assert.equal(meta.from, 'unknown@support.example.com');
  assert.match(meta._WrappingMessageReason ?? '', /^header_nul: /);
  await assertNoSpoolLeft(gw.store);
});

test('a large message that fails late is wrapped whole; its spool is encrypted and removed', async (t) => {
  let spoolChunks = 0;
  let plaintextInSpool = false;
  // Looks at the spool once the whole message has gone by, then fails.
  const inspector: Stage = {
    name: 'inspector',
    create(ctx) {
      return {
        chunk: (chunk, emit) => void emit(chunk),
        end: async () => {
          const bytes = await spoolContents(ctx.store!.dir);
          spoolChunks = Math.floor(bytes.length / 65536);
          plaintextInSpool = bytes.includes('SECRET-CARD');
          throw new Error('late failure');
        },
      };
    },
  };
  const gw = await startTestGateway('', { stages: () => [wrappingStage(undefined, undefined), inspector] });
  t.after(() => gw.cleanup());
  const sent = bigMessage('large', 20000); // about 1.6 MB
  const id = await send(gw, sent);
  assert.ok(spoolChunks >= 20, `the spool held ${spoolChunks} chunks`);
  assert.equal(plaintextInSpool, false, 'spool chunks are encrypted');
  const { meta, raw } = await storedMessage(gw.store, id);
  const view = await parseWrapped(raw, meta);
  assert.ok(view.original.equals(sent));
  assert.match(meta._WrappingMessageReason ?? '', /^parser_exception: inspector failed: late failure/);
  await assertNoSpoolLeft(gw.store);
});

test('a message that parses leaves no spool behind and is stored as sent', async (t) => {
  const gw = await startTestGateway('', { stages: () => [wrappingStage(undefined, undefined)] });
  t.after(() => gw.cleanup());
  const sent = bigMessage('fine', 5000);
  const id = await send(gw, sent);
  const { meta, raw } = await storedMessage(gw.store, id);
  assert.ok(raw.equals(sent));
  assert.deepEqual(meta.tags, []);
  assert.equal(meta._WrappingMessageReason, undefined);
  assert.match(meta.findings.wrapping?.summary[0] ?? '', /parsed cleanly/);
  await assertNoSpoolLeft(gw.store);
});

test('the size limit still wins over wrapping: 552 and nothing stored', async (t) => {
  const gw = await startTestGateway('[smtp]\nmax_message_size = 100000\n', { stages: () => [wrappingStage(undefined, undefined), failingStage(1)] });
  t.after(() => gw.cleanup());
  await assert.rejects(send(gw, bigMessage('too big', 3000)), (err: { responseCode?: number }) => err.responseCode === 552);
  assert.deepEqual(await gw.store.listMessages({}), []);
  await assertNoSpoolLeft(gw.store);
});

test('if even the wrapping message cannot be stored, the reply is 451 and nothing is stored', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const store = await openTestStore(path.join(dir, 'data'));
  t.after(() => store.close());
  let writers = 0;
  // The store refuses a second writer: the one the wrapping message would need.
  const flaky = new Proxy(store, {
    get(target, prop, receiver) {
      if (prop === 'createMessageWriter') {
        return (id: string) => {
          if (++writers > 1) throw Object.assign(new Error('disk full'), { code: 'LEVEL_IO_ERROR' });
          return target.createMessageWriter(id);
        };
      }
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  const deps = { store: flaky, logger: silentLogger(), stages: () => [wrappingStage(undefined, undefined)] };
  const input = Readable.from([readFileSync(fixture('unparsable', 'header-nul.eml'))]);
  await assert.rejects(
    ingestMessage(deps, input, { envelope: { mailFrom: 'a@example.org', rcptTo: ['b@example.com'] }, source: { kind: 'cli' } }),
    (err: unknown) => {
      assert.ok(err instanceof MailgateError);
      assert.equal(err.responseCode, 451);
      return true;
    },
  );
  assert.deepEqual(await store.listMessages({}), []);
  await assertNoSpoolLeft(store);
});

test('the wrapping fallback asks each stage for its part in the original, whatever the stage is called', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const store = await openTestStore(path.join(dir, 'data'));
  t.after(() => store.close());
  // Its own name, yet it masks the original: it says so.
  const redactor: Stage = {
    name: 'redactor',
    create: () => null,
    wrappedOriginal: {
      rawMasker: (_direction, counts) =>
        new Transform({
          transform(chunk: Buffer, _enc, done) {
            const text = chunk.toString('latin1');
            counts.word = (counts.word ?? 0) + (text.match(/Body/g)?.length ?? 0);
            done(null, Buffer.from(text.replace(/Body/g, '****'), 'latin1'));
          },
        }),
    },
  };
  // Tags from the original's header because it says so; the one named like the tagging stage does not.
  const tagger: Stage = { name: 'bounce-tags', create: (ctx) => (ctx.tags.add('from-the-header'), null), wrappedOriginal: { tagsFromHeader: true } };
  const namesake: Stage = { name: 'delivery_exceptions', create: (ctx) => (ctx.tags.add('by-name'), null) };
  const deps = { store, logger: silentLogger(), stages: () => [wrappingStage(undefined, undefined), namesake, tagger, redactor] };
  const input = Readable.from([readFileSync(fixture('unparsable', 'header-nul.eml'))]);
  const meta = await ingestMessage(deps, input, { envelope: { mailFrom: 'a@example.org', rcptTo: ['b@example.com'] }, source: { kind: 'cli' } });
  const stored = await storedMessage(store, meta.id);
  const view = await parseWrapped(stored.raw, stored.meta);
  assert.deepEqual(stored.meta.tags, ['wrapped', 'from-the-header']);
  assert.match(view.original.toString('latin1'), /\r\n\r\n\*\*\*\*\.\r\n$/);
  assert.deepEqual((stored.meta.findings.masking as { masked?: Record<string, number> } | undefined)?.masked, { word: 1 });
});

test('a truncated bounce is wrapped and still tagged as a delivery exception from its header', async (t) => {
  const gw = await startTestGateway(); // the default policy: all four stages
  t.after(() => gw.cleanup());
  const bounce = Buffer.from(
    [
      'From: Mail Delivery System <MAILER-DAEMON@mx.example.net>',
      'To: support@example.com',
      'Subject: Undelivered Mail Returned to Sender',
      'Auto-Submitted: auto-replied',
      'MIME-Version: 1.0',
      'Content-Type: multipart/report; report-type=delivery-status; boundary="cut"',
      '',
      '--cut',
      'Content-Type: text/plain',
      '',
      'I could not deliver your message to customer@example.org.',
      '--cut',
      'Content-Type: message/delivery-status',
      '',
      'Final-Recipient: rfc822; customer@example.org',
      'Action: failed',
      'Status: 5.1.1',
      '',
    ].join('\r\n'),
  );
  const info = await transport(gw.port).sendMail({ envelope: { from: '', to: ['support@example.com'] }, raw: bounce });
  const id = /queued as (\S+)/.exec(info.response)![1]!;
  const { meta } = await storedMessage(gw.store, id);
  assert.match(meta._WrappingMessageReason ?? '', /^boundary_unterminated/);
  assert.ok(meta.tags.includes('wrapped'), `${meta.tags}`);
  assert.ok(
    meta.tags.some((tag) => /^email-(permanent|temporary)-undeliverable$/.test(tag)),
    `tagged as a delivery exception: ${meta.tags}`,
  );
  assert.ok(meta.tags.includes('exception-queue'));
  assert.ok(meta.findings.delivery_exceptions?.summary.length);
});

test('nested multiparts that end with a multipart are stored parsed and byte for byte over SMTP; a really unterminated one is still wrapped', async (t) => {
  const gw = await startTestGateway(); // the default policy: all four stages
  t.after(() => gw.cleanup());
  // What nodemailer itself writes for HTML with an embedded image: alternative(text, related(html, image)).
  const built = await nodemailer.createTransport({ streamTransport: true, buffer: true }).sendMail({
    from: 'customer@example.org',
    to: 'support@example.com',
    subject: 'Screenshot',
    text: 'The error is in the picture.',
    html: '<p>The error is in the picture: <img src="cid:shot@example.org"></p>',
    attachments: [{ filename: 'shot.png', cid: 'shot@example.org', content: Buffer.from('89504e470d0a1a0a0000000d4948445200000001', 'hex') }],
  });
  const fromNodemailer = built.message as Buffer;
  assert.match(fromNodemailer.toString('latin1'), /multipart\/alternative[\s\S]*multipart\/related/, 'nodemailer nests related inside alternative');
  const messages: [string, Buffer][] = [
    ['nodemailer HTML with an embedded image', fromNodemailer],
    ['Apple Mail alternative(text, related(html, image))', readFileSync(fixture('unparsable', 'ok-nested-last-apple-mail.eml'))],
    ['mixed(attachment, alternative(text, html))', readFileSync(fixture('unparsable', 'ok-nested-last-mixed.eml'))],
  ];
  for (const [name, sent] of messages) {
    const id = await send(gw, sent);
    const { meta, raw } = await storedMessage(gw.store, id);
    assert.ok(!meta.tags.includes('wrapped'), `${name}: ${meta._WrappingMessageReason}`);
    assert.equal(meta._WrappingMessageReason, undefined, name);
    assert.ok(raw.equals(asReceivedOverSmtp(sent)), `${name}: stored as received`);
    assert.match(meta.findings.wrapping?.summary[0] ?? '', /^The message parsed cleanly/, name);
  }
  for (const file of ['boundary-unterminated-outer.eml', 'boundary-unterminated-inner.eml']) {
    const sent = readFileSync(fixture('unparsable', file));
    const id = await send(gw, sent);
    const { meta, raw } = await storedMessage(gw.store, id);
    assert.match(meta._WrappingMessageReason ?? '', /^boundary_unterminated: /, file);
    assert.ok((await parseWrapped(raw, meta)).original.equals(asReceivedOverSmtp(sent)), file);
  }
  await assertNoSpoolLeft(gw.store);
});

// Issue 17, fault 2: wrapping must never be a way around attachment blocking.

/** A gateway whose partition policy blocks .exe with `action`, the wrapping and attachments stages on. */
async function blockingGateway(t: TestContext, action: 'quarantine' | 'delete'): Promise<TestGateway> {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const policy = path.join(dir, 'partition.toml');
  await writeFile(policy, `[attachments]\nblocked_extensions = [".exe"]\naction = "${action}"\n`);
  const gw = await startTestGateway(`[partition]\npolicy = ${JSON.stringify(policy)}\n`);
  t.after(() => gw.cleanup());
  return gw;
}

/**
 * Where `secret` (the program, or its base64 lines) can be read from a stored message: its
 * bytes, each attachment a mail client decodes, and each attachment of an attached message.
 */
async function leaks(raw: Buffer, secrets: Buffer[], depth = 0): Promise<string[]> {
  const found = secrets
    .filter((s) => raw.includes(s))
    .map((s) => `${depth ? 'an attached message' : 'the stored bytes'} hold ${JSON.stringify(s.toString('latin1', 0, 12))}...`);
  if (depth > 2) return found;
  const parsed = await simpleParser(raw, { skipTextToHtml: true });
  for (const a of parsed.attachments) found.push(...(await leaks(a.content, secrets, depth + 1)).map((l) => `${a.filename ?? 'an attachment'}: ${l}`));
  return found;
}

/** The program and the attached file, raw and as the base64 lines the message carried them in. */
function secretsOf(payload: Buffer): Buffer[] {
  const lines = base64Body(payload)
    .split('\r\n')
    .filter((l) => l.length === 76);
  return [PE_PROGRAM.subarray(0, 160), payload.subarray(0, 160), ...lines.slice(0, 2).map((l) => Buffer.from(l))];
}

const gbkExecutable = (): Buffer => hiddenExecutableCases().find((c) => c.name === 'header_undecodable, a name= in raw GBK ending in .exe')!.bytes;

test('setup.exe first and an alternative last is parsed and the program blocked; a raw GBK name ending in .exe is wrapped and the original quarantined whole, restorable', async (t) => {
  const gw = await blockingGateway(t, 'quarantine');
  const cli = async (...args: string[]) => {
    const r = await runCli([...args, '--config', gw.configFile]);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  // The first case of the issue: the nested alternative no longer makes the message unparsable.
  const mixed = Buffer.from(
    [
      'From: Customer <customer@example.org>',
      'To: support@example.com',
      'Subject: installer',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="outer"',
      '',
      '--outer',
      'Content-Type: application/octet-stream; name="setup.exe"',
      'Content-Disposition: attachment; filename="setup.exe"',
      'Content-Transfer-Encoding: base64',
      '',
      base64Body(PE_PROGRAM),
      '--outer',
      'Content-Type: multipart/alternative; boundary="inner"',
      '',
      '--inner',
      'Content-Type: text/plain',
      '',
      'Run the installer.',
      '--inner',
      'Content-Type: text/html',
      '',
      '<p>Run the installer.</p>',
      '--inner--',
      '',
      '--outer--',
      '',
    ].join('\r\n'),
  );
  const parsedId = await send(gw, mixed);
  const parsed = await storedMessage(gw.store, parsedId);
  assert.ok(!parsed.meta.tags.includes('wrapped'), String(parsed.meta._WrappingMessageReason));
  assert.deepEqual(parsed.meta._AttachmentFileNames, ['setup.exe [blocked]']);
  assert.deepEqual(await leaks(parsed.raw, secretsOf(PE_PROGRAM)), []);

  // The second: wrapped for its header, its original is blocked whole, and kept in quarantine.
  const sent = gbkExecutable();
  const id = await send(gw, sent);
  const { meta, raw } = await storedMessage(gw.store, id);
  assert.match(meta._WrappingMessageReason ?? '', /^header_undecodable: /);
  assert.deepEqual(meta.tags, ['wrapped']);
  assert.deepEqual(await leaks(raw, secretsOf(PE_PROGRAM)), [], 'the program is nowhere in the stored message');
  assert.deepEqual(meta._AttachmentFileNames, ['original-message.eml [blocked]']);
  const text = raw.toString('latin1');
  assert.match(text, /Error encountered during preprocessing of this message: a header contains bytes that are neither ASCII nor UTF-8 \[header_undecodable\]/);
  assert.match(
    text,
    /The original incoming email is not attached: the original contains "\?\?\?\?\.exe" \(part 2\): blocked extension \.exe \(partition policy\)\./,
  );
  const [record] = JSON.parse((await cli('quarantine', 'list', '--message', id, '--json')).toString()) as QuarantineRecord[];
  assert.ok(record, 'the original is in quarantine');
  assert.equal(record.fileName, 'original-message.eml');
  assert.match(record.rule, /^the original contains ".*\.exe" \(part 2\): blocked extension \.exe \(partition policy\)$/);
  assert.match(text, new RegExp(`It is kept in quarantine as ${record.id.replace('.', '\\.')}; an administrator can restore it`));
  assert.match(
    meta.findings.attachments?.summary[0] ?? '',
    /^"original-message\.eml" quarantined as \S+: the original contains ".*\.exe" \(part 2\): blocked extension \.exe/,
  );
  assert.match(meta.findings.wrapping?.summary[0] ?? '', /without the original, which the attachment policy blocks \(quarantined as /);
  // export gives the original back as received; restore puts it into the wrapping message.
  const exported = path.join(gw.dir, 'original.eml');
  await cli('quarantine', 'export', record.id, exported);
  assert.ok((await readFile(exported)).equals(asReceivedOverSmtp(sent)), 'quarantine export gives the original');
  assert.equal(record.size, asReceivedOverSmtp(sent).length);
  await cli('quarantine', 'restore', record.id);
  const restored = await storedMessage(gw.store, id);
  assert.ok((await parseWrapped(restored.raw, restored.meta)).original.equals(asReceivedOverSmtp(sent)), 'restored: the original is attached again');
  assert.deepEqual(restored.meta._AttachmentFileNames, ['original-message.eml']);
  assert.deepEqual(
    (await gw.store.listQuarantine()).map((r) => r.messageId),
    [parsedId],
    'only the program of the parsed message is left in quarantine',
  );
  await assertNoSpoolLeft(gw.store);
});

test('with action = "delete" the blocked original of a wrapping message is gone, and the wrapping message says so', async (t) => {
  const gw = await blockingGateway(t, 'delete');
  const id = await send(gw, gbkExecutable());
  const { meta, raw } = await storedMessage(gw.store, id);
  assert.match(meta._WrappingMessageReason ?? '', /^header_undecodable: /);
  assert.deepEqual(await leaks(raw, secretsOf(PE_PROGRAM)), []);
  assert.match(raw.toString('latin1'), /The original incoming email is not attached: the original contains .*\.exe" \(part 2\): blocked extension \.exe/);
  assert.match(raw.toString('latin1'), /It was deleted, as the attachment policy says \(action = "delete"\)\./);
  assert.deepEqual(await gw.store.listQuarantine(), []);
  assert.deepEqual((await storeLeftovers(gw.store)).quarantineChunks, [], 'no bytes of it kept');
  assert.deepEqual(meta._AttachmentFileNames, ['original-message.eml [blocked]']);
  await assertNoSpoolLeft(gw.store);
});

/** Sends one hidden-executable case and checks that the program is stored nowhere but in quarantine, which gives the original back. */
async function checkHidden(gw: TestGateway, client: RawSmtpClient, c: HiddenExecutable, action: 'quarantine' | 'delete'): Promise<void> {
  const sent = await client.send([c.bytes], 30_000);
  assert.equal(sent.code, 250, `${c.name}: ${sent.reply}`);
  const id = /queued as (\S+)/.exec(sent.reply)![1]!;
  const { meta, raw } = await storedMessage(gw.store, id);
  assert.equal(meta.findings.wrapping?.reason, c.reason, c.name);
  if (!c.hides) {
    // Broken alone is no reason to block: the original is attached as received.
    assert.ok((await parseWrapped(raw, meta)).original.equals(c.bytes), `${c.name}: the original is attached`);
    assert.deepEqual(await gw.store.listQuarantine({ messageId: id }), [], c.name);
    return;
  }
  assert.deepEqual(await leaks(raw, secretsOf(c.payload)), [], `${c.name}: the program is nowhere in the stored message`);
  assert.deepEqual(meta._AttachmentFileNames, ['original-message.eml [blocked]'], c.name);
  const records = await gw.store.listQuarantine({ messageId: id });
  if (action === 'delete') {
    assert.deepEqual(records, [], c.name);
    assert.match(raw.toString('latin1'), /It was deleted, as the attachment policy says/, c.name);
    return;
  }
  assert.equal(records.length, 1, c.name);
  const kept = Buffer.concat(await openQuarantinedContent(gw.store, records[0]!.id).toArray());
  assert.ok(kept.equals(c.bytes), `${c.name}: the quarantine holds the original`);
  await restoreQuarantined(gw.store, records[0]!.id);
  const restored = await storedMessage(gw.store, id);
  assert.ok((await parseWrapped(restored.raw, restored.meta)).original.equals(c.bytes), `${c.name}: restore gives the original back`);
}

for (const action of ['quarantine', 'delete'] as const) {
  test(`fuzz: an executable hidden in a message broken each way the wrapping check knows is never stored outside quarantine (action = "${action}")`, async (t) => {
    const gw = await blockingGateway(t, action);
    // One session for all the cases, closed before the gateway stops (which waits for open sessions).
    const client = new RawSmtpClient(gw.port);
    const cases = hiddenExecutableCases();
    assert.deepEqual([...new Set(cases.map((c) => c.reason))].sort(), [
      'boundary_missing',
      'boundary_unterminated',
      'header_line_too_long',
      'header_no_end',
      'header_undecodable',
      'too_many_parts',
    ]);
    try {
      for (const c of cases) await checkHidden(gw, client, c, action);
    } finally {
      client.close();
    }
    if (action === 'delete') assert.deepEqual((await storeLeftovers(gw.store)).quarantineChunks, []);
    await assertNoSpoolLeft(gw.store);
  });
}
