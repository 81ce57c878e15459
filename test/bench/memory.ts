import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import nodemailer from 'nodemailer';
import { spawnServe, testConfigText } from '../helpers/gateway.js';
import { tempDir } from '../helpers/paths.js';
import { mb, memoryOf, resetPeak } from './proc.js';

/** A message of about `size` bytes, made as it is sent: the client holds none of it. */
export function generatedMessage(size: number, subject: string, fileName = 'big.bin'): Readable {
  const header = `From: bench@example.org\r\nTo: support@example.com\r\nSubject: ${subject}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="bench"\r\n\r\n--bench\r\nContent-Type: text/plain\r\n\r\nA large attachment follows.\r\n--bench\r\nContent-Type: application/octet-stream; name="${fileName}"\r\nContent-Disposition: attachment; filename="${fileName}"\r\nContent-Transfer-Encoding: base64\r\n\r\n`;
  const line = Buffer.from('QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n');
  const linesPerChunk = 1024;
  const chunk = Buffer.concat(Array.from({ length: linesPerChunk }, () => line));
  let remaining = Math.max(0, size - header.length);
  let started = false;
  return new Readable({
    read() {
      if (!started) {
        started = true;
        this.push(header);
        return;
      }
      if (remaining <= 0) {
        this.push('--bench--\r\n');
        this.push(null);
        return;
      }
      const n = Math.min(chunk.length, Math.ceil(remaining / line.length) * line.length);
      this.push(chunk.subarray(0, n));
      remaining -= n;
    },
  });
}

export interface MemoryResult {
  label: string;
  baselineRss: number;
  peakRss: number;
  growth: number;
}

/** Resident memory growth of a `mailgate serve` process while messages of the given sizes pass through it at once. */
export async function measureMemory(label: string, sizes: number[], toml = '', fileName = 'big.bin'): Promise<MemoryResult> {
  const { dir, cleanup } = await tempDir('mailgate-bench-');
  try {
    const configFile = path.join(dir, 'mailgate.toml');
    await writeFile(configFile, testConfigText(dir, `[smtp]\nmax_message_size = ${200 * 1024 * 1024}\n${toml}`));
    const { port, child, exited } = await spawnServe(configFile);
    const pid = child.pid!;
    // Warm up: one small message through every code path first, so the baseline includes the code.
    const warm = nodemailer.createTransport({ host: '127.0.0.1', port, ignoreTLS: true });
    await warm.sendMail({ envelope: { from: 'bench@example.org', to: ['support@example.com'] }, raw: generatedMessage(64 * 1024, 'warm-up') });
    await new Promise((r) => setTimeout(r, 500));
    const baselineRss = memoryOf(pid).rss;
    if (!resetPeak(pid)) throw new Error('cannot reset peak memory (needs Linux /proc/PID/clear_refs)');
    let sampledPeak = baselineRss;
    const sampler = setInterval(() => (sampledPeak = Math.max(sampledPeak, memoryOf(pid).rss)), 20);
    await Promise.all(
      sizes.map((size, i) =>
        nodemailer
          .createTransport({ host: '127.0.0.1', port, ignoreTLS: true })
          .sendMail({ envelope: { from: 'bench@example.org', to: ['support@example.com'] }, raw: generatedMessage(size, `bench ${i}`, fileName) }),
      ),
    );
    clearInterval(sampler);
    const peakRss = Math.max(memoryOf(pid).peak, sampledPeak);
    child.kill('SIGTERM');
    await exited;
    return { label, baselineRss, peakRss, growth: peakRss - baselineRss };
  } finally {
    await cleanup();
  }
}

export function formatMemory(r: MemoryResult): string {
  return `${r.label.padEnd(44)} baseline ${mb(r.baselineRss).padStart(7)} MB  peak ${mb(r.peakRss).padStart(7)} MB  growth ${mb(r.growth).padStart(6)} MB`;
}
