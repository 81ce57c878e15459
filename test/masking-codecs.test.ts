/**
 * The synchronous transfer codecs (mailsplit's own streams run by function calls, and our
 * quoted-printable decoder) give the very bytes mailsplit's streams give when piped, whatever
 * the input and however it is cut; and the charset codecs
 * read and write every byte of a part as they should.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable, type Transform } from 'node:stream';
import { bodyDecoder, bodyEncoder, QuotedPrintableDecodeStream } from '../policy/mime/transfer-decode.js';
import { mimeNode } from './helpers/pipeline.js';
import { charsetPlanner } from '../policy/masking/charsets.js';
import { Rng } from './helpers/fuzz.js';

const SEED = 20261203;

/** `bytes` cut into pieces of 1 to `max` bytes. */
function cut(rng: Rng, bytes: Buffer, max: number): Buffer[] {
  const pieces: Buffer[] = [];
  for (let at = 0; at < bytes.length;) {
    const len = 1 + rng.int(max);
    pieces.push(bytes.subarray(at, at + len));
    at += len;
  }
  return pieces;
}

async function throughStream(stream: Transform, pieces: Buffer[]): Promise<Buffer> {
  return Buffer.concat(await Readable.from(pieces).pipe(stream).toArray());
}

function throughCodec(codec: { push(b: Buffer): Buffer; end(): Buffer }, pieces: Buffer[]): Buffer {
  return Buffer.concat([...pieces.map((p) => codec.push(p)), codec.end()]);
}

/** Text that stresses quoted-printable: blanks before line ends, hyphens at line starts, '=', CR, 8-bit bytes, long lines. */
function hostileText(rng: Rng): Buffer {
  const pieces = [
    ' ',
    '\t',
    '\r\n',
    '\n',
    '\r',
    '-',
    '--',
    '=',
    'a',
    'word ',
    '4111',
    '.',
    ',',
    '\xe9',
    '\xc3\xa9',
    '\xe2\x82\xac',
    '\x00',
    'x'.repeat(80),
    'y '.repeat(50),
  ];
  return Buffer.from(Array.from({ length: rng.int(300) }, () => rng.pick(pieces)).join(''), 'latin1');
}

test('base64 and quoted-printable are encoded as mailsplit encodes them, cut anywhere', async () => {
  const rng = new Rng(SEED);
  for (const encoding of ['base64', 'quoted-printable', '7bit']) {
    for (let n = 0; n < 400; n++) {
      const bytes = hostileText(rng);
      const pieces = cut(rng, bytes, rng.pick([1, 5, 80, 400]));
      const expected = await throughStream(mimeNode(encoding).getEncoder() as Transform, pieces);
      const got = throughCodec(bodyEncoder(mimeNode(encoding)), pieces);
      assert.ok(
        got.equals(expected),
        `[seed ${SEED}] ${encoding} ${JSON.stringify(pieces.map((p) => p.toString('latin1')))}\n${JSON.stringify(got.toString('latin1'))}\n${JSON.stringify(expected.toString('latin1'))}`,
      );
      // A line as libqp counts it: bare LF ends one too (the text had some).
      if (encoding !== '7bit') for (const line of got.toString('latin1').split(/\r?\n/)) assert.ok(line.length <= 76, line);
    }
  }
});

test('a large piece is encoded as mailsplit encodes it (libqp works in 64 KiB slices)', async () => {
  const rng = new Rng(SEED + 1);
  const bytes = Buffer.concat(Array.from({ length: 600 }, () => hostileText(rng)));
  for (const encoding of ['base64', 'quoted-printable']) {
    const pieces = [bytes.subarray(0, 70_000), bytes.subarray(70_000)];
    const expected = await throughStream(mimeNode(encoding).getEncoder() as Transform, pieces);
    assert.ok(throughCodec(bodyEncoder(mimeNode(encoding)), pieces).equals(expected), encoding);
  }
});

test('base64 is decoded as mailsplit decodes it: junk skipped, every line padded on its own, cut anywhere', async () => {
  const rng = new Rng(SEED + 2);
  for (let n = 0; n < 500; n++) {
    const lines = Array.from({ length: rng.int(8) }, () => {
      const data = Buffer.from(Array.from({ length: rng.int(60) }, () => rng.int(256)));
      return data.toString('base64') + rng.pick(['', '', '!', ' ', '=', '==', '\xe9', 'A']);
    });
    const bytes = Buffer.from(lines.join(rng.pick(['\r\n', '\n', ''])), 'latin1');
    const pieces = cut(rng, bytes, rng.pick([1, 3, 50, 500]));
    const expected = await throughStream(mimeNode('base64').getDecoder() as Transform, pieces);
    const got = throughCodec(bodyDecoder(mimeNode('base64')), pieces);
    assert.ok(got.equals(expected), `[seed ${SEED}] ${JSON.stringify(bytes.toString('latin1'))}`);
  }
});

test('quoted-printable is decoded chunk for chunk as the decoder stream decodes it', async () => {
  const rng = new Rng(SEED + 3);
  const pieces = ['=', ' ', '\t', '\r', '\n', '\r\n', 'A', '4', 'f', '=\r\n', '=\n', '=4', '=41', '=e9', '= \r\n', '\xe9'];
  for (let n = 0; n < 300; n++) {
    const bytes = Buffer.from(Array.from({ length: rng.int(120) }, () => rng.pick(pieces)).join(''), 'latin1');
    const chunks = cut(rng, bytes, 6);
    const expected = await throughStream(new QuotedPrintableDecodeStream(), chunks);
    assert.ok(throughCodec(bodyDecoder(mimeNode('quoted-printable')), chunks).equals(expected), JSON.stringify(bytes.toString('latin1')));
  }
  assert.ok(throughCodec(bodyDecoder(mimeNode('8bit')), [Buffer.from('=41 \r\n')]).equals(Buffer.from('=41 \r\n')), 'other encodings pass through');
});

test('single-byte charsets: every byte is read as its character and written back as itself', () => {
  const plan = charsetPlanner();
  const all = Buffer.from(Array.from({ length: 256 }, (_, b) => b));
  for (const charset of ['us-ascii', 'iso-8859-1', 'windows-1252', 'koi8-r', 'iso-8859-7', 'x-unknown', 'euc-kr']) {
    const p = plan(charset);
    assert.equal(p.kind, 'keep', charset);
    if (p.kind !== 'keep') continue;
    const codec = p.codec();
    const text = codec.decode(all);
    assert.equal(text.length, 256, charset);
    assert.equal(text.slice(0x20, 0x7f), all.toString('latin1', 0x20, 0x7f), `${charset}: printable ASCII is ASCII`);
    assert.ok(codec.encode(text).equals(all), `${charset}: every byte written back`);
    // A mask character and digits go back as ASCII next to 8-bit bytes; a character the charset lacks becomes "?".
    assert.ok(codec.encode(text.slice(0xe0, 0xe2) + '**1\u4e00').equals(Buffer.concat([all.subarray(0xe0, 0xe2), Buffer.from('**1?')])), charset);
  }
  const cp1252 = plan('windows-1252');
  assert.ok(cp1252.kind === 'keep');
  assert.equal(cp1252.codec().decode(Buffer.from([0x80, 0x34, 0xe9])), '\u20ac4\u00e9');
  assert.ok(plan('iso-8859-1') === plan('ISO-8859-1 '), 'a plan is worked out once per charset');
});

test('ISO-2022-JP: ASCII read only outside JIS escapes, every byte written back', () => {
  const p = charsetPlanner()('iso-2022-jp');
  assert.ok(p.kind === 'keep');
  const bytes = Buffer.from('card 4111 \x1b$B4111\x1b(B 4111', 'latin1');
  const codec = p.codec();
  const text = codec.decode(bytes.subarray(0, 12)) + codec.decode(bytes.subarray(12));
  assert.equal(text.slice(0, 10), 'card 4111 ');
  assert.ok(!/\d/.test(text.slice(10, 20)), 'JIS bytes are not digits');
  assert.equal(text.slice(-5), ' 4111');
  assert.ok(codec.encode(text).equals(bytes));
});
