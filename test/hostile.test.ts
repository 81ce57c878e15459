/**
 * Hostile and broken input (issue 6): every corpus message, and a seeded fuzz set made from
 * them and from pathological structures, goes in over SMTP to a gateway running in this
 * process with the example partition policy (all four stages), and must come out stored,
 * parsed or wrapped, with nothing lost; within a deadline; and without holding the event
 * loop for more than 100 ms at a time (the gateway serves every session from that one loop).
 *
 * A failure names the seed and the case: `MAILGATE_FUZZ_SEED=<seed> node --test
 * dist/test/hostile.test.js` replays the same set. MAILGATE_FUZZ_ROUNDS sets how many rounds
 * of corpus mutations run (8 cases a round).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { Readable } from 'node:stream';
import path from 'node:path';
import libmime from 'libmime';
import { loadPolicyFile } from '../policy/policy-file.js';
import { maskingStage, rawMasker } from '../policy/data-masking.js';
import { spoolDir } from '../policy/spool.js';
import { unparsableReasons } from '../policy/unparsable.js';
import { decodedWhole } from '../policy/header-text.js';
import { QuotedPrintableDecodeStream } from '../policy/transfer-decode.js';
import { MimeNode } from '@zone-eu/mailsplit';
import { startTestGateway, type TestGateway } from './helpers/gateway.js';
import { corpus, projectRoot } from './helpers/paths.js';
import { asReceivedOverSmtp } from './helpers/wrapped.js';
import {
  Rng,
  Watchdog,
  asReceived,
  corpusMutations,
  digest,
  normalizedLineEndings,
  RawSmtpClient,
  syntheticCases,
  withDeadline,
  wrappedContents,
  type FuzzCase,
  type SmtpReply,
} from './helpers/fuzz.js';

const SEED = Number(process.env.MAILGATE_FUZZ_SEED ?? 20260601);
const ROUNDS = Number(process.env.MAILGATE_FUZZ_ROUNDS ?? 8);
/** Per message, from the first byte sent to the stored message checked: a failure, not a benchmark. */
const DEADLINE_MS = 30_000;
/** Longest the event loop may be held while a message is taken in. */
const MAX_STALL_MS = 100;
/** A stall is measured again this many times before it counts: a real one recurs, a descheduled process does not. */
const STALL_ATTEMPTS = 3;

const partitionPolicy = path.join(projectRoot, 'policy', 'examples', 'partition.toml');
const masking = maskingStage(loadPolicyFile(partitionPolicy).masking, undefined).policy;

/** Every raw message under the shared corpora, by its path there. */
function corpusFiles(dir = corpus()): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((name) => {
      const file = path.join(dir, name);
      if (statSync(file).isDirectory()) return corpusFiles(file);
      return /\.(msg|txt|eml)$/.test(name) ? [file] : [];
    });
}

/** What the runs measured, for the diagnostics. */
interface Tally {
  worstStall: { ms: number; label: string };
  slowest: { ms: number; label: string };
  outcomes: Record<string, number>;
  stored: number;
}

const newTally = (): Tally => ({ worstStall: { ms: 0, label: '' }, slowest: { ms: 0, label: '' }, outcomes: {}, stored: 0 });

/**
 * Sends one message and checks what was stored, measuring the event loop meanwhile. A stall
 * over the limit is measured again (the message is stored again) before it fails the case.
 */
async function deliver(run: Run, tally: Tally, label: string, message: FuzzCase, opts: { refused?: number } = {}): Promise<void> {
  const loop = monitorEventLoopDelay({ resolution: 10 });
  let stall = Infinity;
  for (let attempt = 1; attempt <= STALL_ATTEMPTS && stall >= MAX_STALL_MS; attempt++) {
    run.watchdog.watch(label);
    try {
      loop.reset();
      loop.enable();
      const started = performance.now();
      const sent = await run.client.send(message.bytes(), DEADLINE_MS).catch((err: Error) => assert.fail(`${label}: ${err.message}`));
      const took = performance.now() - started;
      loop.disable();
      stall = Math.min(stall, loop.max / 1e6);
      if (took > tally.slowest.ms) tally.slowest = { ms: took, label };
      if (sent.code === 250) tally.stored++;
      const outcome = await withDeadline(checkStored(run.gw, label, message, sent, opts.refused), DEADLINE_MS, label);
      if (message.expect) assert.equal(outcome, message.expect, `${label}: outcome`);
      tally.outcomes[outcome] = (tally.outcomes[outcome] ?? 0) + 1;
    } finally {
      loop.disable();
      run.watchdog.watch(null);
    }
  }
  if (stall > tally.worstStall.ms) tally.worstStall = { ms: stall, label };
  assert.ok(stall < MAX_STALL_MS, `${label}: the event loop was held for ${stall.toFixed(0)} ms (limit ${MAX_STALL_MS}) in each of ${STALL_ATTEMPTS} attempts`);
}

/** The bytes ingest received for `message`: as sent, CRLF added to end DATA, bare line ends made CRLF if the gateway does that. */
function received(gw: TestGateway, message: FuzzCase): Iterable<Buffer> {
  // `[smtp.limits] bare_line_endings` (SMTP smuggling guard), where the gateway has it.
  const mode = (gw.config.smtp as { limits?: { bare_line_endings?: string } }).limits?.bare_line_endings;
  const bytes = asReceived(message.bytes());
  return mode === 'normalize' ? normalizedLineEndings(bytes) : bytes;
}

/**
 * The reply is 250 and the message is stored, normal or wrapped (as corpora.test.ts and
 * wrap-ingest.test.ts assert: a known reason, and the original attached as received, or
 * masked as raw text where masking found something in it); or it is the expected refusal.
 */
async function checkStored(gw: TestGateway, label: string, message: FuzzCase, sent: SmtpReply, refused?: number): Promise<string> {
  if (refused !== undefined) {
    assert.equal(sent.code, refused, `${label}: ${sent.reply}`);
    return `refused ${refused}`;
  }
  assert.equal(sent.code, 250, `${label}: ${sent.reply}`);
  const id = /queued as (\S+)/.exec(sent.reply)?.[1];
  assert.ok(id, `${label}: ${sent.reply}`);
  const meta = await gw.store.getMessage(id);
  assert.ok(meta, `${label}: no stored message ${id}`);
  try {
    message.verify?.(meta);
  } catch (err) {
    assert.fail(`${label}: ${(err as Error).message}`);
  }
  const expected = await digest(received(gw, message));
  assert.equal(meta.receivedSize, expected.size, `${label}: received size`);
  const stored = await digest(gw.store.openRaw(id));
  assert.equal(stored.size, meta.size, `${label}: stored size`);
  if (!meta.tags.includes('wrapped')) {
    assert.equal(meta._WrappingMessageReason, undefined, label);
    for (const stage of ['wrapping', 'attachments', 'delivery_exceptions', 'masking']) assert.ok(meta.findings[stage], `${label}: the ${stage} stage ran`);
    return 'parsed';
  }
  const reason = String(meta.findings.wrapping?.reason);
  assert.ok(reason in unparsableReasons, `${label}: reason ${reason}`);
  assert.ok(meta._WrappingMessageReason?.startsWith(`${reason}: `), `${label}: ${meta._WrappingMessageReason}`);
  const wrapped = await wrappedContents(gw.store.openRaw(id));
  assert.equal(wrapped.attachments, 1, `${label}: one attachment`);
  assert.match(wrapped.text, /^Error encountered during preprocessing of this message/, label);
  // Masking is on, so the original is attached masked as raw text (policy.test.ts); where
  // nothing in it matches, that is the original byte for byte.
  const masked = await digest(Readable.from(received(gw, message)).pipe(rawMasker(masking, 'inbound')!));
  assert.deepEqual(wrapped.original, masked, `${label}: the attached original is what was received${masked.sha256 === expected.sha256 ? '' : ', masked'}`);
  return reason;
}

function report(t: TestContext, tally: Tally): void {
  t.diagnostic(`worst event-loop delay ${tally.worstStall.ms.toFixed(0)} ms (${tally.worstStall.label}); slowest message ${tally.slowest.ms.toFixed(0)} ms (${tally.slowest.label})`);
  t.diagnostic(`outcomes: ${JSON.stringify(tally.outcomes)}`);
}

/** A gateway with the example partition policy, a client for it, and a watchdog over both. */
interface Run {
  gw: TestGateway;
  client: RawSmtpClient;
  watchdog: Watchdog;
}

async function startRun(t: TestContext): Promise<Run> {
  const gw = await startTestGateway(`[partition]\npolicy = ${JSON.stringify(partitionPolicy)}\n`);
  const client = new RawSmtpClient(gw.port);
  const watchdog = new Watchdog(DEADLINE_MS + 15_000);
  t.after(async () => {
    client.close();
    await watchdog.stop();
    await gw.cleanup();
  });
  // Warm up (module loading, first compilation), so the first case is not charged for it.
  await client.send([Buffer.from('Subject: warm up 4111 1111 1111 1111\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n')], DEADLINE_MS);
  await client.send([Buffer.from('Subject: warm up\r\n\r\n\0\r\n')], DEADLINE_MS);
  return { gw, client, watchdog };
}

async function assertNothingLeft(gw: TestGateway, tally: Tally): Promise<void> {
  // Two warm-up messages, then every 250.
  assert.equal((await gw.store.listMessages({ limit: Infinity })).length, tally.stored + 2, 'none lost, none twice');
  assert.deepEqual(await readdir(spoolDir(gw.store.dir)), [], 'no spool file left');
}

test('every corpus message goes in over SMTP with all four stages on and comes out stored, parsed or wrapped, in time and without stalling the gateway', async (t) => {
  const files = corpusFiles();
  assert.ok(files.length >= 700, `found ${files.length} corpus messages`);
  const run = await startRun(t);
  const tally = newTally();
  for (const file of files) {
    // As nodemailer sends a file: every line end CRLF (SMTP carries no other).
    const bytes = asReceivedOverSmtp(readFileSync(file));
    await deliver(run, tally, `corpus ${path.relative(corpus(), file)}`, { name: file, bytes: () => [bytes] });
  }
  report(t, tally);
  await assertNothingLeft(run.gw, tally);
});

test('a huge header value is decoded in slices exactly as libmime decodes it whole', async () => {
  for (const word of ['=?utf-8?Q?caf=C3=A9_4111?= ', 'plain =?iso-8859-1?Q?caf=E9?= text =?utf-8?B?w6k=?= ', '=?utf-8?Q?a?==?utf-8?Q?b?=', '=?utf-8?q?4111=20']) {
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
    for (let at = 0; at < text.length; ) {
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

test('a seeded fuzz set of broken and hostile messages: each is stored or wrapped (or refused for size), in time and without stalling the gateway', async (t) => {
  const corpusMessages = corpusFiles().map((file) => ({ name: path.relative(corpus(), file), bytes: asReceivedOverSmtp(readFileSync(file)) }));
  const cases = [...syntheticCases(), ...corpusMutations(new Rng(SEED), corpusMessages, ROUNDS)];
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
