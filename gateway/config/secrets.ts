/**
 * Secrets of mailgate.toml sealed at rest (CCaaS: "The value specified in this field is
 * encrypted by ... the Tenant Encryption Key"): a password or client secret may be written as
 * `enc:v1:...`, which `mailgate config encrypt-secret` makes with mailgate's secret key (the one
 * the OAuth token cache uses, lib/secret-box.ts). The loader opens them; without the key they
 * cannot be used ("If the Tenant Encryption Key does not exist, the password cannot be saved").
 */
import { parse } from 'smol-toml';
import { keyLocator, keyPath, type ConfigProblem } from '../../lib/config-file/toml.js';
import { open, readSecretKey, seal, secretKeyConfigured, SecretKeyError, type SecretKeySources } from '../../lib/secret-box.js';

/** What a sealed value starts with; the version names the layout (lib/secret-box.ts seal, base64url). */
export const SEALED_PREFIX = 'enc:v1:';

/** Keys that hold a secret the gateway sends to another server, wherever they appear: these may be sealed. */
export const SECRET_KEYS: ReadonlySet<string> = new Set(['password', 'client_secret']);

// Authenticated with each value, so a token cache cannot be passed off as a config secret or back.
const CONTEXT = 'mailgate-config-secret';

export const MISSING_KEY =
  'no secret key is configured: set MAILGATE_SECRET_KEY to 32 random bytes (64 hex digits or base64, e.g. `openssl rand -hex 32`), or secret_key_file in the configuration';

/** SECRET sealed under KEY, as written in mailgate.toml. */
export function sealSecret(key: Buffer, secret: string): string {
  return SEALED_PREFIX + seal(key, Buffer.from(secret, 'utf8'), CONTEXT).toString('base64url');
}

/** The secret inside SEALED (`enc:v1:...`), or undefined when it does not open with KEY. */
export function openSecret(key: Buffer, sealed: string): string | undefined {
  const body = sealed.slice(SEALED_PREFIX.length);
  if (!/^[A-Za-z0-9_-]+$/.test(body)) return undefined;
  return open(key, Buffer.from(body, 'base64url'), CONTEXT)?.toString('utf8');
}

type Path = (string | number)[];

/** Each secret key under VALUE holding a string, with its path (deep first, in object order). */
function secretValues(value: unknown, path: Path = []): { path: Path; value: string }[] {
  if (Array.isArray(value)) return value.flatMap((v, i) => secretValues(v, [...path, i]));
  if (value === null || typeof value !== 'object' || value instanceof Date) return [];
  return Object.entries(value).flatMap(([k, v]) =>
    typeof v === 'string' && SECRET_KEYS.has(k) ? [{ path: [...path, k], value: v }] : secretValues(v, [...path, k]),
  );
}

/** A copy of ROOT with the string at PATH replaced. */
function replaced<T>(root: T, path: Path, value: string): T {
  const [head, ...rest] = path;
  if (head === undefined) return value as T;
  const copy = (Array.isArray(root) ? [...root] : { ...root }) as Record<string | number, unknown>;
  copy[head] = replaced(copy[head], rest, value);
  return copy as T;
}

/** What openSealed found. */
export interface OpenedSecrets<T> {
  /** The configuration with every sealed value that opened in clear. */
  value: T;
  /** Sealed values that do not open (or whose key is missing, unless deferred). */
  problems: ConfigProblem[];
  /** With `deferMissingKey`: sealed values left as written because no key is configured. */
  unopened: ConfigProblem[];
}

/**
 * Opens every `enc:v1:` value of a secret key (SECRET_KEYS) in the validated config VALUE, read
 * from TEXT (named FILE in problems). The key is read only when some value is sealed. With
 * `deferMissingKey`, a missing key leaves values as written and lists them in `unopened` (a
 * command that uses no password runs on); a key that does not open a value is always a problem.
 */
export function openSealed<T>(value: T, text: string, file: string, keys: SecretKeySources, opts: { deferMissingKey?: boolean } = {}): OpenedSecrets<T> {
  const sealed = secretValues(value).filter((s) => s.value.startsWith(SEALED_PREFIX));
  const result: OpenedSecrets<T> = { value, problems: [], unopened: [] };
  if (sealed.length === 0) return result;
  const locate = keyLocator(text);
  const problem = (path: Path, given: string, message: string): ConfigProblem => ({
    file,
    line: locate(path),
    key: keyPath(path),
    expected: `a value sealed with this gateway's secret key (mailgate config encrypt-secret)`,
    given,
    message,
  });
  let key: Buffer;
  try {
    key = readSecretKey(keys, MISSING_KEY);
  } catch (err) {
    if (!(err instanceof SecretKeyError)) throw err;
    const missing = !secretKeyConfigured(keys);
    const list = missing && opts.deferMissingKey ? result.unopened : result.problems;
    for (const s of sealed) list.push(problem(s.path, missing ? 'no secret key' : 'an unusable secret key', `sealed (enc:v1:), but ${err.message}`));
    return result;
  }
  for (const s of sealed) {
    const secret = openSecret(key, s.value);
    if (secret === undefined) {
      result.problems.push(
        problem(
          s.path,
          'a value that does not open',
          'sealed (enc:v1:) but does not open with this secret key: it was sealed under another key, or altered (seal it again with `mailgate config encrypt-secret`)',
        ),
      );
    } else result.value = replaced(result.value, s.path, secret);
  }
  return result;
}

/**
 * Secrets written in clear in TEXT (not `${NAME}`, not `enc:v1:`), for `config check` to warn
 * about: each with file, line and key. TEXT is valid TOML (the config loaded).
 */
export function clearSecrets(text: string, file: string): ConfigProblem[] {
  const locate = keyLocator(text);
  return secretValues(parse(text))
    .filter((s) => s.value !== '' && !s.value.startsWith(SEALED_PREFIX) && !/\$\{[A-Za-z_]/.test(s.value))
    .map((s) => ({
      file,
      line: locate(s.path),
      key: keyPath(s.path),
      expected: 'a secret sealed with `mailgate config encrypt-secret`, or a ${NAME} reference',
      given: 'a password in clear',
      message: 'written in clear: seal it with `mailgate config encrypt-secret` (or use ${NAME})',
    }));
}
