import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError } from '../lib/config-file/toml.js';
import {
  configJsonSchema,
  defaultConfig,
  hashPassword,
  loadConfigFile,
  loadConfigText,
  requireSecrets,
  resolveConfig,
  verifyPassword,
  type ConfigProblem,
} from '../gateway/config/load.js';
import type { Config } from '../gateway/config/schema.js';
import { projectRoot, tempDir } from './helpers/paths.js';

const FILE = 'mailgate.toml';
const exampleFile = path.join(projectRoot, 'config.example.toml');

/** Joins lines into a TOML text; the line holding `# <-` is where the problem must be reported. */
const toml = (...lines: string[]) => lines.join('\n') + '\n';
const markedLine = (text: string) => text.split('\n').findIndex((l) => l.includes('# <-')) + 1;

function load(text: string, env: Record<string, string> = {}): Config {
  return loadConfigText(text, path.join(projectRoot, FILE), env);
}

/** The problems loading `text` raises; fails the test when it loads. */
function problemsOf(text: string, env: Record<string, string> = {}): ConfigProblem[] {
  try {
    loadConfigText(text, FILE, env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems;
  }
  assert.fail(`expected a ConfigError for:\n${text}`);
}

/** Asserts exactly one problem, at the marked line, for `key`; returns it. */
function oneProblem(text: string, key: string, env: Record<string, string> = {}): ConfigProblem {
  const problems = problemsOf(text, env);
  assert.equal(problems.length, 1, problems.map((p) => p.message).join('\n'));
  const [p] = problems as [ConfigProblem];
  assert.equal(p.file, FILE);
  assert.equal(p.key, key);
  assert.equal(p.line, markedLine(text), `line of ${key}`);
  return p;
}

const twoAliases = (first: string[], second: string[]) =>
  toml('[[alias]]', 'name = "a"', 'address = "a@example.com"', ...first, '', '[[alias]]', 'name = "b"', 'address = "b@example.com"', ...second);

test('config.example.toml is a valid config with departments, aliases and servers', async () => {
  const config = loadConfigFile(exampleFile, {});
  assert.equal(config.department.length, 2);
  assert.equal(config.alias.length, 3);
  const withServers = config.alias.find((a) => a.incoming && a.outgoing);
  assert.ok(withServers, 'one alias has incoming and outgoing servers');
  assert.ok(config.partition.default_smtp);
});

test('config.example.toml mentions every key of the schema', async () => {
  const text = await readFile(exampleFile, 'utf8');
  type Node = { properties?: Record<string, Node>; items?: Node };
  const missing: string[] = [];
  const walk = (node: Node, at: string) => {
    const props = node.properties ?? node.items?.properties ?? {};
    for (const [key, child] of Object.entries(props)) {
      const shown = new RegExp(`^#? ?(${key} =|\\[\\[?[a-z_.]*\\b${key}\\]\\]?)`, 'm');
      if (!shown.test(text)) missing.push(`${at}${key}`);
      walk(child, `${at}${key}.`);
    }
  };
  walk(configJsonSchema() as Node, '');
  assert.deepEqual(missing, []);
});

test('typo in a key names the file, the line and the key', async (t) => {
  const cases: { name: string; text: string; key: string }[] = [
    { name: 'top level', text: toml('data_dir = "d"', 'log_lvl = "debug"  # <-'), key: 'log_lvl' },
    {
      name: 'inside [smtp]',
      text: toml('[smtp]', 'listen = ["127.0.0.1:2525"]', 'max_mesage_size = 1000  # <-'),
      key: 'smtp.max_mesage_size',
    },
    { name: 'inside the second [[alias]]', text: twoAliases(['status = "active"'], ['', 'descripton = "x"  # <-']), key: 'alias[1].descripton' },
    {
      name: "inside the second alias's [alias.outgoing]",
      text: twoAliases(
        ['[alias.outgoing]', 'host = "smtp.example.com"', 'prot = 25'],
        ['[alias.outgoing]', 'host = "smtp.example.com"', 'prot = 25  # <-'],
      ).replace('prot = 25\n', 'port = 25\n'),
      key: 'alias[1].outgoing.prot',
    },
    { name: 'a misspelt table', text: toml('[smpt]  # <-', 'listen = ["127.0.0.1:2525"]'), key: 'smpt' },
    { name: 'a dotted key', text: toml('[smtp]', 'auth.allow_insecure = true  # <-'), key: 'smtp.auth.allow_insecure' },
  ];
  for (const c of cases) {
    await t.test(c.name, () => {
      const p = oneProblem(c.text, c.key);
      assert.match(p.message, /^unknown key \(expected one of: /);
    });
  }
  await t.test('the message lists the keys that are allowed', () => {
    const text = toml('[smtp]', 'listen = ["127.0.0.1:2525"]', 'max_mesage_size = 1000');
    assert.throws(() => loadConfigText(text, FILE, {}), {
      name: 'ConfigError',
      message: /^mailgate\.toml:3: smtp\.max_mesage_size: unknown key \(expected one of: listen, hostname, max_message_size, /,
    });
  });
});

test('a wrong type names what was expected and what was given', async (t) => {
  const cases: { text: string; key: string; expected: string | RegExp; given: string }[] = [
    {
      text: twoAliases(['[alias.outgoing]', 'host = "mx"', 'port = "abc"  # <-'], []),
      key: 'alias[0].outgoing.port',
      expected: 'an integer from 1 to 65535',
      given: '"abc"',
    },
    {
      text: twoAliases([], ['[alias.incoming]', 'host = "mx"', 'port = 70000  # <-']),
      key: 'alias[1].incoming.port',
      expected: 'an integer from 1 to 65535',
      given: '70000',
    },
    { text: toml('[smtp]', 'max_message_size = "25M"  # <-'), key: 'smtp.max_message_size', expected: /positive integer/, given: '"25M"' },
    { text: toml('[smtp]', 'accept_all = "yes"  # <-'), key: 'smtp.accept_all', expected: 'true or false', given: '"yes"' },
    { text: toml('log_level = "verbose"  # <-'), key: 'log_level', expected: /^one of "fatal", "error"/, given: '"verbose"' },
    { text: toml('[smtp]', 'listen = "127.0.0.1:25"  # <-'), key: 'smtp.listen', expected: 'an array', given: '"127.0.0.1:25"' },
    { text: toml('[smtp]', 'listen = ["::1:25"]  # <-'), key: 'smtp.listen[0]', expected: /"host:port" address/, given: '"::1:25"' },
    { text: toml('smtp = 5  # <-'), key: 'smtp', expected: 'a table', given: '5' },
    {
      text: twoAliases([], ['address = "not an address"  # <-']).replace('address = "b@example.com"\n', ''),
      key: 'alias[1].address',
      expected: 'an email address',
      given: '"not an address"',
    },
    {
      text: twoAliases(['[alias.incoming]', 'type = "exchange"  # <-', 'host = "mx"'], []),
      key: 'alias[0].incoming.type',
      expected: 'one of "pop3", "imap"',
      given: '"exchange"',
    },
    {
      text: toml('[[smtp.user]]', 'name = "u"', 'password_hash = "secret"  # <-'),
      key: 'smtp.user[0].password_hash',
      expected: /scrypt\$N\$r\$p/,
      given: 'a hidden string',
    },
    { text: toml('[[department]]  # <-', 'policy = "p.toml"'), key: 'department[0].name', expected: 'a string', given: 'nothing' },
  ];
  for (const c of cases) {
    await t.test(c.key, () => {
      const p = oneProblem(c.text, c.key);
      if (typeof c.expected === 'string') assert.equal(p.expected, c.expected);
      else assert.match(p.expected, c.expected);
      assert.equal(p.given, c.given);
    });
  }
  await t.test('message format', () => {
    const text = toml(...Array<string>(13).fill('#'), '[[alias]]', 'name = "a"', 'address = "a@b.c"', '[alias.outgoing]', 'host = "mx"', 'port = "abc"');
    assert.throws(() => loadConfigText(text, FILE, {}), {
      message: 'mailgate.toml:19: alias[0].outgoing.port: expected an integer from 1 to 65535, got "abc"',
    });
  });
  await t.test('a missing key points at its table and says it is missing', () => {
    const p = oneProblem(twoAliases([], ['[alias.outgoing]  # <-', 'ssl = true']), 'alias[1].outgoing.host');
    assert.equal(p.message, 'missing (expected a host name or IP address)');
  });
});

test('${ENV} references are expanded from the environment', async (t) => {
  const env = { MAILGATE_SMTP_PASS: 's3cret', MAILGATE_HOST: 'smtp.example.com', ALIAS: 'a' };
  await t.test('in nested tables and arrays', () => {
    const config = load(
      toml(
        '[[alias]]',
        'name = "${ALIAS}"',
        'address = "${ALIAS}@example.com"',
        'redirection_addresses = ["${ALIAS}-copy@example.net"]',
        '[alias.outgoing]',
        'type = "esmtp"',
        'host = "${MAILGATE_HOST}"',
        'user = "u"',
        'password = "pre-${MAILGATE_SMTP_PASS}-post"',
      ),
      env,
    );
    const alias = config.alias[0];
    assert.equal(alias?.address, 'a@example.com');
    assert.deepEqual(alias?.redirection_addresses, ['a-copy@example.net']);
    assert.equal(alias?.outgoing?.host, 'smtp.example.com');
    assert.equal(alias?.outgoing?.password, 'pre-s3cret-post');
  });
  await t.test('$${ is a literal ${', () => {
    const config = load(toml('[[alias]]', 'name = "cost $${ALIAS} ${ALIAS}"', 'address = "a@example.com"'), env);
    assert.equal(config.alias[0]?.name, 'cost ${ALIAS} a');
  });
  await t.test('a missing variable names the key and the line', () => {
    const text = toml('[partition.default_smtp]', 'protocol = "esmtp"', 'password = "${MAILGATE_SMTP_PASS}"  # <-');
    const p = oneProblem(text, 'partition.default_smtp.password');
    assert.equal(p.message, 'expected environment variable MAILGATE_SMTP_PASS to be set');
    assert.throws(() => loadConfigText(text, FILE, {}), {
      message: 'mailgate.toml:3: partition.default_smtp.password: expected environment variable MAILGATE_SMTP_PASS to be set',
    });
  });
  await t.test('an unterminated reference is an error', () => {
    const p = oneProblem(toml('[smtp]', 'hostname = "${HOST"  # <-'), 'smtp.hostname');
    assert.match(p.expected, /\$\{NAME\}/);
  });
});

test('invariants between tables each give a clear problem at the offending key', async (t) => {
  const depts = ['[[department]]', 'name = "sales"', '[[department]]', 'name = "support"'];
  const alias = (name: string, address: string, ...rest: string[]) => ['[[alias]]', `name = "${name}"`, `address = "${address}"`, ...rest];
  const cases: { name: string; lines: string[]; key: string; expected: RegExp }[] = [
    {
      name: 'department names are unique',
      lines: [...depts, '[[department]]', 'name = "sales"  # <-'],
      key: 'department[2].name',
      expected: /unique name \(department\[0\]/,
    },
    {
      name: 'alias names are unique',
      lines: [...alias('a', 'a@x.org'), ...alias('a', 'b@x.org').map((l) => (l.startsWith('name') ? `${l}  # <-` : l))],
      key: 'alias[1].name',
      expected: /unique name \(alias\[0\]/,
    },
    {
      name: 'alias addresses are unique ignoring case',
      lines: [...alias('a', 'sales@x.org'), '[[alias]]', 'name = "b"', 'address = "Sales@X.org"  # <-'],
      key: 'alias[1].address',
      expected: /no other alias uses \(alias\[0\] "a"/,
    },
    {
      name: 'a redirection address is not an alias address',
      lines: [...alias('a', 'a@x.org'), ...alias('b', 'b@x.org', 'redirection_addresses = ["A@x.org"]  # <-')],
      key: 'alias[1].redirection_addresses[0]',
      expected: /outside mailgate \(alias\[0\] "a"/,
    },
    {
      name: 'alias.department exists',
      lines: [...depts, ...alias('a', 'a@x.org', 'department = "salse"  # <-')],
      key: 'alias[0].department',
      expected: /one of the configured departments: "sales", "support"/,
    },
    {
      name: 'at most one default alias per department',
      lines: [
        ...depts,
        ...alias('a', 'a@x.org', 'department = "sales"', 'default = true'),
        ...alias('b', 'b@x.org', 'department = "sales"', 'default = true  # <-'),
      ],
      key: 'alias[1].default',
      expected: /at most one default alias in department "sales"/,
    },
    {
      name: 'the default alias is active',
      lines: [...depts, ...alias('a', 'a@x.org', 'department = "sales"', 'default = true', 'status = "inactive"  # <-')],
      key: 'alias[0].status',
      expected: /"active" for the default alias/,
    },
    {
      name: 'use_smtp = when_auth_fails needs esmtp',
      lines: [...alias('a', 'a@x.org'), '[alias.outgoing]', 'host = "mx"', 'use_smtp = "when_auth_fails"  # <-'],
      key: 'alias[0].outgoing.use_smtp',
      expected: /unless type = "esmtp"/,
    },
    {
      name: 'no user for plain smtp',
      lines: [...alias('a', 'a@x.org'), '[alias.outgoing]', 'host = "mx"', 'user = "bob"  # <-'],
      key: 'alias[0].outgoing.user',
      expected: /no user with type = "smtp"/,
    },
    { name: 'tls needs both cert and key', lines: ['[smtp.tls]  # <-', 'cert = "cert.pem"'], key: 'smtp.tls.key', expected: /key file/ },
    {
      name: 'smtp user names are unique',
      lines: [
        `[[smtp.user]]`,
        'name = "u"',
        `password_hash = "${hashPassword('x')}"`,
        '[[smtp.user]]',
        'name = "u"  # <-',
        `password_hash = "${hashPassword('y')}"`,
      ],
      key: 'smtp.user[1].name',
      expected: /unique user name/,
    },
  ];
  for (const c of cases) {
    await t.test(c.name, () => assert.match(oneProblem(toml(...c.lines), c.key).expected, c.expected));
  }
});

test('ports default by protocol and security', async (t) => {
  const incoming = (lines: string[]) =>
    load(toml('[[alias]]', 'name = "a"', 'address = "a@x.org"', '[alias.incoming]', 'host = "mx"', ...lines)).alias[0]?.incoming?.port;
  const outgoing = (lines: string[]) =>
    load(toml('[[alias]]', 'name = "a"', 'address = "a@x.org"', '[alias.outgoing]', 'host = "mx"', ...lines)).alias[0]?.outgoing?.port;
  const partition = (lines: string[]) => load(toml('[partition.default_smtp]', 'server = "mx"', ...lines)).partition.default_smtp?.port;
  const cases: [string, () => number | undefined, number][] = [
    ['pop3 (the default type)', () => incoming([]), 110],
    ['pop3 with tls', () => incoming(['security = "tls"']), 995],
    ['pop3 with starttls', () => incoming(['security = "starttls"']), 110],
    ['imap', () => incoming(['type = "imap"']), 143],
    ['imap with tls', () => incoming(['type = "imap"', 'security = "tls"']), 993],
    ['imap with an explicit port', () => incoming(['type = "imap"', 'port = 1993']), 1993],
    ['outgoing smtp', () => outgoing([]), 25],
    ['outgoing with ssl', () => outgoing(['ssl = true']), 587],
    ['outgoing with an explicit port', () => outgoing(['ssl = true', 'port = 465']), 465],
    ['partition default smtp', () => partition([]), 25],
    ['partition default smtp with ssl', () => partition(['ssl = true']), 587],
  ];
  for (const [name, port, expected] of cases) await t.test(name, () => assert.equal(port(), expected));
  await t.test('other incoming defaults', () => {
    const config = load(toml('[[alias]]', 'name = "a"', 'address = "a@x.org"', '[alias.incoming]', 'host = "mx"'));
    assert.deepEqual(config.alias[0]?.incoming, {
      type: 'pop3',
      host: 'mx',
      security: 'auto',
      allow_plaintext: false,
      folder: 'INBOX',
      port: 110,
      split_recipients: false,
      poll_interval: 60,
      reconnect_interval: 60,
      health_retry_interval: 600,
      idle: true,
      max_items: 50,
      max_message_size: 6_000_000,
      on_stored: 'delete',
      processed_folder: 'Processed',
      on_invalid: 'keep',
      invalid_folder: 'Invalid',
      lightweight_size: 10_000,
      auto_connect_retries: 3,
      bytes_in_flight: 8 * 1024 * 1024,
    });
    const imap = load(toml('[[alias]]', 'name = "a"', 'address = "a@x.org"', '[alias.incoming]', 'type = "imap"', 'host = "mx"')).alias[0]?.incoming;
    assert.equal(imap?.on_stored, 'move');
    assert.equal(imap?.on_invalid, 'move');
  });
});

test('accept_all and reverse_dns default by whether every listen address is loopback', async (t) => {
  const cases: [string[], boolean][] = [
    [['127.0.0.1:2525'], true],
    [['[::1]:2525', 'localhost:25'], true],
    [['0.0.0.0:25'], false],
    [['127.0.0.1:2525', '192.0.2.1:25'], false],
  ];
  for (const [listen, local] of cases) {
    await t.test(listen.join(' '), () => {
      const { smtp } = load(toml('[smtp]', `listen = ${JSON.stringify(listen)}`));
      assert.equal(smtp.accept_all, local);
      assert.equal(smtp.reverse_dns, !local);
    });
  }
  await t.test('explicit values win', () => {
    const { smtp } = load(toml('[smtp]', 'listen = ["0.0.0.0:25"]', 'accept_all = true', 'reverse_dns = false'));
    assert.equal(smtp.accept_all, true);
    assert.equal(smtp.reverse_dns, false);
  });
});

test('a TOML syntax error gives the file and the line', () => {
  const problems = problemsOf(toml('[smtp]', 'listen = ["127.0.0.1:2525"]', 'hostname = mail.example.com'));
  assert.equal(problems.length, 1);
  assert.equal(problems[0]?.file, FILE);
  assert.equal(problems[0]?.line, 3);
  assert.throws(() => loadConfigText('a = \n', FILE, {}), { message: /^mailgate\.toml:1: invalid TOML: / });
});

test('the line locator is not fooled by strings, comments and multi-line values', () => {
  const text = toml(
    '[[alias]]',
    'name = "a"',
    'description = """',
    '[[alias]]',
    'port = 1',
    '"""',
    'address = "a@x.org"',
    'redirection_addresses = [',
    '  "b@x.org",  # [alias.outgoing]',
    '  "c@x.org",',
    ']',
    '"quoted key" = 1  # <-',
  );
  oneProblem(text, 'alias[0]."quoted key"');
});

test('every problem keeps its line in any file the TOML reader accepts: an impossible date, a byte order mark', () => {
  // smol-toml reads 2021-02-30 as 2 March and skips a BOM; a locator built on a parser that
  // refused such a file (toml-eslint-parser refuses both) would report every problem without a line.
  const problems = problemsOf(toml('\ufeff[smtp]', 'max_message_size = 2021-02-30', 'hostname = 5', 'accept_all = 1979-02-29'));
  assert.deepEqual(
    problems.map((p) => [p.line, p.key, p.given]),
    [
      [2, 'smtp.max_message_size', 'a date'],
      [3, 'smtp.hostname', '5'],
      [4, 'smtp.accept_all', 'a date'],
    ],
  );
});

test('defaults need no file', async (t) => {
  await t.test('defaultConfig', () => {
    const config = defaultConfig('/srv/mail');
    assert.equal(config.data_dir, '/srv/mail/data');
    assert.equal(config.log_level, 'info');
    assert.deepEqual(config.smtp.listen, ['127.0.0.1:2525']);
    assert.equal(config.smtp.max_message_size, 26214400);
    assert.equal(config.smtp.accept_all, true);
    assert.equal(config.smtp.reverse_dns, false);
    assert.equal(config.smtp.reverse_dns_timeout_ms, 1000);
    assert.ok(config.smtp.hostname.length > 0);
    assert.deepEqual(config.partition, {
      name: 'default',
      default_domain: 'localhost',
      reference_format: '[ref:{ref}]',
      unknown_recipient: 'file',
      auto_reply_interval: 86_400_000,
    });
    assert.deepEqual([config.department, config.alias, config.smtp.user], [[], [], []]);
  });
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  await t.test('resolveConfig with no mailgate.toml in cwd', () => {
    const resolved = resolveConfig({ cwd: dir, env: {} });
    assert.equal(resolved.file, undefined);
    assert.equal(resolved.config.data_dir, path.join(dir, 'data'));
  });
  await t.test('resolveConfig finds ./mailgate.toml, or takes a file relative to cwd', async () => {
    await writeFile(path.join(dir, FILE), toml('data_dir = "store"'));
    assert.equal(resolveConfig({ cwd: dir, env: {} }).config.data_dir, path.join(dir, 'store'));
    await mkdir(path.join(dir, 'etc'));
    await writeFile(path.join(dir, 'etc', 'other.toml'), toml('log_level = "debug"'));
    const other = resolveConfig({ cwd: dir, file: 'etc/other.toml', env: {} });
    assert.equal(other.file, path.join(dir, 'etc', 'other.toml'));
    assert.equal(other.config.data_dir, path.join(dir, 'etc', 'data'));
  });
});

test('relative paths are resolved against the config file directory', () => {
  const text = toml(
    'data_dir = "var/data"',
    '[smtp.tls]',
    'cert = "tls/cert.pem"',
    'key = "/etc/key.pem"',
    '[[department]]',
    'name = "d"',
    'policy = "policies/d.toml"',
  );
  const config = loadConfigText(text, '/etc/mailgate/mailgate.toml', {});
  assert.equal(config.data_dir, '/etc/mailgate/var/data');
  assert.deepEqual(config.smtp.tls, { cert: '/etc/mailgate/tls/cert.pem', key: '/etc/key.pem' });
  assert.equal(config.department[0]?.policy, '/etc/mailgate/policies/d.toml');
});

test('the returned config is deep-frozen', () => {
  const config = loadConfigFile(exampleFile, {});
  assert.ok(Object.isFrozen(config) && Object.isFrozen(config.smtp.listen) && Object.isFrozen(config.alias[2]?.outgoing));
  assert.throws(() => {
    (config.smtp as { max_message_size: number }).max_message_size = 1;
  }, TypeError);
});

test('an unreadable file is a ConfigError naming it', () => {
  assert.throws(
    () => loadConfigFile('/nonexistent/mailgate.toml', {}),
    (err: unknown) => {
      return err instanceof ConfigError && err.problems[0]?.file === '/nonexistent/mailgate.toml' && /ENOENT/.test(err.message);
    },
  );
});

test('the JSON schema describes the file, alias properties included', () => {
  const schema = configJsonSchema() as { properties: Record<string, { items?: { properties?: Record<string, unknown> } }> };
  JSON.stringify(schema);
  assert.ok(schema.properties.smtp);
  const alias = schema.properties.alias?.items?.properties ?? {};
  for (const key of ['name', 'address', 'department', 'status', 'default', 'automatic_bcc', 'send_mail_to', 'redirection_addresses', 'incoming', 'outgoing']) {
    assert.ok(key in alias, key);
  }
});

test('password hashes verify in constant time and are accepted by the schema', () => {
  const hash = hashPassword('correct horse');
  assert.match(hash, /^scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
  assert.equal(verifyPassword('correct horse', hash), true);
  assert.equal(verifyPassword('wrong', hash), false);
  assert.equal(verifyPassword('correct horse', 'scrypt$3$8$1$AAAA$AAAA'), false);
  const config = load(toml('[[smtp.user]]', 'name = "u"', `password_hash = "${hash}"`));
  assert.equal(config.smtp.user[0]?.password_hash, hash);
});

test('outbound tables: submission, queue and relay are checked at the offending key', async (t) => {
  const hash = hashPassword('pw');
  await t.test('a submission user may only send as aliases that exist', () => {
    const p = oneProblem(
      toml(
        '[[alias]]',
        'name = "support"',
        'address = "support@example.com"',
        '[submission.auth]',
        'allow_insecure_on_loopback = true',
        '[[submission.user]]',
        'name = "helpdesk"',
        `password_hash = "${hash}"`,
        'send_as = ["suport"] # <-',
      ),
      'submission.user[0].send_as[0]',
    );
    assert.match(p.message, /"\*" or the name of an alias: "support"/);
  });
  await t.test('submission users without any certificate or the loopback exception could never log in', () => {
    const p = oneProblem(toml('[[submission.user]] # <-', 'name = "helpdesk"', `password_hash = "${hash}"`, 'send_as = ["*"]'), 'submission.tls');
    assert.match(p.message, /AUTH, which is never offered without TLS/);
  });
  await t.test('a relay URL with credentials in it is refused, pointing at user and password', () => {
    const p = oneProblem(toml('[[relay]]', 'name = "internal"', 'domains = ["example.com"]', 'to = "smtp://me:secret@mail.internal:25" # <-'), 'relay[0].to');
    assert.match(p.message, /no user or password in it/);
    assert.doesNotMatch(JSON.stringify(p), /secret/, 'the password is not echoed');
  });
  await t.test('a relay with nothing to forward, or forwarding an unknown alias', () => {
    oneProblem(toml('[[relay]] # <-', 'name = "internal"', 'to = "smtp://mail.internal"'), 'relay[0].domains');
    const p = oneProblem(toml('[[relay]]', 'name = "internal"', 'aliases = ["nobody"] # <-', 'to = "smtp://mail.internal"'), 'relay[0].aliases[0]');
    assert.match(p.message, /an \[\[alias\]\]/);
  });
  await t.test('relay URL defaults: port 25 for smtp://, 465 and TLS on connect for smtps://', () => {
    const c = load(
      toml(
        '[[relay]]',
        'name = "a"',
        'domains = ["a.example"]',
        'to = "smtp://mail.internal"',
        '[[relay]]',
        'name = "b"',
        'domains = ["b.example"]',
        'to = "smtps://mail.internal"',
      ),
    );
    assert.deepEqual(
      c.relay.map((r) => r.target),
      [
        { host: 'mail.internal', port: 25, implicitTls: false },
        { host: 'mail.internal', port: 465, implicitTls: true },
      ],
    );
  });
  await t.test('outgoing oauth2 needs an app, ESMTP, and the same app as incoming', () => {
    const app = [
      '[[oauth_app]]',
      'name = "contoso"',
      'provider = "microsoft365"',
      'tenant_id = "t"',
      'client_id = "c"',
      'client_secret = "s"',
      'flow = "client_credentials"',
      '[[oauth_app]]',
      'name = "other"',
      'provider = "microsoft365"',
      'tenant_id = "t"',
      'client_id = "c"',
      'client_secret = "s"',
      'flow = "client_credentials"',
    ];
    const p = oneProblem(
      toml(
        ...app,
        '[[alias]]',
        'name = "a"',
        'address = "a@example.com"',
        '[alias.incoming]',
        'host = "imap.example.com"',
        'user = "a"',
        'oauth2 = "contoso"',
        '[alias.outgoing]',
        'type = "esmtp"',
        'host = "smtp.example.com"',
        'user = "a"',
        'oauth2 = "other" # <-',
      ),
      'alias[0].outgoing.oauth2',
    );
    assert.match(p.message, /the same OAuth app as incoming \("contoso"\)/);
    const smtpOnly = problemsOf(
      toml(...app, '[[alias]]', 'name = "a"', 'address = "a@example.com"', '[alias.outgoing]', 'host = "smtp.example.com"', 'user = "a"', 'oauth2 = "contoso"'),
    );
    assert.ok(
      smtpOnly.some((q) => q.key === 'alias[0].outgoing.oauth2' && /set type = "esmtp"/.test(q.message)),
      smtpOnly.map((q) => q.message).join('\n'),
    );
  });
  await t.test('queue defaults follow established MTAs: first retry in minutes, give up after two days', () => {
    const c = load('');
    assert.equal(c.queue.retry_intervals[0], 300);
    assert.equal(c.queue.give_up_after, 2 * 24 * 3600);
    assert.deepEqual(c.submission.listen, ['127.0.0.1:2587']);
  });
});

test('secrets may wait: with secrets "deferred" an unset ${VAR} in a secret key is listed, not an error, until a command requires it', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const text = toml(
    '[[smtp.user]]',
    'name = "relay"',
    'password_hash = "${HASH}"  # <-',
    '[[oauth_app]]',
    'name = "contoso"',
    'provider = "microsoft365"',
    'tenant_id = "t"',
    'client_id = "c"',
    'client_secret = "${OAUTH_SECRET}"',
    'flow = "client_credentials"',
    '[[alias]]',
    'name = "a"',
    'address = "a@example.com"',
    '[alias.outgoing]',
    'type = "esmtp"',
    'host = "smtp.example.com"',
    'user = "a"',
    'password = "pre-${PASSWORD}"',
  );
  await writeFile(path.join(dir, FILE), text);
  const loaded = resolveConfig({ cwd: dir, env: {}, secrets: 'deferred' });
  assert.deepEqual(
    loaded.unsetSecrets.map((p) => [p.line, p.key, p.message]),
    [
      [markedLine(text), 'smtp.user[0].password_hash', 'expected environment variable HASH to be set'],
      [markedLine(text) + 6, 'oauth_app[0].client_secret', 'expected environment variable OAUTH_SECRET to be set'],
      [markedLine(text) + 15, 'alias[0].outgoing.password', 'expected environment variable PASSWORD to be set'],
    ],
  );
  // What stands in is nothing anyone could use: the text as written, a hash of a password nobody knows.
  assert.equal(loaded.config.alias[0]?.outgoing?.password, 'pre-${PASSWORD}');
  assert.equal(loaded.config.oauth_app[0]?.client_secret, '${OAUTH_SECRET}');
  const hash = loaded.config.smtp.user[0]!.password_hash;
  assert.equal(verifyPassword('', hash) || verifyPassword('${HASH}', hash), false);

  assert.doesNotThrow(() => requireSecrets(loaded, ['alias[1]', 'relay']));
  assert.throws(() => requireSecrets(loaded, ['alias[0]']), {
    message: `${FILE}:${markedLine(text) + 15}: alias[0].outgoing.password: expected environment variable PASSWORD to be set`,
  });
  assert.throws(
    () => requireSecrets(loaded),
    (err) => err instanceof ConfigError && err.problems.length === 3,
  );
  // Required (the default, and what serve asks for): the same problems, from loading.
  assert.throws(
    () => resolveConfig({ cwd: dir, env: {} }),
    (err) => err instanceof ConfigError && err.problems.length === 3,
  );
  const set = resolveConfig({ cwd: dir, env: { HASH: hashPassword('pw'), OAUTH_SECRET: 's', PASSWORD: 'p' }, secrets: 'deferred' });
  assert.deepEqual([set.unsetSecrets, set.config.alias[0]?.outgoing?.password], [[], 'pre-p']);

  // Any other key must be set, whatever the command: its value is not a secret anyone would leave out.
  await writeFile(path.join(dir, FILE), toml('[smtp]', 'hostname = "${HOST}"'));
  assert.throws(() => resolveConfig({ cwd: dir, env: {}, secrets: 'deferred' }), {
    message: `${FILE}:2: smtp.hostname: expected environment variable HOST to be set`,
  });
});
