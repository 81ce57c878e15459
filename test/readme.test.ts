/** What the README promises about files in the repository holds. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { projectRoot } from './helpers/paths.js';

test("the README's complete partition policy is policy/examples/partition.toml, quoted whole", async () => {
  const readme = await readFile(path.join(projectRoot, 'README.md'), 'utf8');
  const file = await readFile(path.join(projectRoot, 'policy', 'examples', 'partition.toml'), 'utf8');
  const at = readme.indexOf('this is `policy/examples/partition.toml`');
  assert.ok(at > 0, 'the README names the file it quotes');
  const block = /```toml\n([\s\S]*?)```\n/.exec(readme.slice(at))?.[1];
  assert.equal(block, file);
});

test("the README's test line is what CI runs first, then the store-dependent files on PostgreSQL and the corpora suites", async () => {
  const readme = await readFile(path.join(projectRoot, 'README.md'), 'utf8');
  const ci = await readFile(path.join(projectRoot, '.ci', 'run'), 'utf8');
  assert.match(readme, /^npm ci && npm test$/m);
  const commands = ci.split('\n').filter((l) => l && !l.startsWith('#') && !l.startsWith('set ') && !l.startsWith('cd '));
  assert.deepEqual(commands, ['npm ci && npm test', 'npm run test:postgres:store-dependent', 'npm run test:corpora']);
});
