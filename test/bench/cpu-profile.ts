/**
 * Reads a V8 CPU profile (`node --cpu-prof`) and says where the time went in a window of it:
 * by package or project module (self time, a native frame counted to the JS frame that called
 * it), by function (self), and by project function (inclusive: on the stack).
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  /** Microseconds, on the clock of process.hrtime (CLOCK_MONOTONIC on Linux). */
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  /** Samples in the window and their span, ms. */
  samples: number;
  spanMs: number;
  /** Share of samples in which the process was idle (waiting). */
  idle: number;
  /** [bucket, share of samples] sorted, largest first; shares of all samples, idle included. */
  buckets: [string, number][];
  /**
   * [owner, share]: each sample counted to the nearest frame on its stack that is a project
   * module or a package, so Node's stream and socket internals count to whoever drove them.
   */
  owners: [string, number][];
  functions: [string, number][];
  /** Project functions (gateway/, policy/, storage/) by share of samples they are on the stack of. */
  inclusive: [string, number][];
}

/** What a frame belongs to: a package, a project module, a Node subsystem, or a V8 pseudo-frame. */
function bucketOf(url: string, functionName: string): string | undefined {
  if (!url) {
    if (functionName === '(garbage collector)') return 'GC';
    if (functionName === '(idle)') return 'idle';
    if (functionName === '(program)') return 'V8/native (program)';
    return undefined; // a native function: counted to its caller
  }
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (pkg) return pkg[1]!;
  const own = /\/dist\/((?:gateway|policy|storage)\/.+)\.js$/.exec(url);
  if (own) return own[1]! + '.ts';
  const node = /^node:(?:internal\/)?([^/]+)/.exec(url);
  if (node) return `node:${node[1]!.replace(/\.js$/, '')}`;
  return url;
}

const shortUrl = (url: string) =>
  url
    .replace(/^.*node_modules\//, '')
    .replace(/^.*\/dist\//, '')
    .replace(/^file:\/\//, '');

/** Summarises the samples of `file` taken between `fromUs` and `toUs` (profile clock, µs); the whole profile when not given. */
export function summariseProfile(file: string, fromUs = -Infinity, toUs = Infinity, top = 40): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  // Per node, computed once: its bucket (a native frame takes its nearest caller's) and the project functions on its stack.
  const bucketCache = new Map<number, string>();
  const bucket = (id: number): string => {
    const cached = bucketCache.get(id);
    if (cached) return cached;
    const n = byId.get(id)!;
    const own = bucketOf(n.callFrame.url, n.callFrame.functionName);
    const p = parent.get(id);
    const b = own ?? (p === undefined ? 'native (root)' : bucket(p));
    bucketCache.set(id, b);
    return b;
  };
  // undefined: no project module or package anywhere up the stack (Node's own ticks and callbacks).
  const ownerCache = new Map<number, string | undefined>();
  const ownerUp = (id: number): string | undefined => {
    if (ownerCache.has(id)) return ownerCache.get(id);
    const n = byId.get(id)!;
    const own = bucketOf(n.callFrame.url, n.callFrame.functionName);
    const p = parent.get(id);
    const o = own && !own.startsWith('node:') ? own : p === undefined ? undefined : ownerUp(p);
    ownerCache.set(id, o);
    return o;
  };
  const owner = (id: number) => ownerUp(id) ?? `${bucket(id)} (Node internals, no package on the stack)`;
  const stackCache = new Map<number, Set<string>>();
  const ownOnStack = (id: number): Set<string> => {
    const cached = stackCache.get(id);
    if (cached) return cached;
    const n = byId.get(id)!;
    const p = parent.get(id);
    const set = new Set(p === undefined ? [] : ownOnStack(p));
    const m = /\/dist\/((?:gateway|policy|storage)\/.+)\.js$/.exec(n.callFrame.url);
    if (m) set.add(`${n.callFrame.functionName || '(anonymous)'} ${m[1]}.ts:${n.callFrame.lineNumber + 1}`);
    stackCache.set(id, set);
    return set;
  };

  const buckets = new Map<string, number>();
  const owners = new Map<string, number>();
  const functions = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let t = profile.startTime;
  let count = 0;
  let first = Infinity;
  let last = -Infinity;
  let idle = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0;
    if (t < fromUs || t > toUs) continue;
    const id = profile.samples[i]!;
    const n = byId.get(id)!;
    count++;
    first = Math.min(first, t);
    last = Math.max(last, t);
    const b = bucket(id);
    if (b === 'idle') idle++;
    buckets.set(b, (buckets.get(b) ?? 0) + 1);
    const o = owner(id);
    owners.set(o, (owners.get(o) ?? 0) + 1);
    const fn = `${n.callFrame.functionName || '(anonymous)'}${n.callFrame.url ? ` ${shortUrl(n.callFrame.url)}:${n.callFrame.lineNumber + 1}` : ''}`;
    functions.set(fn, (functions.get(fn) ?? 0) + 1);
    for (const f of ownOnStack(id)) inclusive.set(f, (inclusive.get(f) ?? 0) + 1);
  }
  const sorted = (m: Map<string, number>) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, v]) => [k, v / Math.max(count, 1)] as [string, number]);
  return {
    samples: count,
    spanMs: (last - first) / 1000,
    idle: idle / Math.max(count, 1),
    buckets: sorted(buckets),
    owners: sorted(owners),
    functions: sorted(functions),
    inclusive: sorted(inclusive),
  };
}

/** The summary as lines: shares of busy (non-idle) time, so they add up to what the CPU did. */
export function formatProfile(s: ProfileSummary): string[] {
  const busy = 1 - s.idle;
  const pct = (share: number) => `${((share / Math.max(busy, 1e-9)) * 100).toFixed(1).padStart(5)}%`;
  return [
    `${s.samples} samples over ${(s.spanMs / 1000).toFixed(1)} s; idle ${(s.idle * 100).toFixed(1)}% of the time; shares below are of busy time`,
    'by package or module (self time; a native frame counts to its JS caller):',
    ...s.buckets.filter(([b]) => b !== 'idle').map(([b, v]) => `  ${pct(v)}  ${b}`),
    'by owner (the nearest project module or package on the stack: Node internals count to their caller):',
    ...s.owners.filter(([o]) => o !== 'idle').map(([o, v]) => `  ${pct(v)}  ${o}`),
    'by function (self time):',
    ...s.functions.filter(([f]) => !f.startsWith('(idle)')).map(([f, v]) => `  ${pct(v)}  ${f}`),
    'project functions by inclusive time (on the stack):',
    ...s.inclusive.map(([f, v]) => `  ${pct(v)}  ${f}`),
  ];
}
