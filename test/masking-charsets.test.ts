/**
 * Text parts in multi-byte charsets (GBK, Shift_JIS, Big5, UTF-16): a part with nothing to
 * mask is stored byte for byte, whatever its charset; a masked part is written back in its own
 * charset, every byte that was not masked as it was. Each message is fed in chunks of every
 * size from 1 byte to its whole length.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough, Readable } from 'node:stream';
import iconv from 'iconv-lite';
import { parse as parseToml } from 'smol-toml';
import { runPipeline } from '../policy/chain/pipeline.js';
import type { Stage } from '../policy/chain/stage.js';
import { maskingSectionSchema, maskingStage } from '../policy/masking/stage.js';
import { MessageMasker } from '../policy/masking/stream.js';
import { charsetPlanner } from '../policy/masking/charsets.js';
import { Rng } from './helpers/fuzz.js';
import { messageContext } from './helpers/pipeline.js';

const enabled = maskingSectionSchema.parse((parseToml('[masking]\nenabled = true') as { masking: unknown }).masking);

interface Findings {
  summary: string[];
  masked: Record<string, number>;
  textParts: number;
  charsetChanges?: unknown[];
}

/** Runs the stages on `input` fed in chunks of `chunk` bytes: the bytes the store would get, and the findings. */
async function run(input: Buffer, chunk: number, stages: readonly Stage[] = [maskingStage(enabled, undefined)]): Promise<{ raw: Buffer; findings: Findings }> {
  const ctx = messageContext({ envelope: { mailFrom: 'customer@example.org', rcptTo: ['support@example.com'] } });
  const pieces: Buffer[] = [];
  for (let i = 0; i < input.length; i += chunk) pieces.push(input.subarray(i, i + chunk));
  const sink = new PassThrough();
  const out: Buffer[] = [];
  sink.on('data', (c: Buffer) => out.push(c));
  await runPipeline(Readable.from(pieces), ctx, stages, sink);
  return { raw: Buffer.concat(out), findings: ctx.findings.masking as unknown as Findings };
}

/** Every chunk size from 1 byte to the whole message. */
const everyChunking = (input: Buffer) => Array.from({ length: input.length }, (_, i) => i + 1);

const head = (charset: string, encoding: string) =>
  Buffer.from(
    [
      'From: customer@example.org',
      'To: support@example.com',
      'Subject: Bestellung',
      'MIME-Version: 1.0',
      `Content-Type: text/plain; charset=${charset}`,
      `Content-Transfer-Encoding: ${encoding}`,
      '',
      '',
    ].join('\r\n'),
  );

/** A one-part message: `body` (the part's bytes in its charset) written in `encoding`. */
function message(charset: string, encoding: '8bit' | 'base64', body: Buffer): Buffer {
  const encoded = encoding === 'base64' ? Buffer.from(body.toString('base64').replace(/.{76}/g, '$&\r\n') + '\r\n') : body;
  return Buffer.concat([head(charset, encoding), encoded]);
}

/** The part's bytes as stored: base64 decoded, or as they are. */
function storedBody(raw: Buffer, encoding: '8bit' | 'base64'): Buffer {
  const at = raw.indexOf('\r\n\r\n') + 4;
  const body = raw.subarray(at);
  return encoding === 'base64' ? Buffer.from(body.toString('latin1'), 'base64') : body;
}

// Bytes iconv-lite would not write back as they came: Shift_JIS 0x8790 is U+2252, which it
// writes as 0x81E0; 0xF040 is user-defined (private use, written "?"); GBK 0xA2E3 is the euro
// sign, written 0x80; 0xFF is no character at all.
const shiftJis = Buffer.concat([
  iconv.encode('お世話になっております。①②\r\n注文番号 2024-0312-5512-76、', 'shift_jis'),
  Buffer.from([0x87, 0x90, 0xf0, 0x40]),
  iconv.encode('です。\r\n', 'shift_jis'),
]);
const gbk = Buffer.concat([
  iconv.encode('您好，订单 2024-0312-5512-76 已于 2024-03-12 发货，', 'gbk'),
  Buffer.from([0xa2, 0xe3, 0xff]),
  iconv.encode('电话 010-12345678。\r\n', 'gbk'),
]);
const utf16be = Buffer.concat([Buffer.from([0xfe, 0xff]), iconv.encode('Bestellung 2024-0312-5512-76 – 注文 ①\r\n', 'utf-16be')]);
const utf16le = iconv.encode('Bestellung 2024-0312-5512-76 – 注文 ①\r\n', 'utf-16le');

test('a GBK, Shift_JIS or UTF-16 part with nothing to mask is stored byte for byte, however the message is cut', async () => {
  const rows = [
    { name: 'GBK, 8bit', input: message('GBK', '8bit', gbk) },
    { name: 'Shift_JIS, 8bit', input: message('Shift_JIS', '8bit', shiftJis) },
    { name: 'Shift_JIS, base64', input: message('shift_jis', 'base64', shiftJis) },
    { name: 'UTF-16 with a big-endian BOM, base64', input: message('UTF-16', 'base64', utf16be) },
    { name: 'UTF-16LE, base64', input: message('utf-16le', 'base64', utf16le) },
  ];
  for (const row of rows) {
    for (const chunk of everyChunking(row.input)) {
      const r = await run(row.input, chunk);
      assert.ok(r.raw.equals(row.input), `${row.name}, chunks of ${chunk}:\n${JSON.stringify(r.raw.toString('latin1'))}`);
      assert.deepEqual(r.findings.masked, {}, row.name);
      assert.deepEqual(r.findings.charsetChanges, [], row.name);
      assert.equal(r.findings.textParts, 1, row.name);
    }
  }
});

test('a masked GBK, Shift_JIS, Big5 or UTF-16 part is written back in its own charset, every other byte as it was', async () => {
  const card = '4111 1111 1111 1111';
  const masked = '**** **** **** 1111';
  const sjisCard = Buffer.concat([shiftJis, iconv.encode(`カード番号${card}です。\r\n`, 'shift_jis')]);
  const gbkCard = Buffer.concat([gbk, iconv.encode(`卡号：${card}，谢谢。\r\n`, 'gbk')]);
  const big5Card = iconv.encode(`您好，信用卡 ${card} 已過期。\r\n`, 'big5');
  const utf16Card = Buffer.concat([utf16be, iconv.encode(`Karte ${card} ①\r\n`, 'utf-16be')]);
  // The masked part's expected bytes: the card's digits replaced in the charset's own encoding.
  const swap = (bytes: Buffer, charset: string) => {
    const from = iconv.encode(card, charset);
    const at = bytes.indexOf(from);
    assert.ok(at > 0);
    return Buffer.concat([bytes.subarray(0, at), iconv.encode(masked, charset), bytes.subarray(at + from.length)]);
  };
  const rows = [
    { name: 'GBK, 8bit', charset: 'GBK', encoding: '8bit', body: gbkCard, expected: swap(gbkCard, 'gbk') },
    { name: 'Shift_JIS, 8bit', charset: 'Shift_JIS', encoding: '8bit', body: sjisCard, expected: swap(sjisCard, 'shift_jis') },
    { name: 'Shift_JIS, base64', charset: 'Shift_JIS', encoding: 'base64', body: sjisCard, expected: swap(sjisCard, 'shift_jis') },
    { name: 'Big5, base64', charset: 'Big5', encoding: 'base64', body: big5Card, expected: swap(big5Card, 'big5') },
    { name: 'UTF-16 with a big-endian BOM, base64', charset: 'UTF-16', encoding: 'base64', body: utf16Card, expected: swap(utf16Card, 'utf-16be') },
  ] as const;
  for (const row of rows) {
    const input = message(row.charset, row.encoding, row.body);
    for (const chunk of everyChunking(input)) {
      const r = await run(input, chunk);
      const label = `${row.name}, chunks of ${chunk}`;
      assert.ok(
        r.raw.subarray(0, r.raw.indexOf('\r\n\r\n') + 4).equals(head(row.charset, row.encoding)),
        `${label}: the header, charset included, is as it came`,
      );
      const body = storedBody(r.raw, row.encoding);
      assert.ok(body.equals(row.expected), `${label}:\n${body.toString('hex')}\n${row.expected.toString('hex')}`);
      assert.equal(iconv.decode(body, row.charset), iconv.decode(row.body, row.charset).replace(card, masked), label);
      assert.deepEqual(r.findings.masked, { card: 1 }, label);
      assert.deepEqual(r.findings.charsetChanges, [], label);
      assert.ok(!r.findings.summary.some((s) => /UTF-8/.test(s)), `${label}: ${r.findings.summary.join(' | ')}`);
    }
  }
});

test('multi-byte charsets: whatever the bytes and however they are cut, the codec writes every one back', () => {
  const rng = new Rng(20261117);
  const plan = charsetPlanner();
  const texts = ['カード 4111 ', '中文 ①≒∵ ', 'abc\r\n', '한국어 ', '\u2252\u2261', '𠮷野家 '];
  for (const charset of ['shift_jis', 'gbk', 'gb18030', 'big5', 'ks_c_5601-1987', 'utf-16', 'utf-16be', 'utf-16le', 'utf-32', 'cp864']) {
    const p = plan(charset);
    assert.equal(p.kind, 'keep', charset);
    if (p.kind !== 'keep') continue;
    const writeAs = charset === 'ks_c_5601-1987' ? 'cp949' : charset === 'utf-16' ? 'utf-16le' : charset;
    for (let n = 0; n < 200; n++) {
      // Text of the charset mixed with bytes in no order at all.
      const bytes = Buffer.concat(
        Array.from({ length: 12 }, () =>
          rng.int(3) === 0 ? Buffer.from(Array.from({ length: rng.int(6) }, () => rng.int(256))) : iconv.encode(rng.pick(texts), writeAs),
        ),
      );
      const codec = p.codec();
      let text = '';
      for (let at = 0; at < bytes.length;) {
        const length = 1 + rng.int(9);
        text += codec.decode(bytes.subarray(at, at + length));
        at += length;
      }
      text += codec.end();
      assert.ok(codec.encode(text).equals(bytes), `[seed ${rng.seed}] ${charset}: ${bytes.toString('hex')}`);
    }
  }
});

test('a charset that cannot be written back is still stored as UTF-8, and the change recorded', async () => {
  // Every charset libmime reads is written back today; this is the fallback for one that is not.
  const policy = maskingStage(enabled, undefined).policy;
  const toUtf8: Stage = {
    name: 'masking',
    create: (ctx) =>
      new MessageMasker(
        policy.inbound,
        policy.window,
        () => ({ kind: 'to-utf8', charset: 'Shift_JIS' }),
        (m) => {
          ctx.findings.masking = { summary: [], masked: m.counts, textParts: m.textParts, charsetChanges: m.charsetChanges };
        },
      ),
  };
  const input = message('Shift_JIS', 'base64', iconv.encode('カード番号 4111 1111 1111 1111 です\r\n', 'shift_jis'));
  for (const chunk of [1, 5, input.length]) {
    const r = await run(input, chunk, [toUtf8]);
    assert.match(r.raw.toString(), /Content-Type: text\/plain; charset=utf-8/);
    assert.equal(storedBody(r.raw, 'base64').toString('utf8'), 'カード番号 **** **** **** 1111 です\r\n');
    assert.deepEqual(r.findings.charsetChanges, [{ part: '1', from: 'Shift_JIS', to: 'UTF-8' }]);
  }
});
