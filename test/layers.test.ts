/**
 * The layer rule (README "Layout"): lib < storage < policy < ingest < gateway, each folder
 * importing only from itself and the folders before it; no runtime import cycle; LevelDB and
 * its batch operations only under storage/. Read from the sources for the order (type imports
 * count: a type from a later layer is a dependency all the same) and from the compiled files
 * for cycles (only what survives compilation runs).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { projectRoot } from './helpers/paths.js';

const LAYERS = ['lib', 'storage', 'policy', 'ingest', 'gateway'] as const;
const distRoot = path.join(projectRoot, 'dist');

async function filesUnder(root: string, dir: string, ext: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(path.join(root, dir), { withFileTypes: true })) {
    const rel = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(root, rel, ext)));
    else if (entry.name.endsWith(ext) && !entry.name.endsWith('.d.ts')) out.push(rel);
  }
  return out;
}

/** Module specifiers of a file's static imports and re-exports and its dynamic imports. */
function specifiers(source: string): string[] {
  const re = /(?:^|[\s;])(?:import|export)\s(?:[^'";]*?\sfrom\s*)?['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;
  const out: string[] = [];
  for (let m = re.exec(source); m; m = re.exec(source)) out.push((m[1] ?? m[2])!);
  return out;
}

/** Relative imports of `file` (relative to `root`), resolved to project-relative paths with the extension of `ext`. */
function localImports(file: string, source: string, ext: string): string[] {
  return specifiers(source)
    .filter((s) => s.startsWith('.'))
    .map((s) => path.normalize(path.join(path.dirname(file), s)).replace(/\.js$/, ext));
}

const layerOf = (file: string) => LAYERS.indexOf(file.split(path.sep)[0] as (typeof LAYERS)[number]);

async function sources(): Promise<Map<string, string>> {
  const files = (await Promise.all(LAYERS.map((l) => filesUnder(projectRoot, l, '.ts')))).flat();
  return new Map(await Promise.all(files.map(async (f) => [f, await readFile(path.join(projectRoot, f), 'utf8')] as const)));
}

test('each layer imports only from itself and the layers before it (lib < storage < policy < ingest < gateway)', async () => {
  const upward: string[] = [];
  for (const [file, source] of await sources()) {
    const own = layerOf(file);
    for (const target of localImports(file, source, '.ts')) {
      const theirs = layerOf(target);
      if (theirs < 0) upward.push(`${file} imports ${target}, outside the layers`);
      else if (theirs > own) upward.push(`${file} (${LAYERS[own]}) imports ${target} (${LAYERS[theirs]})`);
    }
  }
  assert.deepEqual(upward, []);
});

test('LevelDB, its batch operations and its sublevels appear only under storage/; the rest imports no storage/leveldb/ module', async () => {
  const found: string[] = [];
  for (const [file, source] of await sources()) {
    if (file.startsWith(`storage${path.sep}`)) continue;
    for (const s of specifiers(source)) if (/^(level|classic-level|abstract-level|memory-level)(\/|$)/.test(s)) found.push(`${file} imports ${s}`);
    // The store is reached through its interface (storage/store.ts) and opened by storage/open.ts.
    for (const target of localImports(file, source, '.ts')) if (target.startsWith(path.join('storage', 'leveldb'))) found.push(`${file} imports ${target}`);
    const code = source.replace(/\/\/.*$|\/\*[\s\S]*?\*\//gm, '');
    for (const word of ['StoreOp', 'sublevels', 'sublevel']) if (new RegExp(`\\b${word}\\b`).test(code)) found.push(`${file} uses ${word}`);
    // LevelDB's own error codes are the store's to recognise (Store.isStoreFailure).
    if (/['"`]LEVEL_/.test(code)) found.push(`${file} names a LEVEL_ error code`);
  }
  assert.deepEqual(found, []);
});

test('no runtime import cycle among the compiled modules', async () => {
  const files = (await Promise.all(LAYERS.map((l) => filesUnder(distRoot, l, '.js')))).flat();
  const graph = new Map<string, string[]>();
  for (const f of files) graph.set(f, localImports(f, await readFile(path.join(distRoot, f), 'utf8'), '.js'));
  // Depth-first search; a grey node met again closes a cycle.
  const state = new Map<string, 'grey' | 'black'>();
  const cycles: string[] = [];
  const visit = (node: string, trail: string[]): void => {
    state.set(node, 'grey');
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === 'grey') cycles.push([...trail.slice(trail.indexOf(next)), node, next].join(' -> '));
      else if (!state.has(next)) visit(next, [...trail, node]);
    }
    state.set(node, 'black');
  };
  for (const f of files) if (!state.has(f)) visit(f, []);
  assert.ok(files.length > 50, `the compiled sources were found (${files.length} files)`);
  assert.deepEqual(cycles, []);
});
