/**
 * The shape of `mailgate.toml`: every key, its type and its default. Defaults that depend on
 * other keys (ports, `accept_all`, `reverse_dns`, `hostname`) are filled in by transforms, so the
 * inferred output types below are what the rest of mailgate sees. Relative paths are resolved
 * later, in load.ts, against the config file's directory.
 *
 * Custom error messages are written as what was expected ("an email address"): loadToml prints
 * them as `KEY: expected MESSAGE, got GIVEN`.
 */
import os from 'node:os';
import { z } from 'zod';
import { isLoopbackAddress, parseCidr } from '../../lib/net.js';
import { domain, email, host, is, listenAddress as listenAddressOf, passwordHash, port, positive, text, tlsFiles } from './fields.js';
import { invariantIssues } from './invariants.js';
import { incoming, retrieverSchema } from './incoming.js';
import { oauthApp } from './oauth-app.js';
import { adminSchema } from './admin.js';
import { dsnNotify, queueSchema, relaySchema, submissionSchema } from './outbound.js';
import { aliasQuarantineSchema, quarantineSchema } from './quarantine.js';
import { retentionSchema } from './retention.js';
import { aliasAutoReply, partitionThreadingKeys } from './threading.js';
import { nodeSchema, storageSchema } from './storage.js';

const listenAddress = listenAddressOf(2525);

export { defaultFetchPort } from './incoming.js';

/** Default SMTP port. Cisco guide: 25, or 587 when the SSL ("SMTP") flag is set. */
export const defaultSmtpPort = (ssl: boolean) => (ssl ? 587 : 25);

const smtpUser = z.strictObject({
  /** Login name for SMTP AUTH. */
  name: text,
  /** scrypt hash of the password, `scrypt$N$r$p$saltBase64$hashBase64`. */
  password_hash: passwordHash,
});

const CIDR = 'an IP address or network such as "10.0.0.0/8" or "2001:db8::/32"';
const cidr = z.string(is(CIDR)).refine((c) => parseCidr(c) !== undefined, is(CIDR));

/**
 * `[smtp.limits]`: what one client may do. Defaults are Postfix's (named beside each key), so
 * an admin who knows Postfix knows these; both listeners apply them.
 */
const smtpLimits = z
  .strictObject({
    /** Connections at once, all clients (Postfix default_process_limit). */
    max_connections: positive('connections').default(100),
    /** Connections at once from one client address (Postfix smtpd_client_connection_count_limit). */
    max_connections_per_ip: positive('connections').default(50),
    /** Recipients in one message; beyond, 452 4.5.3 and the client sends the rest separately (Postfix smtpd_recipient_limit). */
    max_recipients: positive('recipients').default(1000),
    /** Received headers in one message; beyond, 554 5.4.6, a mail loop (Postfix hopcount_limit). */
    max_received_headers: positive('headers').default(50),
    /** Refused commands in one session before it is closed with 421 (Postfix smtpd_hard_error_limit). */
    max_errors: positive('errors').default(20),
    /** Seconds a client may stay silent (Postfix smtpd_timeout). */
    idle_timeout: positive('seconds').default(300),
    /** Bytes per second DATA must average: a transfer may take idle_timeout plus one second per this many bytes (Postfix smtpd_min_data_rate). */
    min_data_rate: positive('bytes per second').default(500),
    /**
     * Commands a client may send before it logs in where AUTH is required (the submission
     * listener); one more closes the session with 421. EHLO, STARTTLS, NOOP and RSET count,
     * AUTH does not (smtp-server's maxAllowedUnauthenticatedCommands, default 10).
     */
    commands_before_auth: positive('commands').default(10),
    /** Failed logins from one address within auth_failure_window before AUTH from it is refused for the rest of the window. */
    auth_failures_per_ip: positive('failed logins').default(5),
    /** Seconds failed logins are remembered. */
    auth_failure_window: positive('seconds').default(600),
    /** Bare LF or bare CR in message text (SMTP smuggling): "normalize" to CRLF (Postfix's default since 3.9) or "reject" with 554 5.5.2. Bare LF in commands is always refused. */
    bare_line_endings: z.enum(['normalize', 'reject']).default('normalize'),
  })
  .prefault({});

const smtp = z
  .strictObject({
    /** Addresses the SMTP listener binds, `host:port`; IPv6 as `[::1]:2525`. */
    listen: z.array(listenAddress).min(1, is('at least one listen address')).default(['127.0.0.1:2525']),
    /** Name announced in the greeting and EHLO reply. Default: this machine's host name. */
    hostname: domain.optional(),
    /** Largest message accepted, in bytes. */
    max_message_size: positive('bytes').default(26214400),
    /** Accept any recipient. Default: true only when every listen address is loopback. */
    accept_all: z.boolean().optional(),
    /** Domains we accept mail for (besides alias addresses). */
    domains: z.array(domain).default([]),
    /** Look up the client's reverse DNS name. Default: false when every listen address is loopback. */
    reverse_dns: z.boolean().optional(),
    /** How long a reverse DNS lookup may take, in milliseconds. */
    reverse_dns_timeout_ms: positive('milliseconds').default(1000),
    /** Certificate for STARTTLS: both `cert` and `key`, or neither. */
    tls: tlsFiles.optional(),
    /** SMTP AUTH settings. */
    auth: z
      .strictObject({
        /** Allow AUTH without TLS on loopback connections. */
        allow_insecure_on_loopback: z.boolean().default(false),
      })
      .prefault({}),
    /** Users who may authenticate, one `[[smtp.user]]` table each. */
    user: z.array(smtpUser).default([]),
    /** Limits per client and session. */
    limits: smtpLimits,
    /** Client networks that may send to any domain (relayed through [partition.default_smtp]), as Postfix's mynetworks. Authenticated users may too. Default: none. */
    trusted_networks: z.array(cidr).default([]),
  })
  .superRefine((s, ctx) => {
    const seen = new Map<string, number>();
    s.user.forEach((u, i) => {
      const first = seen.get(u.name);
      if (first === undefined) seen.set(u.name, i);
      else ctx.addIssue({ code: 'custom', path: ['user', i, 'name'], input: u.name, message: `a unique user name (smtp.user[${first}] has it too)` });
    });
  })
  .transform((s) => {
    const local = s.listen.every(isLoopbackAddress);
    return { ...s, hostname: s.hostname ?? os.hostname(), accept_all: s.accept_all ?? local, reverse_dns: s.reverse_dns ?? !local };
  });

const smtpProtocol = z.enum(['smtp', 'esmtp']);

// Cisco guide: the partition's six default SMTP settings.
const defaultSmtp = z
  .strictObject({
    /** SMTP server used when an alias has no `[alias.outgoing]`. */
    server: host.optional(),
    /** `smtp` or `esmtp` (ESMTP can authenticate). */
    protocol: smtpProtocol.default('smtp'),
    /** Server port. Default: 25, or 587 when `ssl` is true. */
    port: port.optional(),
    /** The guide's "SMTP flag": use TLS. */
    ssl: z.boolean().default(false),
    /** Login name, for ESMTP. */
    user: z.string().optional(),
    /** Password, for ESMTP. Use `${ENV_NAME}` rather than writing it here. */
    password: z.string().optional(),
    /** Extra CA certificate file (PEM) to trust for this server; relative to the config file. */
    ca_file: text.optional(),
  })
  .transform((d) => ({ ...d, port: d.port ?? defaultSmtpPort(d.ssl) }));

const partition = z
  .strictObject({
    /** Partition name. */
    name: text.default('default'),
    /** Domain added to addresses that have none. */
    default_domain: domain.default('localhost'),
    /** Default outgoing server for the partition; the table may be absent. */
    default_smtp: defaultSmtp.optional(),
    /**
     * Partition policy TOML file, relative to the config file's directory. Its attachment
     * allow/block rules supersede the departments' (Cisco guide); masking patterns live here.
     */
    policy: text.optional(),
    // Reply threading and auto-replies (issue 14): reference_format, unknown_recipient, unknown_recipient_reply, auto_reply_interval.
    ...partitionThreadingKeys,
  })
  .prefault({});

const department = z.strictObject({
  /** Department name, unique; aliases refer to it. */
  name: text,
  /** Policy TOML file, relative to the config file's directory. */
  policy: text.optional(),
});

const outgoing = z
  .strictObject({
    /** `smtp` or `esmtp` (ESMTP can authenticate). */
    type: smtpProtocol.default('smtp'),
    /** Cisco guide "Use SMTP": fall back to plain SMTP `never` or `when_auth_fails` (ESMTP only). */
    use_smtp: z.enum(['never', 'when_auth_fails']).default('never'),
    /** Mail server to send through. */
    host,
    /** Use TLS, certificate verified: TLS on connect on port 465, STARTTLS (required) on any other port. When false, STARTTLS is still used where offered, unverified (as Postfix's "may"). */
    ssl: z.boolean().default(false),
    /** Port. Default: 25, or 587 when `ssl` is true (Cisco guide). */
    port: port.optional(),
    /** Login name; ESMTP only. With `oauth2`, the mailbox to send as. */
    user: z.string().optional(),
    /** Password; ESMTP only. Use `${ENV_NAME}` rather than writing it here. */
    password: z.string().optional(),
    /** Name of the `[[oauth_app]]` to authenticate with (SASL XOAUTH2, e.g. Office 365 SMTP) instead of a password; ESMTP only. */
    oauth2: text.optional(),
    /** Extra CA certificate file (PEM) to trust for this server; relative to the config file. */
    ca_file: text.optional(),
    /** Delivery status notifications to ask for (RFC 3461 NOTIFY, when the server offers DSN), e.g. ["FAILURE", "DELAY"] (Genesys). Default: none asked. */
    dsn_notify: dsnNotify.optional(),
  })
  .superRefine((o, ctx) => {
    if (o.use_smtp === 'when_auth_fails' && o.type !== 'esmtp') {
      ctx.addIssue({ code: 'custom', path: ['use_smtp'], input: o.use_smtp, message: '"never" unless type = "esmtp" (only ESMTP authenticates)' });
    }
    if (o.oauth2 !== undefined && o.password !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['password'], input: o.password, message: 'no password with oauth2 (the OAuth token replaces it)' });
    }
    if (o.oauth2 !== undefined && (o.user === undefined || o.user === '')) {
      ctx.addIssue({ code: 'custom', path: ['user'], message: 'the mailbox to send as (needed with oauth2)' });
    }
    for (const key of ['user', 'password', 'oauth2'] as const) {
      if (o.type === 'smtp' && o[key] !== undefined) {
        ctx.addIssue({ code: 'custom', path: [key], input: o[key], message: `no ${key} with type = "smtp" (set type = "esmtp" to authenticate)` });
      }
    }
  })
  .transform((o) => ({ ...o, port: o.port ?? defaultSmtpPort(o.ssl) }));

const alias = z.strictObject({
  /** Alias name, unique. */
  name: text,
  /** Free text for the admin. */
  description: z.string().optional(),
  /** The alias's email address; unique across aliases, ignoring case. */
  address: email,
  /** Name of the `[[department]]` this alias belongs to. */
  department: text.optional(),
  /** `active` or `inactive`. */
  status: z.enum(['active', 'inactive']).default('active'),
  /** The department's default alias (at most one per department, and it must be active). */
  default: z.boolean().default(false),
  /** Address that gets a blind copy of every message. */
  automatic_bcc: email.optional(),
  /** For testing: every outgoing message from this alias goes only to this address, not to its recipients (Cisco guide, "Send mail to"). */
  send_mail_to: email.optional(),
  /** Other addresses whose mail is redirected to this alias; mail for them belongs to it (Cisco guide). */
  redirection_addresses: z.array(email).default([]),
  /** Server this alias fetches mail from. */
  incoming: incoming.optional(),
  /** Server this alias sends mail through. */
  outgoing: outgoing.optional(),
  /** Overrides `[quarantine]` for mail of this alias, key by key. */
  quarantine: aliasQuarantineSchema.optional(),
  /** The acknowledgement sent to each sender (issue 14, gateway/auto-reply/). */
  auto_reply: aliasAutoReply.optional(),
});

const configTables = z.strictObject({
  /** Where messages and state are stored; relative to the config file. */
  data_dir: text.default('./data'),
  /** Where the records are kept: a PostgreSQL database several nodes share (issue 16). Absent: LevelDB in data_dir. */
  storage: storageSchema.optional(),
  /** This gateway among several on one database: its name. */
  node: nodeSchema,
  /** Least severe log level written. */
  log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
  /** The SMTP listener. */
  smtp: smtp.prefault({}),
  /** The submission listener, where applications hand over mail to send (AUTH required). */
  submission: submissionSchema(listenAddress),
  /** The outbound queue: retries, limits, delivery status notifications. */
  queue: queueSchema,
  /** Downstream servers inbound mail is forwarded to once stored, one `[[relay]]` table each. */
  relay: z.array(relaySchema).default([]),
  /** Prometheus metrics over HTTP; off unless `listen` is set. */
  metrics: z
    .strictObject({
      /** "host:port" to serve `/metrics` on, e.g. "127.0.0.1:9425". Default: off. */
      listen: listenAddress.optional(),
    })
    .prefault({}),
  /** The REST API: where it listens, who may sign in, which tokens scripts use. On by default, on loopback. */
  admin: adminSchema,
  /** Where bad inbound mail is forwarded for a person to work (PCEmail "Email Quarantine Settings"). */
  quarantine: quarantineSchema,
  /** How long messages, quarantined attachments and the audit log are kept (the retention sweep). */
  retention: retentionSchema,
  /** The partition this gateway serves. */
  partition,
  /** Departments, one `[[department]]` table each. */
  department: z.array(department).default([]),
  /** Aliases, one `[[alias]]` table each. */
  alias: z.array(alias).default([]),
  /** What the retriever's mailboxes share: the bound on fetched bytes in memory. */
  retriever: retrieverSchema,
  /** OAuth2 app registrations aliases log in with, one `[[oauth_app]]` table each. */
  oauth_app: z.array(oauthApp).default([]),
  /** File holding the 32-byte key the OAuth token cache is encrypted with (64 hex digits, base64, or raw); relative to the config file. Default: the MAILGATE_SECRET_KEY environment variable, which wins when both are set. Needed only when an alias uses `oauth2`. */
  secret_key_file: text.optional(),
});

/** The `mailgate.toml` schema, with the checks that span tables (unique names, departments that exist). */
export const configSchema = configTables.superRefine((c, ctx) => {
  for (const issue of invariantIssues(c)) ctx.addIssue({ code: 'custom', ...issue });
  const sub = c.submission;
  // AUTH is required there and never offered in clear: without a certificate or the loopback exception nobody could submit.
  if ((sub.enabled ?? sub.user.length > 0) && !sub.tls && !c.smtp.tls && !sub.auth.allow_insecure_on_loopback) {
    ctx.addIssue({
      code: 'custom',
      path: ['submission', 'tls'],
      message:
        'a certificate ([submission.tls] or [smtp.tls]), or [submission.auth] allow_insecure_on_loopback = true: submission requires AUTH, which is never offered without TLS',
    });
  }
});

/** The whole configuration, defaults applied. */
export type Config = z.output<typeof configSchema>;
/** The configuration as written in the file, before defaults. */
export type ConfigInput = z.input<typeof configSchema>;
/** `[smtp]`: the SMTP listener. */
export type SmtpListenerConfig = Config['smtp'];
/** `[smtp.tls]`: certificate and key, when STARTTLS is configured. */
export type SmtpTlsConfig = NonNullable<SmtpListenerConfig['tls']>;
/** `[smtp.auth]`. */
export type SmtpAuthConfig = SmtpListenerConfig['auth'];
/** `[smtp.limits]`. */
export type SmtpLimitsConfig = SmtpListenerConfig['limits'];
/** One `[[smtp.user]]`. */
export type SmtpUserConfig = SmtpListenerConfig['user'][number];
/** `[partition]`. */
export type PartitionConfig = Config['partition'];
/** `[partition.default_smtp]`. */
export type DefaultSmtpConfig = NonNullable<PartitionConfig['default_smtp']>;
/** One `[[department]]`. */
export type DepartmentConfig = Config['department'][number];
/** One `[[alias]]`. */
export type AliasConfig = Config['alias'][number];
/** `[alias.incoming]`: where an alias fetches mail from. */
export type IncomingServerConfig = NonNullable<AliasConfig['incoming']>;
/** `[alias.outgoing]`: where an alias sends mail through. */
export type OutgoingServerConfig = NonNullable<AliasConfig['outgoing']>;
/** `[submission]`. */
export type SubmissionConfig = Config['submission'];
/** `[queue]`. */
export type QueueConfig = Config['queue'];
/** One `[[relay]]`. */
export type RelayConfig = Config['relay'][number];
/** One `[[oauth_app]]`. */
export type OAuthAppConfig = Config['oauth_app'][number];
/** `[admin]`. */
export type { AdminConfig, AdminUserConfig, AdminTokenConfig, AdminRole } from './admin.js';
/** `[storage]` (absent: LevelDB in data_dir) and `[node]`. */
export type { StorageConfig } from './storage.js';
export type NodeConfig = Config['node'];
/** `[retention]`, ages in milliseconds. */
export type RetentionConfig = Config['retention'];
/** One of `fatal`, `error`, `warn`, `info`, `debug`, `trace`. */
export type LogLevel = Config['log_level'];
