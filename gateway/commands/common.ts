import type { Command } from 'commander';
import { ageMs } from '../../lib/age.js';
import type { LoadedConfig } from '../config/load.js';
import type { AliasConfig, Config } from '../config/schema.js';
import type { AdminApi } from '../admin/api.js';
import { openAdminApi } from '../admin/open.js';

/** A command line that makes no sense (bad option value); exits 2 like commander's own errors. */
export class UsageError extends Error {}

/**
 * The configuration every command uses: `--config FILE` anywhere on the line, else
 * `./mailgate.toml`, else defaults. Secrets (`${NAME}` in password and client_secret keys) are
 * in the service's environment, seldom in an admin's shell: only a command that uses them asks
 * for them, `serve` with `secrets: 'required'` (all, as loading always did), others with
 * requireSecrets for the ones they use; the rest run with them unset.
 */
export async function commandConfig(cmd: Command, opts: { secrets?: 'required' } = {}): Promise<LoadedConfig> {
  const { config } = cmd.optsWithGlobals<{ config?: string }>();
  // Imported when a command runs, not when the CLI starts: building the schema (zod) is a good part of a start.
  const { resolveConfig } = await import('../config/load.js');
  return resolveConfig({ file: config, cwd: process.cwd(), secrets: opts.secrets ?? 'deferred' });
}

/** The alias named NAME; a usage error (exit 2) naming the configured ones when there is none. */
export function knownAlias(config: Config, name: string): AliasConfig {
  const alias = config.alias.find((a) => a.name === name);
  if (alias) return alias;
  const known = config.alias.map((a) => a.name);
  throw new UsageError(`no alias named "${name}"; known aliases: ${known.length ? known.join(', ') : '(none configured)'}`);
}

/** Parses `--since` (or the option `name`): an ISO 8601 time, or an age such as `30m`, `2h`, `7d` (lib/age.ts). */
export function parseSince(value: string, name = '--since'): Date {
  const age = ageMs(value);
  if (age !== undefined) return new Date(Date.now() - age);
  const t = new Date(value);
  if (Number.isNaN(t.getTime())) throw new UsageError(`${name}: expected an ISO 8601 time or an age like 2h or 7d, got "${value}"`);
  return t;
}

/** Parses a positive whole number option. */
export function parsePositive(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new UsageError(`${name}: expected a whole number of at least 1, got "${value}"`);
    return n;
  };
}

/**
 * Runs `run` with the admin API: the running gateway's, or this process's own on the stopped
 * gateway's store (`create`: made when there is none yet, for commands that add to it), and
 * lets go of it after.
 */
export async function withAdminApi<T>(cmd: Command, run: (api: AdminApi) => Promise<T>, opts: { create?: boolean } = {}): Promise<T> {
  const api = await openAdminApi(await commandConfig(cmd), opts);
  try {
    return await run(api);
  } finally {
    await api.close();
  }
}

/** One line of text cut to `width` columns with an ellipsis, padded, for tables. */
export function clip(text: string | undefined, width: number): string {
  const t = (text ?? '').replace(/\s+/g, ' ');
  return (t.length > width ? t.slice(0, width - 1) + '…' : t).padEnd(width);
}

/** An ISO 8601 time as tables show it: `2026-05-04 09:30:00` (UTC). */
export function shortTime(iso: string): string {
  return iso.slice(0, 19).replace('T', ' ');
}
