/**
 * Masking a text part by function calls: a part with nothing to mask comes out as it came,
 * byte for byte; a part with something to mask is re-encoded from its start, each match
 * counted once, wherever the match falls relative to the 256 KiB a part is held for.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { simpleParser } from 'mailparser';
import { parse as parseToml } from 'smol-toml';
import { maskingSectionSchema, maskingStage } from '../policy/masking/stage.js';
import { PASS_THROUGH_LIMIT, TextPartMasking, type TextPartSettings } from '../policy/masking/part.js';
import { charsetPlanner } from '../policy/masking/charsets.js';
import type { MaskCounts } from '../policy/masking/text-masker.js';
import { mimeNode, runStages } from './helpers/pipeline.js';
import { tempDir } from './helpers/paths.js';

const enabled = maskingSectionSchema.parse((parseToml('[masking]\nenabled = true') as { masking: unknown }).masking);
const stages = () => [maskingStage(enabled, undefined)];

interface Masked {
  output: Buffer;
  counts: Record<string, number>;
  textParts: number;
}

/** Runs the masking stage; a message given as a file is read in 64 KiB chunks, as bytes in one. */
async function mask(input: Buffer | string): Promise<Masked> {
  const run = await runStages(input, stages());
  if (run.error) throw run.error;
  const f = run.ctx.findings.masking as unknown as { masked: Record<string, number>; textParts: number };
  return { output: run.output, counts: f.masked, textParts: f.textParts };
}

/** The same, read in 64 KiB chunks from a temporary file (a long part arrives in several body chunks). */
async function maskFromFile(input: Buffer): Promise<Masked> {
  const { dir, cleanup } = await tempDir('mailgate-masking-');
  try {
    const file = path.join(dir, 'message.eml');
    await writeFile(file, input);
    return await mask(file);
  } finally {
    await cleanup();
  }
}

const headers = (contentType: string, encoding?: string) =>
  [
    'From: customer@example.org',
    'To: support@example.com',
    'Subject: Details',
    'MIME-Version: 1.0',
    `Content-Type: ${contentType}`,
    ...(encoding ? [`Content-Transfer-Encoding: ${encoding}`] : []),
    '',
    '',
  ].join('\r\n');

const onePart = (contentType: string, encoding: string | undefined, body: Buffer | string) =>
  Buffer.concat([Buffer.from(headers(contentType, encoding)), Buffer.from(body as string, typeof body === 'string' ? 'latin1' : undefined)]);

const textOf = async (raw: Buffer) => ((await simpleParser(raw)).text ?? '').trimEnd();

test('a part with nothing to mask comes out byte for byte, whatever re-encoding would have changed', async () => {
  const prose = 'Dear team,\r\nthe order of 12 items ships on 2026-12-03 - thanks.\r\n-- \r\nCustomer\r\n';
  const rows: { name: string; message: Buffer }[] = [
    // libbase64 would write 76-character lines, and decode each padded line on its own.
    {
      name: 'base64 in 60-character lines',
      message: onePart('text/plain; charset=utf-8', 'base64', Buffer.from(prose).toString('base64').replace(/.{60}/g, '$&\r\n') + '\r\n'),
    },
    {
      name: 'base64, every line padded',
      message: onePart('text/plain; charset=utf-8', 'base64', ['Dear', 'team,', 'thanks'].map((w) => Buffer.from(w).toString('base64')).join('\r\n') + '\r\n'),
    },
    // libqp would write "=C3=A9" upper case, escape the trailing blank and the hyphens.
    {
      name: 'quoted-printable, lower-case escapes',
      message: onePart('text/plain; charset=utf-8', 'quoted-printable', 'caf=c3=a9 cr=C3=A8me \r\n--\r\nsoft =\r\nbreak\r\n'),
    },
    {
      name: '8bit latin1 with no final line break',
      message: onePart('text/plain; charset=iso-8859-1', '8bit', 'Ma carte de cr\xe9dit: expir\xe9e. \xc7a co\xfbte 12 EUR?'),
    },
    // The UTF-8 decoder would have written U+FFFD for the broken sequence.
    { name: 'broken UTF-8', message: onePart('text/plain; charset=utf-8', '8bit', 'na\xc3ve \xff text\r\n') },
    { name: 'no transfer encoding, no charset', message: onePart('text/plain', undefined, prose) },
    {
      name: 'HTML whose attributes hold numbers',
      message: onePart('text/html; charset=utf-8', 'quoted-printable', '<a href=3D"https://shop.example/pay?card=3D4111111111111111">pay</a> 2 < 3\r\n'),
    },
  ];
  for (const row of rows) {
    const r = await mask(row.message);
    assert.ok(r.output.equals(row.message), `${row.name}:\n${JSON.stringify(r.output.toString('latin1'))}`);
    assert.deepEqual(r.counts, {}, row.name);
    assert.equal(r.textParts, 1, row.name);
  }
});

test('in a multipart message, only the part with something to mask is rewritten', async () => {
  const clean = 'Caf=C3=A9 =\r\nconfirmed.  \r\n';
  const eml = [
    headers('multipart/alternative; boundary="b"'),
    '--b',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: quoted-printable',
    '',
    'Card 4111 1111 =\r\n1111 1111, caf=C3=A9.',
    '--b',
    'Content-Type: text/html; charset=utf-8',
    'Content-Transfer-Encoding: quoted-printable',
    '',
    clean,
    '--b--',
    '',
  ].join('\r\n');
  const r = await mask(Buffer.from(eml));
  const out = r.output.toString('latin1');
  assert.ok(out.includes(`\r\n\r\n${clean}\r\n--b--`), 'the clean part is as it came');
  assert.ok(out.includes('Card **** **** **** 1111, caf=C3=A9.'), out);
  assert.deepEqual(r.counts, { card: 1 });
  assert.equal(r.textParts, 2);
});

/** Lines of prose with no number in them, `bytes` long. */
function prose(bytes: number): string {
  const line = 'Nothing to see in this line of the report, only words and more words.\r\n';
  return line.repeat(Math.ceil(bytes / line.length)).slice(0, bytes);
}

test('a card in a later chunk of a long part is masked and counted once, above and below the bound', async () => {
  const card = 'card 4111 1111 1111 1111 end\r\n';
  for (const size of [PASS_THROUGH_LIMIT + 40 * 1024, PASS_THROUGH_LIMIT - 8 * 1024]) {
    for (const encoding of ['8bit', 'base64', 'quoted-printable']) {
      // `size` raw bytes: base64 takes 4 bytes for 3, and a line break for 76.
      const length = encoding === 'base64' ? Math.floor((((size * 3) / 4) * 76) / 78) : size;
      const text = prose(length - 200) + card + prose(100);
      const body = encoding === 'base64' ? Buffer.from(text).toString('base64').replace(/.{76}/g, '$&\r\n') : text;
      const r = await maskFromFile(onePart('text/plain; charset=utf-8', encoding === '8bit' ? undefined : encoding, body));
      assert.deepEqual(r.counts, { card: 1 }, `${size} ${encoding}`);
      assert.equal(await textOf(r.output), text.replace(card, 'card **** **** **** 1111 end\r\n').replace(/\r\n/g, '\n').trimEnd(), `${size} ${encoding}`);
    }
  }
});

test('a long part with nothing to mask is re-encoded past the bound, its text unchanged', async () => {
  const text = prose(PASS_THROUGH_LIMIT + 100 * 1024);
  const r = await maskFromFile(onePart('text/plain; charset=utf-8', 'base64', Buffer.from(text).toString('base64').replace(/.{60}/g, '$&\r\n')));
  assert.deepEqual(r.counts, {});
  assert.equal(await textOf(r.output), text.replace(/\r\n/g, '\n').trimEnd());
  assert.match(r.output.toString('latin1'), /\r\n\r\n[A-Za-z0-9+/]{76}\r\n/, 'written in 76-character lines');
});

/** Feeds raw body chunks to one part's masking and collects what it hands on. */
async function maskPart(settings: Partial<TextPartSettings>, chunks: Buffer[]): Promise<{ out: Buffer; counts: MaskCounts; reEncoded: boolean }> {
  const counts: MaskCounts = {};
  const patterns = maskingStage(enabled, undefined).policy.inbound;
  const plan = charsetPlanner()('utf-8');
  assert.ok(plan.kind === 'keep');
  const out: Buffer[] = [];
  const part = new TextPartMasking({ node: mimeNode(), html: false, codec: plan.codec, patterns, window: 64, counts, ...settings }, (b) => out.push(b));
  for (const chunk of chunks) await part.write(chunk);
  await part.end();
  return { out: Buffer.concat(out), counts, reEncoded: part.reEncoded };
}

test('a card straddling the hold bound is masked and counted once, wherever the chunks are cut', async () => {
  const card = '4111 1111 1111 1111';
  for (const offset of [-30, -10, -1, 0, 1, 10]) {
    // The card's digits start `offset` bytes from the bound.
    const text = Buffer.from(prose(PASS_THROUGH_LIMIT + offset - 1) + ' ' + card + ' ' + prose(5000));
    const at = PASS_THROUGH_LIMIT + offset;
    for (const cuts of [[at + 7], [PASS_THROUGH_LIMIT - 3, PASS_THROUGH_LIMIT + 3], [65536, 131072, 196608, 262144]]) {
      const chunks: Buffer[] = [];
      let from = 0;
      for (const c of [...cuts, text.length]) {
        chunks.push(text.subarray(from, c));
        from = c;
      }
      const r = await maskPart({}, chunks);
      assert.deepEqual(r.counts, { card: 1 }, `offset ${offset}, cuts ${cuts}`);
      assert.equal(r.out.toString(), text.toString().replace(card, '**** **** **** 1111'), `offset ${offset}, cuts ${cuts}`);
    }
  }
  const clean = await maskPart({}, [Buffer.from(prose(1000)), Buffer.from(prose(1000))]);
  assert.equal(clean.reEncoded, false);
  assert.ok(clean.out.equals(Buffer.from(prose(1000) + prose(1000))));
});

/** Quoted-printable by hand: escapes, a blank before a line end escaped, soft breaks at 70 characters. */
function quotedPrintable(bytes: Buffer): string {
  let out = '';
  let line = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (b === 0x0d && bytes[i + 1] === 0x0a) {
      out += '\r\n';
      line = 0;
      i++;
      continue;
    }
    const blankAtEnd = b === 0x20 && bytes[i + 1] === 0x0d;
    const piece = b < 0x20 || b > 0x7e || b === 0x3d || blankAtEnd ? `=${b.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(b);
    if (line + piece.length > 70) {
      out += '=\r\n';
      line = 0;
    }
    out += piece;
    line += piece.length;
  }
  return out;
}

test('a masked part written in base64 or quoted-printable decodes to the masked text, in lines of at most 76', async () => {
  const text =
    'Bonjour, ma carte: 4111-1111-1111-1111, merci beaucoup \u00e0 vous. ' + 'Tr\u00e8s long texte sans fin '.repeat(20) + '\r\n-- \r\nSSN 078-05-1120 \r\n';
  const expected = text.replace('4111-1111-1111-1111', '****-****-****-1111').replace('078-05-1120', '***-**-****');
  for (const [encoding, body] of [
    ['base64', Buffer.from(text).toString('base64').replace(/.{76}/g, '$&\r\n')],
    // Each line padded on its own: read run by run, as mailsplit reads it.
    [
      'base64',
      (
        Buffer.from(text)
          .toString('latin1')
          .match(/[^]{1,40}/g) ?? []
      )
        .map((piece) => Buffer.from(piece, 'latin1').toString('base64'))
        .join('\r\n'),
    ],
    ['quoted-printable', quotedPrintable(Buffer.from(text))],
  ] as const) {
    const r = await mask(onePart('text/plain; charset=utf-8', encoding, body));
    assert.deepEqual(r.counts, { card: 1, ssn: 1 }, encoding);
    assert.equal(await textOf(r.output), expected.replace(/\r\n/g, '\n').trimEnd(), encoding);
    const bodyOut = r.output.toString('latin1').split('\r\n\r\n')[1]!;
    for (const line of bodyOut.split('\r\n')) assert.ok(line.length <= 76, `${encoding}: ${line}`);
    assert.ok(!/4111|078-05/.test(bodyOut.replace(/=\r\n/g, '')), encoding);
  }
});

test('HTML: a masked part keeps its markup, an unmasked one its bytes', async () => {
  const html = '<p title="4111 1111 1111 1111">Card:&nbsp;<b>x</b> 4111 1111 1111 1111</p><!-- 5555555555554444 -->\r\n';
  const r = await mask(onePart('text/html; charset=utf-8', '7bit', html));
  assert.deepEqual(r.counts, { card: 1 });
  assert.ok(
    r.output.toString().endsWith('<p title="4111 1111 1111 1111">Card:&nbsp;<b>x</b> **** **** **** 1111</p><!-- 5555555555554444 -->\r\n'),
    r.output.toString(),
  );
});

test('iso-8859-1: a number next to 8-bit bytes is masked, every other byte kept', async () => {
  const body = 'N\xb0\xa0378282246310005\xe9 \x80 cr\xe9dit 4111 1111 1111 1111\xe0\r\n';
  const r = await mask(onePart('text/plain; charset=iso-8859-1', '8bit', body));
  assert.deepEqual(r.counts, { card: 2 });
  assert.ok(
    r.output.toString('latin1').endsWith('N\xb0\xa0***********0005\xe9 \x80 cr\xe9dit **** **** **** 1111\xe0\r\n'),
    JSON.stringify(r.output.toString('latin1')),
  );
  assert.match(r.output.toString('latin1'), /charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n/);
});

test('a number split by a quoted-printable soft line break is masked once; the break is not kept', async () => {
  const body = 'Ref: card 4111 11=\r\n11 1111 1111, thanks.\r\n';
  const r = await mask(onePart('text/plain; charset=utf-8', 'quoted-printable', body));
  assert.deepEqual(r.counts, { card: 1 });
  assert.ok(r.output.toString().endsWith('\r\n\r\nRef: card **** **** **** 1111, thanks.\r\n'), JSON.stringify(r.output.toString()));
  // One byte at a time: the probe and the re-encoding both see the number whole.
  const chunks = [...Buffer.from(body)].map((b) => Buffer.of(b));
  const part = await maskPart({ node: mimeNode('quoted-printable') }, chunks);
  assert.deepEqual(part.counts, { card: 1 });
  assert.equal(part.out.toString(), 'Ref: card **** **** **** 1111, thanks.\r\n');
});

test('a single-part message keeps its final line break when masked, and ends as it came when not', async () => {
  const masked = await mask(onePart('text/plain; charset=utf-8', 'base64', Buffer.from('card 4111 1111 1111 1111').toString('base64')));
  assert.ok(masked.output.toString().endsWith('\r\n\r\nY2FyZCAqKioqICoqKiogKioqKiAxMTEx\r\n'), JSON.stringify(masked.output.toString()));
  const clean = onePart('text/plain; charset=utf-8', 'base64', Buffer.from('no card').toString('base64'));
  assert.ok((await mask(clean)).output.equals(clean));
});
