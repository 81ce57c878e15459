/**
 * `[quarantine]` and `[alias.quarantine]` (issue 14): where bad inbound mail is forwarded
 * for a person to work, after PCEmail's "Email Quarantine Settings" (its Queue / Mailbox Name,
 * SMTP Server, Port, User, Password, Use SSL and Sender fields). Kept apart from schema.ts so
 * that file stays small; gateway/quarantine-forward/ applies it.
 */
import { z } from 'zod';
import { email, host, port, text } from './fields.js';

/** The keys `[quarantine]` and `[alias.quarantine]` share, all optional: an alias's table overrides the partition's key by key. */
const quarantineKeys = {
  /** The quarantine mailbox (PCEmail "Queue / Mailbox Name" for Internet Mail (SMTP)). Nothing is forwarded without it. */
  forward_to: email.optional(),
  /** SMTP server to forward through (PCEmail "SMTP Server"). Default: `[partition.default_smtp]`. */
  server: host.optional(),
  /** Its port (PCEmail "SMTP Port"). Default 25. */
  port: port.optional(),
  /** Login name (PCEmail "SMTP User"); anonymous when unset. */
  user: z.string().optional(),
  /** Password (PCEmail "SMTP Password"). Use `${ENV_NAME}` rather than writing it here. */
  password: z.string().optional(),
  /** PCEmail "Use SSL", as `[alias.outgoing] ssl`: verified TLS, on connect on port 465, required STARTTLS on any other; when false, STARTTLS where offered, unverified. */
  ssl: z.boolean().optional(),
  /** Extra CA certificate file (PEM) to trust for the server; relative to the config file. With it the certificate is verified. */
  ca_file: text.optional(),
  /** Sender of the forwarding message, header and envelope (PCEmail "SMTP Sender"). Default: `quarantine@` the `[smtp] hostname`. */
  from: email.optional(),
  /** Forward messages that could not be processed and were stored wrapped, the quarantine test marker included. Default true. */
  wrapped: z.boolean().optional(),
  /** Forward auto-responses (PCEmail: "When an incoming email is detected to be an auto-response, the email is moved to quarantine"). Default false. */
  auto_responses: z.boolean().optional(),
  /** Forward messages one of whose attachments was blocked (without the blocked attachment). Default false. */
  blocked_attachments: z.boolean().optional(),
};

function credentialsTogether(q: { user?: string | undefined; password?: string | undefined }, ctx: z.RefinementCtx): void {
  if ((q.user === undefined) !== (q.password === undefined))
    ctx.addIssue({ code: 'custom', path: [q.user === undefined ? 'user' : 'password'], message: 'user and password together, or neither' });
}

/** `[quarantine]`: the partition's quarantine forwarding. */
export const quarantineSchema = z.strictObject(quarantineKeys).superRefine(credentialsTogether).prefault({});

/** `[alias.quarantine]`: the same keys, overriding `[quarantine]` for mail of this alias (PCEmail: "Quarantine settings can be overridden for each individual mailbox"). */
export const aliasQuarantineSchema = z.strictObject(quarantineKeys).superRefine(credentialsTogether);

/** `[quarantine]` as written (defaults are applied per alias by gateway/quarantine-forward/settings.ts). */
export type QuarantineConfig = z.output<typeof quarantineSchema>;
