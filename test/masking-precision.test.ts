/**
 * Masking that protects without damaging (issue 17 #4): ordinary text full of numbers (log
 * lines, invoices, tracking and phone numbers, dates, versions, URLs, Message-IDs) comes out
 * as it went in, and the networks' published test card numbers, in every grouping they are
 * printed in, all come out masked; in parsed messages and in the raw masker alike.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { PassThrough, Readable } from 'node:stream';
import { simpleParser } from 'mailparser';
import { parse as parseToml } from 'smol-toml';
import { runPipeline } from '../policy/chain/pipeline.js';
import { maskingSectionSchema, maskingStage, rawMasker, type MaskingSection } from '../policy/masking/stage.js';
import { TextMasker } from '../policy/masking/text-masker.js';
import { fixture } from './helpers/paths.js';
import { messageContext } from './helpers/pipeline.js';

const section = (toml: string): MaskingSection => maskingSectionSchema.parse((parseToml(toml) as { masking?: unknown }).masking ?? {});
const enabled = section('[masking]\nenabled = true');

/** The masking stage over `input` in chunks of `chunk` bytes: stored bytes and counts. */
async function mask(input: Buffer, chunk: number, policy = enabled): Promise<{ raw: Buffer; masked: Record<string, number> }> {
  const ctx = messageContext({ envelope: { mailFrom: 'ops@example.org', rcptTo: ['support@example.com'] } });
  const sink = new PassThrough();
  const out: Buffer[] = [];
  sink.on('data', (c: Buffer) => out.push(c));
  await runPipeline(Readable.from(cut(input, chunk)), ctx, [maskingStage(policy, undefined)], sink);
  return { raw: Buffer.concat(out), masked: (ctx.findings.masking as unknown as { masked: Record<string, number> }).masked };
}

/** The raw masker (for unparsable messages) over `input` in chunks of `chunk` bytes. */
async function maskRaw(input: Buffer, chunk: number, policy = enabled): Promise<{ raw: Buffer; masked: Record<string, number> }> {
  const masked: Record<string, number> = {};
  const stream = rawMasker(maskingStage(policy, undefined).policy, 'inbound', masked)!;
  return { raw: Buffer.concat(await Readable.from(cut(input, chunk)).pipe(stream).toArray()), masked };
}

function cut(bytes: Buffer, size: number): Buffer[] {
  const pieces: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) pieces.push(bytes.subarray(i, i + size));
  return pieces;
}

const chunkings = [1, 7, 64, 65536];

test('ordinary text full of numbers is stored byte for byte: nothing in it is a card, an SSN or a bank account', async () => {
  const input = readFileSync(fixture('masking', 'precision-ordinary.eml'));
  for (const chunk of chunkings) {
    const parsed = await mask(input, chunk);
    assert.deepEqual(parsed.masked, {}, `chunks of ${chunk}`);
    assert.ok(parsed.raw.equals(input), `chunks of ${chunk}: ${diff(input, parsed.raw)}`);
    // As the original of a wrapping message, header fields and all.
    const raw = await maskRaw(input, chunk);
    assert.deepEqual(raw.masked, {}, `raw, chunks of ${chunk}`);
    assert.ok(raw.raw.equals(input), `raw, chunks of ${chunk}: ${diff(input, raw.raw)}`);
  }
});

/** The first line that differs, for a failure message. */
function diff(expected: Buffer, got: Buffer): string {
  const a = expected.toString('latin1').split('\n');
  const b = got.toString('latin1').split('\n');
  const i = a.findIndex((line, n) => line !== b[n]);
  return i < 0 ? 'same lines' : `line ${i + 1}:\n  ${JSON.stringify(a[i])}\n  ${JSON.stringify(b[i])}`;
}

/** The test numbers the networks publish (Visa, Stripe, Braintree, Cybersource), as the recall corpus holds them. */
const published = [
  ['Visa', '4111111111111111', '4012888888881881', '4242424242424242', '4222222222222'],
  ['Mastercard 5-series', '5555555555554444', '5105105105105100', '5200828282828210'],
  ['Mastercard 2-series', '2223003122003222', '2222420000001113', '2222630000001125'],
  ['American Express', '378282246310005', '371449635398431', '378734493671000'],
  ['Discover', '6011111111111117', '6011000990139424', '6011981111111113'],
  ['JCB', '3530111333300000', '3566002020360505', '3566111111111113'],
  ['UnionPay', '6200000000000005', '6200000000000047', '6205500000000000004'],
  ['Diners Club', '30569309025904', '38520000023237', '36227206271667', '3056930009020004'],
  ['Maestro', '6759560045005727054', '586824160825533338', '50339619890917', '6759411100000008', '5641821111166669'],
  ['UATP', '135412345678911'],
].flatMap(([, ...numbers]) => numbers);

/**
 * A line as it should be stored: each published number in it, however grouped, with its
 * digits masked but the last four; nothing else changed. Returns the line and how many.
 */
function maskedLine(line: string): { line: string; cards: number } {
  let cards = 0;
  const masked = line.replace(/\d(?:[ -]?\d)*/g, (run) => {
    let out = '';
    for (let at = 0; at < run.length;) {
      const card = published.find((n) => run.slice(at).replace(/[ -]/g, '').startsWith(n));
      if (!card || !/\d/.test(run[at]!)) {
        out += run[at++];
        continue;
      }
      let end = at;
      for (let digits = 0; digits < card.length; end++) if (/\d/.test(run[end]!)) digits++;
      let visible = 4;
      out += [...run.slice(at, end)]
        .reverse()
        .map((c) => (/\d/.test(c) && visible-- <= 0 ? '*' : c))
        .reverse()
        .join('');
      cards++;
      at = end;
    }
    return out;
  });
  return { line: masked, cards };
}

test('the published test numbers of every network, in each grouping they are printed in, are all masked', async () => {
  const input = readFileSync(fixture('masking', 'recall-cards.eml'));
  const text = input.toString('latin1');
  const at = text.indexOf('\r\n\r\n') + 4;
  const lines = text.slice(at).split('\r\n').map(maskedLine);
  const expected = text.slice(0, at) + lines.map((l) => l.line).join('\r\n');
  const cards = lines.reduce((n, l) => n + l.cards, 0);
  assert.equal(cards, published.length * 3 + 7, 'each number one run, with spaces and with dashes, and seven in sentences');
  for (const chunk of chunkings) {
    for (const [name, masked] of [
      ['parsed', await mask(input, chunk)],
      ['raw', await maskRaw(input, chunk)],
    ] as const) {
      assert.deepEqual(masked.masked, { card: cards }, `${name}, chunks of ${chunk}`);
      assert.equal(masked.raw.toString('latin1'), expected, `${name}, chunks of ${chunk}: ${diff(Buffer.from(expected, 'latin1'), masked.raw)}`);
    }
  }
});

const message = (body: string, subject = 'Details') =>
  Buffer.from(
    ['From: customer@example.org', 'To: support@example.com', `Subject: ${subject}`, 'Content-Type: text/plain; charset=utf-8', '', body, ''].join('\r\n'),
  );

test('what was masked though it was no card stays as it was, next to a card that is masked', async () => {
  const rows: { name: string; text: string; expect: string }[] = [
    { name: 'Luhn-valid zeros', text: '0000000000000000 and 0000 0000 0000 0000', expect: '0000000000000000 and 0000 0000 0000 0000' },
    {
      name: 'one digit repeated',
      text: '4444 4444 4444 4448 is a card, 5555555555555555 is not',
      expect: '**** **** **** 4448 is a card, 5555555555555555 is not',
    },
    { name: 'a line of small numbers', text: 'IRQs 16 17 18 19 20 21 22 23', expect: 'IRQs 16 17 18 19 20 21 22 23' },
    {
      name: 'a version string',
      text: 'mailgate 0.1.0-20240312-1530-2 (build 2401 1107 1453 0)',
      expect: 'mailgate 0.1.0-20240312-1530-2 (build 2401 1107 1453 0)',
    },
    {
      name: 'no issuer has this prefix',
      text: 'order 2024-0312-5512-76, ports 8080 8081 8443 9091',
      expect: 'order 2024-0312-5512-76, ports 8080 8081 8443 9091',
    },
    {
      name: 'a length its network does not issue',
      text: 'Amex has 15 digits: 3782822463100053 is none',
      expect: 'Amex has 15 digits: 3782822463100053 is none',
    },
    { name: 'a decimal', text: 'latency=0.4929795637484309s, 4111111111111111.5', expect: 'latency=0.4929795637484309s, 4111111111111111.5' },
    { name: 'glued to a word before it', text: 'id ref4111111111111111, hex 0x4111111111111111', expect: 'id ref4111111111111111, hex 0x4111111111111111' },
    // Adjacent encoded words decode with no space between them (RFC 2047 section 6.2).
    { name: 'a word right after it', text: 'card 4111 1111 1111 1111café', expect: 'card **** **** **** 1111café' },
    { name: 'the tail of a longer grouped number', text: 'USPS 9400 4111 1111 1111 1111', expect: 'USPS 9400 4111 1111 1111 1111' },
    {
      name: "digits in a URL's query",
      text: 'pay at https://shop.example/pay?card=4111111111111111&x=1 with 4111 1111 1111 1111',
      expect: 'pay at https://shop.example/pay?card=4111111111111111&x=1 with **** **** **** 1111',
    },
    { name: 'a URL without a scheme', text: 'www.example.com/orders/5555555555554444/status', expect: 'www.example.com/orders/5555555555554444/status' },
    {
      name: 'a Message-ID quoted in the text',
      text: 'In-Reply-To: <5105105105105100.x@mail.example.org>',
      expect: 'In-Reply-To: <5105105105105100.x@mail.example.org>',
    },
    { name: 'an address', text: 'write to 4111111111111111@example.org', expect: 'write to 4111111111111111@example.org' },
    { name: 'a card after an address', text: '<a@example.org> 5555 5555 5555 4444', expect: '<a@example.org> **** **** **** 4444' },
    // SSNs: the same care.
    { name: 'an SSN', text: 'SSN 078-05-1120, DOB 1970-01-01', expect: 'SSN ***-**-****, DOB 1970-01-01' },
    { name: 'dates are no SSNs', text: 'on 2024-03-12, 12-03-2024, 2024 03 12 and 03/12/2024', expect: 'on 2024-03-12, 12-03-2024, 2024 03 12 and 03/12/2024' },
    {
      name: 'phone numbers are no SSNs',
      text: 'call +49 301 23 4567, +1 212 555 0123, 555-123-4567 or 0301 23 4567',
      expect: 'call +49 301 23 4567, +1 212 555 0123, 555-123-4567 or 0301 23 4567',
    },
    { name: 'a longer number is no SSN', text: 'serial 123 45 6789 0', expect: 'serial 123 45 6789 0' },
    // Bank accounts: a date after the cue is when, not which.
    {
      name: 'a date after the account cue',
      text: 'Account: 2024-03-12 (opened); Account no. 12345678',
      expect: 'Account: 2024-03-12 (opened); Account no. ****5678',
    },
  ];
  for (const row of rows) {
    for (const chunk of [1, 65536]) {
      const r = await mask(message(row.text), chunk);
      assert.equal(((await simpleParser(r.raw)).text ?? '').trimEnd(), row.expect, `${row.name}, chunks of ${chunk}`);
    }
  }
  // An order number in the subject.
  const subject = await mask(message('thanks', 'Your order 2024-0312-5512-76 has shipped'), 7);
  assert.match(subject.raw.toString(), /^Subject: Your order 2024-0312-5512-76 has shipped\r$/m);
  assert.deepEqual(subject.masked, {});
});

test('a URL longer than the window keeps its digits wherever the text is cut, and a card after it is masked', () => {
  const patterns = maskingStage(enabled, undefined).policy.inbound;
  const url = `https://tracking.example/parcel?${'session=abcdef0123456789&'.repeat(8)}id=4111111111111111&lang=en`;
  const text = `Track it: ${url} then pay with 4111 1111 1111 1111.`;
  const expected = `Track it: ${url} then pay with **** **** **** 1111.`;
  for (let cutAt = 0; cutAt <= text.length; cutAt++) {
    const masker = new TextMasker(patterns, {}, 64);
    const out = masker.write(text.slice(0, cutAt)) + masker.write(text.slice(cutAt)) + masker.end();
    assert.equal(out, expected, `cut at ${cutAt}`);
  }
  // In pieces of one character.
  const counts = {};
  const masker = new TextMasker(patterns, counts, 64);
  let out = '';
  for (const ch of text) out += masker.write(ch);
  assert.equal(out + masker.end(), expected);
  assert.deepEqual(counts, { card: 1 });
});

test("an admin's own pattern still matches in URLs and header fields; the built-ins do not", async () => {
  const policy = section(`
[masking]
enabled = true
[[masking.pattern]]
name = "order-ref"
regex = 'ORD-\\d{6}'
`);
  const body = await mask(message('see https://shop.example/o?ref=ORD-123456&card=4111111111111111'), 7, policy);
  assert.match(body.raw.toString(), /ref=\*\*\*-\*\*\*\*\*\*&card=4111111111111111/);
  assert.deepEqual(body.masked, { 'order-ref': 1 });

  const original = Buffer.from(
    [
      'Message-ID: <4111111111111111.ORD-654321@mail.example.org>',
      'X-Order: ORD-123456 paid with 4111 1111 1111 1111',
      'Subject: card 5555 5555 5555 4444',
      'Content-Type: multipart/mixed; boundary="b4111111111111111"',
      '',
      '--b4111111111111111',
      'Content-Type: text/plain',
      'Content-ID: <4111111111111111@example.org>',
      '',
      'Card: 4111 1111 1111 1111',
      '--b4111111111111111--',
      '',
    ].join('\r\n'),
  );
  for (const chunk of [1, 5, 65536]) {
    const raw = await maskRaw(original, chunk, policy);
    const text = raw.raw.toString('latin1');
    assert.match(text, /^Message-ID: <4111111111111111\.\*\*\*-\*\*\*\*\*\*@mail\.example\.org>\r$/m, `chunks of ${chunk}`);
    assert.match(text, /^X-Order: \*\*\*-\*\*\*\*\*\* paid with 4111 1111 1111 1111\r$/m);
    assert.match(text, /^Subject: card \*\*\*\* \*\*\*\* \*\*\*\* 4444\r$/m);
    assert.match(
      text,
      /^--b4111111111111111\r\nContent-Type: text\/plain\r\nContent-ID: <4111111111111111@example\.org>\r\n\r\nCard: \*\*\*\* \*\*\*\* \*\*\*\* 1111\r\n--b4111111111111111--/m,
    );
    assert.deepEqual(raw.masked, { 'order-ref': 2, card: 2 });
  }
});

test('the raw masker: a message attached inside a broken one has its header fields kept and its subject and text masked', async () => {
  const original = Buffer.from(
    [
      'From: agent@example.com',
      'Subject: Fwd: order',
      'Content-Type: multipart/mixed; boundary="outer"',
      '',
      '--outer',
      'Content-Type: message/rfc822',
      '',
      'Message-ID: <5105105105105100@mail.example.org>',
      'References: <4111111111111111@mail.example.org>',
      'X-Ticket: 4111 1111 1111 1111',
      'Subject: card 5555 5555 5555 4444',
      '',
      'Card: 4111 1111 1111 1111',
      '--',
      'Card: 5555-5555-5555-4444 (after a signature line)',
      '--outer',
      'Content-Type: text/plain',
      '',
      'X-Note: 4111 1111 1111 1111 in a body line that looks like a field',
      '',
    ].join('\r\n'),
  );
  for (const chunk of [1, 3, 65536]) {
    const raw = await maskRaw(original, chunk);
    const text = raw.raw.toString('latin1');
    for (const kept of ['Message-ID: <5105105105105100@', 'References: <4111111111111111@', 'X-Ticket: 4111 1111 1111 1111'])
      assert.ok(text.includes(kept), `${kept}, chunks of ${chunk}`);
    for (const masked of ['Subject: card **** **** **** 4444', 'Card: **** **** **** 1111', 'Card: ****-****-****-4444', 'X-Note: **** **** **** 1111'])
      assert.ok(text.includes(masked), `${masked}, chunks of ${chunk}\n${text}`);
    assert.deepEqual(raw.masked, { card: 4 });
  }
});
