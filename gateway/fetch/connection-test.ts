/**
 * `mailgate aliases test NAME` (Cisco guide "Test Connection"; Enate's connectivity tests):
 * each step of reaching an alias's incoming mailbox (DNS, TCP, TLS, login, folder or STAT) and
 * its outgoing server (DNS, TCP, EHLO, STARTTLS, AUTH), with a diagnosis a mail admin can act on.
 * The login is the retriever's own (login.ts): the same credentials, the authorization identity
 * of a shared mailbox, a token from the alias's OAuth app. Runs from the CLI process; needs
 * neither the gateway nor the store (the caller supplies the token source).
 */
import { lookup } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import nodemailer from 'nodemailer';
import type { AliasConfig, IncomingServerConfig, OutgoingServerConfig } from '../config/schema.js';
import type { Pop3Client } from './pop3/client.js';
import { tlsOptionsFor } from './mailbox.js';
import { fetchFailureKind, fetchFailures, isCertificateCode } from './failures.js';
import { imapClient, loginDescription, mailboxCredentials, pop3Connect, pop3Login, pop3Security, type MailboxCredentials } from './login.js';
import type { TokenProvider } from '../oauth/tokens.js';

/** One step of the test. */
export interface ConnectionStep {
  /** `incoming` or `outgoing`. */
  server: 'incoming' | 'outgoing';
  /** `DNS`, `TCP`, `TLS`, `login`, `folder`, `STAT`, `EHLO`, `STARTTLS`, `AUTH`. */
  step: string;
  /** `pass`, `fail`, or `skip` (not needed by the settings, or an earlier step failed). */
  result: 'pass' | 'fail' | 'skip';
  /** What was found, or for a failure what to check. */
  detail: string;
}

/** Time allowed for each network step. */
const STEP_TIMEOUT_MS = 10_000;

/** What `testAliasConnection` needs besides the alias. */
export interface ConnectionTestOptions {
  /** Time allowed for each network step (default 10 s). */
  timeoutMs?: number;
  /** With `[alias.incoming] oauth2`: where the login gets its token, as the retriever would (gateway/oauth/store.ts aliasTokenProvider). */
  tokens?: TokenProvider | undefined;
  /** With `oauth2` and no TOKENS: why no token can be had here, said in the skipped login step. */
  noTokens?: string;
}

/** Runs every step for ALIAS; a failed step skips the ones that depend on it. */
export async function testAliasConnection(alias: AliasConfig, opts: ConnectionTestOptions = {}): Promise<ConnectionStep[]> {
  const timeoutMs = opts.timeoutMs ?? STEP_TIMEOUT_MS;
  const steps: ConnectionStep[] = [];
  if (alias.incoming) steps.push(...(await testIncoming(alias.incoming, timeoutMs, opts)));
  if (alias.outgoing) steps.push(...(await testOutgoing(alias.outgoing, timeoutMs)));
  return steps;
}

type Record = (step: string, result: ConnectionStep['result'], detail: string) => void;

function recorder(server: ConnectionStep['server'], steps: ConnectionStep[]): Record {
  return (step, result, detail) => void steps.push({ server, step, result, detail });
}

function skipRest(record: Record, names: string[], why = 'not tried: an earlier step failed'): void {
  for (const name of names) record(name, 'skip', why);
}

/** DNS then TCP; true when both passed. */
async function reach(record: Record, host: string, port: number, service: string, timeoutMs: number): Promise<boolean> {
  let address = host;
  if (net.isIP(host)) {
    record('DNS', 'pass', `${host} is an IP address`);
  } else {
    try {
      const found = await lookup(host, { all: true });
      address = found[0]!.address;
      record('DNS', 'pass', `${host} resolves to ${found.map((a) => a.address).join(', ')}`);
    } catch (err) {
      record('DNS', 'fail', `${host} does not resolve (${(err as { code?: string }).code ?? String(err)}): check the host name and this machine's resolver`);
      return false;
    }
  }
  const started = Date.now();
  const tcp = await new Promise<string | undefined>((resolve) => {
    const socket = net.connect({ host: address, port });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(`no answer from ${address}:${port} within ${timeoutMs / 1000} s: server unreachable (timeout), check the host, port and firewall`);
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(undefined);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(
        err.code === 'ECONNREFUSED'
          ? `connection to ${address}:${port} refused: nothing listens there; is the ${service} service running, and is the port right?`
          : `cannot connect to ${address}:${port} (${err.code ?? err.message}): server unreachable, check the network and firewall`,
      );
    });
  });
  if (tcp) record('TCP', 'fail', tcp);
  else record('TCP', 'pass', `connected to ${address}:${port} in ${Date.now() - started} ms`);
  return !tcp;
}

function tlsDescription(socket: tls.TLSSocket): string {
  const cert = socket.getPeerCertificate();
  const subject = cert?.subject?.CN ? `certificate for ${String(cert.subject.CN)}` : 'certificate';
  const issuer = cert?.issuer?.CN ? ` issued by ${String(cert.issuer.CN)}` : '';
  return `${socket.getProtocol() ?? 'TLS'}, ${subject}${issuer} trusted`;
}

function tlsFailure(err: unknown, hint: string): string {
  const e = err as { code?: string; reason?: string; message?: string };
  const said = e.reason ?? e.message?.split('\n')[0] ?? String(err);
  if (isCertificateCode(e.code)) {
    return `TLS certificate not trusted (${said}): install a valid certificate on the server, or trust its CA with ca_file`;
  }
  return `TLS negotiation failed (${said}): ${hint}`;
}

async function testIncoming(server: IncomingServerConfig, timeoutMs: number, opts: ConnectionTestOptions): Promise<ConnectionStep[]> {
  const steps: ConnectionStep[] = [];
  const record = recorder('incoming', steps);
  const service = server.type === 'imap' ? 'IMAP' : 'POP3';
  const later = server.type === 'imap' ? ['TLS', 'login', 'folder'] : ['TLS', 'login', 'STAT'];
  if (!(await reach(record, server.host, server.port, service, timeoutMs))) {
    skipRest(record, steps.some((s) => s.step === 'DNS' && s.result === 'fail') ? ['TCP', ...later] : later);
    return steps;
  }
  if (server.type === 'pop3') await testPop3(server, record, timeoutMs, opts);
  else await testImap(server, record, timeoutMs, opts);
  return steps;
}

/**
 * The retriever's credentials (login.ts), or undefined after recording why the login step
 * could not be tried: no token source here, or the token request failed (a wrong client
 * secret, revoked consent, an unreachable identity provider).
 */
async function credentials(server: IncomingServerConfig, record: Record, opts: ConnectionTestOptions): Promise<MailboxCredentials | undefined> {
  if (server.oauth2 !== undefined && !opts.tokens) {
    record('login', 'skip', opts.noTokens ?? `no token from oauth_app ${JSON.stringify(server.oauth2)} could be had here`);
    return undefined;
  }
  try {
    return await mailboxCredentials(server, opts.tokens);
  } catch (err) {
    const kind = fetchFailureKind(err);
    const mailbox = server.auth_identity ? `the shared mailbox ${JSON.stringify(server.auth_identity)}` : JSON.stringify(server.user ?? '');
    record(
      'login',
      'fail',
      `no OAuth2 token from oauth_app ${JSON.stringify(server.oauth2)} to open ${mailbox}: ${fetchFailures[kind].reason} (${(err as Error).message})`,
    );
    return undefined;
  }
}

/** A refused login, in words: for OAuth2 the token was had, so the mailbox's grant is what to check. */
function loginFailure(server: IncomingServerConfig, err: unknown): string {
  const kind = fetchFailureKind(err);
  const e = err as { responseText?: string; serverText?: string; message?: string };
  const said = e.responseText ?? e.serverText ?? e.message ?? String(err);
  if (server.oauth2 !== undefined && kind === 'auth') {
    return `the server refused the OAuth2 token for ${loginDescription(server)}: check that the app may open this mailbox (Exchange: IMAP.AccessAsApp or POP.AccessAsApp and mailbox permission for its service principal; delegated: the signed-in user's access) and that user names it (${said})`;
  }
  if (server.auth_identity && kind === 'auth') {
    return `${fetchFailures[kind].reason}, and that ${JSON.stringify(server.user ?? '')} may open the shared mailbox ${JSON.stringify(server.auth_identity)} (full access) (${said})`;
  }
  return `${fetchFailures[kind].reason} for ${loginDescription(server)} (${said})`;
}

async function testPop3(server: IncomingServerConfig, record: Record, timeoutMs: number, opts: ConnectionTestOptions): Promise<void> {
  const security = pop3Security(server);
  let client: Pop3Client;
  try {
    client = await pop3Connect(server, { connectTimeoutMs: timeoutMs, commandTimeoutMs: timeoutMs });
  } catch (err) {
    record('TLS', 'fail', `${fetchFailures[fetchFailureKind(err)].reason}: ${(err as Error).message}`);
    return skipRest(record, ['login', 'STAT']);
  }
  try {
    record(
      'TLS',
      security === 'none' ? 'skip' : 'pass',
      security === 'none'
        ? 'security = "none": clear text (loopback, or allow_plaintext)'
        : `${security === 'tls' ? 'TLS on connect' : 'STLS'}, certificate trusted`,
    );
    const creds = await credentials(server, record, opts);
    if (!creds) return skipRest(record, ['STAT']);
    try {
      await pop3Login(client, creds);
      record('login', 'pass', `logged in as ${loginDescription(server)}`);
    } catch (err) {
      record('login', 'fail', loginFailure(server, err));
      return skipRest(record, ['STAT']);
    }
    try {
      const stat = await client.stat();
      record('STAT', 'pass', `${stat.count} message(s), ${stat.size} bytes waiting`);
    } catch (err) {
      record('STAT', 'fail', `${fetchFailures[fetchFailureKind(err)].reason} (${(err as Error).message})`);
    }
  } finally {
    await client.quit().catch(() => client.close());
  }
}

async function testImap(server: IncomingServerConfig, record: Record, timeoutMs: number, opts: ConnectionTestOptions): Promise<void> {
  const tlsOnConnect = server.security === 'tls' || (server.security === 'auto' && server.port === 993);
  const tlsResult = await imapTlsProbe(server, tlsOnConnect, timeoutMs);
  record('TLS', tlsResult.result, tlsResult.detail);
  if (tlsResult.result === 'fail') return skipRest(record, ['login', 'folder']);
  const creds = await credentials(server, record, opts);
  if (!creds) return skipRest(record, ['folder']);
  const client = imapClient(server, creds, { disableAutoIdle: true, connectionTimeout: timeoutMs, greetingTimeout: timeoutMs });
  try {
    try {
      await client.connect();
      record('login', 'pass', `logged in as ${loginDescription(server)}`);
    } catch (err) {
      record('login', 'fail', loginFailure(server, err));
      return skipRest(record, ['folder']);
    }
    try {
      // EXAMINE: the test looks without changing flags; the retriever SELECTs the same folder.
      const mailbox = await client.mailboxOpen(server.folder, { readOnly: true });
      record('folder', 'pass', `${server.folder}: ${mailbox.exists} message(s)`);
    } catch (err) {
      const said = (err as { responseText?: string }).responseText ?? (err as Error).message;
      record('folder', 'fail', `${fetchFailures[fetchFailureKind(err)].reason}: ${JSON.stringify(server.folder)} (${said})`);
    }
  } finally {
    await client.logout().catch(() => client.close());
  }
}

/**
 * TLS on its own, before logging in, so a certificate problem is named as such: TLS on connect,
 * or the greeting, CAPABILITY and STARTTLS (RFC 9051 section 6.2.1) then the handshake.
 */
function imapTlsProbe(server: IncomingServerConfig, tlsOnConnect: boolean, timeoutMs: number): Promise<{ result: ConnectionStep['result']; detail: string }> {
  const options = { host: server.host, ...(net.isIP(server.host) ? {} : { servername: server.host }), ...tlsOptionsFor(server) };
  const hint = 'check the security setting (TLS on connect is usually port 993, STARTTLS 143)';
  if (server.security === 'none') return Promise.resolve({ result: 'skip', detail: 'security = "none": clear text (loopback, or allow_plaintext)' });
  return new Promise((resolve) => {
    let done = false;
    let socket: net.Socket;
    const finish = (result: ConnectionStep['result'], detail: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ result, detail });
    };
    const timer = setTimeout(() => finish('fail', `no TLS within ${timeoutMs / 1000} s: ${hint}`), timeoutMs);
    const upgrade = (raw?: net.Socket) => {
      const secure = tls.connect({ ...options, ...(raw ? { socket: raw } : { port: server.port }) });
      socket = secure;
      secure.once('secureConnect', () => finish('pass', `${raw ? 'STARTTLS' : 'TLS on connect'}, ${tlsDescription(secure)}`));
      secure.once('error', (err) => finish('fail', tlsFailure(err, hint)));
    };
    if (tlsOnConnect) return upgrade();
    socket = net.connect({ host: server.host, port: server.port });
    socket.once('error', (err) => finish('fail', `connection lost before TLS (${err.message})`));
    let buffered = '';
    let capabilities = '';
    let phase: 'greeting' | 'capability' | 'starttls' = 'greeting';
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      for (let nl = buffered.indexOf('\r\n'); nl >= 0; nl = buffered.indexOf('\r\n')) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 2);
        if (phase === 'greeting') {
          if (!/^\* (OK|PREAUTH)/i.test(line)) return finish('fail', `unexpected IMAP greeting "${line.slice(0, 100)}": is this an IMAP port?`);
          phase = 'capability';
          socket.write('T1 CAPABILITY\r\n');
        } else if (phase === 'capability' && /^T1 /.test(line)) {
          if (!/STARTTLS/i.test(capabilities)) {
            if (server.security === 'auto') return finish('skip', 'the server offers no STARTTLS; security = "auto" goes on in clear text');
            return finish('fail', 'the server offers no STARTTLS: use security = "tls" on the TLS port (993), or fix the server');
          }
          phase = 'starttls';
          socket.write('T2 STARTTLS\r\n');
        } else if (phase === 'capability' && /^\* CAPABILITY /i.test(line)) {
          capabilities += line;
        } else if (phase === 'starttls' && /^T2 /.test(line)) {
          if (!/^T2 OK/i.test(line)) return finish('fail', `STARTTLS refused: "${line.slice(0, 100)}"`);
          socket.off('data', onData);
          socket.removeAllListeners('error');
          return upgrade(socket);
        }
      }
    };
    socket.on('data', onData);
  });
}

async function testOutgoing(server: OutgoingServerConfig, timeoutMs: number): Promise<ConnectionStep[]> {
  const steps: ConnectionStep[] = [];
  const record = recorder('outgoing', steps);
  if (!(await reach(record, server.host, server.port, 'SMTP', timeoutMs))) {
    skipRest(record, steps.some((s) => s.step === 'DNS' && s.result === 'fail') ? ['TCP', 'EHLO', 'STARTTLS', 'AUTH'] : ['EHLO', 'STARTTLS', 'AUTH']);
    return steps;
  }
  // Cisco guide: "SSL" with port 587 (the default with ssl) is STARTTLS; 465 is TLS on connect.
  const implicitTls = server.ssl && server.port === 465;
  // XOAUTH2 needs a token from the app (and the running gateway's cache): not tried here.
  const auth = server.type === 'esmtp' && server.user !== undefined && server.oauth2 === undefined;
  const transport = nodemailer.createTransport({
    host: server.host,
    port: server.port,
    secure: implicitTls,
    requireTLS: server.ssl && !implicitTls,
    ignoreTLS: !server.ssl,
    ...(server.ca_file ? { tls: { ca: readFileSync(server.ca_file, 'utf8') } } : {}),
    ...(auth ? { auth: { user: server.user!, pass: server.password ?? '' } } : {}),
    connectionTimeout: timeoutMs,
    greetingTimeout: timeoutMs,
    socketTimeout: timeoutMs,
  });
  const tlsSkip = 'ssl = false: no TLS';
  const authSkip =
    server.oauth2 !== undefined
      ? `OAuth2 (app "${server.oauth2}") is not tested by this command yet: see the queue (mailgate queue list) for sending errors`
      : server.type === 'esmtp'
        ? 'no user configured: no AUTH'
        : 'type = "smtp": no AUTH';
  try {
    await transport.verify();
    record('EHLO', 'pass', `${server.host}:${server.port} answered EHLO`);
    record(
      'STARTTLS',
      server.ssl ? 'pass' : 'skip',
      server.ssl ? (implicitTls ? 'TLS on connect, certificate trusted' : 'STARTTLS, certificate trusted') : tlsSkip,
    );
    record('AUTH', auth ? 'pass' : 'skip', auth ? `authenticated as ${JSON.stringify(server.user)}` : authSkip);
  } catch (err) {
    const e = err as { code?: string; message?: string; response?: string };
    const said = (e.response ?? e.message ?? String(err)).split('\n')[0];
    const certProblem = /certificate|self[- ]signed|CERT_|unable to verify/i.test(e.message ?? '');
    if (e.code === 'EAUTH' || e.code === 'ENOAUTH') {
      record('EHLO', 'pass', `${server.host}:${server.port} answered EHLO`);
      record('STARTTLS', server.ssl ? 'pass' : 'skip', server.ssl ? 'TLS established' : tlsSkip);
      record('AUTH', 'fail', `authentication failed: check user and password (${said})`);
    } else if (e.code === 'ETLS' || certProblem) {
      record('EHLO', implicitTls ? 'skip' : 'pass', implicitTls ? 'not reached: TLS on connect failed' : `${server.host}:${server.port} answered EHLO`);
      record(
        'STARTTLS',
        'fail',
        certProblem
          ? `TLS certificate not trusted (${said}): install a valid certificate on the server`
          : `TLS failed (${said}): does the server offer STARTTLS on this port? (ssl with port 465 is TLS on connect)`,
      );
      skipRest(record, ['AUTH']);
    } else {
      record('EHLO', 'fail', `no proper SMTP answer (${e.code ?? 'error'}: ${said}): is this an SMTP port, and is the service running?`);
      skipRest(record, ['STARTTLS', 'AUTH']);
    }
  } finally {
    transport.close();
  }
  return steps;
}
