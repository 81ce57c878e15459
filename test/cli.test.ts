import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { runCli } from './helpers/gateway.js';
import { projectRoot, tempDir } from './helpers/paths.js';

test('config check names the file, line and key of a typo and exits 2', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const file = path.join(dir, 'mailgate.toml');
  await writeFile(file, ['[smtp]', 'listen = ["127.0.0.1:2525"]', 'max_mesage_size = 1000', ''].join('\n'));
  const r = await runCli(['config', 'check', file]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /mailgate\.toml:3: smtp\.max_mesage_size: unknown key/);
  assert.equal(r.stdout.length, 0);
});

test('config check accepts config.example.toml and the built-in defaults', async () => {
  const example = await runCli(['config', 'check', path.join(projectRoot, 'config.example.toml')]);
  assert.equal(example.code, 0, example.stderr);
  assert.match(example.stdout.toString(), /config\.example\.toml: ok/);
  const { dir, cleanup } = await tempDir();
  try {
    const defaults = await runCli(['config', 'check'], { cwd: dir });
    assert.equal(defaults.code, 0, defaults.stderr);
    assert.match(defaults.stdout.toString(), /built-in defaults: ok .*127\.0\.0\.1:2525.*accepting any recipient/);
  } finally {
    await cleanup();
  }
});

test('config check refuses a missing file with exit 2', async () => {
  const r = await runCli(['config', 'check', '/nonexistent/mailgate.toml']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /\/nonexistent\/mailgate\.toml/);
});

test('config schema prints a JSON Schema an editor can use', async () => {
  const r = await runCli(['config', 'schema']);
  assert.equal(r.code, 0, r.stderr);
  const schema = JSON.parse(r.stdout.toString()) as { properties: Record<string, { items?: { properties?: Record<string, unknown> } }> };
  assert.ok(schema.properties.smtp);
  assert.ok(schema.properties.alias?.items?.properties?.automatic_bcc);
});

test('every command has --help; usage errors exit 2', async () => {
  for (const args of [[], ['serve'], ['messages'], ['messages', 'list'], ['messages', 'show'], ['messages', 'raw'], ['config'], ['config', 'check'], ['config', 'schema']]) {
    const r = await runCli([...args, '--help']);
    assert.equal(r.code, 0, `${args.join(' ')} --help: ${r.stderr}`);
    assert.match(r.stdout.toString(), /Usage: mailgate/);
  }
  const unknown = await runCli(['frobnicate']);
  assert.equal(unknown.code, 2);
  const noId = await runCli(['messages', 'show']);
  assert.equal(noId.code, 2);
  assert.match(noId.stderr, /missing required argument/);
  const badLimit = await runCli(['messages', 'list', '--limit', 'many']);
  assert.equal(badLimit.code, 2);
  assert.match(badLimit.stderr, /--limit: expected a whole number/);
});
