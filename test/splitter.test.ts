// The pipeline's splitter (policy/mime/splitter.ts) hands leaf bodies on without mailsplit
// reading them: what it gives must be what plain mailsplit gives, node by node, whatever
// pieces the message arrives in.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { Splitter, type MimeNode, type SplitterChunk } from '@zone-eu/mailsplit';
import { PipelineSplitter, bodyFastPath } from '../policy/mime/splitter.js';
import { fixture } from './helpers/paths.js';
import { benchMessage } from './bench/fetch.js';

test('the installed mailsplit has the state the body fast path reads (without it the pipeline splits as plain mailsplit, slower)', () => {
  assert.equal(bodyFastPath, true);
});

/** What a splitter gave: nodes by their headers, and the data and body bytes of each node in a row joined. */
type Entry = { node: number; type: 'node' | 'data' | 'body'; bytes: string };

async function split(splitter: Splitter, message: Buffer, piece: number): Promise<Entry[]> {
  const nodes = new Map<MimeNode, number>();
  const out: Entry[] = [];
  const done = new Promise<void>((resolve, reject) => {
    splitter.on('data', (chunk: SplitterChunk) => {
      if (chunk.type === 'node') {
        nodes.set(chunk, nodes.size);
        out.push({ node: nodes.size - 1, type: 'node', bytes: chunk.getHeaders().toString('latin1') });
        return;
      }
      const node = nodes.get(chunk.node) ?? -1;
      const last = out[out.length - 1];
      if (last && last.type === chunk.type && last.node === node) last.bytes += chunk.value.toString('latin1');
      else out.push({ node, type: chunk.type, bytes: chunk.value.toString('latin1') });
    });
    const events = splitter as NodeJS.EventEmitter;
    events.on('end', resolve);
    events.on('error', reject);
  });
  for (let at = 0; at < message.length; at += piece) splitter.write(message.subarray(at, at + piece));
  splitter.end();
  await done;
  // An empty chunk mailsplit gives at a boundary changes nothing that is stored.
  return out.filter((e) => e.type === 'node' || e.bytes.length > 0);
}

function emlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const file = path.join(dir, name);
    if (statSync(file).isDirectory()) return emlFiles(file);
    return name.endsWith('.eml') ? [file] : [];
  });
}

const bodyLines = (n: number, line: string) => line.repeat(n);
const MESSAGES: [string, Buffer][] = [
  ...[0, 1, 4, 8, 77, 300, 599].map((n): [string, Buffer] => [`bench message ${n}`, Buffer.from(benchMessage(n))]),
  ...emlFiles(fixture('.')).map((file): [string, Buffer] => [path.basename(file), readFileSync(file)]),
  [
    'signature lines, a delimiter with white space, nested multiparts, LF line ends',
    Buffer.from(
      'Content-Type: multipart/mixed; boundary="outer"\n\npreamble\n--outer\nContent-Type: multipart/alternative; boundary="inner"\n\n--inner\nContent-Type: text/plain\n\n' +
        bodyLines(200, 'text with -- inside and a line of it\n') +
        '-- \nsignature\n' +
        bodyLines(200, '--not the boundary\n') +
        '\n--inner  \nContent-Type: text/html\n\n' +
        bodyLines(300, '<p>html</p>\n') +
        '--outer\nContent-Type: application/octet-stream\n\n' +
        bodyLines(400, 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n') +
        '--outer--\nepilogue\n',
    ),
  ],
  [
    'a part with no closing delimiter, CR line ends inside, a body that is one long line',
    Buffer.from(
      'Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n' +
        bodyLines(300, 'line with a lone \r inside\r\n') +
        '\r--b\r\nContent-Type: text/plain\r\n\r\n' +
        'x'.repeat(100_000) +
        '\r\n--b\r\n\r\n' +
        bodyLines(300, 'last part without end\r\n'),
    ),
  ],
  ['a single-part message whose body has delimiter-like lines', Buffer.from('Subject: x\r\n\r\n' + bodyLines(500, '--b\r\nbody\r\n'))],
];

test('the pipeline splitter gives what mailsplit gives, node by node, for every way the message is cut', async () => {
  for (const [name, message] of MESSAGES) {
    for (const piece of [message.length, 65536, 4096, 1000, 77]) {
      const expected = await split(new Splitter(), message, piece);
      const got = await split(new PipelineSplitter(), message, piece);
      assert.deepEqual(got, expected, `${name}, in writes of ${piece} bytes`);
    }
  }
});

/** A seeded pseudo-random generator, so that a failure can be run again. */
function random(seed: number): () => number {
  return () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x80000000;
  };
}

/** A multipart message whose bodies hold lines that look like delimiters, with line ends of every kind. */
function trickyMessage(rand: () => number): Buffer {
  const pick = <T>(items: T[]): T => items[Math.floor(rand() * items.length)]!;
  const eol = () => pick(['\r\n', '\r\n', '\n', '\r\r\n']);
  const body = (boundaries: string[]) => {
    let text = '';
    const lines = Math.floor(rand() * 400);
    for (let i = 0; i < lines; i++) {
      const b = pick(boundaries);
      text +=
        pick(['QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=', 'text line', '', '-- ', `--${b}x`, `\r--${b}`, `--${b}`, `--${b}--`, '\r', '-', `--${b}  `]) + eol();
    }
    return text;
  };
  const part = (depth: number, boundaries: string[]): string => {
    if (depth > 2 || rand() < 0.5) return `Content-Type: text/plain${eol()}${eol()}${body(boundaries)}`;
    const b = `b${depth}${Math.floor(rand() * 10)}`;
    const inner = [...boundaries, b];
    let text = `Content-Type: multipart/mixed; boundary="${b}"${eol()}${eol()}${body(inner)}`;
    const parts = 1 + Math.floor(rand() * 3);
    for (let i = 0; i < parts; i++) text += `--${b}${eol()}${part(depth + 1, inner)}${eol()}`;
    if (rand() < 0.8) text += `--${b}--${eol()}${body(inner)}`;
    return text;
  };
  return Buffer.from(part(0, ['none']), 'latin1');
}

test('the pipeline splitter gives what mailsplit gives for messages made to trip it', async () => {
  const rand = random(15);
  for (let n = 0; n < 150; n++) {
    const message = trickyMessage(rand);
    for (const piece of [message.length, 5000, 333]) {
      const expected = await split(new Splitter(), message, piece);
      const got = await split(new PipelineSplitter(), message, piece);
      assert.deepEqual(got, expected, `message ${n} (${message.length} bytes), in writes of ${piece} bytes`);
    }
  }
});
