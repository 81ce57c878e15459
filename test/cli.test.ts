import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { Store } from '../storage/store.js';
import { runCli, writeTestConfig } from './helpers/gateway.js';
import { projectRoot, tempDir } from './helpers/paths.js';
import { accepts } from './helpers/ports.js';

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

/** Every process below `pid` now (Linux: /proc/PID/task/TID/children), children before their own. */
async function descendants(pid: number): Promise<number[]> {
  const found: number[] = [];
  let tasks: string[] = [];
  try {
    tasks = await readdir(`/proc/${pid}/task`);
  } catch {
    return found;
  }
  for (const task of tasks) {
    const children = await readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '');
    for (const child of children.split(/\s+/).filter(Boolean).map(Number)) found.push(child, ...(await descendants(child)));
  }
  return found;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The SMTP port from the gateway's "mailgate ready" log line, among whatever else is written to `out`. */
function readyPort(out: Readable): Promise<number> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: out });
    lines.on('line', (line) => {
      try {
        const entry = JSON.parse(line) as { msg?: string; smtp?: { port: number }[] };
        if (entry.msg === 'mailgate ready' && entry.smtp?.[0]) resolve(entry.smtp[0].port);
      } catch {
        // npm's own lines
      }
    });
    lines.on('close', () => reject(new Error('the output ended before the gateway was ready')));
  });
}

test('npm start: SIGTERM to the npm process stops the gateway (port free, store released), as a service manager stopping it expects', async (t) => {
  const { dir, cleanup } = await tempDir();
  const configFile = await writeTestConfig(dir);
  const npm = spawn('npm', ['start', '--', '--config', configFile], {
    cwd: projectRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, npm_config_update_notifier: 'false' },
  });
  const npmExited = new Promise((resolve) => npm.once('exit', resolve));
  let below: number[] = [];
  t.after(async () => {
    // Whatever this test started and is still there: the gateway left behind is the fault under test.
    for (const pid of below.filter(alive)) process.kill(pid, 'SIGKILL');
    if (npm.exitCode === null && npm.signalCode === null) npm.kill('SIGKILL');
    await cleanup();
  });
  let stderr = '';
  npm.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const port = await readyPort(npm.stdout).catch((err: Error) => assert.fail(`${err.message}: ${stderr}`));
  below = await descendants(npm.pid!);
  assert.ok(below.length > 0, 'npm runs the gateway as its child');

  npm.kill('SIGTERM');
  await npmExited;
  assert.equal(await accepts(port), false, 'nothing listens on the SMTP port any more');
  assert.deepEqual(below.filter(alive), [], 'no process npm started is left running');
  const store = await Store.open(path.join(dir, 'data'));
  await store.close();
});
