/**
 * `npm run bench` end to end, quickly: every section and peer prints its line.
 *
 * @store-pinned: the bench names each peer's store itself, and is run without MAILGATE_TEST_STORE.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { projectRoot } from './helpers/paths.js';
import { SHARED_CLUSTER_ENV } from './helpers/postgres.js';
import { peerLabels } from './bench/peers.js';
import { ensureHaraka, ensurePostfixTools } from './bench/tools.js';

// The benchmark must keep working; its figures are not asserted (BENCHMARKS.md has them).
// `--quick`: few messages and one run, every peer still started once.

before(async () => {
  // Installing smtp-source/smtp-sink (apt) and Haraka (npm) is the bench's own first step; done
  // here first so a fresh machine's install does not count against the run's deadline.
  await ensurePostfixTools();
  await ensureHaraka();
});

function runBench(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    // The bench names each peer's store itself: the suite's choice of store is not passed on.
    const { MAILGATE_TEST_STORE: _store, [SHARED_CLUSTER_ENV]: _cluster, ...env } = process.env;
    const child = spawn(process.execPath, [path.join(projectRoot, 'dist', 'test', 'bench', 'run.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test('npm run bench -- memory ingest outbound --quick runs every section and peer and prints a line for each', { timeout: 300_000 }, async () => {
  const { code, stdout, stderr } = await runBench(['memory', 'ingest', 'outbound', '--quick'], 290_000);
  assert.equal(code, 0, `the bench exited with ${code}\n${stdout}\n${stderr}`);
  const [memorySection = '', ingest = '', outbound = ''] = stdout.split(/^# (?:Ingest|Outbound)\b/m);
  // Five memory runs, each with its baseline, peak and growth.
  const runs = memorySection.split('\n').filter((l) => / baseline +\d+\.\d MB +peak +\d+\.\d MB +growth +-?\d+\.\d MB$/.test(l));
  assert.equal(runs.length, 5, memorySection);
  assert.match(stdout, /^# Ingest/m);
  assert.match(stdout, /^# Outbound/m);

  // Four traffic shapes, each with a rate line for each of the four servers.
  const shapes = ingest.split(/^(?=\d+ KB, )/m).slice(1);
  assert.deepEqual(
    shapes.map((s) => s.split('\n')[0]!.split(':')[0]),
    ['4 KB, reused connections (-d)', '4 KB, connection per message', '100 KB, reused connections (-d)', '100 KB, connection per message'],
    ingest,
  );
  for (const shape of shapes) {
    for (const label of Object.values(peerLabels)) {
      const line = shape.split('\n').find((l) => l.trim().startsWith(label));
      assert.ok(line, `no line for ${label} in\n${shape}`);
      assert.match(line, /\d+\/s +ratio +\d+\.\d\d +end-of-DATA->250 p50 +\d+\.\d ms +p99 +\d+\.\d ms +CPU \d+\.\d\d ms\/msg/);
    }
  }
  const memory = ingest.split('\n').find((l) => l.startsWith('peak resident memory'));
  assert.ok(memory, ingest);
  for (const label of Object.values(peerLabels)) assert.match(memory, new RegExp(`${label.replace(/[()]/g, '\\$&')} \\d+ MB`));

  assert.match(outbound, /^nodemailer straight to the sink .* \d+ msg\/s/m);
  assert.match(outbound, /^mailgate: first submit .* \d+ msg\/s +ratio \d+\.\d\d/m);
  assert.match(outbound, /^mailgate peak resident memory/m);
});
