/**
 * Every message of the shared corpora (../shared/corpora: parser test suites and real bounces)
 * and seeded mutations of them go in over SMTP with all four stages on and must come out
 * stored, parsed or wrapped, in time (test/helpers/hostile-run.ts; event-loop stalls are reported, and held to 100 ms by `npm run bench -- hostile`).
 * Runs in `npm run test:corpora` only: ../shared is not beside a user's clone.
 */
import { test } from 'node:test';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';
import { corpus } from '../helpers/paths.js';
import { asReceivedOverSmtp } from '../helpers/wrapped.js';
import { Rng, corpusMutations } from '../helpers/fuzz.js';
import { ROUNDS, SEED, assertNothingLeft, deliver, messageFiles, newTally, report, startRun } from '../helpers/hostile-run.js';

test('every corpus message goes in over SMTP with all four stages on and comes out stored, parsed or wrapped, in time (event-loop stalls reported; the bench holds them to 100 ms)', async (t) => {
  const files = messageFiles(corpus());
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

test('a seeded fuzz set of mutated corpus messages: each is stored or wrapped, in time (event-loop stalls reported; the bench holds them to 100 ms)', async (t) => {
  const corpusMessages = messageFiles(corpus()).map((file) => ({ name: path.relative(corpus(), file), bytes: asReceivedOverSmtp(readFileSync(file)) }));
  const cases = corpusMutations(new Rng(SEED), corpusMessages, ROUNDS);
  t.diagnostic(`seed ${SEED}: ${cases.length} cases`);
  const run = await startRun(t);
  const tally = newTally();
  for (const c of cases) {
    await t.test(c.name, () => deliver(run, tally, `[seed ${SEED}] ${c.name}`, c));
  }
  report(t, tally);
  await assertNothingLeft(run.gw, tally);
});
