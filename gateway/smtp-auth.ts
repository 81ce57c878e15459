/**
 * SMTP AUTH as both listeners do it: PLAIN and LOGIN against scrypt hashes, never offered
 * where the password would cross in clear (RFC 4954 section 4; Postfix's
 * `smtpd_tls_auth_only`) unless the client is on loopback and the admin allowed that.
 */
import { readFileSync } from 'node:fs';
import type { SMTPServerOptions, SMTPServerSession } from 'smtp-server';
import type { Logger } from 'pino';
import { isLoopbackHost } from './config/schema.js';
import { verifyPasswordAsync } from './config/password.js';
import { errors } from './errors.js';

export interface AuthSettingsInput {
  users: readonly { name: string; password_hash: string }[];
  tls: { cert: string; key: string } | undefined;
  allowInsecureOnLoopback: boolean;
  /** Submission: no mail without AUTH. */
  required: boolean;
  logger: Logger;
}

type AuthOptions = Pick<SMTPServerOptions, 'authOptional' | 'authMethods' | 'allowInsecureAuth' | 'disabledCommands' | 'key' | 'cert' | 'onConnect' | 'onSecure' | 'onAuth'>;

export function authSettings(input: AuthSettingsInput): AuthOptions {
  const users = new Map(input.users.map((u) => [u.name, u.password_hash]));
  const disabled: string[] = [];
  if (!input.tls) disabled.push('STARTTLS'); // no certificate: don't offer TLS we cannot do properly
  if (users.size === 0) disabled.push('AUTH');
  const insecureOk = (session: SMTPServerSession) => input.allowInsecureOnLoopback && isLoopbackHost(session.remoteAddress);
  return {
    authOptional: !input.required,
    authMethods: ['PLAIN', 'LOGIN'],
    // smtp-server hides AUTH before TLS unless told otherwise; the loopback exception is checked in onAuth.
    allowInsecureAuth: input.allowInsecureOnLoopback,
    disabledCommands: disabled,
    ...(input.tls ? { key: readFileSync(input.tls.key), cert: readFileSync(input.tls.cert) } : {}),

    // Hide AUTH for the session until TLS is up.
    onConnect(session, callback) {
      if (!insecureOk(session)) session.disabledCommands = [...disabled, 'AUTH'];
      callback();
    },

    onSecure(_socket, session, callback) {
      session.disabledCommands = disabled;
      callback();
    },

    onAuth(auth, session, callback) {
      if (!session.secure && !insecureOk(session)) return callback(errors.encryptionRequired());
      const hash = auth.username ? users.get(auth.username) : undefined;
      const verified = hash && auth.method !== 'XOAUTH2' ? verifyPasswordAsync(auth.password ?? '', hash) : Promise.resolve(false);
      verified.then((ok) => {
        if (ok) return callback(null, { user: auth.username });
        input.logger.warn({ remote: session.remoteAddress, user: auth.username }, 'authentication failed');
        callback(errors.authFailed());
      }, (err: unknown) => callback(errors.authUnavailable(err)));
    },
  };
}
