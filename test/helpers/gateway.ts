import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { loadConfigFile } from '../../gateway/config/load.js';
import type { Config } from '../../gateway/config/schema.js';
import { startGateway, type Gateway } from '../../gateway/gateway.js';
import { silentLogger, type Logger } from '../../lib/logger.js';
import { pino } from 'pino';
import { openStore } from '../../storage/open.js';
import type { Store } from '../../storage/store.js';
import { configuredStore } from '../../gateway/config/storage.js';
import { testStorageToml } from './test-store.js';
import type { Stage } from '../../policy/chain/stage.js';
import { cliPath, tempDir } from './paths.js';

/**
 * `store: 'leveldb'`: LevelDB in the data directory whatever MAILGATE_TEST_STORE says, for the
 * tests of LevelDB itself (its files, its lock, faults injected below it).
 */
export interface TestStoreChoice {
  store?: 'leveldb';
}

/** A gateway running in this process on an ephemeral port, with its own data directory and config file. */
export interface TestGateway {
  port: number;
  config: Config;
  configFile: string;
  dir: string;
  store: Store;
  gateway: Gateway;
  /** Stops the gateway and closes the store; the directory stays until cleanup. */
  stop(): Promise<void>;
  cleanup(): Promise<void>;
}

/** Writes a config file (the given TOML after a listen/data_dir header) and starts a gateway on it. */
export async function startTestGateway(
  toml = '',
  opts: { stages?: (department?: string) => readonly Stage[]; logger?: Logger } & TestStoreChoice = {},
): Promise<TestGateway> {
  const { dir, cleanup } = await tempDir();
  const configFile = await writeTestConfig(dir, toml, opts);
  const { config, store, gateway, stop } = await startGatewayOn(configFile, opts);
  return {
    port: gateway.smtp.addresses[0]!.port,
    config,
    configFile,
    dir,
    store,
    gateway,
    stop,
    cleanup: async () => {
      await stop();
      await cleanup();
    },
  };
}

/** Writes `DIR/mailgate.toml` with `testConfigText` and returns its path. */
export async function writeTestConfig(dir: string, toml = '', opts: TestStoreChoice = {}): Promise<string> {
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(configFile, testConfigText(dir, toml, opts));
  return configFile;
}

/** Starts a gateway in this process on an existing config file (and the store it names); `stop` is safe to call twice. */
export async function startGatewayOn(
  configFile: string,
  opts: { stages?: (department?: string) => readonly Stage[]; logger?: Logger; retriever?: boolean } = {},
): Promise<{ config: Config; store: Store; gateway: Gateway; stop(): Promise<void> }> {
  const config = loadConfigFile(configFile);
  const logger = opts.logger ?? silentLogger();
  // As `serve` opens it (openOwnStore): LevelDB in data_dir, or the database `[storage]` names.
  const store = await openStore(config.data_dir, { ...configuredStore(config), createIfEmpty: true });
  const gateway = await startGateway({
    config,
    store,
    logger,
    ...(opts.stages ? { stages: opts.stages } : {}),
    ...(opts.retriever === false ? { retriever: false } : {}),
  });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await gateway.stop();
    await store.close();
  };
  return { config, store, gateway, stop };
}

/**
 * A config for tests: data under DIR, SMTP on an ephemeral loopback port, then the caller's
 * TOML. The REST API is off unless the caller has an `[admin]` table, and then on an ephemeral
 * port unless it names one: tests run side by side and none may bind the default 8025.
 * With `MAILGATE_TEST_STORE=postgres` a `[storage]` table names the data directory's database
 * (helpers/test-store.ts), unless the caller's TOML has its own or asks for LevelDB by name.
 */
export function testConfigText(dir: string, toml = '', opts: TestStoreChoice = {}): string {
  // Keys of [smtp] the caller gives replace ours; TOML forbids defining a key twice.
  const callerSmtp = /^\[smtp\]\s*$/m.test(toml);
  const dataDir = path.join(dir, 'data');
  const header = `data_dir = ${JSON.stringify(dataDir)}\n`;
  const storage = opts.store === 'leveldb' || /^\[storage\]\s*$/m.test(toml) ? '' : testStorageToml(dataDir);
  const admin = /^\[admin\]\s*$/m;
  let body = admin.test(toml)
    ? /^listen\s*=\s*"[^"]*:\d+"/m.test(toml.slice(toml.search(admin)))
      ? toml
      : toml.replace(admin, '[admin]\nlisten = "127.0.0.1:0"')
    : toml + '\n[admin]\nenabled = false\n';
  if (callerSmtp) return header + body.replace(/^\[smtp\]\s*$/m, '[smtp]\nlisten = ["127.0.0.1:0"]') + storage;
  body += '\n[smtp]\nlisten = ["127.0.0.1:0"]\n';
  return header + body + storage;
}

export interface CliResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs the compiled `mailgate` CLI and collects its output. */
export function runCli(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string | Buffer } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath, ...args], {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    const out: Buffer[] = [];
    let err = '';
    child.stdout!.on('data', (c: Buffer) => out.push(c));
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr: err }));
  });
}

/** Starts `mailgate serve` as a child process and resolves with its SMTP port once it logs that it is ready. */
export function spawnServe(
  configFile: string,
  opts: { /** Every line serve writes to stdout (its JSON log), from the first. */ onLine?: (line: string) => void } = {},
): Promise<{ port: number; submissionPort?: number; api?: string; child: ReturnType<typeof spawn>; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [cliPath, 'serve', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      opts.onLine?.(line);
      try {
        const entry = JSON.parse(line) as { msg?: string; smtp?: { port: number }[]; submission?: { port: number }[]; api?: string };
        const submission = entry.submission?.[0]?.port;
        if (entry.msg === 'mailgate ready' && entry.smtp?.[0])
          resolve({ port: entry.smtp[0].port, ...(submission ? { submissionPort: submission } : {}), ...(entry.api ? { api: entry.api } : {}), child, exited });
      } catch {
        // not a log line
      }
    });
    void exited.then((code) => reject(new Error(`mailgate serve exited with ${code} before it was ready: ${stderr}`)));
  });
}

/** A logger that keeps every entry, for tests that assert what an admin would read in the log. */
export function capturingLogger(): {
  logger: Logger;
  entries: Record<string, unknown>[];
  waitFor(match: (e: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
} {
  const entries: Record<string, unknown>[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void entries.push(JSON.parse(line) as Record<string, unknown>) });
  return {
    logger,
    entries,
    async waitFor(match, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = entries.find(match);
        if (found) return found;
        if (Date.now() > deadline) throw new Error(`no such log entry within ${timeoutMs} ms; have: ${entries.map((e) => e.msg).join(' | ')}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
}
