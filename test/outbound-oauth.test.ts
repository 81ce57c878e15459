import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request } from 'node:https';
import { startTestGateway } from './helpers/gateway.js';
import { startUpstream } from './helpers/upstream.js';
import { startOAuthServer, type TestOAuthServer } from './helpers/oauth-server.js';
import { submissionToml, submit, waitDelivered } from './helpers/outbound.js';
import { fixture } from './helpers/paths.js';

/** What the identity provider says about a token (as Office 365's SMTP server would check it). */
function introspect(idp: TestOAuthServer, token: string): Promise<{ active: boolean; username?: string }> {
  return new Promise((resolve, reject) => {
    const req = request(idp.introspectionUrl, { method: 'POST', ca: idp.caPem, headers: { 'content-type': 'application/x-www-form-urlencoded' } }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve(JSON.parse(body) as { active: boolean; username?: string }));
    });
    req.on('error', reject);
    req.end(new URLSearchParams({ token }).toString());
  });
}

test('an ESMTP alias with oauth2 authenticates with XOAUTH2 using a token from its OAuth app', async (t) => {
  const idp = await startOAuthServer({ appUser: 'agent' });
  const upstream = await startUpstream({ xoauth2: async (user, token) => (await introspect(idp, token)).active && user === 'agent@example.com' });
  const saved = process.env.MAILGATE_SECRET_KEY;
  process.env.MAILGATE_SECRET_KEY = randomBytes(32).toString('hex');
  const q = JSON.stringify;
  const gw = await startTestGateway(`
[[oauth_app]]
name = "contoso"
provider = "microsoft365"
tenant_id = ${q(idp.tenant)}
client_id = ${q(idp.clientId)}
client_secret = ${q(idp.clientSecret)}
flow = "client_credentials"
authority = ${q(idp.authority)}
known_authorities = [${q(idp.host)}]
authority_metadata = ${q(idp.authorityMetadata)}
cloud_discovery_metadata = ${q(idp.cloudDiscoveryMetadata)}
ca_file = ${q(fixture('tls', 'cert.pem'))}

[[alias]]
name = "agent"
address = "agent@example.com"
[alias.outgoing]
type = "esmtp"
host = "127.0.0.1"
port = ${upstream.port}
user = "agent@example.com"
oauth2 = "contoso"
${submissionToml()}`);
  t.after(async () => {
    await gw.cleanup();
    await upstream.close();
    await idp.stop();
    if (saved === undefined) delete process.env.MAILGATE_SECRET_KEY;
    else process.env.MAILGATE_SECRET_KEY = saved;
  });
  const id = await submit(gw.gateway.submission!.addresses[0]!.port, {
    from: 'agent@example.com',
    to: 'customer@example.org',
    subject: 'Re: order',
    text: 'hello\r\n',
  });
  const meta = await waitDelivered(gw.store, id);
  assert.equal(meta.delivery.status, 'delivered');
  assert.match(meta.delivery.recipients[0]!.route ?? '', /ESMTP as agent@example\.com, OAuth2/);
  const [got] = await upstream.waitFor(1);
  assert.equal(got!.user, 'agent@example.com');
  assert.deepEqual(
    upstream.authAttempts.map((a) => [a.method, a.ok]),
    [['XOAUTH2', true]],
  );
  assert.ok(
    idp.requests.some((r) => r.grantType === 'client_credentials' && r.outcome === 'ok'),
    'the token came from the OAuth app',
  );
});
