/**
 * `[alias.incoming]`: the mailbox an alias fetches from, and how the retriever treats it.
 * Kept apart from schema.ts so that file stays small; the same conventions apply (custom
 * messages say what was expected).
 */
import { z } from 'zod';
import { isLoopbackHost } from '../../lib/net.js';

import { age, host, port, positive, text } from './fields.js';

/** Default mail-fetch port: POP3 110, POP3 over TLS 995, IMAP 143, IMAP over TLS 993. */
export function defaultFetchPort(type: 'pop3' | 'imap', tls: boolean): number {
  return type === 'pop3' ? (tls ? 995 : 110) : tls ? 993 : 143;
}

const action = z.enum(['move', 'delete', 'keep']);

/**
 * True when the retriever would log in to SERVER in clear across a network: `security = "none"`
 * to a host that is not loopback (`localhost`, 127.0.0.0/8, ::1), which only `allow_plaintext`
 * permits. The retriever warns at each such connection.
 */
export function plaintextOverNetwork(server: { security: string; host: string }): boolean {
  return server.security === 'none' && !isLoopbackHost(server.host);
}

/** The `[alias.incoming]` table. */
export const incoming = z
  .strictObject({
    /** `pop3` or `imap` (Cisco guide default: POP3). */
    type: z.enum(['pop3', 'imap']).default('pop3'),
    /** Mail server to fetch from. */
    host,
    /** Port. Default: POP3 110, POP3 with TLS 995, IMAP 143, IMAP with TLS 993. */
    port: port.optional(),
    /** `tls` (TLS on connect), `starttls`, `none` (loopback hosts only, unless `allow_plaintext`), or `auto` (TLS on connect for ports 993/995, else STARTTLS; IMAP goes on in clear when the server offers no STARTTLS). */
    security: z.enum(['auto', 'tls', 'starttls', 'none']).default('auto'),
    /** Permit `security = "none"` to a host that is not loopback, e.g. a POP3 (110) or IMAP (143) server on the local network without TLS (Cisco guide, "SSL disabled"); the password crosses in clear, and the retriever logs a warning at each connection. */
    allow_plaintext: z.boolean().default(false),
    /** Extra CA certificate file (PEM) to trust for this server, e.g. a private CA; relative to the config file. Default: the system's CAs only. */
    ca_file: text.optional(),
    /** Login name. */
    user: z.string().optional(),
    /** Password. Use `${ENV_NAME}`, or `enc:v1:...` from `mailgate config encrypt-secret`, rather than writing it here. Not used with `oauth2`. */
    password: z.string().optional(),
    /** Name of the `[[oauth_app]]` to log in with (SASL XOAUTH2) instead of a password; `user` is then the mailbox to log in as. */
    oauth2: text.optional(),
    /** Authorization identity, for a shared mailbox (Enate "Authorization Identity", Cisco "Shared Mailbox"): the PLAIN authzid with a password; with `oauth2`, the mailbox named in XOAUTH2's `user=`. */
    auth_identity: text.optional(),
    /** IMAP folder to fetch from. */
    folder: text.default('INBOX'),
    /** Store one message per unique To/Cc recipient instead of one per message (Genesys). */
    split_recipients: z.boolean().default(false),
    /** Seconds between polls (Emplifi "poll interval"). */
    poll_interval: positive('seconds').default(60),
    /** Seconds to wait before connecting again after an error. */
    reconnect_interval: positive('seconds').default(60),
    /** Seconds after which an alias the retriever made inactive for a network, server or mailbox-in-use failure is tried again; it becomes active when that connection succeeds (Cisco guide: ten minutes). */
    health_retry_interval: positive('seconds').default(600),
    /** IMAP: wait for new mail with IDLE where the server supports it, so it arrives within seconds; polling stays as the fallback. */
    idle: z.boolean().default(true),
    /** Most messages fetched in one poll (CCaaS default 50). */
    max_items: positive('messages').default(50),
    /** Messages larger than this many bytes are not downloaded: a record with their headers is stored and `on_invalid` applies (CCaaS default 6000000). */
    max_message_size: positive('bytes').default(6_000_000),
    /** After a message is stored: `move` to `processed_folder` (IMAP only; the IMAP default), `delete` (the POP3 default) or `keep` (tracked by UID or UIDL so it is not stored again). */
    on_stored: action.optional(),
    /** IMAP folder stored messages are moved to; created when missing. */
    processed_folder: text.default('Processed'),
    /** For a message that cannot be fetched for good (over `max_message_size`): `move` to `invalid_folder` (IMAP only; the IMAP default), `delete`, or `keep` (the POP3 default). */
    on_invalid: action.optional(),
    /** IMAP folder invalid messages are moved to; created when missing. */
    invalid_folder: text.default('Invalid'),
    // Issue 14, CCaaS "Manage mailboxes" settings.
    /** CCaaS "Max email LW size in bytes": IMAP messages up to this size are downloaded in parallel with larger ones, on a second session; POP3 fetches them first (default 10000). */
    lightweight_size: positive('bytes').default(10_000),
    /** CCaaS "Auto connect retries": failed connection attempts in a row after which the alias is made inactive (default 3, as the Cisco guide's three). */
    auto_connect_retries: positive('attempts').default(3),
    /** CCaaS "Deleted emails folder name": with it, IMAP `delete` (on_stored or on_invalid) moves the message to this folder, created when missing, instead of expunging it. Default: expunge. */
    deleted_folder: text.optional(),
    // Issue 15: the pipelined fetch.
    /** Most bytes of this mailbox's fetched messages held in memory at once: a range of messages is read with one command and stored as they arrive, up to this many bytes; a larger message is streamed on its own (default 8 MiB). */
    bytes_in_flight: positive('bytes').default(8 * 1024 * 1024),
  })
  .superRefine((i, ctx) => {
    for (const key of ['on_stored', 'on_invalid'] as const) {
      if (i.type === 'pop3' && i[key] === 'move') {
        ctx.addIssue({ code: 'custom', path: [key], input: i[key], message: '"delete" or "keep" with type = "pop3" (POP3 has no folders to move to)' });
      }
    }
    if (i.type === 'pop3' && i.deleted_folder !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['deleted_folder'],
        input: i.deleted_folder,
        message: 'no deleted_folder with type = "pop3" (POP3 has no folders)',
      });
    }
    if (i.oauth2 !== undefined && i.password !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['password'], input: i.password, message: 'no password with oauth2 (the OAuth token replaces it)' });
    }
    if (i.oauth2 !== undefined && (i.user === undefined || i.user === '')) {
      ctx.addIssue({ code: 'custom', path: ['user'], message: 'the mailbox to log in as (needed with oauth2)' });
    }
    if (plaintextOverNetwork(i) && !i.allow_plaintext) {
      ctx.addIssue({
        code: 'custom',
        path: ['security'],
        input: i.security,
        message: '"tls", "starttls" or "auto" for a host that is not loopback (the password would cross in clear; allow_plaintext = true permits it)',
      });
    }
  })
  .transform((i) => {
    const imap = i.type === 'imap';
    return {
      ...i,
      port: i.port ?? defaultFetchPort(i.type, i.security === 'tls'),
      on_stored: i.on_stored ?? (imap ? 'move' : 'delete'),
      on_invalid: i.on_invalid ?? (imap ? 'move' : 'keep'),
    };
  });

/** The `[retriever]` table: what all fetched mailboxes share (issue 15). */
export const retrieverSchema = z
  .strictObject({
    /** Most bytes of fetched messages held in memory at once over every mailbox, so hundreds fetching together cannot exhaust memory (default 64 MiB). */
    bytes_in_flight: positive('bytes').default(64 * 1024 * 1024),
    /**
     * Several nodes on PostgreSQL (issue 16): how long a node's hold on a mailbox lasts unless
     * renewed (every third of it); a node that dies loses its mailboxes to the others after this. Default "30s".
     */
    lease_ttl: age('"30s" or "1m"').default(30_000),
  })
  .prefault({});
