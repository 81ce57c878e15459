/**
 * Hostile input for the gateway: a seeded generator of broken messages (mutations of the
 * shared corpora and made-up pathological structures), a raw SMTP client that streams a
 * message byte for byte (no line-end conversion, unlike nodemailer) with backpressure, and a
 * streaming reader for the original attached to a stored wrapping message. Every generated
 * message is a function of the seed, and big ones are generated as a stream, so a failure
 * reproduces from the seed and case name and no test holds a huge message in memory.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { Readable, Writable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import { crc32 } from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import { Splitter, type SplitterChunk } from '@zone-eu/mailsplit';
import { bodyDecoder } from '../../policy/mime/transfer-decode.js';
import type { MessageMeta } from '../../storage/records.js';

/** A seeded PRNG (mulberry32): the same seed gives the same fuzz set. */
export class Rng {
  #state: number;
  constructor(readonly seed: number) {
    this.#state = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
}

/** One generated message. `bytes` can be called again and gives the same bytes (to compute what was expected). */
export interface FuzzCase {
  name: string;
  bytes: () => Iterable<Buffer>;
  /** The outcome it must have, where it is known: `parsed` or the wrapping reason. */
  expect?: string;
  /** Further checks on the stored message's metadata. */
  verify?: (meta: MessageMeta) => void;
}

const CRLF = '\r\n';
const STREAM_CHUNK = 64 * 1024;

/** Groups many small pieces into chunks of about 64 KiB, so a big message streams in sensible writes. */
function* chunked(pieces: Iterable<string | Buffer>): Generator<Buffer> {
  let held: Buffer[] = [];
  let size = 0;
  for (const piece of pieces) {
    const b = typeof piece === 'string' ? Buffer.from(piece, 'latin1') : piece;
    held.push(b);
    size += b.length;
    if (size >= STREAM_CHUNK) {
      yield Buffer.concat(held, size);
      held = [];
      size = 0;
    }
  }
  if (size) yield Buffer.concat(held, size);
}

const once = (name: string, bytes: Buffer, more: Partial<FuzzCase> = {}): FuzzCase => ({ name, bytes: () => [bytes], ...more });
const header = (subject: string, extra: string[] = []) =>
  [
    'From: Customer <customer@example.org>',
    'To: support@example.com',
    `Subject: ${subject}`,
    'Message-ID: <fuzz@example.org>',
    'MIME-Version: 1.0',
    ...extra,
  ].join(CRLF) + CRLF;

/** The boundary a message declares first, if any. */
function boundaryOf(m: Buffer): string | undefined {
  return /boundary\s*=\s*"?([^";\r\n]+)"?/i.exec(m.toString('latin1'))?.[1];
}

/** Offset of the end of the top-level header (or the whole message when it has none). */
function headerEnd(m: Buffer): number {
  const at = m.indexOf('\r\n\r\n');
  return at < 0 ? m.length : at + 2;
}

/**
 * Mutations of corpus messages (CRLF line ends, as nodemailer would have sent them). Each
 * draws its parameters from `rng` now, so the case is fixed by the seed.
 */
export function corpusMutations(rng: Rng, corpus: readonly { name: string; bytes: Buffer }[], rounds: number): FuzzCase[] {
  const cases: FuzzCase[] = [];
  const multipart = corpus.filter((c) => boundaryOf(c.bytes));
  for (let round = 0; round < rounds; round++) {
    {
      const { name, bytes } = rng.pick(corpus);
      const cut = 1 + rng.int(bytes.length - 1);
      cases.push(once(`truncated ${name} at ${cut}`, bytes.subarray(0, cut)));
    }
    {
      const { name, bytes } = rng.pick(corpus);
      const copy = Buffer.from(bytes);
      const flips = Array.from({ length: 1 + rng.int(16) }, () => [rng.int(copy.length), 1 << rng.int(8)] as const);
      for (const [at, bit] of flips) copy[at]! ^= bit;
      cases.push(once(`${flips.length} bit flips in ${name} (first at ${flips[0]![0]})`, copy));
    }
    {
      const { name, bytes } = rng.pick(multipart);
      const text = bytes.toString('latin1');
      const delimiter = `--${boundaryOf(bytes)}`;
      const places: number[] = [];
      for (let at = text.indexOf(delimiter); at >= 0; at = text.indexOf(delimiter, at + 1)) places.push(at);
      const at = places.length ? rng.pick(places) : headerEnd(bytes);
      const times = 1 + rng.int(200);
      const kind = rng.pick(['opening', 'closing'] as const);
      const line = `${delimiter}${kind === 'closing' ? '--' : ''}\r\n`;
      cases.push(once(`${kind} boundary x${times} at ${at} of ${name}`, Buffer.from(text.slice(0, at) + line.repeat(times) + text.slice(at), 'latin1')));
    }
    {
      const { name, bytes } = rng.pick(corpus);
      const ends = ['\r\n', '\n', '\r', '\n\r', '\r\r\n'];
      const mixed = bytes.toString('latin1').replace(/\r\n/g, () => (rng.next() < 0.5 ? '\r\n' : rng.pick(ends)));
      cases.push(once(`bare CR and LF mixed into ${name}`, Buffer.from(mixed, 'latin1')));
    }
    {
      const { name, bytes } = rng.pick(corpus);
      const at = rng.int(bytes.length);
      const nuls = 1 + rng.int(64);
      cases.push(once(`${nuls} NULs at ${at} of ${name}`, Buffer.concat([bytes.subarray(0, at), Buffer.alloc(nuls), bytes.subarray(at)])));
    }
    {
      const { name, bytes } = rng.pick(corpus);
      const end = headerEnd(bytes);
      const at = rng.int(Math.max(1, end - 2));
      const high = Buffer.from(Array.from({ length: 1 + rng.int(32) }, () => 0x80 + rng.int(128)));
      cases.push(once(`8-bit bytes at ${at} in the header of ${name}`, Buffer.concat([bytes.subarray(0, at), high, bytes.subarray(at)])));
    }
    {
      const { name, bytes } = rng.pick(corpus);
      const at = headerEnd(bytes) + rng.int(Math.max(1, bytes.length - headerEnd(bytes)));
      const run = rng.pick(['x', '4111 1111 1111 1111 ', ' ', '=', '--', 'account ']);
      const long = Buffer.from(run.repeat(Math.ceil((256 * 1024) / run.length)), 'latin1');
      cases.push(once(`a 256 KiB run of ${JSON.stringify(run)} at ${at} of ${name}`, Buffer.concat([bytes.subarray(0, at), long, bytes.subarray(at)])));
    }
    {
      const a = rng.pick(corpus);
      const b = rng.pick(corpus);
      const cutA = rng.int(a.bytes.length);
      const cutB = rng.int(b.bytes.length);
      cases.push(once(`${a.name} up to ${cutA} then ${b.name} from ${cutB}`, Buffer.concat([a.bytes.subarray(0, cutA), b.bytes.subarray(cutB)])));
    }
  }
  return cases;
}

/** Attachments the attachments stage blocked, by rule. */
const blockedRules = (meta: MessageMeta) =>
  ((meta.findings.attachments as { attachments?: { blocked: boolean; rule?: string }[] } | undefined)?.attachments ?? [])
    .filter((a) => a.blocked)
    .map((a) => a.rule ?? '');

/** Made-up pathological messages, most of them streamed, each with the outcome it must have. */
export function syntheticCases(): FuzzCase[] {
  const cases: FuzzCase[] = [];
  const junkLine = (i: number) => `X-Junk-${i}: ${'j'.repeat(80)}\r\n`;
  const stream = (name: string, expect: string, pieces: () => Iterable<string | Buffer>, verify?: FuzzCase['verify']): void => {
    cases.push({ name, expect, bytes: () => chunked(pieces()), ...(verify ? { verify } : {}) });
  };

  stream('a 1.5 MiB header of short lines (over max_header_size)', 'header_too_large', function* () {
    yield header('huge header');
    for (let i = 0; i < 16_000; i++) yield junkLine(i);
    yield '\r\nbody\r\n';
  });
  stream('a 2 MiB header line with no line break at all', 'header_too_large', function* () {
    yield 'X-Long: ';
    for (let i = 0; i < 32; i++) yield 'y'.repeat(64 * 1024);
  });
  stream('a part header of 1.2 MiB inside a multipart', 'header_too_large', function* () {
    yield header('big part header', ['Content-Type: multipart/mixed; boundary="b"']) + CRLF + '--b\r\n';
    for (let i = 0; i < 13_000; i++) yield junkLine(i);
    yield '\r\npart\r\n--b--\r\n';
  });
  // Under max_header_size in bytes, over it as the splitter counts (64 bytes a line at least):
  // these were 451 for ever, the wrapping message copying the header the splitter refused.
  stream('500 KiB To header of 20000 addresses (folded)', 'header_too_large', function* () {
    yield 'From: "Customer, =?utf-8?B?w6k=?=" <customer@example.org>\r\nSubject: many\r\nTo: ';
    for (let i = 0; i < 20_000; i++) yield `"User ${i}" <user${i}@example.com>,\r\n `;
    yield 'last@example.com\r\n\r\nbody\r\n';
  });
  stream('40000 header fields', 'header_too_large', function* () {
    yield header('many fields');
    for (let i = 0; i < 40_000; i++) yield `X-F: ${i}\r\n`;
    yield '\r\nbody\r\n';
  });
  stream('2000-deep multipart nesting', 'nesting_too_deep', function* () {
    yield header('deep', ['Content-Type: multipart/mixed; boundary="d0"']) + CRLF;
    for (let i = 1; i <= 2000; i++) yield `--d${i - 1}\r\nContent-Type: multipart/mixed; boundary="d${i}"\r\n\r\n`;
    yield '--d2000\r\nContent-Type: text/plain\r\n\r\ncore 4111 1111 1111 1111\r\n';
    for (let i = 2000; i >= 0; i--) yield `--d${i}--\r\n`;
  });
  stream('2000-deep inline message/rfc822 nesting', 'nesting_too_deep', function* () {
    for (let i = 0; i < 2000; i++) yield `Subject: level ${i}\r\nContent-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n`;
    yield 'Subject: core\r\n\r\ncore\r\n';
  });
  stream(
    '2000-deep attached message/rfc822 nesting (not split by the splitter)',
    'parsed',
    function* () {
      for (let i = 0; i < 2000; i++)
        yield `Subject: level ${i} 4111 1111 1111 1111\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename="m${i}.eml"\r\n\r\n`;
      yield 'Subject: core\r\nContent-Type: application/octet-stream; name="evil.exe"\r\n\r\nMZ core\r\n';
    },
    (meta) => assert.match(blockedRules(meta).join(), /nested deeper than 3 message levels/, 'the message too deep to inspect is blocked'),
  );
  // The attachments and masking stages split an attached message themselves, and their
  // splitters stop at 1000 parts: this hung the message for good in both.
  stream('an attached message of 1500 parts, then 1 MiB more', 'too_many_parts', function* () {
    yield header('attached parts', ['Content-Type: multipart/mixed; boundary="outer"']) + CRLF;
    yield '--outer\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename="parts.eml"\r\n\r\n';
    yield 'Subject: inner\r\nContent-Type: multipart/mixed; boundary="in"\r\n\r\n' + '--in\r\nContent-Type: text/plain\r\n\r\nx\r\n'.repeat(1500);
    for (let i = 0; i < 16; i++) yield `${'z'.repeat(1022)}\r\n`.repeat(64);
    yield '--in--\r\n--outer--\r\n';
  });
  stream('a million empty parts (about 9 MB)', 'too_many_parts', function* () {
    yield header('million parts', ['Content-Type: multipart/mixed; boundary="b"']) + CRLF;
    const batch = '--b\r\n\r\n\r\n'.repeat(8192);
    for (let i = 0; i < 1_000_000 / 8192; i++) yield batch;
    yield '--b--\r\n';
  });
  for (const [label, word] of [
    ['valid encoded words', '=?utf-8?Q?caf=C3=A9_4111_1111_1111_1111?= '],
    ['broken encoded-word fragments', '=?utf-8?B?=?iso-8859-1?Q?=?=?x?'],
    ['unterminated encoded words', '=?utf-8?q?4111=20'],
  ] as const) {
    const words = Math.ceil((300 * 1024) / word.length);
    const perLine = Math.max(1, Math.floor(900 / word.length));
    stream(
      `300 KiB of ${label} in a folded Subject`,
      'parsed',
      function* () {
        yield 'From: customer@example.org\r\nTo: support@example.com\r\nSubject:';
        for (let i = 0; i < words; i++) yield (i % perLine === 0 ? '\r\n ' : '') + word;
        yield '\r\nThread-Topic: same\r\n\r\nbody\r\n';
      },
      label === 'valid encoded words'
        ? (meta) => {
            // Masking reads the whole subject; the listing shows its start, masked.
            const masking = meta.findings.masking as { subjectMasked?: boolean; masked?: Record<string, number> };
            assert.equal(masking.subjectMasked, true);
            assert.equal(masking.masked?.card, words);
            assert.match(meta.subject ?? '', /^café \*{4} \*{4} \*{4} 1111/);
            assert.doesNotMatch(meta.subject ?? '', /4111 1111/);
          }
        : undefined,
    );
  }
  cases.push(
    once('300 KiB of encoded words on one Subject line', Buffer.from(header('=?utf-8?Q?x?= '.repeat(22_000)) + '\r\nbody\r\n'), {
      expect: 'header_line_too_long',
    }),
  );
  // mailsplit parses Content-Type and Content-Disposition itself, in one synchronous call.
  stream('a filename split into 5000 RFC 2231 continuations', 'header_too_large', function* () {
    yield (
      header('long name', ['Content-Type: multipart/mixed; boundary="b"']) +
      CRLF +
      '--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment'
    );
    for (let i = 0; i < 5000; i++) yield `;\r\n filename*${i}*=utf-8''%41%42`;
    yield ';\r\n filename*5000="x.exe"\r\n\r\nMZ\r\n--b--\r\n';
  });
  stream('a 900 KiB file name of encoded words (folded)', 'header_too_large', function* () {
    yield (
      header('long encoded name', ['Content-Type: multipart/mixed; boundary="b"']) +
      CRLF +
      '--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="'
    );
    for (let i = 0; i < 1000; i++) yield `${'=?utf-8?Q?caf=C3=A9_4111?= '.repeat(33)}\r\n `;
    yield 'x.exe"\r\n\r\nMZ\r\n--b--\r\n';
  });
  {
    const inner = Buffer.from(
      'Subject: inner\r\nContent-Type: multipart/mixed; boundary="i"\r\n\r\n--i\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="' +
        'a'.repeat(100 * 1024) +
        '.exe"\r\n\r\nMZ\r\n--i--\r\n',
    )
      .toString('base64')
      .replace(/.{76}/g, '$&\r\n');
    const message =
      header('forwarded', ['Content-Type: multipart/mixed; boundary="b"']) +
      CRLF +
      `--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="fwd.eml"\r\n\r\n${inner}\r\n--b--\r\n`;
    cases.push(
      once('an attached base64 message hiding a 100 KiB file name', Buffer.from(message), {
        expect: 'parsed',
        verify: (meta) => assert.match(blockedRules(meta).join(), /attached message cannot be inspected safely: A Content-Disposition field/),
      }),
    );
  }
  stream('broken base64 in a text part and an attachment', 'parsed', function* () {
    yield header('bad base64', ['Content-Type: multipart/mixed; boundary="b"']) + CRLF;
    yield '--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n';
    for (let i = 0; i < 4000; i++)
      yield `${Buffer.from('card 4111 1111 1111 1111 ')
        .toString('base64')
        .slice(i % 7)}!!==*${i % 3 ? '' : '='}\r\n`;
    yield '--b\r\nContent-Type: application/zip; name="a.zip"\r\nContent-Transfer-Encoding: base64\r\n\r\nUEsDBBQAAAAIA===\r\n%%%%\r\nUEsFBgAAAAAA\r\n--b--\r\n';
  });
  stream('broken quoted-printable: soft breaks, bad escapes, a 1 MiB line', 'parsed', function* () {
    yield header('bad qp', ['Content-Type: text/plain; charset=utf-8', 'Content-Transfer-Encoding: quoted-printable']) + CRLF;
    for (let i = 0; i < 3000; i++) yield `41=\r\n11 =ZZ=4=\r\n 1111=3D1111 1111 =\r\n`;
    for (let i = 0; i < 16; i++) yield '=41=3'.repeat(13_000);
    yield '=\r\n';
  });
  stream('HTML of 200000 tags around card digits', 'parsed', function* () {
    yield header('tags', ['Content-Type: text/html; charset=utf-8']) + CRLF;
    for (let i = 0; i < 20_000; i++) yield '<b>4</b><i x="1>2">1</i><!-- 1 -->11 <a>1111 1111 1111</a><';
    yield '\r\n';
  });
  // The old default bank_account pattern took more than 10 s on 4 KiB of blank lines.
  stream(
    '2 MiB of blank lines and white space in a text part, with account cues',
    'parsed',
    function* () {
      yield header('whitespace', ['Content-Type: text/plain; charset=utf-8']) + CRLF;
      for (let i = 0; i < 32; i++) yield `account no ${'\r\n'.repeat(8 * 1024)}${' \t\r\n'.repeat(4 * 1024)}${' '.repeat(16 * 1024)}acct 12345678\r\n`;
    },
    (meta) => assert.equal((meta.findings.masking as { masked?: Record<string, number> }).masked?.bank_account, 32),
  );
  stream('a text part in charsets masking must convert, with broken escapes', 'parsed', function* () {
    yield header('charsets', ['Content-Type: multipart/mixed; boundary="b"']) + CRLF;
    for (const charset of ['utf-7', 'iso-2022-jp', 'x-unknown-charset', 'utf-16le', 'gb18030']) {
      yield `--b\r\nContent-Type: text/plain; charset=${charset}\r\n\r\n`;
      for (let i = 0; i < 2000; i++) yield `+AGEAYgBj- \x1b$B%F%9%H\x1b(B \x1b$ 4111 1111 1111 1111 \xff\xfe\r\n`;
    }
    yield '--b--\r\n';
  });
  cases.push(once('only an empty line', Buffer.from('\r\n'), { expect: 'parsed' }));
  cases.push(once('no header, binary body', Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256)), { expect: 'header_nul' }));
  // RFC 5322 3.5: the body is optional, and every line here is a field.
  cases.push(once('a header that never ends', Buffer.from(header('no end') + 'Content-Type: text/plain'), { expect: 'parsed' }));
  return cases;
}

/** The server's reply to the end of DATA, e.g. `250 2.0.0 Ok: queued as ...`. */
export interface SmtpReply {
  reply: string;
  code: number;
}

/** The bytes of `message` as the gateway receives them over SMTP: unchanged, plus a CRLF if the message does not end with one. */
export function* asReceived(message: Iterable<Buffer>): Generator<Buffer> {
  let tail = Buffer.alloc(0);
  let any = false;
  for (const chunk of message) {
    if (!chunk.length) continue;
    any = true;
    tail = Buffer.concat([tail, chunk.subarray(-2)]).subarray(-2);
    yield chunk;
  }
  if (!any || tail.toString('latin1') !== '\r\n') yield Buffer.from(CRLF);
}

/**
 * A raw SMTP client that streams each message with dot-stuffing (RFC 5321 4.5.2: a line that
 * starts with "." gets another; smtp-server counts a line start after any LF) and waits for
 * the socket to drain. One session serves message after message (smtp-server holds every new
 * connection 100 ms to catch early talkers); a session that failed or was closed is replaced.
 */
export class RawSmtpClient {
  #session: Promise<SmtpSession> | undefined;

  constructor(readonly port: number) {}

  /** Sends one message; rejects if the exchange takes longer than `deadlineMs`. */
  async send(message: Iterable<Buffer>, deadlineMs: number): Promise<SmtpReply> {
    let session = await this.#session?.catch(() => undefined);
    if (!session || session.closed) {
      this.#session = openSession(this.port);
      session = await this.#session;
    }
    try {
      return await withDeadline(session.deliver(message), deadlineMs, 'the SMTP exchange');
    } catch (err) {
      session.close();
      throw err;
    }
  }

  close(): void {
    void this.#session?.then(
      (s) => s.close(),
      () => undefined,
    );
  }
}

interface SmtpSession {
  readonly closed: boolean;
  deliver(message: Iterable<Buffer>): Promise<SmtpReply>;
  close(): void;
}

async function openSession(port: number): Promise<SmtpSession> {
  const socket: Socket = connect(port, '127.0.0.1');
  const replies = replyReader(socket);
  const expect = async (code: number, what: string) => {
    const reply = await replies.next();
    if (!reply.startsWith(String(code))) throw new Error(`${what}: ${reply}`);
  };
  const command = (line: string) => write(socket, Buffer.from(line + CRLF));
  try {
    await expect(220, 'greeting');
    await command('EHLO fuzz.example.org');
    await expect(250, 'EHLO');
  } catch (err) {
    socket.destroy();
    throw err;
  }
  return {
    get closed() {
      return socket.destroyed;
    },
    async deliver(message) {
      await command('MAIL FROM:<fuzz@example.org>');
      await expect(250, 'MAIL FROM');
      await command('RCPT TO:<support@example.com>');
      await expect(250, 'RCPT TO');
      await command('DATA');
      await expect(354, 'DATA');
      let lineStart = true;
      for (const chunk of asReceived(message)) {
        const stuffed = dotStuffed(chunk, lineStart);
        lineStart = chunk[chunk.length - 1] === 0x0a;
        await write(socket, stuffed);
      }
      await write(socket, Buffer.from('.\r\n'));
      const reply = await replies.next();
      return { reply, code: Number(reply.slice(0, 3)) };
    },
    close: () => socket.destroy(),
  };
}

/** `chunk` with a "." added before every "." that starts a line. */
function dotStuffed(chunk: Buffer, lineStart: boolean): Buffer {
  const pieces: Buffer[] = [];
  let from = 0;
  if (lineStart && chunk[0] === 0x2e) {
    pieces.push(Buffer.from('.'));
  }
  for (let at = chunk.indexOf('\n.'); at >= 0; at = chunk.indexOf('\n.', at + 1)) {
    pieces.push(chunk.subarray(from, at + 1), Buffer.from('.'));
    from = at + 1;
  }
  if (pieces.length === 0) return chunk;
  pieces.push(chunk.subarray(from));
  return Buffer.concat(pieces);
}

function write(socket: Socket, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    if (socket.write(data)) return resolve();
    const drained = () => {
      socket.off('close', closed);
      resolve();
    };
    const closed = () => {
      socket.off('drain', drained);
      reject(new Error('connection closed while sending'));
    };
    socket.once('drain', drained);
    socket.once('close', closed);
  });
}

/** Full SMTP replies (multi-line joined), in order; once the server has hung up, `next` rejects. */
function replyReader(socket: Socket): { next(): Promise<string> } {
  let buffered = '';
  let current: string[] = [];
  let gone: Error | undefined;
  const ready: string[] = [];
  const waiting: { resolve: (reply: string) => void; reject: (err: Error) => void }[] = [];
  socket.setEncoding('latin1');
  socket.on('data', (text: string) => {
    buffered += text;
    for (let nl = buffered.indexOf('\r\n'); nl >= 0; nl = buffered.indexOf('\r\n')) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 2);
      current.push(line);
      if (/^\d{3}(?: |$)/.test(line)) {
        const reply = current.join('\n');
        current = [];
        const w = waiting.shift();
        if (w) w.resolve(reply);
        else ready.push(reply);
      }
    }
  });
  const hangUp = (err?: Error) => {
    gone ??= err ?? new Error('the server closed the connection');
    for (const w of waiting.splice(0)) w.reject(gone);
  };
  socket.on('error', hangUp);
  socket.on('close', () => hangUp());
  return {
    next: () =>
      new Promise((resolve, reject) => {
        const r = ready.shift();
        if (r !== undefined) resolve(r);
        else if (gone) reject(gone);
        else waiting.push({ resolve, reject });
      }),
  };
}

/**
 * The bytes with every bare CR and bare LF made CRLF, as a gateway that normalizes line ends
 * (`[smtp.limits] bare_line_endings = "normalize"`) hands them to ingest.
 */
export function* normalizedLineEndings(bytes: Iterable<Buffer>): Generator<Buffer> {
  let pendingCr = false;
  for (const chunk of bytes) {
    let text = chunk.toString('latin1');
    if (pendingCr) text = '\r' + text;
    pendingCr = text.endsWith('\r');
    if (pendingCr) text = text.slice(0, -1);
    yield Buffer.from(text.replace(/\r\n|\r|\n/g, '\r\n'), 'latin1');
  }
  if (pendingCr) yield Buffer.from('\r\n');
}

/** Rejects with `label` if `work` takes longer than `ms`. */
export async function withDeadline<T>(work: Promise<T>, ms: number, label: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${label}: not done within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A watchdog on another thread: if one case runs longer than `limitMs`, it prints the case's
 * label and kills the process. Timers of the test itself cannot fire while a synchronous loop
 * in the gateway (which runs in this process) holds the event loop, so without it such a hang
 * would last until the CI run's own time limit.
 */
export class Watchdog {
  readonly #worker: Worker;

  constructor(limitMs: number) {
    this.#worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
      const { writeSync } = require('node:fs');
      let current;
      parentPort.on('message', (label) => { current = label === null ? undefined : { label, since: Date.now() }; });
      setInterval(() => {
        if (!current || Date.now() - current.since < workerData.limitMs) return;
        writeSync(2, '\\nwatchdog: ' + current.label + ' has run for more than ' + workerData.limitMs + ' ms (the event loop is blocked); killing the test process\\n');
        process.kill(process.pid, 'SIGKILL');
      }, 500);`,
      { eval: true, workerData: { limitMs } },
    );
    this.#worker.unref();
  }

  /** The case that runs from now on; null when none does. */
  watch(label: string | null): void {
    this.#worker.postMessage(label);
  }

  async stop(): Promise<void> {
    await this.#worker.terminate();
  }
}

/** SHA-256 and length of a byte stream, read in constant memory. */
export async function digest(input: Readable | Iterable<Buffer>): Promise<{ size: number; sha256: string }> {
  const hash = createHash('sha256');
  let size = 0;
  await pipeline(
    input instanceof Readable ? input : Readable.from(input),
    new Writable({
      write(chunk: Buffer, _enc, done) {
        hash.update(chunk);
        size += chunk.length;
        done();
      },
    }),
  );
  return { size, sha256: hash.digest('hex') };
}

/** What a stored wrapping message holds, read as a stream: its explanation and its one attachment's digest. */
export interface WrappedContents {
  text: string;
  attachments: number;
  original: { size: number; sha256: string };
}

/** Walks a stored wrapping message with mailsplit and decodes its attachment chunk by chunk. */
export async function wrappedContents(raw: Readable): Promise<WrappedContents> {
  const hash = createHash('sha256');
  let size = 0;
  let text = '';
  let attachments = 0;
  let decode: ReturnType<typeof bodyDecoder> | undefined;
  let inText = false;
  const take = (bytes: Buffer) => {
    hash.update(bytes);
    size += bytes.length;
  };
  const finishPart = () => {
    if (decode) take(decode.end());
    decode = undefined;
    inText = false;
  };
  await pipeline(
    raw,
    new Splitter(),
    new Writable({
      objectMode: true,
      write(chunk: SplitterChunk, _enc, done) {
        if (chunk.type === 'node') {
          finishPart();
          if (chunk.disposition === 'attachment') {
            attachments++;
            decode = bodyDecoder(chunk);
          } else inText = chunk.contentType === 'text/plain';
        } else if (chunk.type === 'body') {
          if (decode) take(decode.push(chunk.value));
          else if (inText && text.length < 4096) text += chunk.value.toString('latin1');
        }
        done();
      },
      final(done) {
        finishPart();
        done();
      },
    }),
  );
  return { text, attachments, original: { size, sha256: hash.digest('hex') } };
}

/**
 * A small Windows program as a loader first reads one: a DOS header ("MZ", e_lfanew at 0x3c
 * pointing past the DOS stub), the "PE\0\0" signature, a COFF header for i386 and the start
 * of an optional header. Distinctive text in the stub lets a test find its bytes anywhere.
 */
export const PE_PROGRAM: Buffer = (() => {
  const pe = Buffer.alloc(0x180);
  pe.write('MZ', 0, 'latin1');
  pe.writeUInt16LE(0x90, 2);
  pe.writeUInt16LE(3, 4);
  pe.writeUInt32LE(0x80, 0x3c); // e_lfanew
  pe.write('This program cannot be run in DOS mode. mailgate-test-payload-7f3a9c\r\r\n$', 0x40, 'latin1');
  pe.write('PE\0\0', 0x80, 'latin1');
  pe.writeUInt16LE(0x14c, 0x84); // i386
  pe.writeUInt16LE(1, 0x86); // one section
  pe.writeUInt16LE(0xe0, 0x94); // size of the optional header
  pe.writeUInt16LE(0x102, 0x96); // executable, 32-bit
  pe.writeUInt16LE(0x10b, 0x98); // PE32
  pe.write('.text\0\0\0', 0x178, 'latin1');
  return pe;
})();

/** A zip archive with the entries stored (not compressed), as APPNOTE.TXT 4.3 lays it out. */
export function storedZip(entries: { name: string; data: Buffer }[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const { name, data } of entries) {
    const fileName = Buffer.from(name, 'latin1');
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(10, 4);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(fileName.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(10, 6);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(fileName.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, fileName, data);
    centrals.push(central, fileName);
    offset += 30 + fileName.length + data.length;
  }
  const directory = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, directory, end]);
}

/** Base64 in lines of 76 characters, CRLF between them (RFC 2045 6.8). */
export function base64Body(bytes: Buffer): string {
  return bytes.toString('base64').replace(/.{76}(?=.)/g, '$&\r\n');
}

/** One message that hides {@link PE_PROGRAM} and is broken on purpose, so that it is wrapped. */
export interface HiddenExecutable {
  name: string;
  /** The wrapping reason the message must get. */
  reason: string;
  bytes: Buffer;
  /** The file as attached (the program itself, or the zip that holds it), base64 encoded in the message. */
  payload: Buffer;
  /** False for the harmless twin of a case (a PDF where the program was): its original must stay attached. */
  hides: boolean;
}

/** How the executable is hidden: by its name, as a PDF (content sniffing), inside a zip (listing), inside an attached message. */
const hidings = {
  name: { type: 'application/octet-stream', file: 'setup.exe', content: () => PE_PROGRAM },
  'content sniffing': { type: 'application/pdf', file: 'statement.pdf', content: () => PE_PROGRAM },
  'zip listing': {
    type: 'application/zip',
    file: 'documents.zip',
    content: () =>
      storedZip([
        { name: 'readme.txt', data: Buffer.from('see bin/\r\n') },
        { name: 'bin/setup.exe', data: PE_PROGRAM },
      ]),
  },
  'an attached message': {
    type: 'message/rfc822',
    file: 'forwarded.eml',
    content: () =>
      Buffer.from(
        [
          'Subject: the installer',
          'MIME-Version: 1.0',
          'Content-Type: multipart/mixed; boundary="inner"',
          '',
          '--inner',
          'Content-Type: application/octet-stream; name="setup.exe"',
          'Content-Transfer-Encoding: base64',
          '',
          base64Body(PE_PROGRAM),
          '--inner--',
          '',
        ].join(CRLF),
        'latin1',
      ),
  },
  // The harmless twin: the same broken structures must not be blocked for their brokenness alone.
  'nothing, a PDF': {
    type: 'application/pdf',
    file: 'statement.pdf',
    content: () => Buffer.from('%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n'),
  },
} as const;

/** The part that carries the executable, hidden one way, its header lines then its body. */
function executablePart(hiding: keyof typeof hidings, extraHeader: string[] = []): string {
  const h = hidings[hiding];
  return [
    `Content-Type: ${h.type}; name="${h.file}"`,
    ...extraHeader,
    `Content-Disposition: attachment; filename="${h.file}"`,
    'Content-Transfer-Encoding: base64',
    '',
    base64Body(h.content()),
  ].join(CRLF);
}

const textPart = ['Content-Type: text/plain; charset=utf-8', '', 'Please see the attached file.'].join(CRLF);

/**
 * Messages that hide an executable and are broken in each way the wrapping check knows
 * (issue 17): wrapped, their original must still be judged by the attachment rules. Each
 * reason comes with each way of hiding the file (its name, content sniffing, a zip listing,
 * an attached message), and with a harmless twin that hides nothing.
 */
export function hiddenExecutableCases(): HiddenExecutable[] {
  const cases: HiddenExecutable[] = [];
  const head = (subject: string, contentType: string, extra: string[] = []) =>
    [
      'From: Customer <customer@example.org>',
      'To: support@example.com',
      `Subject: ${subject}`,
      'Message-ID: <hidden@example.org>',
      ...extra,
      'MIME-Version: 1.0',
      `Content-Type: ${contentType}`,
    ].join(CRLF);
  let payload: Buffer = PE_PROGRAM;
  let hides = true;
  const add = (name: string, reason: string, text: string) => cases.push({ name, reason, bytes: Buffer.from(text, 'latin1'), payload, hides });
  for (const hiding of Object.keys(hidings) as (keyof typeof hidings)[]) {
    payload = hidings[hiding].content();
    hides = hiding !== 'nothing, a PDF';
    const exe = executablePart(hiding);
    const mixed = (parts: string[], close = true) => parts.map((p) => `--b${CRLF}${p}${CRLF}`).join('') + (close ? `--b--${CRLF}` : '');
    add(
      `header_no_end, a line that is not a field in the message header (${hiding})`,
      'header_no_end',
      head('invoice', 'text/plain', ['this line is not a header field']).replace('Content-Type: text/plain', 'Content-Type: multipart/mixed; boundary="b"') +
        CRLF +
        CRLF +
        mixed([textPart, exe]),
    );
    add(
      `header_no_end, a part header cut off by the next boundary line (${hiding})`,
      'header_no_end',
      head('invoice', 'multipart/mixed; boundary="b"') + CRLF + CRLF + `--b${CRLF}Content-Type: text/plain${CRLF}` + mixed([exe]),
    );
    add(
      `header_no_end, a line that is not a field in the executable's part header (${hiding})`,
      'header_no_end',
      head('invoice', 'multipart/mixed; boundary="b"') +
        CRLF +
        CRLF +
        mixed([textPart, executablePart(hiding, ['not a header field, the header goes on below'])]),
    );
    add(
      `boundary_missing, a multipart without a boundary parameter (${hiding})`,
      'boundary_missing',
      head('invoice', 'multipart/mixed') + CRLF + CRLF + mixed([textPart, exe]),
    );
    add(
      `boundary_missing, the declared boundary never appears (${hiding})`,
      'boundary_missing',
      head('invoice', 'multipart/mixed; boundary="declared"') + CRLF + CRLF + mixed([textPart, exe]),
    );
    add(
      `boundary_unterminated, the executable last (${hiding})`,
      'boundary_unterminated',
      head('invoice', 'multipart/mixed; boundary="b"') + CRLF + CRLF + mixed([textPart, exe], false),
    );
    add(
      `boundary_unterminated, the executable first, an inner multipart never closed (${hiding})`,
      'boundary_unterminated',
      head('invoice', 'multipart/mixed; boundary="b"') +
        CRLF +
        CRLF +
        mixed([exe, `Content-Type: multipart/alternative; boundary="alt"${CRLF}${CRLF}--alt${CRLF}${textPart}${CRLF}`]),
    );
    add(
      `header_undecodable, 8-bit bytes in the subject (${hiding})`,
      'header_undecodable',
      head('facture \xe9t\xe9', 'multipart/mixed; boundary="b"') + CRLF + CRLF + mixed([textPart, exe]),
    );
    add(
      `too_many_parts, the executable after 1200 empty parts (${hiding})`,
      'too_many_parts',
      head('invoice', 'multipart/mixed; boundary="b"') + CRLF + CRLF + mixed([...Array(1200).fill(`Content-Type: text/plain${CRLF}`), exe]),
    );
    add(
      `header_line_too_long, in the executable's Content-Disposition (${hiding})`,
      'header_line_too_long',
      head('invoice', 'multipart/mixed; boundary="b"') +
        CRLF +
        CRLF +
        mixed([
          textPart,
          executablePart(hiding).replace('Content-Disposition: attachment;', `Content-Disposition: attachment; x-padding="${'p'.repeat(1100)}";`),
        ]),
    );
    add(
      `header_line_too_long, in the message header (${hiding})`,
      'header_line_too_long',
      head('invoice', 'multipart/mixed; boundary="b"', [`X-Long: ${'l'.repeat(1200)}`]) + CRLF + CRLF + mixed([textPart, exe]),
    );
  }
  // Big: the spooled original is read from its file, chunk after chunk, to the program at its end.
  payload = PE_PROGRAM;
  hides = true;
  const text = `${'Line of a long report, nothing to see here. '.repeat(2)}\r\n`.repeat(60_000); // about 5 MB
  add(
    'boundary_unterminated, the executable after 5 MB of text',
    'boundary_unterminated',
    head('long report', 'multipart/mixed; boundary="b"') +
      CRLF +
      CRLF +
      `--b${CRLF}Content-Type: text/plain${CRLF}${CRLF}${text}--b${CRLF}${executablePart('name')}${CRLF}`,
  );
  // Chinese mail clients write the name in raw GBK ("发票.exe"): the header cannot be decoded, the file is an executable all the same.
  const gbkName = '\xb7\xa2\xc6\xb1.exe';
  payload = PE_PROGRAM;
  hides = true;
  for (const where of ['name', 'filename'] as const) {
    const part = [
      where === 'name' ? `Content-Type: application/octet-stream; name="${gbkName}"` : 'Content-Type: application/octet-stream',
      where === 'filename' ? `Content-Disposition: attachment; filename="${gbkName}"` : 'Content-Disposition: attachment',
      'Content-Transfer-Encoding: base64',
      '',
      base64Body(PE_PROGRAM),
    ].join(CRLF);
    add(
      `header_undecodable, a ${where}= in raw GBK ending in .exe`,
      'header_undecodable',
      head('invoice', 'multipart/mixed; boundary="b"') + CRLF + CRLF + `--b${CRLF}${textPart}${CRLF}--b${CRLF}${part}${CRLF}--b--${CRLF}`,
    );
  }
  return cases;
}
