/**
 * Two mailgates side by side, the same traffic into both (smtp-source, 20 sessions, reused
 * connections, all four stages, durable), interleaved, medians of `runs`, the first as the
 * baseline of the ratios. For saying what a change did in one run on a noisy machine:
 * - `npm run bench -- compare DIR`: this build against another checkout's build
 *   (DIR/dist/gateway/cli.js, e.g. a `git worktree` of an older commit, built with tsc);
 * - `npm run bench -- admin`: this build with the REST API off and on (listening, idle).
 */
import path from 'node:path';
import { cpuSeconds, smtpSource } from './ingest.js';
import { partitionPolicyToml, startMailgate, type Peer } from './peers.js';
import { ensurePostfixTools } from './tools.js';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

/** One of the mailgates compared: its label and how to start it. */
interface Setup {
  label: string;
  start(): Promise<Peer>;
}

export function compareBuilds(otherDir: string, opts: { runs?: number } = {}): Promise<string[]> {
  return compareSetups(
    [
      { label: `other build (${otherDir})`, start: () => startMailgate({ cli: path.join(otherDir, 'dist', 'gateway', 'cli.js') }) },
      { label: 'this build', start: () => startMailgate() },
    ],
    opts,
  );
}

/** Ingest with `[admin]` off and on: the REST API listening (port 0 in the bench's config) with nobody calling it. */
export function compareAdmin(opts: { runs?: number; quick?: boolean } = {}): Promise<string[]> {
  return compareSetups(
    [
      { label: '[admin] off', start: () => startMailgate() },
      { label: '[admin] on (REST API listening, idle)', start: () => startMailgate({ toml: `${partitionPolicyToml}[admin]\n` }) },
    ],
    opts,
  );
}

async function compareSetups(setups: readonly Setup[], opts: { runs?: number; quick?: boolean }): Promise<string[]> {
  await ensurePostfixTools();
  const runs = opts.quick ? 1 : (opts.runs ?? 3);
  const lines: string[] = [];
  for (const { size, messages } of opts.quick
    ? [{ size: 4096, messages: 200 }]
    : [
        { size: 4096, messages: 3000 },
        { size: 102400, messages: 400 },
      ]) {
    const builds: { label: string; peer: Peer }[] = [];
    for (const s of setups) builds.push({ label: s.label, peer: await s.start() });
    const results = builds.map(() => ({ rate: [] as number[], cpu: [] as number[] }));
    try {
      for (const b of builds) await smtpSource(b.peer.port, { size, reuse: true }, Math.min(1000, messages));
      for (let i = 0; i < runs; i++) {
        // The order rotates each run: the one run second shares the machine with the first's
        // LevelDB compactions, which would otherwise always count against the same one.
        for (let k = 0; k < builds.length; k++) {
          const j = (i + k) % builds.length;
          const b = builds[j]!;
          const cpu0 = cpuSeconds(b.peer.pid);
          results[j]!.rate.push(messages / (await smtpSource(b.peer.port, { size, reuse: true }, messages)));
          results[j]!.cpu.push(((cpuSeconds(b.peer.pid) - cpu0) * 1000) / messages);
        }
      }
    } finally {
      await Promise.allSettled(builds.map((b) => b.peer.stop()));
    }
    const base = median(results[0]!.rate);
    lines.push(`${size / 1024} KB, reused connections, ${messages} messages a run, medians of ${runs}:`);
    for (const [j, b] of builds.entries()) {
      const rate = median(results[j]!.rate);
      lines.push(
        `  ${b.label.padEnd(60)} ${rate.toFixed(0).padStart(5)}/s  ratio ${(rate / base).toFixed(2)}  CPU ${median(results[j]!.cpu).toFixed(2)} ms/msg`,
      );
    }
  }
  return lines;
}
