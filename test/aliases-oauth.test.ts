import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ensureDovecot, startDovecot, type TestDovecot } from './helpers/dovecot.js';
import { startOAuthServer, type TestOAuthServer } from './helpers/oauth-server.js';
import { runCli } from './helpers/gateway.js';
import { fixture, tempDir } from './helpers/paths.js';
import { testStorageToml } from './helpers/test-store.js';

let idp: TestOAuthServer;
let dovecot: TestDovecot;

before(async () => {
  await ensureDovecot();
  // App-only tokens open `agent`'s mailbox; Dovecot checks them at the local endpoint (RECIPES.md, OAuth2).
  idp = await startOAuthServer({ appUser: 'agent' });
  dovecot = await startDovecot({ oauth: { introspectionUrl: idp.introspectionUrl, caFile: fixture('tls', 'cert.pem') } });
});
after(async () => {
  await dovecot?.stop();
  await idp?.stop();
});

const q = JSON.stringify;

/** A config whose `[[oauth_app]]` points at the local endpoint, and one alias per server type logging in with it. */
async function writeConfig(dir: string, clientSecret: string): Promise<string> {
  const alias = (name: string, type: 'imap' | 'pop3', port: number) => [
    '[[alias]]',
    `name = ${q(name)}`,
    `address = "${name}@example.com"`,
    '[alias.incoming]',
    `type = ${q(type)}`,
    'host = "127.0.0.1"',
    `port = ${port}`,
    'security = "starttls"',
    `ca_file = ${q(fixture('tls', 'cert.pem'))}`,
    'user = "agent"',
    'oauth2 = "m365"',
  ];
  const file = path.join(dir, 'mailgate.toml');
  await writeFile(
    file,
    [
      `data_dir = ${q(path.join(dir, 'data'))}`,
      '[[oauth_app]]',
      'name = "m365"',
      'provider = "microsoft365"',
      `tenant_id = ${q(idp.tenant)}`,
      `client_id = ${q(idp.clientId)}`,
      `client_secret = ${q(clientSecret)}`,
      'flow = "client_credentials"',
      `authority = ${q(idp.authority)}`,
      `known_authorities = [${q(idp.host)}]`,
      `authority_metadata = ${q(idp.authorityMetadata)}`,
      `cloud_discovery_metadata = ${q(idp.cloudDiscoveryMetadata)}`,
      `ca_file = ${q(fixture('tls', 'cert.pem'))}`,
      ...alias('shared', 'imap', dovecot.imapPort),
      ...alias('sharedpop', 'pop3', dovecot.pop3Port),
    ].join('\n') + testStorageToml(path.join(dir, 'data')),
  );
  return file;
}

interface Report {
  ok: boolean;
  steps: { server: string; step: string; result: string; detail: string }[];
}

test('aliases test on an OAuth2 alias: a token from the app, the XOAUTH2 login and the folder (IMAP) or STAT (POP3), as the retriever does them', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const configFile = await writeConfig(dir, idp.clientSecret);
  await dovecot.deliver('agent', 'From: c@example.net\r\nTo: agent@example.com\r\nSubject: hi\r\nMessage-ID: <oauth-test@example.net>\r\n\r\nhello\r\n');
  const before = idp.requests.length;

  const r = await runCli(['aliases', 'test', 'shared', '--config', configFile]);
  const out = r.stdout.toString();
  assert.equal(r.code, 0, out + r.stderr);
  for (const step of ['DNS', 'TCP', 'TLS']) assert.match(out, new RegExp(`PASS\\s+${step}\\b`));
  assert.match(out, /PASS\s+login\s+logged in as "agent" with an OAuth2 token from oauth_app "m365"/);
  assert.match(out, /PASS\s+folder\s+INBOX: 1 message\(s\)/);
  assert.match(out, /all steps passed/);
  assert.deepEqual(
    idp.requests.slice(before).map((x) => `${x.grantType} ${x.outcome}`),
    ['client_credentials ok'],
    "the token came from the app's token endpoint",
  );
  assert.match(await dovecot.readLog(), /xoauth2|oauthbearer/i);

  const pop = await runCli(['aliases', 'test', 'sharedpop', '--config', configFile]);
  assert.equal(pop.code, 0, pop.stdout.toString() + pop.stderr);
  assert.match(pop.stdout.toString(), /PASS\s+login\s+logged in as "agent" with an OAuth2 token from oauth_app "m365" \(SASL XOAUTH2\)/);
  assert.match(pop.stdout.toString(), /PASS\s+STAT\s+1 message\(s\)/);
});

test('aliases test on an OAuth2 alias with a wrong client secret: the login step fails saying the secret was rejected', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const configFile = await writeConfig(dir, 'not-the-secret');
  const r = await runCli(['aliases', 'test', 'shared', '--json', '--config', configFile]);
  assert.equal(r.code, 1, r.stderr);
  const report = JSON.parse(r.stdout.toString()) as Report;
  assert.equal(report.ok, false);
  assert.equal(report.steps.find((s) => s.step === 'TLS')?.result, 'pass');
  const login = report.steps.find((s) => s.step === 'login');
  assert.equal(login?.result, 'fail');
  assert.match(login?.detail ?? '', /client secret rejected: the oauth_app client_secret is wrong or expired; renew it in Entra ID and in the configuration/);
  assert.match(login?.detail ?? '', /AADSTS7000215/);
  assert.equal(report.steps.find((s) => s.step === 'folder')?.result, 'skip');

  const text = await runCli(['aliases', 'test', 'shared', '--config', configFile]);
  assert.match(text.stdout.toString(), /FAIL\s+login\s+no OAuth2 token from oauth_app "m365" to open "agent": client secret rejected/);
  assert.match(text.stdout.toString(), /failed: incoming login/);
});
