/**
 * The outside peers of the ingest bench, installed on first use (like ensureDovecot in
 * test/helpers/dovecot.ts): Postfix's smtp-source and smtp-sink from Debian's `postfix`
 * package (ensurePostfix in test/helpers/postfix.ts), and Haraka from npm into a cache
 * directory (never into package.json).
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

// Installing Postfix is shared with the tests that relay through a real Postfix.
export { ensurePostfix as ensurePostfixTools, SMTP_SINK, SMTP_SOURCE } from '../helpers/postfix.js';
export const HARAKA_VERSION = '3.3.4';
/** Where Haraka is installed: outside the project, so `npm ci` neither sees nor removes it. */
export const harakaPrefix = path.join(tmpdir(), 'mailgate-bench-cache', `haraka-${HARAKA_VERSION}`);
export const harakaBin = path.join(harakaPrefix, 'node_modules', 'Haraka', 'bin', 'haraka');

function failure(what: string, how: string, err: unknown): Error {
  const e = err as { stderr?: string; message: string };
  const tail = (e.stderr ?? '').trim().split('\n').slice(-15).join('\n');
  return new Error(`Installing ${what} failed (${e.message.split('\n')[0]}); ${how}\n${tail}`, { cause: err });
}

/** The Postfix version (`mail_version`), read from the package's files. */
export async function postfixVersion(): Promise<string> {
  const { stdout } = await run('dpkg-query', ['-W', '-f=${Version}', 'postfix']).catch(() => ({ stdout: 'unknown' }));
  return stdout.trim();
}

/** Installs Haraka `HARAKA_VERSION` from npm into `harakaPrefix` when it is not there yet (`--no-save`: not a project dependency). */
export async function ensureHaraka(): Promise<string> {
  if (installedHaraka() === HARAKA_VERSION) return harakaBin;
  const how = `install it by hand: npm install --no-save --prefix ${harakaPrefix} Haraka@${HARAKA_VERSION}`;
  const script = [
    'set -e',
    `mkdir -p ${JSON.stringify(harakaPrefix)}`,
    // --prefix with no package.json of its own would walk up to the project; give it one.
    `[ -f ${JSON.stringify(path.join(harakaPrefix, 'package.json'))} ] || echo '{"private":true}' > ${JSON.stringify(path.join(harakaPrefix, 'package.json'))}`,
    `npm install --no-save --no-audit --no-fund --loglevel=error --prefix ${JSON.stringify(harakaPrefix)} Haraka@${HARAKA_VERSION}`,
  ].join('\n');
  try {
    await run('flock', [path.join(tmpdir(), 'mailgate-haraka-install.lock'), 'sh', '-c', script], { maxBuffer: 64 * 1024 * 1024, timeout: 10 * 60 * 1000 });
  } catch (err) {
    throw failure(`Haraka ${HARAKA_VERSION} from npm`, how, err);
  }
  if (installedHaraka() !== HARAKA_VERSION) throw new Error(`npm reported success but Haraka ${HARAKA_VERSION} is not in ${harakaPrefix}; ${how}`);
  return harakaBin;
}

function installedHaraka(): string | undefined {
  try {
    return (JSON.parse(readFileSync(path.join(harakaPrefix, 'node_modules', 'Haraka', 'package.json'), 'utf8')) as { version?: string }).version;
  } catch {
    return undefined;
  }
}
