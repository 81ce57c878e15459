/**
 * Loading `mailgate.toml`: TOML -> `${ENV}` expansion -> schema -> paths made absolute -> frozen.
 * Every failure is a ConfigError listing each problem with its file, line and key.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { configSchema, type Config } from './schema.js';
import { ConfigError, loadToml, type ConfigProblem } from '../../lib/config-file/toml.js';
import { hashPassword } from './password.js';
import { openSealed, SECRET_KEYS } from './secrets.js';
import { storageWithPaths } from './storage.js';

export type { ConfigProblem } from '../../lib/config-file/toml.js';
export { hashPassword, verifyPassword } from './password.js';

/** Environment variables that `${NAME}` references are expanded from. */
export type ConfigEnv = Readonly<Record<string, string | undefined>>;

/** The file name mailgate looks for in the working directory when none is given. */
export const DEFAULT_CONFIG_FILE = 'mailgate.toml';

/**
 * What a secret key holds while its variable is unset, for a command that does not use it; other
 * keys have none and must be set. Secrets (passwords of mail servers and relays, OAuth client
 * secrets, the hashes of login passwords) are what `${NAME}` is for (config.example.toml), and
 * the service's environment has them where an admin's shell often does not. A password keeps
 * the text as written; a password hash must be one to pass validation: that of a random
 * password nobody knows, so nothing could log in with it.
 */
function secretStandIn(path: readonly PropertyKey[], written: string): string | undefined {
  const key = path[path.length - 1];
  if (typeof key === 'string' && SECRET_KEYS.has(key)) return written;
  if (key === 'password_hash') return hashPassword(randomBytes(32).toString('base64'));
  return undefined;
}

/**
 * `required`: every `${NAME}` must be set and every `enc:v1:` secret open, as `serve` needs.
 * `deferred`: a secret key whose variable is unset holds a stand-in (secretStandIn), and a
 * sealed secret stays as written when no secret key is configured; both are listed in
 * `unsetSecrets` (a command that reads the store uses no password); any other key's unset
 * variable, and a sealed value the key does not open, is still an error. `check`: as deferred
 * for variables, but sealed secrets must open (`config check`: the key is part of the setup).
 */
export type SecretsMode = 'required' | 'deferred' | 'check';

/** A configuration as a command loaded it. */
export interface LoadedConfig {
  config: Config;
  /** The absolute path of the file read; absent for the built-in defaults. */
  file?: string;
  /**
   * Secrets whose variable is not set in this environment (only with `secrets: 'deferred'`):
   * their keys hold a stand-in. Call requireSecrets before using one.
   */
  unsetSecrets: readonly ConfigProblem[];
}

/** Reads, validates and freezes the config in `file`; relative paths in it are taken from the file's directory. */
export function loadConfigFile(file: string, env: ConfigEnv = process.env): Config {
  return fromFile(path.resolve(file), file, env, 'required').config;
}

/** Validates config `text` as if read from `file` (used in problems and to resolve relative paths). */
export function loadConfigText(text: string, file: string, env: ConfigEnv = process.env): Config {
  return fromText(text, file, path.dirname(path.resolve(file)), env, 'required').config;
}

/** The built-in configuration, used when there is no file; relative paths are taken from `cwd`. */
export function defaultConfig(cwd: string = process.cwd()): Config {
  return finish(configSchema.parse({}), cwd);
}

/**
 * The configuration a command runs with: `file` when given (relative to `cwd`), else
 * `./mailgate.toml` in `cwd` when it exists, else the built-in defaults. `file` in the answer is
 * the absolute path of the file read, absent for the defaults. `secrets` (default `required`):
 * see SecretsMode.
 */
export function resolveConfig(
  opts: { file?: string | undefined; cwd?: string | undefined; env?: ConfigEnv | undefined; secrets?: SecretsMode } = {},
): LoadedConfig {
  const cwd = opts.cwd ?? process.cwd();
  const env = opts.env ?? process.env;
  const secrets = opts.secrets ?? 'required';
  if (opts.file !== undefined) {
    const file = path.resolve(cwd, opts.file);
    return { ...fromFile(file, opts.file, env, secrets), file };
  }
  const found = path.join(cwd, DEFAULT_CONFIG_FILE);
  if (existsSync(found)) return { ...fromFile(found, DEFAULT_CONFIG_FILE, env, secrets), file: found };
  return { config: defaultConfig(cwd), unsetSecrets: [] };
}

/**
 * Fails, as loading with every secret required would have (each problem naming the file, line
 * and key), when a secret the caller is about to use is unset: those under `keys` (key paths
 * such as `alias[0]` or `oauth_app[1]`), or all of them when no keys are given.
 */
export function requireSecrets(loaded: LoadedConfig, keys?: readonly string[]): void {
  const under = (key: string) => !keys || keys.some((k) => key === k || key.startsWith(`${k}.`));
  const missing = loaded.unsetSecrets.filter((p) => under(p.key));
  if (missing.length) throw new ConfigError(missing);
}

/** JSON Schema of the file's contents (the input side: defaults shown, none required), for editors. */
export function configJsonSchema(): object {
  return {
    ...z.toJSONSchema(configSchema, { io: 'input' }),
    title: 'mailgate configuration (mailgate.toml)',
  };
}

/** Reads the file at `absolute`, naming it `shown` in problems. */
function fromFile(absolute: string, shown: string, env: ConfigEnv, secrets: SecretsMode): Omit<LoadedConfig, 'file'> {
  let text: string;
  try {
    text = readFileSync(absolute, 'utf8');
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    const code = (err as { code?: unknown }).code;
    throw new ConfigError([
      {
        file: shown,
        key: '',
        expected: 'a readable file',
        given: typeof code === 'string' ? code : reason,
        message: `cannot read the configuration file: ${reason}`,
      },
    ]);
  }
  return fromText(text, shown, path.dirname(absolute), env, secrets);
}

function fromText(text: string, shown: string, baseDir: string, env: ConfigEnv, secrets: SecretsMode): Omit<LoadedConfig, 'file'> {
  const result = loadToml(text, shown, configSchema, { env, ...(secrets === 'required' ? {} : { deferUnset: secretStandIn }) });
  if (!result.ok) throw new ConfigError(result.problems);
  const keyFile = result.value.secret_key_file;
  const keys = { env, ...(keyFile === undefined ? {} : { keyFile: path.resolve(baseDir, keyFile) }) };
  const opened = openSealed(result.value, text, shown, keys, { deferMissingKey: secrets === 'deferred' });
  if (opened.problems.length) throw new ConfigError(opened.problems);
  return { config: finish(opened.value, baseDir), unsetSecrets: [...result.unset, ...opened.unopened] };
}

/** Makes relative paths absolute against `baseDir` and freezes the whole object. */
function finish(config: Config, baseDir: string): Config {
  const at = (p: string) => path.resolve(baseDir, p);
  const tls = config.smtp.tls;
  const subTls = config.submission.tls;
  const adminTls = config.admin.tls;
  // `ca_file` keys wherever they are: relative to the config file.
  const withCa = <T extends { ca_file?: string | undefined }>(t: T): T => (t.ca_file === undefined ? t : { ...t, ca_file: at(t.ca_file) });
  const partition = config.partition;
  return deepFreeze({
    ...config,
    data_dir: at(config.data_dir),
    smtp: { ...config.smtp, tls: tls && { cert: at(tls.cert), key: at(tls.key) } },
    submission: { ...config.submission, tls: subTls && { cert: at(subTls.cert), key: at(subTls.key) } },
    admin: { ...config.admin, tls: adminTls && { cert: at(adminTls.cert), key: at(adminTls.key) } },
    partition: {
      ...partition,
      ...(partition.policy === undefined ? {} : { policy: at(partition.policy) }),
      ...(partition.default_smtp ? { default_smtp: withCa(partition.default_smtp) } : {}),
    },
    department: config.department.map((d) => (d.policy === undefined ? d : { ...d, policy: at(d.policy) })),
    alias: config.alias.map((a) => ({
      ...a,
      ...(a.incoming ? { incoming: withCa(a.incoming) } : {}),
      ...(a.outgoing ? { outgoing: withCa(a.outgoing) } : {}),
      ...(a.quarantine ? { quarantine: withCa(a.quarantine) } : {}),
    })),
    relay: config.relay.map(withCa),
    quarantine: withCa(config.quarantine),
    oauth_app: config.oauth_app.map((o) => (o.ca_file === undefined ? o : { ...o, ca_file: at(o.ca_file) })),
    ...(config.secret_key_file === undefined ? {} : { secret_key_file: at(config.secret_key_file) }),
    ...(config.storage === undefined ? {} : { storage: storageWithPaths(config.storage, baseDir) }),
  });
}

// fastify does the same with its options: nothing downstream can change the config it was given.
function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
