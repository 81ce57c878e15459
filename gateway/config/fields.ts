/**
 * The value types the tables of `mailgate.toml` are made of, one definition each, with their
 * messages written as what was expected ("an email address"): loadToml prints them as
 * `KEY: expected MESSAGE, got GIVEN`. schema.ts and the table files beside it build from these.
 */
import { z } from 'zod';
import { ageMs } from '../../lib/age.js';
import { parseListenAddress } from '../../lib/net.js';
import { isPasswordHash } from './password.js';

/** A custom message, written as what was expected. */
export const is = (phrase: string) => ({ error: phrase });

const PORT = 'an integer from 1 to 65535';
export const port = z.int(is(PORT)).min(1, is(PORT)).max(65535, is(PORT));
export const positive = (unit: string) => z.int(is(`a positive integer (${unit})`)).min(1, is(`a positive integer (${unit})`));
export const text = z.string().min(1, is('a non-empty string'));

/** An age as written (`90d`, lib/age.ts), read as milliseconds; never zero. EXAMPLES fit the key (`"90d"`). */
export function age(examples: string) {
  const expected = `an age such as ${examples}: a whole number and s, m, h, d or w (seconds, minutes, hours, days, weeks)`;
  return z
    .string(is(expected))
    .refine((v) => (ageMs(v) ?? 0) > 0, is(expected))
    .transform((v) => ageMs(v)!);
}

const LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
const DOMAIN_RE = new RegExp(`^${LABEL}(?:\\.${LABEL})*\\.?$`);
const ATOM = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+";
const EMAIL_RE = new RegExp(`^${ATOM}(?:\\.${ATOM})*@${LABEL}(?:\\.${LABEL})*$`);

const DOMAIN = 'a domain name such as "example.com"';
/** A domain name, lower-cased so that comparisons need not care. */
export const domain = z
  .string(is(DOMAIN))
  .regex(DOMAIN_RE, is(DOMAIN))
  .transform((d) => d.toLowerCase());
/** A host name or IP address of a remote server. */
export const host = z.string(is('a host name or IP address')).regex(/^[A-Za-z0-9.:_-]+$/, is('a host name or IP address'));
// Single-label domains are allowed (`postmaster@localhost`); a self-hosted gateway sees them.
const EMAIL = 'an email address';
export const email = z.string(is(EMAIL)).regex(EMAIL_RE, is(EMAIL));

const HASH = 'a password hash "scrypt$N$r$p$salt$hash" (made by `mailgate config hash-password`)';
/** An scrypt password hash as hashPassword writes it. */
export const passwordHash = z.string(is(HASH)).refine(isPasswordHash, is(HASH));

/** A `host:port` listen address; EXAMPLE_PORT is the port the message shows (the section's default). */
export function listenAddress(examplePort: number) {
  const phrase = `a "host:port" address such as "127.0.0.1:${examplePort}" or "[::1]:${examplePort}"`;
  return z.string(is(phrase)).refine((a) => parseListenAddress(a) !== undefined, is(phrase));
}

/** `[smtp.tls]`, `[admin.tls]`: a certificate chain and its key (PEM files), both or neither. */
export const tlsFiles = z
  .strictObject({
    /** Certificate chain file (PEM). Needs `key`. */
    cert: text.optional(),
    /** Private key file (PEM). Needs `cert`. */
    key: text.optional(),
  })
  .superRefine((t, ctx) => {
    if (t.cert !== undefined && t.key === undefined) ctx.addIssue({ code: 'custom', path: ['key'], message: 'the key file that goes with cert' });
    if (t.key !== undefined && t.cert === undefined) ctx.addIssue({ code: 'custom', path: ['cert'], message: 'the certificate file that goes with key' });
  })
  .transform((t) => (t.cert !== undefined && t.key !== undefined ? { cert: t.cert, key: t.key } : undefined));
