import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ensureDovecot, startDovecot } from './helpers/dovecot.js';
import { runCli } from './helpers/gateway.js';
import { fixture, tempDir } from './helpers/paths.js';

test('aliases test on an OAuth2 alias checks what it can and says the login was not tested (exit 1)', async (t) => {
  await ensureDovecot();
  const dovecot = await startDovecot();
  t.after(() => dovecot.stop());
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(
    configFile,
    [
      `data_dir = ${JSON.stringify(path.join(dir, 'data'))}`,
      '[[oauth_app]]', 'name = "m365"', 'provider = "microsoft365"', 'tenant_id = "t"', 'client_id = "c"', 'client_secret = "s"', 'flow = "client_credentials"',
      '[[alias]]', 'name = "shared"', 'address = "shared@example.com"',
      '[alias.incoming]', 'type = "imap"', 'host = "127.0.0.1"', `port = ${dovecot.imapPort}`, 'security = "starttls"',
      `ca_file = ${JSON.stringify(fixture('tls', 'cert.pem'))}`, 'user = "agent"', 'oauth2 = "m365"',
    ].join('\n'),
  );
  const r = await runCli(['aliases', 'test', 'shared', '--config', configFile]);
  assert.equal(r.code, 1, r.stderr);
  const out = r.stdout.toString();
  assert.match(out, /PASS\s+DNS/);
  assert.match(out, /PASS\s+TCP/);
  assert.match(out, /PASS\s+TLS/);
  assert.match(out, /SKIP\s+login\s+OAuth2 login \(app "m365"\) is not tested/);
  assert.match(out, /not tested: incoming login/);
});
