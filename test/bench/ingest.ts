import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { spawnServe, testConfigText } from '../helpers/gateway.js';
import { tempDir } from '../helpers/paths.js';
import { memoryOf } from './proc.js';

const here = path.dirname(fileURLToPath(import.meta.url));

interface LoadResult {
  rate: number;
  p50: number;
  p99: number;
}

function runLoad(port: number, sessions: number, messages: number, size: number, mode: 'reuse' | 'new'): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(here, 'load.js'), String(port), String(sessions), String(messages), String(size), mode], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as LoadResult) : reject(new Error(`load generator exited ${code}`))));
  });
}

async function startSink(): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(process.execPath, [path.join(here, 'sink.js')], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve) => createInterface({ input: child.stdout! }).once('line', resolve));
  return { port: (JSON.parse(line) as { port: number }).port, child };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

/** Messages per second into mailgate (durable store, all stages) against a bare smtp-server sink, interleaved, medians of `runs`. */
export async function ingestBench(runs = 3): Promise<string[]> {
  const { dir, cleanup } = await tempDir('mailgate-bench-');
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(configFile, testConfigText(dir));
  const gateway = await spawnServe(configFile);
  const sink = await startSink();
  const lines: string[] = [];
  try {
    for (const [size, mode, messages] of [
      [4096, 'reuse', 4000],
      [4096, 'new', 600],
      [102400, 'reuse', 1000],
      [102400, 'new', 400],
    ] as const) {
      const mg: LoadResult[] = [];
      const base: LoadResult[] = [];
      for (let i = 0; i < runs; i++) {
        base.push(await runLoad(sink.port, 20, messages, size, mode));
        mg.push(await runLoad(gateway.port, 20, messages, size, mode));
      }
      const rate = median(mg.map((r) => r.rate));
      const baseRate = median(base.map((r) => r.rate));
      lines.push(
        `${`${size / 1024} KB, ${mode === 'reuse' ? 'reused connections' : 'connection per message'}`.padEnd(38)}` +
          ` mailgate ${rate.toFixed(0).padStart(6)}/s  sink ${baseRate.toFixed(0).padStart(6)}/s  ratio ${(rate / baseRate).toFixed(2)}` +
          `  end-of-DATA->250 p50 ${median(mg.map((r) => r.p50)).toFixed(1)} ms p99 ${median(mg.map((r) => r.p99)).toFixed(1)} ms` +
          ` (sink p50 ${median(base.map((r) => r.p50)).toFixed(1)} ms)`,
      );
    }
    lines.push(`mailgate peak resident memory: ${(memoryOf(gateway.child.pid!).peak / 1024 / 1024).toFixed(0)} MB`);
  } finally {
    gateway.child.kill('SIGTERM');
    sink.child.kill('SIGTERM');
    await gateway.exited;
    await cleanup();
  }
  return lines;
}
