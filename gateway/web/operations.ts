/**
 * What the REST API and the console share: who a request is from (a bearer token, or the
 * session cookie of this site), and how an operation of api-routes.ts is done for a caller:
 * its permission checked, the AdminApi called, a change written to the audit log.
 */
import type { Readable } from 'node:stream';
import type { FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { errors } from '../../lib/errors.js';
import type { AdminApi, AuditEntry } from '../admin/api.js';
import { errorBody } from '../admin/http-errors.js';
import type { Config } from '../config/schema.js';
import type { GatewayEvents } from '../events.js';
import { requirePermission, type Access, type Caller } from './access.js';
import type { ApiRoute } from './api-routes.js';

/** The session cookie's name. */
export const SESSION_COOKIE = 'mailgate_session';
/** Where the REST API's operations are. */
export const API_PREFIX = '/api/v1';

export interface WebServerDeps {
  config: Config;
  admin: AdminApi;
  logger: Logger;
  /** True when the store answers and the listeners are bound (`/readyz`). */
  ready(): Promise<boolean>;
  /** The gateway's events, sent to `/api/v1/events`. */
  events: GatewayEvents;
  /** Writes one entry to the audit log in the store. */
  audit(entry: Omit<AuditEntry, 'id'>): Promise<unknown>;
}

/** The session cookie's attributes: only this site's own requests carry it, never a script; Secure under TLS. */
export function sessionCookie(config: Config) {
  return { path: '/', httpOnly: true, sameSite: 'strict' as const, secure: config.admin.tls !== undefined };
}

/** Signs USER in (the API's session route and the console's form): a session id, the sign-in and a failed one written to the audit log. */
export async function signIn(deps: WebServerDeps, access: Access, user: string, password: string, ip: string): Promise<{ sessionId: string; caller: Caller }> {
  return audited(deps, { who: `user ${user}`, action: 'sign-in', from: ip }, () => access.signIn(user, password, ip));
}

/** Signs in with the first-run link's secret, written to the audit log. */
export async function signInFirstRun(deps: WebServerDeps, access: Access, token: string, ip: string): Promise<{ sessionId: string; caller: Caller }> {
  return audited(deps, { who: 'first-run link', action: 'sign-in', from: ip }, async () => access.signInFirstRun(token, ip));
}

/** Does operation R for CALLER from address IP: refused without its permission; a change is written to the audit log with its outcome. */
export async function perform(
  deps: WebServerDeps,
  r: ApiRoute,
  caller: Caller,
  ip: string,
  input: { params: object; query: object; body: Readable | undefined },
): Promise<unknown> {
  requirePermission(caller.role, r.permission);
  const run = () => r.run(deps.admin, input as never);
  if (!r.audit) return run();
  const params = input.params as { id?: string; name?: string };
  // A bulk action names its filter, so the log says what it was applied to.
  const query = input.query as Record<string, unknown>;
  const target = params.id ?? params.name ?? (Object.keys(query).length > 0 ? new URLSearchParams(query as Record<string, string>).toString() : undefined);
  return audited(deps, { who: caller.who, action: r.audit, from: ip, ...(target !== undefined ? { target } : {}) }, run);
}

/** The caller of REQ: a bearer token, or a session cookie from this site (CSRF); SIGN_IN_REQUIRED otherwise. */
export async function authenticate(req: FastifyRequest, access: Access, deps: WebServerDeps): Promise<Caller> {
  const authorization = req.headers.authorization;
  if (authorization !== undefined) {
    const m = /^Bearer\s+(\S+)$/i.exec(authorization);
    if (!m) throw errors.badRequest('Authorization: expected "Bearer TOKEN"');
    const token = m[1]!;
    // Only a failure is written: a script's every request would otherwise fill the log with sign-ins.
    return access.bearer(token, req.ip).catch(async (err: unknown) => {
      await writeAudit(deps, { who: 'bearer token', action: 'sign-in', from: req.ip, outcome: errorBody(err).code });
      throw err;
    });
  }
  const sessionId = req.cookies[SESSION_COOKIE];
  const caller = sessionId === undefined ? undefined : access.session(sessionId);
  if (!caller) throw errors.signInRequired();
  // The cookie goes with any request the browser makes; only this site's own pages may use it.
  const origin = req.headers.origin;
  if (origin !== undefined && origin !== `${req.protocol}://${req.headers.host ?? ''}`) throw errors.crossSiteRequest(origin);
  if (req.headers['sec-fetch-site'] === 'cross-site') throw errors.crossSiteRequest(origin ?? 'another site');
  return caller;
}

/** Runs WHAT and writes it to the audit log with its outcome: `ok`, or the code it failed with. */
export async function audited<T>(deps: WebServerDeps, entry: Pick<AuditEntry, 'who' | 'action' | 'from' | 'target'>, what: () => Promise<T>): Promise<T> {
  try {
    const result = await what();
    await writeAudit(deps, { ...entry, outcome: 'ok' });
    return result;
  } catch (err) {
    await writeAudit(deps, { ...entry, outcome: errorBody(err).code });
    throw err;
  }
}

/** An entry the store could not take is logged, not answered: the change itself is done (or refused) either way. */
export async function writeAudit(deps: WebServerDeps, entry: Omit<AuditEntry, 'id' | 'at'>): Promise<void> {
  try {
    await deps.audit({ at: new Date().toISOString(), ...entry });
  } catch (err) {
    deps.logger.error({ err, audit: entry }, 'could not write to the audit log');
  }
}
