/**
 * Who may do what on the REST API: people sign in with `[[admin.user]]` and get a session
 * cookie; scripts send `Authorization: Bearer TOKEN` checked against `[[admin.token]]`; each
 * route needs a permission that the caller's role has (issue 13's roles). Failed sign-ins and
 * unknown tokens count per client address as SMTP AUTH's do (`[smtp.limits]`).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { errors } from '../../lib/errors.js';
import type { AdminConfig, AdminRole, SmtpLimitsConfig } from '../config/schema.js';
import { verifyPasswordAsync } from '../config/password.js';
import { FailedLogins } from '../smtp/failed-logins.js';

/** What a route needs of its caller. */
export type Permission = 'read' | 'read-content' | 'operate';

/** What each permission lets a caller do, as a refusal names it. */
const WHAT: Readonly<Record<Permission, string>> = {
  read: 'read this',
  'read-content': 'read message bytes or quarantined content',
  operate: 'change this',
};

// Issue 13: the operator restores, exports and deletes quarantined attachments, retries and drops
// queued messages, activates, deactivates and tests aliases; the auditor reads all but bytes.
const GRANTS: Readonly<Record<AdminRole, readonly Permission[]>> = {
  admin: ['read', 'read-content', 'operate'],
  operator: ['read', 'read-content', 'operate'],
  auditor: ['read'],
};

/** True when ROLE has PERMISSION. */
export const may = (role: AdminRole, permission: Permission): boolean => GRANTS[role].includes(permission);

/** Fails with NOT_ALLOWED unless ROLE has PERMISSION. */
export function requirePermission(role: AdminRole, permission: Permission): void {
  if (!may(role, permission)) throw errors.notAllowed(role, WHAT[permission]);
}

/** Who made a request: a user by name, a token by name, or the first-run link. */
export interface Caller {
  /** `user NAME`, `token NAME` or `first-run link`: as the audit log names them. */
  who: string;
  role: AdminRole;
  /** Signed in with the session cookie (the CSRF check applies), not by a bearer token. */
  session: boolean;
}

interface Session {
  caller: Caller;
  created: number;
  lastUsed: number;
}

const digest = (secret: string) => createHash('sha256').update(secret).digest();

/** The sign-ins, sessions and tokens of one running web server; nothing is kept across restarts. */
export class Access {
  readonly #config: AdminConfig;
  readonly #failed: FailedLogins;
  readonly #sessions = new Map<string, Session>();
  /** Tokens verified once in this process, by their SHA-256: scrypt per request would make a script pay ~50 ms each time. */
  readonly #tokens = new Map<string, Caller>();
  /** With no `[[admin.user]]`: the first-run link's secret, valid for this run. */
  readonly firstRunToken: string | undefined;

  readonly #now: () => number;

  /** NOW is the clock sessions age by (tests pass their own). */
  constructor(config: AdminConfig, limits: SmtpLimitsConfig, now: () => number = Date.now) {
    this.#config = config;
    this.#now = now;
    this.#failed = new FailedLogins(limits);
    this.firstRunToken = config.user.length === 0 ? randomBytes(24).toString('base64url') : undefined;
  }

  /** Signs USER in with PASSWORD from address IP: a new session id, or SIGN_IN_FAILED / SIGN_IN_LOCKED. */
  async signIn(user: string, password: string, ip: string): Promise<{ sessionId: string; caller: Caller }> {
    if (this.#failed.locked(ip)) throw errors.signInLocked();
    const configured = this.#config.user.find((u) => u.name === user);
    // A missing user costs a hash too, so timing does not tell which names exist.
    const hash = configured?.password_hash ?? this.#config.user[0]?.password_hash;
    const ok = hash !== undefined && (await verifyPasswordAsync(password, hash)) && configured !== undefined;
    if (!ok) {
      this.#failed.failed(ip);
      throw errors.signInFailed();
    }
    return this.#open({ who: `user ${configured.name}`, role: configured.role, session: true });
  }

  /** Signs in with the first-run link's secret (only while no `[[admin.user]]` is configured), as admin. */
  signInFirstRun(secret: string, ip: string): { sessionId: string; caller: Caller } {
    if (this.#failed.locked(ip)) throw errors.signInLocked();
    const expected = this.firstRunToken;
    if (expected === undefined || !timingSafeEqual(digest(secret), digest(expected))) {
      this.#failed.failed(ip);
      throw errors.signInFailed();
    }
    return this.#open({ who: 'first-run link', role: 'admin', session: true });
  }

  signOut(sessionId: string): void {
    this.#sessions.delete(sessionId);
  }

  /** The caller of a live session, or undefined (unknown, idle too long, or too old). */
  session(sessionId: string): Caller | undefined {
    const session = this.#sessions.get(sessionId);
    if (!session) return undefined;
    const now = this.#now();
    if (now - session.lastUsed > this.#config.session_idle_timeout * 60_000 || now - session.created > this.#config.session_max_age * 3_600_000) {
      this.#sessions.delete(sessionId);
      return undefined;
    }
    session.lastUsed = now;
    return session.caller;
  }

  /** The caller a bearer token stands for; SIGN_IN_FAILED for a token no `[[admin.token]]` has. */
  async bearer(token: string, ip: string): Promise<Caller> {
    const key = digest(token).toString('base64');
    const known = this.#tokens.get(key);
    if (known) return known;
    if (this.#failed.locked(ip)) throw errors.signInLocked();
    for (const t of this.#config.token) {
      if (await verifyPasswordAsync(token, t.token_hash)) {
        const caller: Caller = { who: `token ${t.name}`, role: t.role, session: false };
        this.#tokens.set(key, caller);
        return caller;
      }
    }
    this.#failed.failed(ip);
    throw errors.signInFailed();
  }

  #open(caller: Caller): { sessionId: string; caller: Caller } {
    const sessionId = randomBytes(32).toString('base64url');
    const now = this.#now();
    // Sessions nobody signs out of would pile up: each sign-in drops the ones past their time.
    for (const [id, s] of this.#sessions) {
      if (now - s.lastUsed > this.#config.session_idle_timeout * 60_000 || now - s.created > this.#config.session_max_age * 3_600_000)
        this.#sessions.delete(id);
    }
    this.#sessions.set(sessionId, { caller, created: now, lastUsed: now });
    return { sessionId, caller };
  }
}
