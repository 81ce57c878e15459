/**
 * SMTP AUTH and session limits as both listeners do them: PLAIN and LOGIN against scrypt
 * hashes, never offered where the password would cross in clear (RFC 4954 section 4;
 * Postfix's `smtpd_tls_auth_only`) unless the client is on loopback and the admin allowed
 * that; failed logins locked out per client address; the session guard's connection limits.
 */
import { readFileSync } from 'node:fs';
import type { SMTPServerOptions, SMTPServerSession } from 'smtp-server';
import type { Logger } from 'pino';
import { isLoopbackHost } from '../../lib/net.js';
import { verifyPasswordAsync } from '../config/password.js';
import { errors } from '../../lib/errors.js';
import type { SessionGuard } from './session-limits.js';

export interface AuthSettingsInput {
  users: readonly { name: string; password_hash: string }[];
  tls: { cert: string; key: string } | undefined;
  allowInsecureOnLoopback: boolean;
  /** Submission: no mail without AUTH. */
  required: boolean;
  logger: Logger;
  guard: SessionGuard;
  /** `[smtp.limits]`. */
  limits: { max_connections: number; idle_timeout: number; commands_before_auth: number };
}

type AuthOptions = Pick<
  SMTPServerOptions,
  | 'authOptional'
  | 'authMethods'
  | 'allowInsecureAuth'
  | 'disabledCommands'
  | 'key'
  | 'cert'
  | 'onConnect'
  | 'onSecure'
  | 'onAuth'
  | 'onClose'
  | 'maxClients'
  | 'socketTimeout'
  | 'maxAllowedUnauthenticatedCommands'
>;

export function authSettings(input: AuthSettingsInput): AuthOptions {
  const users = new Map(input.users.map((u) => [u.name, u.password_hash]));
  const disabled: string[] = [];
  if (!input.tls) disabled.push('STARTTLS'); // no certificate: don't offer TLS we cannot do properly
  if (users.size === 0) disabled.push('AUTH');
  const insecureOk = (session: SMTPServerSession) => input.allowInsecureOnLoopback && isLoopbackHost(session.remoteAddress);
  const guard = input.guard;
  return {
    maxClients: input.limits.max_connections,
    socketTimeout: input.limits.idle_timeout * 1000,
    authOptional: !input.required,
    // Counted only where AUTH is required; smtp-server closes the session with 421 past it.
    maxAllowedUnauthenticatedCommands: input.limits.commands_before_auth,
    authMethods: ['PLAIN', 'LOGIN'],
    // smtp-server hides AUTH before TLS unless told otherwise; the loopback exception is checked in onAuth.
    allowInsecureAuth: input.allowInsecureOnLoopback,
    disabledCommands: disabled,
    ...(input.tls ? { key: readFileSync(input.tls.key), cert: readFileSync(input.tls.cert) } : {}),

    // Hide AUTH for the session until TLS is up.
    onConnect(session, callback) {
      const refused = guard.connect(session);
      if (refused) return callback(refused);
      if (!insecureOk(session)) session.disabledCommands = [...disabled, 'AUTH'];
      callback();
    },

    onSecure(socket, session, callback) {
      guard.secured(socket, session);
      session.disabledCommands = disabled;
      callback();
    },

    onClose(session) {
      guard.close(session);
    },

    onAuth(auth, session, callback) {
      if (!session.secure && !insecureOk(session)) return callback(guard.refuse(session, errors.encryptionRequired()));
      const ip = session.remoteAddress;
      // Guessing passwords from one address stops here for a while, right or wrong.
      if (guard.authLocked(ip)) {
        input.logger.warn({ remote: ip, user: auth.username }, 'login refused: too many failed logins from this address');
        return callback(guard.refuse(session, errors.authLocked()));
      }
      const hash = auth.username ? users.get(auth.username) : undefined;
      const verified = hash && auth.method !== 'XOAUTH2' ? verifyPasswordAsync(auth.password ?? '', hash) : Promise.resolve(false);
      verified.then(
        (ok) => {
          if (ok) return callback(null, { user: auth.username });
          guard.authFailed(ip);
          input.logger.warn({ remote: ip, user: auth.username }, 'authentication failed');
          callback(guard.refuse(session, errors.authFailed()));
        },
        (err: unknown) => callback(errors.authUnavailable(err)),
      );
    },
  };
}
