import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { PassThrough, Readable } from 'node:stream';
import nodemailer from 'nodemailer';
import { simpleParser } from 'mailparser';
import { parse as parseToml } from 'smol-toml';
import { runPipeline } from '../policy/chain/pipeline.js';
import type { Direction, MessageContext, Stage } from '../policy/chain/stage.js';
import { maskingSectionSchema, maskingStage, rawMasker, type MaskingSection } from '../policy/masking/stage.js';
import { silentLogger } from '../lib/logger.js';
import { TextMasker } from '../policy/masking/text-masker.js';
import { startTestGateway } from './helpers/gateway.js';
import { fixture } from './helpers/paths.js';

/** The `[masking]` section of a policy file written as TOML. */
function section(toml: string): MaskingSection {
  const file = parseToml(toml) as { masking?: unknown };
  return maskingSectionSchema.parse(file.masking ?? {});
}

const enabled = section('[masking]\nenabled = true');

interface Run {
  raw: Buffer;
  ctx: MessageContext;
}

/** Runs a message through the stages, fed in chunks of `chunk` bytes, and returns the bytes that would be stored. */
async function run(input: Buffer | string, stages: readonly Stage[], opts: { direction?: Direction; chunk?: number; dryRun?: boolean } = {}): Promise<Run> {
  const bytes = Buffer.from(input);
  const ctx: MessageContext = {
    id: 'test',
    envelope: { mailFrom: 'customer@example.org', rcptTo: ['support@example.com'] },
    source: { kind: 'cli' },
    direction: opts.direction ?? 'inbound',
    findings: {},
    tags: new Set(),
    log: silentLogger(),
    dryRun: opts.dryRun ?? false,
    sideRecords: [],
  };
  const size = opts.chunk ?? 65536;
  const pieces: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) pieces.push(bytes.subarray(i, i + size));
  const sink = new PassThrough();
  const out: Buffer[] = [];
  sink.on('data', (c: Buffer) => out.push(c));
  await runPipeline(Readable.from(pieces), ctx, stages, sink);
  return { raw: Buffer.concat(out), ctx };
}

const message = (body: string, headers: string[] = []) =>
  ['From: customer@example.org', 'To: support@example.com', 'Subject: Details', ...headers, 'Content-Type: text/plain; charset=utf-8', '', body, ''].join(
    '\r\n',
  );

const bodyOf = async (raw: Buffer) => ((await simpleParser(raw)).text ?? '').trimEnd();
const masked = (r: Run) => (r.ctx.findings.masking as unknown as { masked: Record<string, number> }).masked;

test('built-in and custom patterns mask what they should and leave the rest', async () => {
  const custom = section(`
[masking]
enabled = true
[masking.card]
mask_char = "^"
visible_trailing = 0
[[masking.pattern]]
name = "order-ref"
regex = 'ORD-\\d{6}'
mask_char = "#"
visible_trailing = 2
`);
  const rows: { name: string; text: string; expect: string; counts?: Record<string, number>; policy?: MaskingSection }[] = [
    { name: 'Visa with spaces', text: 'card 4111 1111 1111 1111 thanks', expect: 'card **** **** **** 1111 thanks', counts: { card: 1 } },
    { name: 'Mastercard with dashes', text: 'card 5555-5555-5555-4444.', expect: 'card ****-****-****-4444.', counts: { card: 1 } },
    { name: 'Amex without separators', text: 'amex 378282246310005', expect: 'amex ***********0005', counts: { card: 1 } },
    { name: 'Amex in its 4-6-5 grouping', text: 'amex 3782 822463 10005', expect: 'amex **** ****** *0005' },
    { name: 'a card followed by another number', text: '4111 1111 1111 1111 2 items', expect: '**** **** **** 1111 2 items' },
    { name: 'Luhn-invalid number', text: 'ref 4111 1111 1111 1112', expect: 'ref 4111 1111 1111 1112', counts: {} },
    { name: 'too short for a card', text: 'phone 4111 1111 1111', expect: 'phone 4111 1111 1111', counts: {} },
    { name: 'SSN with dashes', text: 'SSN 078-05-1120.', expect: 'SSN ***-**-****.', counts: { ssn: 1 } },
    { name: 'SSN with spaces', text: 'SSN 123 45 6789', expect: 'SSN *** ** ****' },
    { name: 'SSN area 000', text: 'SSN 000-12-3456', expect: 'SSN 000-12-3456', counts: {} },
    { name: 'SSN area 666', text: 'SSN 666-12-3456', expect: 'SSN 666-12-3456', counts: {} },
    { name: 'SSN area 9xx', text: 'SSN 912-12-3456', expect: 'SSN 912-12-3456', counts: {} },
    { name: 'SSN group 00', text: 'SSN 123-00-4567', expect: 'SSN 123-00-4567', counts: {} },
    { name: 'SSN serial 0000', text: 'SSN 123-45-0000', expect: 'SSN 123-45-0000', counts: {} },
    {
      name: 'IBAN in groups',
      text: 'IBAN DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX',
      expect: 'IBAN **** **** **** **** **30 00 BIC COBADEFFXXX',
      counts: { iban: 1 },
    },
    { name: 'IBAN compact', text: 'IBAN GB82WEST12345698765432', expect: 'IBAN ******************5432' },
    { name: 'IBAN failing mod 97', text: 'IBAN GB82WEST12345698765433', expect: 'IBAN GB82WEST12345698765433', counts: {} },
    { name: 'bank account after its cue', text: 'Account number: 12345678', expect: 'Account number: ****5678', counts: { bank_account: 1 } },
    { name: 'a number without the cue', text: 'Invoice 12345678', expect: 'Invoice 12345678', counts: {} },
    { name: 'custom mask character for cards', text: 'card 4111111111111111', expect: 'card ^^^^^^^^^^^^^^^^', policy: custom },
    {
      name: 'custom pattern, # and two visible',
      text: 'order ORD-123456 shipped',
      expect: 'order ###-####56 shipped',
      counts: { 'order-ref': 1 },
      policy: custom,
    },
  ];
  for (const row of rows) {
    const r = await run(message(row.text), [maskingStage(row.policy ?? enabled, undefined)]);
    assert.equal(await bodyOf(r.raw), row.expect, row.name);
    if (row.counts) assert.deepEqual(masked(r), row.counts, `${row.name}: counts`);
  }
});

test('a number split across stream chunks or a quoted-printable soft line break is masked', async () => {
  const eml = readFileSync(fixture('masking', 'qp-soft-break.eml'));
  for (const chunk of [7, 1, 65536]) {
    const r = await run(eml, [maskingStage(enabled, undefined)], { chunk });
    const body = await bodyOf(r.raw);
    assert.match(body, /my card \*\*\*\* \*\*\*\* \*\*\*\* 1111 for the order/, `chunks of ${chunk}`);
    assert.match(body, /Second card: \*{12}4444, expiry 12\/27\./);
    assert.match(body, /Merci beaucoup à vous\./);
    assert.ok(!r.raw.toString().includes('4111 1111'), 'no unmasked digits in the stored bytes');
    assert.match(r.raw.toString(), /Content-Transfer-Encoding: quoted-printable/);
    assert.deepEqual(masked(r), { card: 2 });
  }
});

test('a number straddling two pieces of a long part is masked (base64 cuts the text every 57 bytes)', async () => {
  const line = 'filler text 4111-1111-1111-1111 more filler 078-05-1120 end\r\n';
  const body = Buffer.from(line.repeat(200)).toString('base64').replace(/.{76}/g, '$&\r\n');
  const eml = message(body, ['Content-Transfer-Encoding: base64']).replace(
    'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64',
    'Content-Transfer-Encoding: base64\r\nContent-Type: text/plain; charset=utf-8',
  );
  for (const chunk of [7, 65536]) {
    const r = await run(eml, [maskingStage(enabled, undefined)], { chunk });
    assert.equal(await bodyOf(r.raw), Array(200).fill('filler text ****-****-****-1111 more filler ***-**-**** end').join('\n'), `chunks of ${chunk}`);
    assert.deepEqual(masked(r), { card: 200, ssn: 200 });
  }
});

test('the text masker finds a match cut anywhere between two writes, and holds at most its window', () => {
  const patterns = maskingStage(enabled, undefined).policy.inbound;
  const text = 'Dear agent, card 4111 1111 1111 1111 and IBAN DE89 3704 0044 0532 0130 00, SSN 078-05-1120. Bye';
  const expected = 'Dear agent, card **** **** **** 1111 and IBAN **** **** **** **** **30 00, SSN ***-**-****. Bye';
  for (let cut = 0; cut <= text.length; cut++) {
    const masker = new TextMasker(patterns, {}, 64);
    const out = masker.write(text.slice(0, cut)) + masker.write(text.slice(cut)) + masker.end();
    assert.equal(out, expected, `cut at ${cut}`);
  }
  const masker = new TextMasker(patterns, {}, 64);
  let written = 0;
  for (let i = 0; i < 1000; i++) written += masker.write('x'.repeat(100)).length;
  assert.ok(written >= 100_000 - 64, 'all but the window is written out as it comes');
});

test('parts are re-encoded in their transfer encoding and charset', async (t) => {
  await t.test('base64', async () => {
    const r = await run(readFileSync(fixture('masking', 'base64.eml')), [maskingStage(enabled, undefined)], { chunk: 7 });
    assert.match(r.raw.toString(), /Content-Transfer-Encoding: base64/);
    assert.equal(await bodyOf(r.raw), 'Bonjour,\nmy IBAN is **** **** **** **** **54 32 and my SSN is ***-**-****.\nThanks');
  });
  await t.test('iso-8859-1 keeps its charset and every other byte', async () => {
    const eml = readFileSync(fixture('masking', 'latin1.eml'));
    const r = await run(eml, [maskingStage(enabled, undefined)], { chunk: 7 });
    assert.equal(r.raw.length, eml.length);
    assert.ok(r.raw.includes(Buffer.from('Ma carte de cr\xe9dit: **** ****** *0005. \xc7a co\xfbte', 'latin1')), r.raw.toString('latin1'));
    assert.match(r.raw.toString('latin1'), /charset=iso-8859-1/);
    assert.equal(await bodyOf(r.raw), 'Ma carte de crédit: **** ****** *0005. Ça coûte 12 EUR?');
  });
  await t.test('ISO-2022-JP: JIS bytes that look like digits stay, the ASCII card is masked', async () => {
    const eml = readFileSync(fixture('masking', 'iso-2022-jp.eml'));
    const r = await run(eml, [maskingStage(enabled, undefined)], { chunk: 3 });
    assert.ok(r.raw.includes(Buffer.from('\x1b$B4111111111111111\x1b(B card **** **** **** 1111', 'latin1')));
    assert.deepEqual(masked(r), { card: 1 });
  });
  await t.test('Shift_JIS keeps its charset', async () => {
    const r = await run(readFileSync(fixture('masking', 'shift-jis.eml')), [maskingStage(enabled, undefined)], { chunk: 5 });
    assert.match(r.raw.toString(), /Content-Type: text\/plain; charset=Shift_JIS\r\nContent-Transfer-Encoding: base64\r\n/);
    assert.equal(await bodyOf(r.raw), 'カード番号 **** **** **** 1111 です');
    const f = r.ctx.findings.masking as { charsetChanges: unknown; summary: string[] };
    assert.deepEqual(f.charsetChanges, []);
    assert.ok(!f.summary.some((s) => /UTF-8/.test(s)), f.summary.join(' | '));
  });
});

test('HTML: text is masked, tags, attributes and comments are not', async () => {
  const r = await run(readFileSync(fixture('masking', 'html.eml')), [maskingStage(enabled, undefined)], { chunk: 7 });
  const mail = await simpleParser(r.raw);
  const html = String(mail.html);
  assert.match(html, /<p style="color:red">Card: \*\*\*\* \*\*\*\* \*\*\*\* 1111<\/p>/);
  assert.match(html, /href="https:\/\/shop\.example\/pay\?card=4111111111111111" title="4111 1111 1111 1111">pay<\/a>/);
  assert.match(html, /<!-- 4111111111111111 --> 2 < 3/);
  assert.equal(mail.text?.trim(), 'Card: ****-****-****-1111');
  assert.deepEqual(masked(r), { card: 2 });
});

test('the subject is masked after decoding its encoded words, and re-encoded', async () => {
  const r = await run(readFileSync(fixture('masking', 'subject.eml')), [maskingStage(enabled, undefined)], { chunk: 7 });
  const mail = await simpleParser(r.raw);
  assert.equal(mail.subject, 'Carte bancaire **** **** **** 1111 à annuler');
  assert.equal(mail.headers.get('thread-topic'), 'Carte bancaire **** **** **** 1111');
  assert.match(r.raw.toString(), /^Subject: Carte bancaire \*\*\*\* \*\*\*\* \*\*\*\* 1111 =\?UTF-8\?Q\?=C3=A0\?= annuler\r$/m);
  assert.ok(!/4111_1111|4111 1111/.test(r.raw.toString()));
  const f = r.ctx.findings.masking as unknown as { subjectMasked: boolean; masked: Record<string, number> };
  assert.equal(f.subjectMasked, true);
  assert.deepEqual(f.masked, { card: 2 });
});

test('inbound and outbound are enabled separately, per section and per pattern', async () => {
  const inboundOnly = section('[masking]\nenabled = true\noutbound = false');
  const cardOutboundOnly = section('[masking]\nenabled = true\n[masking.card]\ninbound = false');
  const text = message('card 4111 1111 1111 1111 ssn 078-05-1120');
  const rows = [
    { policy: inboundOnly, direction: 'inbound', expect: 'card **** **** **** 1111 ssn ***-**-****' },
    { policy: inboundOnly, direction: 'outbound', expect: 'card 4111 1111 1111 1111 ssn 078-05-1120' },
    { policy: cardOutboundOnly, direction: 'inbound', expect: 'card 4111 1111 1111 1111 ssn ***-**-****' },
    { policy: cardOutboundOnly, direction: 'outbound', expect: 'card **** **** **** 1111 ssn ***-**-****' },
    { policy: section('[masking]'), direction: 'inbound', expect: 'card 4111 1111 1111 1111 ssn 078-05-1120' },
  ] as const;
  for (const row of rows) {
    const r = await run(text, [maskingStage(row.policy, undefined)], { direction: row.direction });
    assert.equal(await bodyOf(r.raw), row.expect, `${row.direction}`);
  }
  const off = await run(text, [maskingStage(inboundOnly, undefined)], { direction: 'outbound' });
  assert.deepEqual((off.ctx.findings.masking as { summary: string[] }).summary, ['Masking is not enabled for outbound mail.']);
});

test('a department adds its own patterns only when the partition lets it', async () => {
  const department = section(`
[masking]
enabled = true
builtin = []
[[masking.pattern]]
name = "pin"
regex = '(?<=PIN:\\s*)\\d{4}'
`);
  const text = message('PIN: 1234, card 4111 1111 1111 1111');
  const allowed = section('[masking]\nenabled = true\ndepartments_manage_own = true');
  const r1 = await run(text, [maskingStage(allowed, department)]);
  assert.equal(await bodyOf(r1.raw), 'PIN: ****, card **** **** **** 1111');
  assert.deepEqual(masked(r1), { pin: 1, card: 1 });

  const r2 = await run(text, [maskingStage(enabled, department)]);
  assert.equal(await bodyOf(r2.raw), 'PIN: 1234, card **** **** **** 1111');
  assert.ok((r2.ctx.findings.masking as { summary: string[] }).summary.some((s) => /departments_manage_own/.test(s)));

  // A department file with only its own patterns (no `enabled`), as policy/examples/department.toml.
  const patternsOnly = section(`
[masking]
[[masking.pattern]]
name = "pin"
regex = '(?<=PIN:\\s*)\\d{4}'
`);
  const r3 = await run(text + 'SSN 078-05-1120', [
    maskingStage(section('[masking]\nenabled = true\ndepartments_manage_own = true\nbuiltin = ["card"]'), patternsOnly),
  ]);
  assert.equal(await bodyOf(r3.raw), 'PIN: ****, card **** **** **** 1111\nSSN 078-05-1120', "its patterns are added; its section's default built-ins are not");
  assert.deepEqual(masked(r3), { card: 1, pin: 1 });
});

test('the section schema names the key of a bad pattern', () => {
  const rows = [
    { toml: `[[masking.pattern]]\nname = "x"\nregex = '(unclosed'`, path: ['pattern', 0, 'regex'], message: /JavaScript regular expression/ },
    { toml: `[[masking.pattern]]\nname = "x"\nregex = '\\d*'`, path: ['pattern', 0, 'regex'], message: /empty string/ },
    { toml: `[[masking.pattern]]\nname = "x"\nregex = 'a'\nflags = "g"`, path: ['pattern', 0, 'flags'], message: /flags/ },
    { toml: `[[masking.pattern]]\nname = "x"\nregex = 'a'\nmask_char = "**"`, path: ['pattern', 0, 'mask_char'], message: /one printable/ },
    { toml: `[[masking.pattern]]\nname = "card"\nregex = 'a'`, path: ['pattern', 0, 'name'], message: /not used/ },
    { toml: `bank_account_pattern = 'x?'`, path: ['bank_account_pattern'], message: /empty string/ },
    { toml: `builtin = ["visa"]`, path: ['builtin', 0], message: /card/ },
    { toml: `colour = "red"`, path: [], message: /colour/ },
  ];
  for (const row of rows) {
    const obj = (parseToml(row.toml.startsWith('[[') ? row.toml : `[masking]\n${row.toml}`) as { masking: unknown }).masking;
    const result = maskingSectionSchema.safeParse(obj);
    assert.equal(result.success, false, row.toml);
    const issue = result.error!.issues[0]!;
    assert.deepEqual(issue.path, row.path, row.toml);
    assert.match(issue.message + JSON.stringify(issue), row.message, row.toml);
  }
  assert.deepEqual(maskingSectionSchema.parse({}).builtin, ['card', 'iban', 'ssn', 'bank_account']);
  assert.equal(maskingSectionSchema.parse({}).enabled, false);
});

test('rawMasker masks an unparsed byte stream and keeps every other byte', async () => {
  const stage = maskingStage(enabled, undefined);
  const counts: Record<string, number> = {};
  const masker = rawMasker(stage.policy, 'inbound', counts)!;
  const input = Buffer.concat([
    Buffer.from('Subject: card 4111 1111 1111 1111\r\n\r\n'),
    Buffer.from([0xff, 0x00, 0xc3]),
    Buffer.from(' body 5555-5555-5555-4444\r\n'),
  ]);
  const pieces = Array.from({ length: Math.ceil(input.length / 7) }, (_, i) => input.subarray(i * 7, i * 7 + 7));
  const bytes = Buffer.concat(await Readable.from(pieces).pipe(masker).toArray());
  assert.equal(bytes.length, input.length);
  assert.ok(bytes.includes(Buffer.from([0xff, 0x00, 0xc3])), 'bytes above 0x7f and NUL pass untouched');
  assert.ok(bytes.toString('latin1').startsWith('Subject: card **** **** **** 1111\r\n\r\n'));
  assert.ok(bytes.toString('latin1').endsWith(' body ****-****-****-4444\r\n'));
  assert.deepEqual(counts, { card: 2 });
  assert.equal(rawMasker(maskingStage(section('[masking]\nenabled = true\ninbound = false'), undefined).policy, 'inbound'), null);
});

test('through a running gateway, the store never holds the card number', async (t) => {
  const stage = maskingStage(enabled, undefined);
  const gw = await startTestGateway('', { stages: () => [stage] });
  t.after(() => gw.cleanup());
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: gw.port, secure: false, ignoreTLS: true });
  const info = await transport.sendMail({
    envelope: { from: 'customer@example.org', to: ['support@example.com'] },
    raw: readFileSync(fixture('masking', 'qp-soft-break.eml')),
  });
  const id = /queued as (\S+)/.exec(info.response)![1]!;
  const stored = Buffer.concat(await gw.store.openRaw(id).toArray());
  const text = stored.toString('latin1');
  for (const form of ['4111111111111111', '4111 1111 1111 1111', '4111 1111 =\r\n1111', '5555555555554444', '55555555=\r\n55554444']) {
    assert.ok(!text.replace(/=\r\n/g, '').includes(form) && !text.includes(form), `stored bytes hold ${JSON.stringify(form)}`);
  }
  assert.ok(text.replace(/=\r\n/g, '').includes('**** **** **** 1111'));
  const meta = await gw.store.getMessage(id);
  const f = meta!.findings.masking as { masked: Record<string, number>; summary: string[] };
  assert.deepEqual(f.masked, { card: 2 });
  assert.match(f.summary[0]!, /^Masked 2 matches in this inbound message \(card 2\)/);
  assert.ok(!JSON.stringify(meta).includes('4111'), 'metadata holds no card digits');
});

test('a forwarded message (message/rfc822) has its subject and text masked too; a dry run says what it would do', async () => {
  const eml = [
    'From: agent@example.com',
    'To: customer@example.org',
    'Subject: Fwd: your order',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="outer"',
    '',
    '--outer',
    'Content-Type: text/plain; charset=utf-8',
    '',
    'See below.',
    '--outer',
    'Content-Type: message/rfc822',
    '',
    'From: customer@example.org',
    'Subject: card 5555 5555 5555 4444',
    'Content-Type: text/plain; charset=utf-8',
    '',
    'My card is 5555 5555 5555 4444.',
    '--outer--',
    '',
  ].join('\r\n');
  const r = await run(eml, [maskingStage(enabled, undefined)], { direction: 'outbound', dryRun: true, chunk: 7 });
  const text = r.raw.toString();
  assert.match(text, /^Subject: card \*\*\*\* \*\*\*\* \*\*\*\* 4444\r$/m);
  assert.match(text, /My card is \*\*\*\* \*\*\*\* \*\*\*\* 4444\./);
  assert.match(text, /^Subject: Fwd: your order\r$/m);
  const f = r.ctx.findings.masking as unknown as { summary: string[]; masked: Record<string, number>; textParts: number };
  assert.deepEqual(f.masked, { card: 2 });
  assert.equal(f.textParts, 2);
  assert.match(f.summary[0]!, /^Would mask 2 matches in this outbound message \(card 2\)/);
});

test('a bank account is masked when its cue and its digits come in different pieces, in any case and spelling', async () => {
  const { TextMasker } = await import('../policy/masking/text-masker.js');
  const { builtinPattern } = await import('../policy/masking/patterns.js');
  const settings = { maskChar: '*', visibleTrailing: 4, inbound: true, outbound: true };
  const patterns = [builtinPattern('bank_account', settings)];
  for (const cue of ['ACCOUNT NO. ', 'acct# ', 'A/C: ', 'Account number:  ']) {
    const text = `${'padding line 1 2 3\r\n'.repeat(20)}Please pay to ${cue}123456789 today; order 987654321 is not one.\r\n`;
    const at = text.indexOf(cue) + cue.length;
    for (const cut of [at - 3, at, at + 2]) {
      const counts = {};
      const masker = new TextMasker(patterns, counts, 64);
      const out = masker.write(text.slice(0, cut)) + masker.write(text.slice(cut)) + masker.end();
      assert.ok(out.includes(`${cue}*****6789 today`), `${cue} cut at ${cut - at}: ${out.slice(at - 30, at + 30)}`);
      assert.ok(out.includes('order 987654321'), 'a number without the cue stays');
      assert.deepEqual(counts, { bank_account: 1 });
    }
  }
});
