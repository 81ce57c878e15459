import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { simpleParser } from 'mailparser';
import { deliveryStatusNotification, statusCode, ORIGINAL_HEADER_CAP, type DsnOptions, type DsnRecipient } from '../gateway/dispatch/dsn.js';

const ORIGINAL_HEADER = [
  'Received: from client.example.org (client.example.org [192.0.2.7]) by mx.example.com',
  'From: Sender <sender@example.org>',
  'To: nouser@example.net, full@example.net',
  'Subject: Quarterly figures',
  'Message-ID: <orig.1@example.org>',
  'Date: Tue, 02 Jan 2024 03:04:00 +0000',
].join('\r\n');
const ORIGINAL = `${ORIGINAL_HEADER}\r\n\r\nThe body is secret and must not come back.\r\n`;

/** The original as a stream that counts what was pulled from it and whether it was destroyed. */
function trackedOriginal(
  bytes: Buffer | string,
  chunkSize = 1024,
): { open: () => Readable; pulled: () => number; destroyed: () => boolean; opened: () => number } {
  const data = Buffer.from(bytes);
  let pulled = 0;
  let opened = 0;
  let last: Readable | undefined;
  return {
    open: () => {
      opened++;
      async function* chunks(): AsyncGenerator<Buffer> {
        for (let i = 0; i < data.length; i += chunkSize) {
          pulled += Math.min(chunkSize, data.length - i);
          yield data.subarray(i, i + chunkSize);
        }
      }
      last = Readable.from(chunks(), { objectMode: false });
      return last;
    },
    pulled: () => pulled,
    destroyed: () => last?.destroyed ?? false,
    opened: () => opened,
  };
}

const FAILED: DsnRecipient[] = [
  {
    address: 'nouser@example.net',
    status: 'failed',
    code: 550,
    message: '5.1.1 No such user',
    remoteMta: 'mx.example.net',
    lastAttemptAt: '2024-01-02T03:05:00Z',
  },
  { address: 'full@example.net', status: 'failed', code: 552, message: 'Mailbox full', remoteMta: 'mx2.example.net' },
  { address: 'down@example.com', status: 'failed', message: 'connect ECONNREFUSED 192.0.2.25:25' },
];

function options(over: Partial<DsnOptions> = {}): DsnOptions {
  return {
    reportingMta: 'mx.example.com',
    from: 'MAILER-DAEMON@mx.example.com',
    to: 'sender@example.org',
    originalMessageId: 'orig.1@example.org',
    originalEnvelopeId: '01HQ3Z8Y7W',
    arrivalDate: '2024-01-02T03:04:05Z',
    recipients: FAILED,
    originalHeaders: () => Readable.from([Buffer.from(ORIGINAL)]),
    date: new Date('2024-01-03T10:00:00Z'),
    messageId: 'dsn.1@mx.example.com',
    ...over,
  };
}

const dsn = (over: Partial<DsnOptions> = {}) => buffer(deliveryStatusNotification(options(over)));

/** The parts of a multipart/report as header text and body text, split on its boundary. */
function reportParts(raw: Buffer): { header: string; body: string }[] {
  const text = raw.toString('latin1');
  const boundary = /boundary="([^"]+)"/.exec(text)?.[1];
  assert.ok(boundary, 'the report names its boundary');
  const end = text.indexOf(`\r\n--${boundary}--\r\n`);
  assert.ok(end > 0, 'the report has its closing delimiter');
  return text
    .slice(0, end)
    .split(`\r\n--${boundary}\r\n`)
    .slice(1)
    .map((part) => {
      const split = part.indexOf('\r\n\r\n');
      return { header: part.slice(0, split), body: part.slice(split + 4) };
    });
}

/** The field blocks of a message/delivery-status body, each unfolded into a map of field to value. */
function statusBlocks(body: string): Map<string, string>[] {
  return body
    .replace(/\r\n$/, '')
    .split('\r\n\r\n')
    .map((block) => {
      const fields = new Map<string, string>();
      for (const line of block.replace(/\r\n[ \t]/g, ' ').split('\r\n')) {
        const colon = line.indexOf(':');
        fields.set(line.slice(0, colon), line.slice(colon + 1).trim());
      }
      return fields;
    });
}

function assertLines(raw: Buffer): void {
  const text = raw.toString('latin1');
  assert.doesNotMatch(text, /[^\r]\n/, 'no bare LF');
  assert.doesNotMatch(text, /\r(?!\n)/, 'no bare CR');
  for (const line of text.split('\r\n')) assert.ok(Buffer.byteLength(line, 'latin1') <= 998, `line of ${line.length} octets: ${line.slice(0, 60)}...`);
}

test('the DSN is a multipart/report of delivery-status that no autoresponder answers', async () => {
  const raw = await dsn();
  assertLines(raw);
  const parsed = await simpleParser(raw);
  assert.deepEqual(parsed.headers.get('content-type'), {
    value: 'multipart/report',
    params: { 'report-type': 'delivery-status', boundary: (parsed.headers.get('content-type') as { params: { boundary: string } }).params.boundary },
  });
  assert.equal(parsed.headers.get('auto-submitted'), 'auto-replied');
  assert.deepEqual(parsed.from?.value, [{ address: 'MAILER-DAEMON@mx.example.com', name: 'Mail Delivery System' }]);
  assert.equal(parsed.subject, 'Undelivered Mail Returned to Sender');
  assert.equal(parsed.messageId, '<dsn.1@mx.example.com>');
  assert.equal(parsed.inReplyTo, '<orig.1@example.org>');
  assert.equal(parsed.references, '<orig.1@example.org>');
  assert.equal(parsed.date?.toISOString(), '2024-01-03T10:00:00.000Z');
  assert.equal(parsed.headers.get('x-mailgate-original-id'), '01HQ3Z8Y7W');
  assert.equal(parsed.headers.get('mime-version'), '1.0');
  const text = raw.toString('latin1');
  assert.match(text, /^To: <sender@example\.org>\r\n/m);
  assert.match(text, /^Auto-Submitted: auto-replied\r\n/m);

  const parts = reportParts(raw);
  assert.deepEqual(
    parts.map((p) => /^Content-Type: ([^;\r]+)/m.exec(p.header)?.[1]),
    ['text/plain', 'message/delivery-status', 'text/rfc822-headers'],
  );
  // The text tells an ordinary sender which addresses failed and what the other side said.
  assert.match(parsed.text ?? '', /could not be delivered/);
  assert.match(parsed.text ?? '', /<nouser@example\.net>\s+The receiving server mx\.example\.net replied:\s+550 5\.1\.1 No such user/);
  assert.match(parsed.text ?? '', /<down@example\.com>\s+Reason: connect ECONNREFUSED/);
  assert.match(parsed.text ?? '', /Subject: Quarterly figures/);
});

test('the delivery-status part has the per-message fields and one block per recipient', async () => {
  const raw = await dsn();
  const [perMessage, nouser, full, down, ...rest] = statusBlocks(reportParts(raw)[1]!.body);
  assert.equal(rest.length, 0);
  assert.deepEqual(Object.fromEntries(perMessage!), { 'Reporting-MTA': 'dns; mx.example.com', 'Arrival-Date': 'Tue, 02 Jan 2024 03:04:05 +0000' });
  assert.deepEqual(Object.fromEntries(nouser!), {
    'Final-Recipient': 'rfc822; nouser@example.net',
    Action: 'failed',
    Status: '5.1.1',
    'Remote-MTA': 'dns; mx.example.net',
    'Diagnostic-Code': 'smtp; 550 5.1.1 No such user',
    'Last-Attempt-Date': 'Tue, 02 Jan 2024 03:05:00 +0000',
  });
  assert.deepEqual(Object.fromEntries(full!), {
    'Final-Recipient': 'rfc822; full@example.net',
    Action: 'failed',
    Status: '5.0.0',
    'Remote-MTA': 'dns; mx2.example.net',
    'Diagnostic-Code': 'smtp; 552 Mailbox full',
  });
  // No SMTP reply: not an "smtp" diagnostic, but the reason is still there for the admin.
  assert.deepEqual(Object.fromEntries(down!), {
    'Final-Recipient': 'rfc822; down@example.com',
    Action: 'failed',
    Status: '5.0.0',
    'Diagnostic-Code': 'X-Mailgate; connect ECONNREFUSED 192.0.2.25:25',
  });
  // Our queue id is not the sender's ENVID (RFC 3461), so it stays out of the report.
  assert.doesNotMatch(raw.toString('latin1'), /Original-Envelope-Id/);

  const withEnvid = statusBlocks(reportParts(await dsn({ envelopeId: 'QQ314159' }))[1]!.body);
  assert.equal(withEnvid[0]!.get('Original-Envelope-Id'), 'QQ314159');
});

test('Status: the class of the reply code, the detail from an enhanced code that agrees with it', () => {
  const cases: [Pick<DsnRecipient, 'status' | 'code' | 'message'>, string][] = [
    [{ status: 'failed', code: 550, message: '5.1.1 No such user' }, '5.1.1'],
    [{ status: 'failed', code: 550, message: '550 5.7.1 Relaying denied' }, '5.7.1'],
    [{ status: 'failed', code: 552, message: 'Mailbox full' }, '5.0.0'],
    [{ status: 'failed', code: 550, message: '4.1.1 contradicts the code' }, '5.0.0'],
    [{ status: 'failed', code: 554, message: '5.1.10 Recipient address has null MX' }, '5.1.10'],
    [{ status: 'failed', message: 'connect ETIMEDOUT' }, '5.0.0'],
    [{ status: 'failed', code: 421, message: 'Service not available' }, '4.0.0'],
    [{ status: 'delayed', code: 451, message: '4.7.1 Greylisted, try again later' }, '4.7.1'],
    [{ status: 'delayed', message: 'connect ECONNREFUSED' }, '4.0.0'],
    [{ status: 'delivered', message: 'Delivered' }, '2.0.0'],
    [{ status: 'delivered', code: 250, message: '2.6.0 Queued as 4F1B2' }, '2.6.0'],
  ];
  for (const [recipient, expected] of cases) assert.equal(statusCode(recipient), expected, JSON.stringify(recipient));
});

test('the subject follows the worst news', async () => {
  const delayed: DsnRecipient = { address: 'slow@example.net', status: 'delayed', code: 451, message: '4.7.1 Greylisted' };
  const delivered: DsnRecipient = { address: 'ok@example.net', status: 'delivered', code: 250, message: '2.0.0 Ok' };
  const subject = async (recipients: DsnRecipient[]) => (await simpleParser(await dsn({ recipients }))).subject;
  assert.equal(await subject([delayed]), 'Delayed Mail (still being retried)');
  assert.equal(await subject([delivered, delayed, FAILED[0]!]), 'Undelivered Mail Returned to Sender');
  assert.equal(await subject([delivered]), 'Successful Mail Delivery Report');

  const raw = await dsn({ recipients: [delayed] });
  const text = (await simpleParser(raw)).text ?? '';
  assert.match(text, /not been delivered yet/);
  assert.match(text, /still being retried/i);
  const block = statusBlocks(reportParts(raw)[1]!.body)[1]!;
  assert.equal(block.get('Action'), 'delayed');
  assert.equal(block.get('Status'), '4.7.1');
});

test('the headers part holds the original header, not its body, and the original is read no further', async () => {
  const body = 'The body is secret and must not come back.\r\n'.repeat(50_000);
  const original = trackedOriginal(`${ORIGINAL_HEADER}\r\n\r\n${body}`, 512);
  const raw = await dsn({ originalHeaders: original.open });
  const part = reportParts(raw)[2]!;
  assert.match(part.header, /^Content-Transfer-Encoding: 7bit$/m);
  assert.equal(part.body, `${ORIGINAL_HEADER}\r\n`);
  assert.doesNotMatch(raw.toString('latin1'), /secret/);
  assert.equal(original.opened(), 1);
  assert.ok(original.destroyed(), 'the original stream is destroyed once its header is read');
  assert.ok(original.pulled() <= 1024, `read ${original.pulled()} bytes of a ${body.length}-byte message`);

  const parsed = await simpleParser(raw);
  const headers = parsed.attachments.find((a) => a.contentType === 'text/rfc822-headers');
  assert.match(headers?.content.toString() ?? '', /^Subject: Quarterly figures\r\n/m);
});

test('a 200 KiB header block is cut at the last complete line within 64 KiB', async () => {
  const lines = ['Subject: Many hops'];
  for (let i = 0, size = 0; size < 200 * 1024; i++) {
    lines.push(`Received: from relay${i}.example.net by relay${i + 1}.example.net with ESMTP id ${i}`);
    size += lines.at(-1)!.length + 2;
  }
  lines.push('X-Last-Header: never reached');
  const original = trackedOriginal(`${lines.join('\r\n')}\r\n\r\nbody\r\n`, 4096);
  const raw = await dsn({ originalHeaders: original.open });
  assertLines(raw);
  const copy = reportParts(raw)[2]!.body;
  assert.ok(copy.length <= ORIGINAL_HEADER_CAP, `copy of ${copy.length} bytes`);
  assert.ok(copy.length > ORIGINAL_HEADER_CAP - 200, 'the cut is at the last line end, not earlier');
  assert.ok(copy.startsWith('Subject: Many hops\r\n'));
  assert.match(copy, /\r\nReceived: from relay\d+\.example\.net by relay\d+\.example\.net with ESMTP id \d+\r\n$/);
  assert.doesNotMatch(copy, /X-Last-Header/);
  assert.ok(original.destroyed());
  assert.ok(original.pulled() <= ORIGINAL_HEADER_CAP + 4096, `read ${original.pulled()} bytes`);
});

test('an original with LF line ends, or with no empty line and no final newline, still gives CRLF throughout', async () => {
  const lf = await dsn({ originalHeaders: () => Readable.from([Buffer.from(ORIGINAL.replace(/\r\n/g, '\n'))]) });
  assertLines(lf);
  assert.equal(reportParts(lf)[2]!.body, `${ORIGINAL_HEADER}\r\n`);
  assert.match((await simpleParser(lf)).text ?? '', /Subject: Quarterly figures/);

  // The empty line split across chunks, LF only.
  const split = await dsn({ originalHeaders: () => Readable.from(['Subject: Split\n', '\n', 'body\n'].map((s) => Buffer.from(s))) });
  assert.equal(reportParts(split)[2]!.body, 'Subject: Split\r\n');

  const noEnd = await dsn({ originalHeaders: () => Readable.from([Buffer.from('Subject: Only a header\r\nX-Tail: no newline')]) });
  assertLines(noEnd);
  assert.equal(reportParts(noEnd)[2]!.body, 'Subject: Only a header\r\nX-Tail: no newline\r\n');
});

test('8-bit original headers are copied quoted-printable, byte for byte once decoded', async () => {
  const header = 'Subject: Grüße aus Köln\r\nFrom: Jörg <jörg@example.de>\r\n';
  const raw = await dsn({ originalHeaders: () => Readable.from([Buffer.from(`${header}\r\nKörper\r\n`)]) });
  assertLines(raw);
  assert.ok(
    raw.every((byte) => byte < 0x80),
    'the DSN is 7-bit',
  );
  assert.match(reportParts(raw)[2]!.header, /^Content-Transfer-Encoding: quoted-printable$/m);
  const parsed = await simpleParser(raw);
  const copy = parsed.attachments.find((a) => a.contentType === 'text/rfc822-headers');
  assert.deepEqual(copy?.content, Buffer.from(header));
  assert.match(parsed.text ?? '', /Subject: Grüße aus Köln/);
});

test('non-ASCII, multi-line and overlong server replies keep the DSN 7-bit with lines of at most 998 octets', async () => {
  const recipients: DsnRecipient[] = [
    { address: 'müller@exämple.de', status: 'failed', code: 550, message: '5.1.1 Empfänger unbekannt: Postfach „müller“ existiert nicht 📭' },
    { address: 'long@example.net', status: 'failed', code: 554, message: `5.7.1 Rejected ${'x'.repeat(1500)} ${'because '.repeat(300)}` },
    {
      address: 'multi@example.net',
      status: 'failed',
      code: 550,
      message: '550-5.7.1 Policy rejection\r\n550-X-Injected: yes\r\n550 5.7.1 See https://example.net/policy',
    },
  ];
  const raw = await dsn({ recipients });
  assertLines(raw);
  assert.ok(
    raw.every((byte) => byte < 0x80),
    'the DSN is 7-bit when the envelope sender is ASCII',
  );
  assert.doesNotMatch(raw.toString('latin1'), /^550-X-Injected/m, 'server line breaks do not start new lines');

  const parsed = await simpleParser(raw);
  assert.match(
    parsed.text ?? '',
    /<müller@exämple\.de>\s+The receiving server replied:\s+550 5\.1\.1 Empfänger unbekannt: Postfach „müller“ existiert nicht 📭/,
  );
  assert.match(parsed.text ?? '', /550-5\.7\.1 Policy rejection 550-X-Injected: yes 550 5\.7\.1 See/);

  const [, umlaut, long, multi] = statusBlocks(reportParts(raw)[1]!.body);
  // RFC 6533: a non-ASCII address takes the utf-8 type, escaped to 7 bits.
  assert.equal(umlaut!.get('Final-Recipient'), 'utf-8; m\\x{FC}ller@ex\\x{E4}mple.de');
  assert.equal(umlaut!.get('Status'), '5.1.1');
  assert.equal(umlaut!.get('Diagnostic-Code'), 'smtp; 550 5.1.1 Empf\\x{E4}nger unbekannt: Postfach \\x{201E}m\\x{FC}ller\\x{201C} existiert nicht \\x{1F4ED}');
  assert.equal(long!.get('Status'), '5.7.1');
  assert.match(long!.get('Diagnostic-Code') ?? '', /^smtp; 554 5\.7\.1 Rejected x{900} x{600} because because/);
  assert.ok((long!.get('Diagnostic-Code') ?? '').endsWith('...'), 'an overlong reply is trimmed');
  assert.equal(multi!.get('Diagnostic-Code'), 'smtp; 550-5.7.1 Policy rejection 550-X-Injected: yes 550 5.7.1 See https://example.net/policy');
  assert.equal(multi!.get('Status'), '5.7.1');
});

test('bad options are refused before anything is read', () => {
  let opened = false;
  const originalHeaders = () => {
    opened = true;
    return Readable.from([Buffer.from(ORIGINAL)]);
  };
  assert.throws(() => deliveryStatusNotification(options({ recipients: [], originalHeaders })), /at least one recipient/);
  assert.throws(() => deliveryStatusNotification(options({ to: '', originalHeaders })), /null sender/);
  assert.throws(() => deliveryStatusNotification(options({ arrivalDate: 'yesterday', originalHeaders })), /arrivalDate is not a valid date/);
  assert.throws(() => deliveryStatusNotification(options({ recipients: [{ ...FAILED[0]!, code: 55 }], originalHeaders })), /not 200 to 599/);
  assert.throws(() => deliveryStatusNotification(options({ messageId: 'has space@host', originalHeaders })), /not a usable Message-ID/);
  assert.equal(opened, false);
});

test('the original is opened only when the DSN is read, and its failure fails the DSN stream', async () => {
  let opened = 0;
  const stream = deliveryStatusNotification(
    options({
      originalHeaders: () => {
        opened++;
        return new Readable({
          read() {
            this.destroy(new Error('spool file gone'));
          },
        });
      },
    }),
  );
  assert.equal(opened, 0);
  await assert.rejects(buffer(stream), /spool file gone/);
  assert.equal(opened, 1);
});

test('a default Message-ID is generated on the reporting host, and an odd original Message-ID is left out', async () => {
  const parsed = await simpleParser(await dsn({ messageId: undefined, originalMessageId: 'not a <message id>', date: undefined }));
  assert.match(parsed.messageId ?? '', /^<[0-9a-f]{24}@mx\.example\.com>$/);
  assert.equal(parsed.inReplyTo, undefined);
  assert.equal(parsed.references, undefined);
  assert.ok(Math.abs((parsed.date?.getTime() ?? 0) - Date.now()) < 60_000);
});
