/**
 * The quarantine settings that apply to mail of one alias: `[quarantine]` with the alias's
 * `[alias.quarantine]` over it (PCEmail: "Quarantine settings can be overridden for each
 * individual mailbox"), defaults applied.
 */
import type { Config } from '../config/schema.js';

/** The SMTP server a forward goes through. */
export interface QuarantineServer {
  host: string;
  port: number;
  ssl: boolean;
  user?: string;
  password?: string;
  ca_file?: string;
}

/** What applies to mail of one alias (or of none). */
export interface QuarantineSettings {
  /** The quarantine mailbox; nothing is forwarded without it. */
  forwardTo?: string;
  /** Sender of the forwarding message. */
  from: string;
  /** Undefined: through `[partition.default_smtp]`. */
  server?: QuarantineServer;
  wrapped: boolean;
  autoResponses: boolean;
  blockedAttachments: boolean;
}

/** PCEmail "SMTP Port": "The standard SMTP port is 25, and is used in almost all cases." */
const DEFAULT_PORT = 25;

export function quarantineSettings(config: Config, aliasName: string | undefined): QuarantineSettings {
  const partition = config.quarantine;
  const own = aliasName === undefined ? undefined : config.alias.find((a) => a.name === aliasName)?.quarantine;
  const merged = { ...partition, ...definedOnly(own ?? {}) };
  // The connection goes together: an alias naming its own server does not borrow the
  // partition server's login (or its port, or its TLS), which belong to another machine.
  const conn = own?.server !== undefined ? own : partition;
  const server =
    conn.server === undefined
      ? undefined
      : {
          host: conn.server,
          port: conn.port ?? DEFAULT_PORT,
          ssl: conn.ssl ?? false,
          ...(conn.user !== undefined && conn.password !== undefined ? { user: conn.user, password: conn.password } : {}),
          ...(conn.ca_file !== undefined ? { ca_file: conn.ca_file } : {}),
        };
  return {
    ...(merged.forward_to !== undefined ? { forwardTo: merged.forward_to } : {}),
    from: merged.from ?? `quarantine@${config.smtp.hostname}`,
    ...(server ? { server } : {}),
    wrapped: merged.wrapped ?? true,
    autoResponses: merged.auto_responses ?? false,
    blockedAttachments: merged.blocked_attachments ?? false,
  };
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
