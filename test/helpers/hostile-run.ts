/**
 * The hostile-input run shared by test/hostile.test.ts (fuzz over our own fixtures, in `npm
 * test`) and test/corpora/hostile.test.ts (every message of ../shared/corpora, in `npm run
 * test:corpora`): a gateway in this process with the example partition policy (all four
 * stages), a raw SMTP client, and the checks that each message is stored, parsed or wrapped,
 * with nothing lost, within a deadline. How long the event loop is held meanwhile is measured
 * and reported; the 100 ms target is held by `npm run bench -- hostile` (test/bench/hostile.ts),
 * not asserted here: a timing on a shared machine is not a test.
 *
 * A failure names the seed and the case: `MAILGATE_FUZZ_SEED=<seed>` replays the same set;
 * MAILGATE_FUZZ_ROUNDS sets how many rounds of mutations run (8 cases a round).
 */
import { type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { readdirSync, statSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { Readable } from 'node:stream';
import path from 'node:path';
import { loadPolicyFile } from '../../policy/policy-file.js';
import { maskingStage, rawMasker } from '../../policy/masking/stage.js';
import { spoolDir } from '../../ingest/spool.js';
import { unparsableReasons } from '../../policy/mime/unparsable.js';
import { ORIGINAL_FILE_NAME } from '../../policy/wrapping/wrapping-message.js';

import { openQuarantinedContent } from '../../policy/attachments/quarantine.js';
import { startTestGateway, type TestGateway } from './gateway.js';
import { projectRoot } from './paths.js';
import { Watchdog, asReceived, digest, normalizedLineEndings, RawSmtpClient, withDeadline, wrappedContents, type FuzzCase, type SmtpReply } from './fuzz.js';

export const SEED = Number(process.env.MAILGATE_FUZZ_SEED ?? 20260601);
export const ROUNDS = Number(process.env.MAILGATE_FUZZ_ROUNDS ?? 8);
/** Per message, from the first byte sent to the stored message checked: a failure, not a benchmark. */
const DEADLINE_MS = 30_000;
/** Longest the event loop should be held while a message is taken in (the benchmark's target). */
export const MAX_STALL_MS = 100;

const partitionPolicy = path.join(projectRoot, 'policy', 'examples', 'partition.toml');
const masking = maskingStage(loadPolicyFile(partitionPolicy).masking, undefined).policy;

/** Every raw message file (.msg, .txt, .eml) under `dir`, sorted, by its path. */
export function messageFiles(dir: string): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((name) => {
      const file = path.join(dir, name);
      if (statSync(file).isDirectory()) return messageFiles(file);
      return /\.(msg|txt|eml)$/.test(name) ? [file] : [];
    });
}

/** What the runs measured, for the diagnostics. */
export interface Tally {
  worstStall: { ms: number; label: string };
  slowest: { ms: number; label: string };
  outcomes: Record<string, number>;
  stored: number;
  /** Each case's event-loop stall (the least of its attempts), for the benchmark. */
  stalls: { label: string; ms: number }[];
}

export const newTally = (): Tally => ({ worstStall: { ms: 0, label: '' }, slowest: { ms: 0, label: '' }, outcomes: {}, stored: 0, stalls: [] });

/**
 * Sends one message and checks what was stored, measuring the event loop meanwhile. With
 * `stallAttempts` (the benchmark), a stall over the target is measured again (the message is
 * stored again), up to that many times: a real one recurs, a descheduled process does not.
 */
export async function deliver(
  run: Run,
  tally: Tally,
  label: string,
  message: FuzzCase,
  opts: { refused?: number; stallAttempts?: number } = {},
): Promise<void> {
  const loop = monitorEventLoopDelay({ resolution: 10 });
  const attempts = opts.stallAttempts ?? 1;
  let stall = Infinity;
  for (let attempt = 1; attempt <= attempts && stall >= MAX_STALL_MS; attempt++) {
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
      if (await originalBlocked(run.gw, sent)) tally.outcomes['original blocked'] = (tally.outcomes['original blocked'] ?? 0) + 1;
    } finally {
      loop.disable();
      run.watchdog.watch(null);
    }
  }
  if (stall > tally.worstStall.ms) tally.worstStall = { ms: stall, label };
  tally.stalls.push({ label, ms: stall });
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
  assert.match(wrapped.text, /^Error encountered during preprocessing of this message/, label);
  // Masking is on, so the original is attached masked as raw text (policy.test.ts); where
  // nothing in it matches, that is the original byte for byte.
  const masked = await digest(Readable.from(received(gw, message)).pipe(rawMasker(masking, 'inbound')!));
  const quarantined = await gw.store.listQuarantine({ messageId: id });
  if (meta._AttachmentFileNames.includes(`${ORIGINAL_FILE_NAME} [blocked]`)) {
    // The attachment policy blocks something in the original (wrap-ingest.test.ts): it is
    // kept whole in quarantine (the example policy's action), as it would have been attached.
    assert.equal(wrapped.attachments, 0, `${label}: the original is not attached`);
    assert.match(wrapped.text, /The original incoming email is not attached: the original contains /, label);
    assert.equal(quarantined.length, 1, `${label}: the original is in quarantine`);
    assert.deepEqual(await digest(openQuarantinedContent(gw.store, quarantined[0]!.id)), masked, `${label}: the quarantined original is what was received`);
    return reason;
  }
  assert.equal(wrapped.attachments, 1, `${label}: one attachment`);
  assert.deepEqual(quarantined, [], `${label}: nothing in quarantine`);
  assert.deepEqual(wrapped.original, masked, `${label}: the attached original is what was received${masked.sha256 === expected.sha256 ? '' : ', masked'}`);
  return reason;
}

/** Whether the message stored for this reply is a wrapping message whose original the attachment policy blocked. */
async function originalBlocked(gw: TestGateway, sent: SmtpReply): Promise<boolean> {
  const id = /queued as (\S+)/.exec(sent.reply)?.[1];
  const meta = id ? await gw.store.getMessage(id) : undefined;
  return Boolean(meta?.tags.includes('wrapped') && meta._AttachmentFileNames.includes(`${ORIGINAL_FILE_NAME} [blocked]`));
}

export function report(t: TestContext, tally: Tally): void {
  t.diagnostic(
    `worst event-loop delay ${tally.worstStall.ms.toFixed(0)} ms (${tally.worstStall.label}); slowest message ${tally.slowest.ms.toFixed(0)} ms (${tally.slowest.label})`,
  );
  t.diagnostic(`outcomes: ${JSON.stringify(tally.outcomes)}`);
}

/** A gateway with the example partition policy, a client for it, and a watchdog over both. */
export interface Run {
  gw: TestGateway;
  client: RawSmtpClient;
  watchdog: Watchdog;
}

export async function startRun(t: { after(fn: () => Promise<void>): void }): Promise<Run> {
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

export async function assertNothingLeft(gw: TestGateway, tally: Tally): Promise<void> {
  // Two warm-up messages, then every 250.
  assert.equal((await gw.store.listMessages({ limit: Infinity })).length, tally.stored + 2, 'none lost, none twice');
  assert.deepEqual(await readdir(spoolDir(gw.store.dir)), [], 'no spool file left');
}
