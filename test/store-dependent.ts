/**
 * Prints the test files whose outcome can depend on the store the suite runs on: those whose
 * imports (followed through every module of the project, static and literal dynamic ones) reach
 * test/helpers/test-store.js, the one module that reads MAILGATE_TEST_STORE. Any other test
 * file runs the same code on either setting, so `npm run test:postgres:store-dependent` runs
 * only these a second time, on PostgreSQL. Not a test itself (no `.test.` in the name): run as
 *   node dist/test/store-dependent.js            (paths relative to the project, one a line)
 */
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const target = path.join(here, 'helpers', 'test-store.js');
// `from './x.js'`, `import './x.js'`, `import('./x.js')`: the project's own modules start with a dot.
const IMPORT = /(?:\bfrom\s*|\bimport\s*\(?\s*)['"](\.{1,2}\/[^'"]+)['"]/g;

/** The project modules FILE imports; none for a file that is not there (a JSON file, an asset). */
function importsOf(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return [...text.matchAll(IMPORT)].map(([, spec]) => path.resolve(path.dirname(file), spec!));
}

// Every module the test files reach, with who imports it; then back from the helper.
const tests = readdirSync(here)
  .filter((name) => name.endsWith('.test.js'))
  .sort()
  .map((name) => path.join(here, name));
const importers = new Map<string, string[]>();
const seen = new Set<string>(tests);
for (const queue = [...tests]; queue.length > 0;) {
  const file = queue.pop()!;
  for (const dep of importsOf(file)) {
    importers.set(dep, [...(importers.get(dep) ?? []), file]);
    if (seen.has(dep)) continue;
    seen.add(dep);
    queue.push(dep);
  }
}
const dependent = new Set<string>([target]);
for (const queue = [target]; queue.length > 0;) {
  for (const importer of importers.get(queue.pop()!) ?? []) {
    if (dependent.has(importer)) continue;
    dependent.add(importer);
    queue.push(importer);
  }
}
// A file that names the store of everything it opens says so in its header, `@store-pinned:`
// and why (the several-node tests run clusters of their own): a second run would repeat the first.
const pinned = (file: string) => /^ \* @store-pinned: /m.test(readFileSync(file, 'utf8'));
for (const file of tests) if (dependent.has(file) && !pinned(file)) console.log(path.relative(root, file));
