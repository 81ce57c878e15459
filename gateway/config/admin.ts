/**
 * `[admin]`: the web server of the REST API (and, later, the console), who may sign in to it
 * and which tokens scripts may use. Kept apart from schema.ts so that file stays small; the
 * same conventions apply (custom messages say what was expected).
 */
import { z } from 'zod';
import { isLoopbackAddress } from '../../lib/net.js';
import { is, listenAddress, passwordHash, text, tlsFiles } from './fields.js';

/** What each role may do (issue 13): `admin` everything; `operator` the day-to-day changes; `auditor` reads all but message bytes and quarantined content. */
export const adminRoles = ['admin', 'operator', 'auditor'] as const;
export type AdminRole = (typeof adminRoles)[number];
const role = z.enum(adminRoles, is('"admin", "operator" or "auditor"'));

const adminUser = z.strictObject({
  /** Sign-in name. */
  name: text,
  /** scrypt hash of the password, as `mailgate config hash-password` makes it. */
  password_hash: passwordHash,
  /** `admin`, `operator` or `auditor`. */
  role,
});

const adminToken = z.strictObject({
  /** A name for the script that uses the token (shown in the audit log). */
  name: text,
  /** scrypt hash of the token, as `mailgate admin token` (or `mailgate config hash-password`) makes it. */
  token_hash: passwordHash,
  /** `admin`, `operator` or `auditor`. */
  role,
});

/** Names must be unique within `[[admin.user]]` and within `[[admin.token]]`: the audit log says who by name. */
function uniqueNames(list: { name: string }[], key: string, ctx: z.RefinementCtx): void {
  const seen = new Map<string, number>();
  list.forEach((u, i) => {
    const first = seen.get(u.name);
    if (first === undefined) seen.set(u.name, i);
    else ctx.addIssue({ code: 'custom', path: [key, i, 'name'], input: u.name, message: `a unique name (admin.${key}[${first}] has it too)` });
  });
}

/** The `[admin]` table. */
export const adminSchema = z
  .strictObject({
    /** Serve the REST API. Default: true. */
    enabled: z.boolean().default(true),
    /** "host:port" the API listens on; anything but loopback needs `[admin.tls]`. */
    listen: listenAddress(8025).default('127.0.0.1:8025'),
    /** Certificate for HTTPS: both `cert` and `key`, or neither. */
    tls: tlsFiles.optional(),
    /** Minutes a signed-in session may stay unused before it ends. */
    session_idle_timeout: z.int(is('a positive integer (minutes)')).min(1, is('a positive integer (minutes)')).default(30),
    /** Hours after sign-in at which a session ends, used or not. */
    session_max_age: z.int(is('a positive integer (hours)')).min(1, is('a positive integer (hours)')).default(12),
    /** People who may sign in, one `[[admin.user]]` table each. */
    user: z.array(adminUser).default([]),
    /** Tokens scripts send as `Authorization: Bearer TOKEN`, one `[[admin.token]]` table each. */
    token: z.array(adminToken).default([]),
  })
  .superRefine((a, ctx) => {
    uniqueNames(a.user, 'user', ctx);
    uniqueNames(a.token, 'token', ctx);
    // Passwords, tokens and session cookies would cross the network in clear.
    if (a.enabled && !a.tls && !isLoopbackAddress(a.listen)) {
      ctx.addIssue({
        code: 'custom',
        path: ['listen'],
        input: a.listen,
        message: 'a loopback address, or [admin.tls] cert and key (sign-ins would cross the network in clear)',
      });
    }
  })
  .prefault({});

/** `[admin]`, defaults applied. */
export type AdminConfig = z.output<typeof adminSchema>;
/** One `[[admin.user]]`. */
export type AdminUserConfig = AdminConfig['user'][number];
/** One `[[admin.token]]`. */
export type AdminTokenConfig = AdminConfig['token'][number];
