/**
 * `[storage]` and `[node]` in `mailgate.toml` (issue 16): which store keeps the records (LevelDB
 * in `data_dir` unless `[storage] postgres` names a database), and the name this node goes by
 * among several sharing one database (in mailbox leases, logs, metrics and the console). Kept
 * apart from schema.ts, as retention.ts is; the same conventions apply.
 */
import path from 'node:path';
import { z } from 'zod';
import type { OpenStoreOptions } from '../../storage/open.js';
import { is, positive } from './fields.js';
import { defaultNodeName } from '../../storage/node-name.js';

/**
 * The URL parameters a `[storage] postgres` URL may carry: TLS as node-postgres reads it from
 * the URL, and a socket directory (`?host=/var/run/postgresql`). Anything else is refused, so a
 * misspelt `sslmode` cannot silently connect in clear.
 */
const URL_PARAMETERS = ['sslmode', 'sslrootcert', 'sslcert', 'sslkey', 'host', 'application_name'] as const;

/**
 * The `sslmode` values that mean here what they say. node-postgres 8 (without its
 * `uselibpqcompat`) treats `prefer`, `require` and `verify-ca` as `verify-full` and warns on
 * every connect; libpq's `require` does not check the certificate. Rather than either surprise,
 * those three are refused with what to write instead.
 */
const SSL_MODES = ['disable', 'verify-full', 'no-verify'] as const;

const URL_EXPECTED = 'a URL such as "postgres://mailgate@db.example.com:5432/mailgate"';

/** The problem with a `[storage] postgres` URL, as what was expected, or undefined when it is usable. */
function urlProblem(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return URL_EXPECTED;
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') return `${URL_EXPECTED} (postgres: or postgresql:)`;
  if (url.password !== '') return 'a URL without a password: set [storage] password (a ${NAME} reference or an enc:v1: value) instead';
  if (url.pathname.length <= 1 || url.pathname.slice(1).includes('/')) return `${URL_EXPECTED}, naming the database after the last /`;
  if (url.hostname === '' && !url.searchParams.has('host')) return `${URL_EXPECTED}, naming the server (or ?host=SOCKET_DIRECTORY)`;
  for (const [name, v] of url.searchParams) {
    if (!(URL_PARAMETERS as readonly string[]).includes(name)) return `a URL whose parameters are among ${URL_PARAMETERS.join(', ')} (not ${name})`;
    if (name === 'sslmode' && !(SSL_MODES as readonly string[]).includes(v)) {
      return `sslmode disable, verify-full (TLS, certificate and host name checked) or no-verify (TLS, certificate not checked), not ${JSON.stringify(v)}: node-postgres reads prefer, require and verify-ca as verify-full`;
    }
  }
  return undefined;
}

/** `[storage]`: where the records are kept. Absent: LevelDB in `data_dir`, as before issue 16. */
export const storageSchema = z
  .strictObject({
    /**
     * The PostgreSQL database the records are kept in, shared by every node given the same one:
     * `postgres://USER@HOST:PORT/DB`, TLS through `?sslmode=verify-full&sslrootcert=FILE`
     * (relative to the config file). No password here: `password` holds it.
     */
    postgres: z
      .string(is(URL_EXPECTED))
      .superRefine((v, ctx) => {
        const problem = urlProblem(v);
        if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem, input: v });
      })
      .optional(),
    /** The database user's password; use `${ENV_NAME}` or an `enc:v1:` value rather than writing it here. Default: none (trust, a client certificate, or PGPASSWORD). */
    password: z.string().optional(),
    /** Connections to the database this node keeps at most (its pool). Default: 10. */
    connections: positive('connections').optional(),
  })
  .superRefine((s, ctx) => {
    if (s.postgres !== undefined) return;
    for (const key of ['password', 'connections'] as const) {
      if (s[key] !== undefined) ctx.addIssue({ code: 'custom', path: [key], input: s[key], message: `no ${key} without postgres (LevelDB needs none)` });
    }
  })
  .transform((s) => (s.postgres === undefined ? undefined : { postgres: s.postgres, connections: s.connections ?? 10, password: s.password }));

const NODE_NAME = 'a node name of letters, digits and . - _ (at most 64)';
const NODE_NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;

/** `[node]`: this gateway among several on one database. */
export const nodeSchema = z
  .strictObject({
    /** How this node is named in mailbox leases, logs (`node`), metrics (`mailgate_node_info`) and the console. Default: the host name. */
    name: z.string(is(NODE_NAME)).regex(NODE_NAME_RE, is(NODE_NAME)).optional(),
  })
  .prefault({})
  .transform((n) => ({ name: n.name ?? defaultNodeName() }));

/** `[storage]` once validated: absent for LevelDB. */
export type StorageConfig = NonNullable<z.output<typeof storageSchema>>;

/** `[storage]` with `sslrootcert`, `sslcert` and `sslkey` made absolute against the config file's directory (node-postgres reads them from the working directory). */
export function storageWithPaths(storage: StorageConfig, baseDir: string): StorageConfig {
  const url = new URL(storage.postgres);
  const files = ['sslrootcert', 'sslcert', 'sslkey'].filter((name) => url.searchParams.has(name));
  if (files.length === 0) return storage;
  for (const name of files) url.searchParams.set(name, path.resolve(baseDir, url.searchParams.get(name)!));
  return { ...storage, postgres: url.href };
}

/** What storage/open.ts's openStore needs of the configuration (add `createIfEmpty` and a logger); no `postgres`: LevelDB in `data_dir`. */
export type ConfiguredStore = Pick<OpenStoreOptions, 'postgres'> & { node: string };

/**
 * The store CONFIG names, for openStore: the database's URL with the password put in (as
 * node-postgres reads it) and `application_name` set to `mailgate/NODE` unless given, so
 * `pg_stat_activity` shows which node holds which connection.
 */
export function configuredStore(config: { storage?: StorageConfig | undefined; node: { name: string } }): ConfiguredStore {
  const storage = config.storage;
  if (!storage) return { node: config.node.name };
  const url = new URL(storage.postgres);
  // Encoded first: the URL setter leaves % alone, and node-postgres decodes the password.
  if (storage.password !== undefined && storage.password !== '') url.password = encodeURIComponent(storage.password);
  if (!url.searchParams.has('application_name')) url.searchParams.set('application_name', `mailgate/${config.node.name}`);
  return { postgres: { url: url.href, connections: storage.connections }, node: config.node.name };
}
