/**
 * Hostile and broken input: a seeded fuzz set made from pathological structures and from
 * mutations of our own fixture messages goes in over SMTP to a gateway running in this
 * process with the example partition policy (all four stages), and must come out stored,
 * parsed or wrapped, with nothing lost; within a deadline (test/helpers/hostile-run.ts). How
 * long each holds the event loop is reported here and held to 100 ms by `npm run bench --
 * hostile`. The same run over every
 * message of the shared corpora is test/corpora/hostile.test.ts (`npm run test:corpora`).
 *
 * `MAILGATE_FUZZ_SEED=<seed> node --test dist/test/hostile.test.js` replays a failing set.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import path from 'node:path';
import libmime from 'libmime';
import { decodedWhole } from '../policy/mime/header-text.js';
import { QuotedPrintableDecodeStream } from '../policy/mime/transfer-decode.js';
import { MimeNode } from '@zone-eu/mailsplit';
import { fixture } from './helpers/paths.js';
import { asReceivedOverSmtp } from './helpers/wrapped.js';
import { Rng, corpusMutations, syntheticCases, type FuzzCase } from './helpers/fuzz.js';
import { ROUNDS, SEED, assertNothingLeft, deliver, messageFiles, newTally, report, startRun } from './helpers/hostile-run.js';

test('a huge header value is decoded in slices exactly as libmime decodes it whole', async () => {
  for (const word of [
    '=?utf-8?Q?caf=C3=A9_4111?= ',
    'plain =?iso-8859-1?Q?caf=E9?= text =?utf-8?B?w6k=?= ',
    '=?utf-8?Q?a?==?utf-8?Q?b?=',
    '=?utf-8?q?4111=20',
  ]) {
    const value = word.repeat(Math.ceil((100 * 1024) / word.length));
    assert.equal(await decodedWhole(value), libmime.decodeWords(value), word);
  }
});

test('quoted-printable is decoded chunk by chunk exactly as libqp decodes it whole, escapes and soft line breaks cut anywhere', async () => {
  const rng = new Rng(SEED);
  const pieces = ['=', '=', ' ', '\t', '\r', '\n', '\r\n', 'A', '4', '1', 'f', 'z', '=\r\n', '=\n', '=4', '=41', '= \r\n', '\xe9'];
  for (let n = 0; n < 500; n++) {
    const text = Buffer.from(Array.from({ length: rng.int(120) }, () => rng.pick(pieces)).join(''), 'latin1');
    const chunks: Buffer[] = [];
    for (let at = 0; at < text.length;) {
      const len = 1 + rng.int(6);
      chunks.push(text.subarray(at, at + len));
      at += len;
    }
    // mailsplit's decoder for a quoted-printable part is libqp's, which reads the part whole.
    const node = new MimeNode(false);
    node.addHeaderChunk(Buffer.from('Content-Transfer-Encoding: quoted-printable\r\n\r\n'));
    node.parseHeaders();
    const whole = Buffer.concat(await Readable.from([text]).pipe(node.getDecoder()).toArray());
    const streamed = Buffer.concat(await Readable.from(chunks).pipe(new QuotedPrintableDecodeStream()).toArray());
    assert.ok(streamed.equals(whole), `[seed ${SEED}] ${JSON.stringify(text.toString('latin1'))}`);
  }
});

test('a seeded fuzz set of broken and hostile messages: each is stored or wrapped (or refused for size), in time (event-loop stalls reported; the bench holds them to 100 ms)', async (t) => {
  const fixtures = fixture();
  const ownMessages = messageFiles(fixtures)
    .map((file) => ({ name: path.relative(fixtures, file), bytes: asReceivedOverSmtp(readFileSync(file)) }))
    // A message with more Received lines than [smtp.limits] max_received_headers is refused as a loop (554, smtp-security.test.ts), mutated or not.
    .filter((m) => (m.bytes.toString('latin1').match(/^Received:/gim)?.length ?? 0) <= 50);
  const cases = [...syntheticCases(), ...corpusMutations(new Rng(SEED), ownMessages, ROUNDS)];
  t.diagnostic(`seed ${SEED}: ${cases.length} cases`);
  const run = await startRun(t);
  const tally = newTally();
  for (const c of cases) {
    await t.test(c.name, () => deliver(run, tally, `[seed ${SEED}] ${c.name}`, c));
  }
  // Over max_message_size (25 MB by default): a clean 552, nothing stored, the data read to its end.
  const oversized: FuzzCase = {
    name: '26 MB of broken multipart, over max_message_size',
    bytes: function* () {
      yield Buffer.from('Subject: big\r\nContent-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n');
      const line = Buffer.from('--x\r\n'.repeat(13107));
      for (let i = 0; i < 420; i++) yield line;
    },
  };
  await t.test(oversized.name, () => deliver(run, tally, `[seed ${SEED}] ${oversized.name}`, oversized, { refused: 552 }));
  report(t, tally);
  await assertNothingLeft(run.gw, tally);
});
