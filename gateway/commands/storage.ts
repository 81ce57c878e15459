/**
 * `mailgate storage migrate` and `mailgate storage copy` (issue 16): the store's own upkeep, not
 * admin operations on a running gateway (those are gateway/admin/api.ts's), so they open the
 * store themselves. Upgrading a database several nodes share is an admin's decision: `serve`
 * creates the tables on an empty database but never upgrades them.
 */
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { COUNT_NAMES, compareStores, copyStore, storeContents, type StoreCounts } from '../../storage/copy.js';
import type { Store } from '../../storage/store.js';
import { commandConfig, UsageError } from './common.js';

// Connections a copy's target keeps: a handful of messages and records are written at once.
const COPY_CONNECTIONS = 4;

export function storageCommand(): Command {
  const storage = new Command('storage').description('create or upgrade the PostgreSQL schema; copy a store into another');

  storage
    .command('migrate')
    .description("create or upgrade mailgate's tables in the PostgreSQL database of [storage] postgres (or --url); LevelDB migrates itself")
    .option('--url <url>', 'the database to migrate instead of the configured one (postgres://USER:PASSWORD@HOST:PORT/DB, or PGPASSWORD)')
    .action(async (opts: { url?: string }, cmd: Command) => {
      const loaded = await commandConfig(cmd);
      // The PostgreSQL client and the stores: only for the command that runs.
      const { databaseName, isDatabaseUrl, migrateStore } = await import('../../storage/open.js');
      const { requireSecrets } = await import('../config/load.js');
      const { configuredStore } = await import('../config/storage.js');
      const { config } = loaded;
      let url = opts.url;
      if (url === undefined) {
        if (!config.storage) {
          process.stdout.write(`this configuration keeps its store in LevelDB (${config.data_dir}), which migrates itself when it is opened: nothing to do\n`);
          return;
        }
        requireSecrets(loaded, ['storage']);
        url = configuredStore(config).postgres!.url;
      } else if (!isDatabaseUrl(url)) throw new UsageError(`--url: expected a postgres:// URL, got ${JSON.stringify(databaseName(url))}`);
      try {
        const { to, applied } = await migrateStore(url, { node: config.node.name });
        if (applied.length === 0) process.stdout.write(`schema is up to date (${to})\n`);
        for (const m of applied) process.stdout.write(`schema ${m.version - 1} -> ${m.version}: ${m.description}\n`);
      } catch (err) {
        throw failed('storage migrate', err);
      }
    });

  storage
    .command('copy')
    .description(
      "copy this configuration's store (the gateway stopped) into an empty one: a postgres:// URL (migrated first) or a directory for LevelDB; then compare the two",
    )
    .requiredOption('--to <url-or-dir>', 'the target: postgres://USER:PASSWORD@HOST:PORT/DB (or PGPASSWORD), or a new or empty directory')
    .action(async (opts: { to: string }, cmd: Command) => {
      const loaded = await commandConfig(cmd);
      const { errors, storeErrors } = await import('../../lib/errors.js');
      const { databaseName, isDatabaseUrl, openStore } = await import('../../storage/open.js');
      const { requireSecrets } = await import('../config/load.js');
      const { configuredStore } = await import('../config/storage.js');
      const { controlSocketPath, gatewayAnswers } = await import('../admin/http-client.js');
      const { config } = loaded;
      const settings = configuredStore(config);
      if (await gatewayAnswers(controlSocketPath(config.data_dir))) {
        throw failed('storage copy', errors.gatewayRunning(config.data_dir, undefined), 'stop it first: the copy must read a store that does not change');
      }
      if (settings.postgres) requireSecrets(loaded, ['storage']);
      else if (!existsSync(config.data_dir)) throw failed('storage copy', errors.noStore(config.data_dir));

      const toDatabase = isDatabaseUrl(opts.to);
      const targetDir = toDatabase ? undefined : path.resolve(opts.to);
      const where = toDatabase ? databaseName(opts.to) : targetDir!;
      const sourceWhere = settings.postgres ? databaseName(settings.postgres.url) : config.data_dir;
      if (where === sourceWhere) throw new UsageError(`--to: ${where} is the store being copied`);
      if (targetDir !== undefined && existsSync(targetDir) && readdirSync(targetDir).length > 0) {
        throw failed('storage copy', storeErrors.copyTargetNotEmpty(where, 'files'));
      }

      const closing: (() => Promise<unknown>)[] = [];
      try {
        const source = await openStore(config.data_dir, { ...settings, createIfEmpty: false });
        closing.push(() => source.close());
        let target: Store;
        if (toDatabase) {
          // The target node's spool would go here; a copy stores nothing through a spool.
          const dir = await mkdtemp(path.join(tmpdir(), 'mailgate-copy-'));
          closing.push(() => rm(dir, { recursive: true, force: true }));
          target = await openStore(dir, { postgres: { url: opts.to, connections: COPY_CONNECTIONS }, node: config.node.name, createIfEmpty: true });
        } else {
          mkdirSync(targetDir!, { recursive: true, mode: 0o700 });
          target = await openStore(targetDir!);
        }
        closing.unshift(() => target.close());
        const held = await storeContents(target);
        if (held.length) throw storeErrors.copyTargetNotEmpty(where, held.join(', '));

        process.stderr.write(`copying ${sourceWhere} to ${where}\n`);
        const copied = await copyStore(source, target, {
          onProgress: ({ phase, counts }) => process.stderr.write(`  ${phase}: ${countsLine(counts)}\n`),
        });
        process.stdout.write(`copied ${countsLine(copied)}\n`);
        const check = await compareStores(source, target);
        if (check.differences.length) {
          for (const d of check.differences) process.stderr.write(`  differs: ${d}\n`);
          if (check.more) process.stderr.write(`  and ${check.more} more\n`);
          throw storeErrors.copyMismatch(where, check.differences.length + check.more);
        }
        process.stdout.write(`checked: ${where} holds what ${sourceWhere} does (${check.target.messages} messages, ${megabytes(check.target.messageBytes)})\n`);
      } catch (err) {
        throw failed('storage copy', err);
      } finally {
        for (const close of closing) await close().catch(() => {});
      }
    });

  return storage;
}

/** A count line: `12 messages (3.4 MB), 1 quarantined attachments, ...`, kinds with none left out after the messages. */
function countsLine(counts: StoreCounts): string {
  const parts = [`${counts.messages} messages (${megabytes(counts.messageBytes)})`];
  for (const key of Object.keys(COUNT_NAMES) as (keyof StoreCounts)[]) {
    if (key !== 'messages' && key !== 'messageBytes' && counts[key] > 0) parts.push(`${counts[key]} ${COUNT_NAMES[key]}`);
  }
  return parts.join(', ');
}

function megabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/**
 * ERR as the CLI prints it: led by the command and the error's code (a catalogue code such as
 * STORE_SCHEMA_TOO_NEW, PostgreSQL's SQLSTATE, or a system code such as ECONNREFUSED), so a
 * script or a search finds it; ADVICE follows the sentence.
 */
function failed(command: string, err: unknown, advice?: string): Error {
  if (err instanceof UsageError) return err;
  const { code, sentence, message } = err as { code?: unknown; sentence?: unknown; message?: unknown };
  const text = typeof sentence === 'string' ? sentence : typeof message === 'string' ? message : String(err);
  const lead = typeof code === 'string' && code !== '' ? `${code}: ` : '';
  return new Error(`${command}: ${lead}${text}${advice ? `: ${advice}` : ''}`, { cause: err });
}
