/**
 * `[storage]` and `[node]` (issue 16): LevelDB when absent, a PostgreSQL URL checked at load with
 * file, line and key, the password from `${ENV}` or sealed, and the node's name in the logs and
 * metrics. The database itself is test/storage-cli.test.ts's.
 *
 * @store-pinned: each config it checks names its store.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { writeFile } from 'node:fs/promises';
import { ConfigError, formatProblem } from '../lib/config-file/toml.js';
import { loadConfigText, type ConfigProblem } from '../gateway/config/load.js';
import { configuredStore } from '../gateway/config/storage.js';
import { defaultNodeName } from '../storage/node-name.js';
import { sealSecret } from '../gateway/config/secrets.js';
import { createLogger } from '../lib/logger.js';
import { runCli, startTestGateway } from './helpers/gateway.js';
import { tempDir } from './helpers/paths.js';

const FILE = '/etc/mailgate/mailgate.toml';
const toml = (...lines: string[]) => lines.join('\n') + '\n';
const load = (text: string, env: Record<string, string> = {}) => loadConfigText(text, FILE, env);

function problemsOf(text: string, env: Record<string, string> = {}): ConfigProblem[] {
  try {
    load(text, env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems;
  }
  assert.fail(`expected a ConfigError for:\n${text}`);
}

test('without [storage] the store is LevelDB in data_dir as before, and the node is named after the host', () => {
  const config = load('');
  assert.equal(config.storage, undefined);
  assert.equal(config.node.name, defaultNodeName());
  assert.match(config.node.name, /^[A-Za-z0-9._-]{1,64}$/);
  assert.deepEqual(configuredStore(config), { node: defaultNodeName() });
});

test('[storage] postgres: a pool of 10 by default, the node named in the connection, TLS files taken from the config file', () => {
  const config = load(
    toml(
      '[node]',
      'name = "mx-1.example"',
      '[storage]',
      'postgres = "postgres://mailgate@db.example.com:5432/mailgate?sslmode=verify-full&sslrootcert=certs/db-ca.pem"',
    ),
  );
  assert.equal(config.node.name, 'mx-1.example');
  assert.equal(config.storage?.connections, 10);
  const store = configuredStore(config);
  assert.equal(store.node, 'mx-1.example');
  assert.equal(store.postgres?.connections, 10);
  const url = new URL(store.postgres!.url);
  assert.equal(url.hostname, 'db.example.com');
  assert.equal(url.username, 'mailgate');
  assert.equal(url.password, '', 'no password configured, none added');
  assert.equal(url.searchParams.get('sslmode'), 'verify-full');
  assert.equal(url.searchParams.get('sslrootcert'), '/etc/mailgate/certs/db-ca.pem', 'relative to the config file, not the working directory');
  assert.equal(url.searchParams.get('application_name'), 'mailgate/mx-1.example', "pg_stat_activity shows the node's connections");

  const sized = load(toml('[storage]', 'postgres = "postgresql://mailgate@localhost/mailgate?host=/var/run/postgresql"', 'connections = 3'));
  assert.equal(sized.storage?.connections, 3);
  assert.equal(new URL(configuredStore(sized).postgres!.url).searchParams.get('host'), '/var/run/postgresql', 'a socket directory');
});

test('the database password comes from ${ENV} or an enc:v1: value, and reaches the URL however odd its characters', () => {
  const secret = 'p%40ss w:rd/@?#&ü';
  const text = toml('[storage]', 'postgres = "postgres://mailgate@db.example.com/mailgate"', 'password = "${MAILGATE_DB_PASSWORD}"');
  const fromEnv = configuredStore(load(text, { MAILGATE_DB_PASSWORD: secret }));
  assert.equal(decodeURIComponent(new URL(fromEnv.postgres!.url).password), secret, 'node-postgres decodes the password it reads from the URL');

  const key = randomBytes(32);
  const sealed = load(toml('[storage]', 'postgres = "postgres://mailgate@db.example.com/mailgate"', `password = "${sealSecret(key, secret)}"`), {
    MAILGATE_SECRET_KEY: key.toString('hex'),
  });
  assert.equal(sealed.storage?.password, secret);

  const unset = problemsOf(text);
  assert.deepEqual(
    unset.map((p) => formatProblem(p)),
    [`${FILE}:3: storage.password: expected environment variable MAILGATE_DB_PASSWORD to be set`],
  );
});

test('a bad [storage] or [node] is refused with file, line and key, and says what to write instead', () => {
  const cases: [lines: string[], key: string, message: RegExp][] = [
    [
      ['[storage]', 'postgres = "mysql://db.example.com/mailgate" # <-'],
      'storage.postgres',
      /expected a URL such as "postgres:\/\/mailgate@db\.example\.com:5432\/mailgate" \(postgres: or postgresql:\)/,
    ],
    [
      ['[storage]', 'postgres = "postgres://mailgate:hunter2@db.example.com/mailgate" # <-'],
      'storage.postgres',
      /a URL without a password: set \[storage\] password/,
    ],
    [['[storage]', 'postgres = "postgres://mailgate@db.example.com" # <-'], 'storage.postgres', /naming the database/],
    [
      ['[storage]', 'postgres = "postgres://mailgate@db.example.com/mailgate?sslmode=require" # <-'],
      'storage.postgres',
      /sslmode disable, verify-full .* or no-verify .*, not "require": node-postgres reads prefer, require and verify-ca as verify-full/,
    ],
    [
      ['[storage]', 'postgres = "postgres://mailgate@db.example.com/mailgate?ssl_mode=verify-full" # <-'],
      'storage.postgres',
      /parameters are among sslmode, .* \(not ssl_mode\)/,
    ],
    [
      ['[storage]', 'postgres = "postgres://mailgate@db.example.com/mailgate"', 'connections = 0 # <-'],
      'storage.connections',
      /a positive integer \(connections\)/,
    ],
    [['[storage]', 'password = "${PW}" # <-'], 'storage.password', /no password without postgres/],
    [['[storage]', 'postgres = "postgres://mailgate@db.example.com/mailgate"', 'pool = 5 # <-'], 'storage.pool', /unknown key/],
    [['[node]', 'name = "mx 1" # <-'], 'node.name', /a node name of letters, digits and \. - _/],
  ];
  for (const [lines, key, message] of cases) {
    const text = toml(...lines);
    const problems = problemsOf(text, { PW: 'x' });
    assert.equal(problems.length, 1, `${text}: ${problems.map((p) => formatProblem(p)).join('; ')}`);
    const [p] = problems as [ConfigProblem];
    assert.equal(p.file, FILE);
    assert.equal(p.line, text.split('\n').findIndex((l) => l.includes('# <-')) + 1, text);
    assert.equal(p.key, key);
    assert.match(p.message, message);
    assert.doesNotMatch(formatProblem(p), /hunter2/, 'a password written into the URL is not echoed');
  }
});

test('a command that reads a PostgreSQL store needs the database password: unset, it exits 2 naming file, line and key', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const file = path.join(dir, 'mailgate.toml');
  await writeFile(file, toml('[storage]', 'postgres = "postgres://mailgate@127.0.0.1:1/mailgate"', 'password = "${MAILGATE_DB_PASSWORD}"'));
  const r = await runCli(['messages', 'list', '--config', file], { env: { MAILGATE_DB_PASSWORD: undefined } });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /mailgate\.toml:3: storage\.password: expected environment variable MAILGATE_DB_PASSWORD to be set/);
});

test("the node's name is on every JSON log line and in mailgate_node_info", async (t) => {
  const out = new PassThrough();
  const lines: string[] = [];
  out.on('data', (c: Buffer) => lines.push(...c.toString().split('\n').filter(Boolean)));
  const logger = createLogger('info', { pretty: false, destination: out, node: 'mx-2' });
  logger.info({ id: 'x' }, 'message stored');
  logger.flush();
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(lines.length, 1);
  assert.deepEqual((({ service, node, msg }) => ({ service, node, msg }))(JSON.parse(lines[0]!) as Record<string, unknown>), {
    service: 'mailgate',
    node: 'mx-2',
    msg: 'message stored',
  });

  const gw = await startTestGateway(toml('[node]', 'name = "mx-2"', '[metrics]', 'listen = "127.0.0.1:0"'));
  t.after(() => gw.cleanup());
  const text = await (await fetch(`http://127.0.0.1:${gw.gateway.metricsPort}/metrics`)).text();
  assert.match(text, /^mailgate_node_info\{node="mx-2"\} 1$/m);
});
