/**
 * What the PostgreSQL under the ingest bench costs, read from outside mailgate: the CPU time of
 * the server's processes (from /proc, so it counts backends that came and went), its WAL
 * counters (pg_stat_wal: records, bytes, write(2) and fsync calls) and the connections a
 * database has open and busy while load runs (pg_stat_activity, sampled).
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import type { TestPostgres } from '../helpers/postgres.js';

/** The settings the bench's cluster runs with that decide what a commit costs, as the server reports them. */
export const REPORTED_SETTINGS = [
  'server_version',
  'fsync',
  'synchronous_commit',
  'wal_sync_method',
  'full_page_writes',
  'wal_level',
  'shared_buffers',
  'wal_buffers',
  'commit_delay',
  'max_wal_size',
] as const;

/** `name=value` for each of REPORTED_SETTINGS. */
export async function reportedSettings(cluster: TestPostgres): Promise<string> {
  const { rows } = await cluster.query(`SELECT name, setting, unit FROM pg_settings WHERE name = ANY('{${REPORTED_SETTINGS.join(',')}}') ORDER BY name`);
  const byName = new Map(
    rows.map((r: { name: string; setting: string; unit: string | null }) => [
      r.name,
      r.unit && r.unit !== 'ms' && r.unit !== 's' ? `${r.setting}x${r.unit}` : r.setting,
    ]),
  );
  return REPORTED_SETTINGS.map((n) => `${n}=${byName.get(n) ?? '?'}`).join(' ');
}

/** utime + stime (+ cutime + cstime when CHILDREN) of PID in seconds, and its parent; undefined when it is gone. */
function procTimes(pid: number, children: boolean): { cpu: number; ppid: number } | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(f[11]) + Number(f[12]) + (children ? Number(f[13]) + Number(f[14]) : 0);
  return { cpu: ticks / 100, ppid: Number(f[1]) };
}

/**
 * CPU seconds the whole server has used: the postmaster with every child it has reaped
 * (cutime/cstime: backends that exited, e.g. after the pool's idle timeout), plus each live
 * child (backends, WAL writer, checkpointer, autovacuum).
 */
export function postgresCpuSeconds(cluster: TestPostgres): number {
  const postmaster = Number(readFileSync(path.join(cluster.dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
  let total = procTimes(postmaster, true)?.cpu ?? 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const t = procTimes(Number(entry), false);
    if (t?.ppid === postmaster) total += t.cpu;
  }
  return total;
}

/** pg_stat_wal's counters (cluster-wide). */
export interface WalCounters {
  records: number;
  bytes: number;
  /** write(2) calls of WAL buffers. */
  writes: number;
  /** fsync (or fdatasync) calls on WAL files: what a synchronous commit waits for. */
  syncs: number;
}

export async function walCounters(cluster: TestPostgres): Promise<WalCounters> {
  const { rows } = await cluster.query('SELECT wal_records, wal_bytes, wal_write, wal_sync FROM pg_stat_wal');
  const r = rows[0] as { wal_records: string; wal_bytes: string; wal_write: string; wal_sync: string };
  return { records: Number(r.wal_records), bytes: Number(r.wal_bytes), writes: Number(r.wal_write), syncs: Number(r.wal_sync) };
}

export const walDelta = (a: WalCounters, b: WalCounters): WalCounters => ({
  records: b.records - a.records,
  bytes: b.bytes - a.bytes,
  writes: b.writes - a.writes,
  syncs: b.syncs - a.syncs,
});

/** Peak connections to a database seen by a sampler: open (any state) and running a statement. */
export interface ConnectionPeak {
  open: number;
  active: number;
}

/**
 * Samples pg_stat_activity for DATABASE every 50 ms (its own connection left out) until the
 * returned function is called, which resolves to the peaks seen.
 */
export async function sampleConnections(cluster: TestPostgres, database: string): Promise<() => Promise<ConnectionPeak>> {
  const client = new pg.Client({ connectionString: cluster.url('postgres') });
  await client.connect();
  const peak: ConnectionPeak = { open: 0, active: 0 };
  let running = true;
  const loop = (async () => {
    while (running) {
      const { rows } = await client.query<{ open: string; active: string }>(
        `SELECT count(*) AS open, count(*) FILTER (WHERE state = 'active') AS active
           FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()`,
        [database],
      );
      peak.open = Math.max(peak.open, Number(rows[0]!.open));
      peak.active = Math.max(peak.active, Number(rows[0]!.active));
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return async () => {
    running = false;
    await loop.finally(() => client.end());
    return peak;
  };
}
