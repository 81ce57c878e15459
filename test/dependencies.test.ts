import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { projectRoot } from './helpers/paths.js';

test('one nodemailer everywhere: the copy mailparser pins (10.3.1, with the address-parser advisory) is overridden', async () => {
  const lock = JSON.parse(await readFile(path.join(projectRoot, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string }> };
  const copies = Object.entries(lock.packages).filter(([where]) => where.endsWith('node_modules/nodemailer'));
  const top = lock.packages['node_modules/nodemailer']?.version;
  assert.ok(top, 'nodemailer is a direct dependency');
  const [major, minor] = top.split('.').map(Number) as [number, number];
  assert.ok(major > 10 || (major === 10 && minor >= 4), `nodemailer ${top} is newer than the advisory's 10.3.1`);
  assert.deepEqual(
    copies.map(([where, p]) => [where, p.version]),
    [['node_modules/nodemailer', top]],
    'no nested copy of another version',
  );
});
