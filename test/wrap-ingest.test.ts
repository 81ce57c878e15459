import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { spoolDir } from '../policy/spool.js';
import { Readable } from 'node:stream';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { wrappingStage } from '../policy/wrap-unparsable.js';
import type { Stage } from '../policy/stage.js';
import { ingestMessage } from '../gateway/ingest.js';
import { silentLogger } from '../gateway/logger.js';
import { MailgateError } from '../gateway/errors.js';
import { Store } from '../storage/store.js';
import { startTestGateway, type TestGateway } from './helpers/gateway.js';
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
  assert.deepEqual(await store.sublevels.pending.keys().all(), [], 'no pending mark left');
}

/** A message with `lines` lines of body, the card-like marker on each (to look for it in the spool). */
function bigMessage(subject: string, lines: number): Buffer {
  const line = 'SECRET-CARD 4111 1111 1111 1111 and some padding text to make the line longer\r\n';
  return Buffer.from(`From: Customer <customer@example.org>\r\nTo: support@example.com\r\nSubject: ${subject}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n${line.repeat(lines)}`);
}

test('a stage that throws mid-message ends in a stored wrapping message, not a 4xx and not a lost message', async (t) => {
  const gw = await startTestGateway('[partition]\ndefault_domain = "support.example.com"\n', { stages: () => [wrappingStage(undefined, undefined), failingStage(3)] });
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
  const store = await Store.open(path.join(dir, 'data'));
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
  await assert.rejects(ingestMessage(deps, input, { envelope: { mailFrom: 'a@example.org', rcptTo: ['b@example.com'] }, source: { kind: 'cli' } }), (err: unknown) => {
    assert.ok(err instanceof MailgateError);
    assert.equal(err.responseCode, 451);
    return true;
  });
  assert.deepEqual(await store.listMessages({}), []);
  await assertNoSpoolLeft(store);
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
  assert.ok(meta.tags.some((tag) => /^email-(permanent|temporary)-undeliverable$/.test(tag)), `tagged as a delivery exception: ${meta.tags}`);
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

