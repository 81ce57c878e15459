/**
 * A CPU profile of `mailgate serve` (all four stages, durable) taking messages of one size
 * (4 KB by default; `--size 100` for 100 KB) over reused connections from smtp-source, 20
 * sessions. Only the timed smtp-source run is summarised (V8's profile clock and
 * process.hrtime are both CLOCK_MONOTONIC), not start-up, warm-up or shutdown.
 */
import { mkdir, readdir } from 'node:fs/promises';
import path from 'node:path';
import { tempDir } from '../helpers/paths.js';
import { formatProfile, summariseProfile } from './cpu-profile.js';
import { cpuSeconds, smtpSource } from './ingest.js';
import { startPostgres } from '../helpers/postgres.js';
import { startMailgate, startMailgateOnPostgres } from './peers.js';
import { postgresCpuSeconds } from './postgres-probe.js';
import { ensurePostfixTools } from './tools.js';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

/**
 * What the masking stage costs: the same traffic into mailgate with the example partition
 * policy (all four stages, masking on) and with built-in defaults (three stages; masking is
 * off unless a policy enables it), interleaved, medians of `runs`.
 */
async function policyVariants(messages: number, runs: number, size: number): Promise<string[]> {
  const variants = [
    { label: 'policy/examples/partition.toml (4 stages, masking on)', peer: await startMailgate() },
    { label: 'built-in defaults (masking off)', peer: await startMailgate({ toml: '' }) },
  ];
  const results = variants.map(() => ({ seconds: [] as number[], cpu: [] as number[] }));
  try {
    for (const v of variants) await smtpSource(v.peer.port, { size, reuse: true }, warmUp(size));
    for (let i = 0; i < runs; i++) {
      for (const [j, v] of variants.entries()) {
        const cpu0 = cpuSeconds(v.peer.pid);
        results[j]!.seconds.push(await smtpSource(v.peer.port, { size, reuse: true }, messages));
        results[j]!.cpu.push(cpuSeconds(v.peer.pid) - cpu0);
      }
    }
  } finally {
    await Promise.allSettled(variants.map((v) => v.peer.stop()));
  }
  return variants.map(
    (v, j) =>
      `  ${v.label.padEnd(56)} ${(messages / median(results[j]!.seconds)).toFixed(0).padStart(5)}/s  CPU ${((median(results[j]!.cpu) * 1000) / messages).toFixed(2)} ms/msg`,
  );
}

/** Warm-up messages: about 4 MB of traffic, enough for the JIT, at least 200. */
const warmUp = (size: number) => Math.max(200, Math.min(1000, Math.round((4000 * 1024) / size)));

/**
 * `size`: the message body in bytes (default 4096); `messages`: default 10,000 at 4 KB, 2,000 at
 * larger sizes; `postgres`: the store is a database of a private PostgreSQL cluster (fsync on,
 * as the ingest bench's) instead of LevelDB, and the comparison with masking off is left out.
 */
export async function ingestProfile(opts: { messages?: number; dir?: string; size?: number; postgres?: boolean } = {}): Promise<string[]> {
  const size = opts.size ?? 4096;
  const messages = opts.messages ?? (size > 4096 ? 2000 : 10_000);
  const kb = `${Math.round(size / 1024)} KB`;
  // smtp-source comes with Debian's postfix package, installed on first use.
  await ensurePostfixTools();
  const own = opts.dir ? undefined : await tempDir('mailgate-bench-prof-');
  const dir = opts.dir ?? own!.dir;
  await mkdir(dir, { recursive: true });
  const before = new Set(await readdir(dir));
  const nodeArgs = ['--cpu-prof', '--cpu-prof-dir', dir, '--cpu-prof-interval', '250'];
  const cluster = opts.postgres ? await startPostgres({ fsync: true }) : undefined;
  let window: [number, number];
  let rate: number;
  let cpuMs: number;
  let databaseMs: number | undefined;
  try {
    const mailgate = cluster ? await startMailgateOnPostgres(cluster, 1, { nodeArgs }) : await startMailgate({ nodeArgs });
    try {
      await smtpSource(mailgate.port, { size, reuse: true }, warmUp(size));
      const cpu0 = cpuSeconds(mailgate.pid);
      const db0 = cluster ? postgresCpuSeconds(cluster) : 0;
      const from = Number(process.hrtime.bigint() / 1000n);
      const seconds = await smtpSource(mailgate.port, { size, reuse: true }, messages);
      window = [from, Number(process.hrtime.bigint() / 1000n)];
      cpuMs = ((cpuSeconds(mailgate.pid) - cpu0) * 1000) / messages;
      if (cluster) databaseMs = ((postgresCpuSeconds(cluster) - db0) * 1000) / messages;
      rate = messages / seconds;
    } finally {
      await mailgate.stop();
    }
  } finally {
    await cluster?.stop();
  }
  const file = (await readdir(dir)).find((f) => f.endsWith('.cpuprofile') && !before.has(f));
  if (!file) throw new Error(`mailgate serve wrote no CPU profile into ${dir}`);
  const summary = summariseProfile(path.join(dir, file), ...window);
  if (summary.samples === 0) throw new Error('no profile samples in the timed window: the profile clock is not process.hrtime here');
  const runs = opts.messages && opts.messages < 1000 ? 1 : 3;
  const lines = [
    ...(opts.postgres
      ? []
      : [
          `mailgate with and without masking, ${Math.ceil(messages / 2)} messages of ${kb} a run, 20 sessions, reused connections, ${runs === 1 ? '1 run' : `medians of ${runs} interleaved runs`}:`,
          ...(await policyVariants(Math.ceil(messages / 2), runs, size)),
        ]),
    `${messages} messages of ${kb}, 20 sessions, reused connections: ${rate.toFixed(0)}/s, mailgate CPU ${cpuMs.toFixed(2)} ms/msg (user + system, all threads)` +
      (databaseMs === undefined ? '' : `, PostgreSQL CPU ${databaseMs.toFixed(2)} ms/msg (all its processes)`),
    `profile: ${opts.dir ? path.join(dir, file) : '(temporary; MAILGATE_BENCH_CPU_PROF=DIR keeps it)'}`,
    ...formatProfile(summary),
  ];
  await own?.cleanup();
  return lines;
}
