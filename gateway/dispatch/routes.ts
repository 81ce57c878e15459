/**
 * Which server a queued message goes through (Cisco guide, "Aliases"): the alias's own
 * outgoing server; the partition's default SMTP settings when the alias has none or no longer
 * exists; for relayed inbound mail, the `[[relay]]` server. Resolved again at every attempt,
 * so a message queued while its alias existed still goes out after IT removed the alias.
 */
import { readFileSync } from 'node:fs';
import { fingerprint } from '../../lib/fingerprint.js';
import type SMTPPool from 'nodemailer/lib/smtp-pool';
import type { AliasConfig, Config, DefaultSmtpConfig, OutgoingServerConfig, RelayConfig } from '../config/schema.js';
import { quarantineSettings } from '../quarantine-forward/settings.js';

/** How nodemailer reaches one server, with the name admins see in the queue and the logs. */
export interface Route {
  /** Same key, same pooled transport. Derived from the options, secrets included, but hashed. */
  readonly key: string;
  /** E.g. `alias "support" via smtp.example.com:587 (ESMTP, STARTTLS)`. */
  readonly name: string;
  readonly options: SMTPPool.Options;
  /** The alias whose OAuth app provides XOAUTH2 tokens for this route. */
  readonly oauthAlias?: AliasConfig;
  /** `use_smtp = "when_auth_fails"`: the same server without authentication, tried when authentication fails. */
  readonly withoutAuth?: Route;
  /** `[alias.outgoing] dsn_notify`: the NOTIFY values asked for on each RCPT TO (RFC 3461), when the server offers DSN. */
  readonly dsnNotify?: readonly string[];
}

/** A route, or why there is none (the message waits, held, until an admin acts). */
export type Routing = { route: Route; held?: undefined } | { route?: undefined; held: string };

/** The server fields the alias's `[alias.outgoing]` and the partition's `[partition.default_smtp]` share. */
interface SmtpServer {
  protocol: 'smtp' | 'esmtp';
  host: string;
  port: number;
  ssl: boolean;
  user?: string | undefined;
  password?: string | undefined;
  oauth2?: string | undefined;
  ca_file?: string | undefined;
  dsn_notify?: readonly string[] | undefined;
}

const fromOutgoing = (o: OutgoingServerConfig): SmtpServer => ({ ...o, protocol: o.type });
const fromDefault = (d: DefaultSmtpConfig & { server: string }): SmtpServer => ({ ...d, host: d.server });

// The configuration is frozen for the life of the process: a route (its CA file read, its key
// hashed) is worked out once per alias or relay, not at every attempt.
const memo = new WeakMap<Config, Map<string, Routing>>();
function memoized(config: Config, key: string, make: () => Routing): Routing {
  let routes = memo.get(config);
  if (!routes) memo.set(config, (routes = new Map()));
  let routing = routes.get(key);
  if (!routing) routes.set(key, (routing = make()));
  return routing;
}

/** Where mail from alias `aliasName` goes out now. */
export function outboundRouting(config: Config, aliasName: string | undefined): Routing {
  return memoized(config, `alias\0${aliasName ?? ''}`, () => outboundRoute(config, aliasName));
}

/** Where recipients forwarded through `[[relay]] name` go now. */
export function relayRouting(config: Config, relayName: string): Routing {
  return memoized(config, `relay\0${relayName}`, () => {
    const relay = config.relay.find((r) => r.name === relayName);
    if (!relay) return { held: `[[relay]] "${relayName}" no longer exists in the configuration` };
    return { route: relayRoute(config, relay) };
  });
}

/**
 * Where a forward to the quarantine mailbox of mail for `aliasName` goes now: the `[quarantine]`
 * server (or the alias's `[alias.quarantine]` one), else the partition's default SMTP
 * (PCEmail: the quarantine SMTP fields default to the Email section's).
 */
export function quarantineRouting(config: Config, aliasName: string | undefined): Routing {
  return memoized(config, `quarantine\0${aliasName ?? ''}`, () => {
    const server = quarantineSettings(config, aliasName).server;
    const owner = aliasName === undefined ? 'quarantine' : `quarantine of alias "${aliasName}"`;
    // The settings carry the login only with its password: a login means ESMTP.
    if (server) return { route: smtpRoute(config, owner, { ...server, protocol: server.user !== undefined ? 'esmtp' : 'smtp' }, false) };
    const fallback = config.partition.default_smtp;
    if (fallback?.server !== undefined)
      return { route: smtpRoute(config, `${owner}: partition default SMTP`, fromDefault({ ...fallback, server: fallback.server }), false) };
    return {
      held: `${aliasName === undefined ? '[quarantine]' : `[quarantine] (and [alias.quarantine] of alias "${aliasName}")`} sets no server and [partition.default_smtp] sets none either`,
    };
  });
}

function outboundRoute(config: Config, aliasName: string | undefined): Routing {
  const alias = aliasName === undefined ? undefined : config.alias.find((a) => a.name === aliasName);
  if (alias?.outgoing)
    return { route: smtpRoute(config, `alias "${alias.name}"`, fromOutgoing(alias.outgoing), alias.outgoing.use_smtp === 'when_auth_fails', alias) };
  const fallback = config.partition.default_smtp;
  if (fallback?.server !== undefined) {
    const why = alias
      ? `alias "${alias.name}" (no [alias.outgoing]): partition default SMTP`
      : aliasName === undefined
        ? 'partition default SMTP'
        : `deleted alias "${aliasName}": partition default SMTP`;
    return { route: smtpRoute(config, why, fromDefault({ ...fallback, server: fallback.server }), false) };
  }
  if (alias) return { held: `alias "${alias.name}" has no [alias.outgoing] server and [partition.default_smtp] sets no server` };
  if (aliasName === undefined) return { held: 'no alias sends this message and [partition.default_smtp] sets no server' };
  // Cisco guide: "If these settings are not configured, replies from deleted aliases are not sent out."
  return { held: `alias "${aliasName}" no longer exists and [partition.default_smtp] sets no server, so mail from it cannot be sent` };
}

function common(config: Config): SMTPPool.Options {
  const ms = config.queue.timeout * 1000;
  return {
    name: config.smtp.hostname,
    pool: true,
    maxConnections: config.queue.connections_per_route,
    maxMessages: 100,
    ...(config.queue.rate_per_minute_per_route > 0 ? { rateDelta: 60_000, rateLimit: config.queue.rate_per_minute_per_route } : {}),
    connectionTimeout: ms,
    greetingTimeout: ms,
    socketTimeout: ms,
    logger: false,
    debug: false,
  };
}

/**
 * TLS as the Cisco "SSL" flag means it: verified TLS, on connect for port 465 and by required
 * STARTTLS elsewhere (587 is the guide's SSL port). Without the flag, STARTTLS is used where
 * offered but not verified, as Postfix's `may` level: encryption against a passive listener,
 * never a reason not to deliver. A `ca_file` always means "verify against this".
 */
function tlsOptions(verified: boolean, implicit: boolean, caFile: string | undefined): SMTPPool.Options {
  const ca = caFile ? readFileSync(caFile, 'utf8') : undefined;
  const verify = verified || ca !== undefined;
  return {
    secure: implicit,
    requireTLS: verified && !implicit,
    tls: { rejectUnauthorized: verify, ...(ca ? { ca } : {}) },
  };
}

function smtpRoute(config: Config, owner: string, s: SmtpServer, fallBackToSmtp: boolean, alias?: AliasConfig): Route {
  const implicit = s.ssl && s.port === 465;
  const base = { ...common(config), host: s.host, port: s.port, ...tlsOptions(s.ssl, implicit, s.ca_file) };
  const mode = implicit ? 'TLS' : s.ssl ? 'STARTTLS' : 'STARTTLS if offered';
  const where = `${s.host}:${s.port}`;
  // A per-message parameter, not a connection option: routes that differ only in it share a pool.
  const dsn = s.dsn_notify ? { dsnNotify: s.dsn_notify } : {};
  const plain = (label: string): Route => ({ key: fingerprint(base), name: `${owner} via ${where} (${label}, ${mode})`, options: base, ...dsn });
  if (s.protocol === 'smtp') return plain('SMTP');
  let auth: SMTPPool.Options['auth'] | undefined;
  if (s.oauth2 !== undefined && s.user) auth = { type: 'OAuth2', user: s.user };
  else if (s.user !== undefined && s.password !== undefined) auth = { user: s.user, pass: s.password };
  if (!auth) return plain('ESMTP without credentials');
  const options = { ...base, auth };
  return {
    key: fingerprint({ ...options, oauth: s.oauth2 ? alias?.name : undefined }),
    name: `${owner} via ${where} (ESMTP as ${s.user}${s.oauth2 ? ', OAuth2' : ''}, ${mode})`,
    options,
    ...(s.oauth2 && alias ? { oauthAlias: alias } : {}),
    ...dsn,
    ...(fallBackToSmtp ? { withoutAuth: plain('SMTP, after ESMTP authentication failed') } : {}),
  };
}

function relayRoute(config: Config, relay: RelayConfig): Route {
  const t = relay.target;
  const options: SMTPPool.Options = {
    ...common(config),
    host: t.host,
    port: t.port,
    ...tlsOptions(t.implicitTls || relay.require_tls, t.implicitTls, relay.ca_file),
    ...(relay.user !== undefined && relay.password !== undefined ? { auth: { user: relay.user, pass: relay.password } } : {}),
  };
  return { key: fingerprint(options), name: `relay "${relay.name}" via ${t.host}:${t.port}`, options };
}
