/**
 * The outbound side of `mailgate.toml` (issue 5): `[submission]` where applications hand over
 * mail to send, `[queue]` how the dispatcher retries, and `[[relay]]` the downstream servers
 * inbound mail is forwarded to. Kept apart from schema.ts so that file stays small; the same
 * conventions apply (custom messages say what was expected).
 */
import { z } from 'zod';
import { age, domain, is, passwordHash, positive, text } from './fields.js';

const submissionUser = z.strictObject({
  /** Login name for SMTP AUTH. */
  name: text,
  /** scrypt hash of the password (`mailgate config hash-password`). */
  password_hash: passwordHash,
  /** Aliases (by name) this user may send as; `["*"]` for every alias. The From address and MAIL FROM must be one of their addresses or redirection addresses. */
  send_as: z.array(text).min(1, is('at least one alias name, or "*"')),
});

/** A `host:port` listen address; the full check is schema.ts's, passed in to avoid a cycle. */
export function submissionSchema(listenAddress: z.ZodType<string>) {
  return z
    .strictObject({
      /** Addresses the submission listener binds, `host:port`. */
      listen: z.array(listenAddress).min(1, is('at least one listen address')).default(['127.0.0.1:2587']),
      /** Run the submission listener. Default: true when `[[submission.user]]` entries exist (AUTH is required, so without users nobody could use it). */
      enabled: z.boolean().optional(),
      /** Largest message accepted, in bytes. Default: `[smtp] max_message_size`. */
      max_message_size: positive('bytes').optional(),
      /** Certificate for STARTTLS: `cert` and `key`. Default: `[smtp.tls]`. */
      tls: z.strictObject({ cert: text, key: text }).optional(),
      auth: z
        .strictObject({
          /** Allow AUTH without TLS on loopback connections (a helpdesk on the same machine). */
          allow_insecure_on_loopback: z.boolean().default(false),
        })
        .prefault({}),
      /** Users who may submit mail, one `[[submission.user]]` table each. */
      user: z.array(submissionUser).default([]),
    })
    .superRefine((s, ctx) => {
      const seen = new Map<string, number>();
      s.user.forEach((u, i) => {
        const first = seen.get(u.name);
        if (first === undefined) seen.set(u.name, i);
        else ctx.addIssue({ code: 'custom', path: ['user', i, 'name'], input: u.name, message: `a unique user name (submission.user[${first}] has it too)` });
      });
    })
    .prefault({});
}

/** `[queue]`: how the dispatcher sends and retries. */
export const queueSchema = z
  .strictObject({
    /** Seconds to wait before each retry after a temporary failure; the last one repeats. Default: 5 min, 10 min, 20 min, 40 min, 1 h, then every 2 h (close to Postfix's 5 min to ~1 h and Exim's 15 min then growing). */
    retry_intervals: z.array(positive('seconds')).min(1, is('at least one interval in seconds')).default([300, 600, 1200, 2400, 3600, 7200]),
    /** Each wait is moved by up to this fraction either way, so retries to one server spread out. From 0 to 0.5. */
    retry_jitter: z.number(is('a number from 0 to 0.5')).min(0, is('a number from 0 to 0.5')).max(0.5, is('a number from 0 to 0.5')).default(0.2),
    /** Seconds after which a message still not delivered fails for good and a delivery status notification goes back to its sender (2 days; Postfix's default is 5). */
    give_up_after: positive('seconds').default(172800),
    /** Deliveries in progress at once, over all routes. */
    concurrency: positive('deliveries').default(20),
    /** Connections kept open to one server (route). */
    connections_per_route: positive('connections').default(5),
    /** Most messages sent to one server per minute; 0 for no limit. */
    rate_per_minute_per_route: z
      .int(is('a whole number (messages per minute, 0 for no limit)'))
      .min(0, is('a whole number (messages per minute, 0 for no limit)'))
      .default(0),
    /** Seconds an SMTP connection may take to open, greet, or stay silent. */
    timeout: positive('seconds').default(60),
    /** Sender of delivery status notifications. Default: `MAILER-DAEMON@` the `[smtp] hostname`. */
    dsn_from: z.string().optional(),
    /**
     * Several nodes on PostgreSQL (issue 16, "Several nodes: The queue"): how long a node's claim
     * on a queued message lasts unless renewed (every third of it); a dead node's messages wait
     * this long before another node sends them. Default "30s".
     */
    claim_ttl: age('"30s" or "1m"').default(30_000),
  })
  .prefault({});

const NOTIFY = 'a list of "SUCCESS", "FAILURE" and "DELAY" (each at most once), or ["NEVER"] alone';

/**
 * `[alias.outgoing] dsn_notify` (Genesys: "the types of notification of delivery status"): the
 * RFC 3461 NOTIFY parameter on every RCPT TO, sent only when the server offers DSN.
 */
export const dsnNotify = z
  .array(z.enum(['NEVER', 'SUCCESS', 'FAILURE', 'DELAY'], is(NOTIFY)), is(NOTIFY))
  .min(1, is(NOTIFY))
  // RFC 3461 section 4.1: NEVER alone, or any of the others.
  .refine((list) => new Set(list).size === list.length && (!list.includes('NEVER') || list.length === 1), is(NOTIFY));

/** Parsed `[[relay]] to`. */
export interface RelayTarget {
  host: string;
  port: number;
  /** TLS on connect (`smtps://`) rather than STARTTLS. */
  implicitTls: boolean;
}

const RELAY_URL = 'a URL such as "smtp://mail.internal:25" or "smtps://mail.internal:465" (no user or password in it: use the user and password keys)';

/** Parses `smtp://host[:port]` (STARTTLS when offered or required) and `smtps://host[:port]` (TLS on connect). */
export function parseRelayUrl(value: string): RelayTarget | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return undefined;
  }
  if ((url.protocol !== 'smtp:' && url.protocol !== 'smtps:') || url.username || url.password || !url.hostname) return undefined;
  if ((url.pathname && url.pathname !== '/') || url.search || url.hash) return undefined;
  const implicitTls = url.protocol === 'smtps:';
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return { host, port: url.port ? Number(url.port) : implicitTls ? 465 : 25, implicitTls };
}

/** One `[[relay]]`: a downstream server inbound mail is forwarded to once stored (MX deployment). */
export const relaySchema = z
  .strictObject({
    /** Relay name, unique; shown in the queue. */
    name: text,
    /** Recipients in these domains are forwarded (and accepted by the SMTP listener). */
    domains: z.array(domain).default([]),
    /** Recipients that are these aliases' addresses or redirection addresses are forwarded. */
    aliases: z.array(text).default([]),
    /** The downstream server: `smtp://host:port` (STARTTLS when offered) or `smtps://host:port` (TLS on connect). */
    to: z.string(is(RELAY_URL)).refine((u) => parseRelayUrl(u) !== undefined, is(RELAY_URL)),
    /** Refuse to send unless STARTTLS succeeds (with `smtp://`). */
    require_tls: z.boolean().default(false),
    /** Extra CA certificate file (PEM) to trust for this server; relative to the config file. With it (or `require_tls`) the certificate is verified; otherwise STARTTLS is opportunistic and unverified. */
    ca_file: text.optional(),
    /** Login name, when the downstream wants AUTH. */
    user: z.string().optional(),
    /** Password. Use `${ENV_NAME}` rather than writing it here. */
    password: z.string().optional(),
  })
  .superRefine((r, ctx) => {
    if (r.domains.length + r.aliases.length === 0)
      ctx.addIssue({ code: 'custom', path: ['domains'], input: r.domains, message: 'at least one domain (or an alias in aliases) whose mail is forwarded' });
    if ((r.user === undefined) !== (r.password === undefined))
      ctx.addIssue({ code: 'custom', path: [r.user === undefined ? 'user' : 'password'], message: 'user and password together, or neither' });
  })
  .transform((r) => ({ ...r, target: parseRelayUrl(r.to)! }));
