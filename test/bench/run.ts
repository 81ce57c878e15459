/**
 * `npm run bench`: measurements that must not be timed assertions in tests. Figures are
 * printed with the baseline measured in the same run, since machines here are shared and noisy.
 */
import path from 'node:path';
import { formatMemory, measureMemory } from './memory.js';
import { projectRoot } from '../helpers/paths.js';

const MB = 1024 * 1024;
// `--rtt MS`: the fetch bench also runs through a link with that round-trip time.
const rttAt = process.argv.indexOf('--rtt');
const rtt = rttAt > 0 ? Number(process.argv[rttAt + 1]) : undefined;
if (rtt !== undefined && !(Number.isFinite(rtt) && rtt > 0))
  throw new Error(`--rtt: expected a round-trip time in milliseconds, got ${process.argv[rttAt + 1]}`);
// `--size KB`: the size of the messages ingest-profile sends (default 4).
const sizeAt = process.argv.indexOf('--size');
const sizeKb = sizeAt > 0 ? Number(process.argv[sizeAt + 1]) : 4;
if (!(Number.isInteger(sizeKb) && sizeKb > 0)) throw new Error(`--size: expected a message size in KB, got ${process.argv[sizeAt + 1]}`);
const only = process.argv.slice(2).filter((a, i, all) => !a.startsWith('--') && all[i - 1] !== '--rtt' && all[i - 1] !== '--size' && all[i - 1] !== '--store');
/** `--quick`: few or small messages and one run, to check that a section works (CI); `memory`, `ingest` and `outbound` have it. */
const quick = process.argv.includes('--quick');
// `compare DIR ingest` names sections of the comparison, not sections to run on their own.
const want = (name: string) => only.length === 0 || (only[0] !== 'compare' && only.includes(name));

if (want('memory')) {
  // --quick: a tenth of the sizes and 5 messages at once, to check that the section works; no limit is judged.
  const big = quick ? 10 : 100;
  const many = quick ? 5 : 50;
  console.log(`# Memory: resident growth of \`mailgate serve\` while messages pass (limit for 100 MB: 64 MB)${quick ? ' (quick: not a measurement)' : ''}`);
  const small = await measureMemory('1 x 1 MB message (baseline)', [1 * MB]);
  console.log(formatMemory(small));
  const large = await measureMemory(`1 x ${big} MB message`, [big * MB]);
  console.log(formatMemory(large));
  const parallel = await measureMemory(
    `${many} x 5 MB messages at once`,
    Array.from({ length: many }, () => 5 * MB),
  );
  console.log(formatMemory(parallel));
  console.log(`${big} MB growth / 1 MB growth: ${(large.growth / Math.max(small.growth, 1)).toFixed(2)}x`);
  // All four stages on: the example partition policy masks, blocks .exe and more, tags bounces.
  const policy = `[partition]\npolicy = ${JSON.stringify(path.join(projectRoot, 'policy', 'examples', 'partition.toml'))}\n`;
  const staged = await measureMemory(`1 x ${big} MB attachment, all four stages`, [big * MB], policy);
  console.log(formatMemory(staged));
  const quarantined = await measureMemory(`1 x ${big} MB .exe, blocked and quarantined`, [big * MB], policy, 'big.exe');
  console.log(formatMemory(quarantined));
  if (!quick) {
    for (const [name, r] of [
      ['100 MB message', large],
      ['100 MB attachment, all stages', staged],
      ['100 MB .exe quarantined', quarantined],
    ] as const) {
      const ok = r.growth < 64 * MB;
      console.log(`${name}: growth ${(r.growth / MB).toFixed(1)} MB ${ok ? '<' : '>='} 64 MB: ${ok ? 'PASS' : 'FAIL'}`);
      if (!ok) process.exitCode = 1;
    }
  }
}

if (want('ingest')) {
  const { ingestBench } = await import('./ingest.js');
  console.log(
    '\n# Ingest: smtp-source, 20 parallel sessions, into mailgate (all four stages, durable store) on LevelDB, on PostgreSQL (fsync on)' +
      ' and as two nodes on that PostgreSQL (sessions split over both), a bare smtp-server sink (the baseline),' +
      " Postfix's smtp-sink and Haraka (queue to disk); ratios against the sink",
  );
  for (const line of await ingestBench({ quick })) console.log(line);
}

if (want('fetch')) {
  const { fetchBench } = await import('./fetch.js');
  const through = rtt !== undefined ? `, on loopback and through ${rtt} ms round trips (a delaying proxy)` : '';
  console.log(
    `\n# Fetch: 600 messages of 2 to 200 KB (a quarter with a PDF attachment) from a real Dovecot; mailgate's retriever against a plain imapflow download, and the floor any durable retriever pays (the download, a synced store of each message, one move), medians of 3 interleaved runs${through}`,
  );
  for (const line of await fetchBench({ rtts: rtt !== undefined ? [0, rtt] : [0] })) console.log(line);
}

if (want('outbound')) {
  const { outboundBench } = await import('./outbound.js');
  console.log(
    `\n# Outbound: an application submits over SMTP AUTH (20 connections) to mailgate serve (durable store), which sends to a local sink; against nodemailer sending straight to the sink (pool of 5)`,
  );
  // MAILGATE_BENCH_CPU_PROF=DIR writes a V8 CPU profile of the serve process there.
  const cpuProfDir = process.env.MAILGATE_BENCH_CPU_PROF;
  for (const line of await outboundBench({ quick, ...(cpuProfDir ? { cpuProfDir } : {}) })) console.log(line);
}

if (want('admin')) {
  const { compareAdmin } = await import('./compare.js');
  console.log(`\n# The REST API idle: ingest with [admin] off and on, same build, 4 KB and 100 KB, smtp-source, 20 sessions, all four stages, durable`);
  for (const line of await compareAdmin({ quick })) console.log(line);
}

if (want('hostile')) {
  const { hostileBench } = await import('./hostile.js');
  console.log(`\n# Hostile input: the longest the event loop is held while each message of the fuzz set is taken in (target under 100 ms), all four stages`);
  for (const line of await hostileBench()) console.log(line);
}

// Not part of a plain `npm run bench`: only when named (`npm run bench -- compare DIR [ingest|fetch|outbound]... [--rtt MS]`).
if (only[0] === 'compare') {
  const other = only[1];
  if (!other) throw new Error('usage: npm run bench -- compare DIR [ingest] [fetch] [outbound] [--rtt MS] (DIR: another checkout, built with tsc)');
  const otherDir = path.resolve(other);
  const sections = only.slice(2);
  const compare = (name: string) => sections.length === 0 || sections.includes(name);
  const builds = [
    { label: `before (${otherDir})`, root: otherDir, cli: path.join(otherDir, 'dist', 'gateway', 'cli.js') },
    { label: 'after (this build)', root: projectRoot, cli: path.join(projectRoot, 'dist', 'gateway', 'cli.js') },
  ];
  if (compare('ingest')) {
    const { compareBuilds } = await import('./compare.js');
    console.log(`\n# Compare ingest: this build against ${otherDir}, 4 KB and 100 KB, smtp-source, 20 sessions, all four stages, durable`);
    for (const line of await compareBuilds(otherDir)) console.log(line);
  }
  if (compare('fetch')) {
    const { fetchBench } = await import('./fetch.js');
    const rtts = [0, rtt ?? 40];
    console.log(
      `\n# Compare fetch: 600 messages of 2 to 200 KB from a real Dovecot, before and after, loopback and ${rtts[1]} ms round trips, medians of 3 interleaved runs`,
    );
    for (const line of await fetchBench({ rtts, builds })) console.log(line);
  }
  if (compare('outbound')) {
    const { outboundBench } = await import('./outbound.js');
    console.log(`\n# Compare outbound: 2000 x 4 KB submitted to each build's mailgate serve and sent to one sink, against nodemailer straight to it`);
    for (const line of await outboundBench({ builds })) console.log(line);
  }
}

// Not part of a plain `npm run bench`: only when named (`npm run bench -- outbound-floor`).
if (only.includes('outbound-floor')) {
  const { outboundBench } = await import('./outbound.js');
  const floor = path.join(projectRoot, 'dist', 'test', 'bench', 'outbound-floor.js');
  console.log(
    `\n# Outbound floor: the outbound bench through a bare smtp-server, one synced LevelDB batch a message and a pooled nodemailer in one process (outbound-floor.ts), with and without a second synced batch for the outcome, beside mailgate serve`,
  );
  const builds = [
    { label: 'floor (store, send)', cli: floor },
    { label: 'floor (store, send, record the outcome)', cli: floor, env: { MAILGATE_FLOOR_OUTCOME: '1' } },
    { label: 'mailgate serve', cli: path.join(projectRoot, 'dist', 'gateway', 'cli.js') },
  ];
  for (const line of await outboundBench({ builds, quick })) console.log(line);
}

// Not part of a plain `npm run bench`: only when named (`npm run bench -- ingest-profile`).
if (only.includes('ingest-profile')) {
  const { ingestProfile } = await import('./ingest-profile.js');
  // `--store postgres`: mailgate on a private PostgreSQL (fsync on) instead of LevelDB.
  const postgres = process.argv.includes('postgres') && process.argv[process.argv.indexOf('postgres') - 1] === '--store';
  console.log(
    `\n# Ingest CPU profile: mailgate serve (all four stages, durable${postgres ? ', on PostgreSQL' : ''}), ${sizeKb} KB messages, reused connections, 20 smtp-source sessions`,
  );
  // MAILGATE_BENCH_CPU_PROF=DIR keeps the .cpuprofile there (open it in Chrome DevTools).
  const dir = process.env.MAILGATE_BENCH_CPU_PROF;
  const size = sizeKb * 1024;
  for (const line of await ingestProfile({ size, postgres, ...(quick ? { messages: 500 } : {}), ...(dir ? { dir } : {}) })) console.log(line);
}
