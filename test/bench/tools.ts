/**
 * The outside peers of the ingest bench, installed on first use (like ensureDovecot in
 * test/helpers/dovecot.ts): Postfix's smtp-source and smtp-sink from Debian's `postfix`
 * package, and Haraka from npm into a cache directory (never into package.json).
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { accepts } from '../helpers/ports.js';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const SMTP_SOURCE = '/usr/sbin/smtp-source';
export const SMTP_SINK = '/usr/sbin/smtp-sink';
export const HARAKA_VERSION = '3.3.4';
/** Where Haraka is installed: outside the project, so `npm ci` neither sees nor removes it. */
export const harakaPrefix = path.join(tmpdir(), 'mailgate-bench-cache', `haraka-${HARAKA_VERSION}`);
export const harakaBin = path.join(harakaPrefix, 'node_modules', 'Haraka', 'bin', 'haraka');

function failure(what: string, how: string, err: unknown): Error {
  const e = err as { stderr?: string; message: string };
  const tail = (e.stderr ?? '').trim().split('\n').slice(-15).join('\n');
  return new Error(`Installing ${what} failed (${e.message.split('\n')[0]}); ${how}\n${tail}`, { cause: err });
}

/**
 * Installs Debian's `postfix` package when smtp-source or smtp-sink is missing, without a
 * running Postfix: debconf is told "No configuration" (no main.cf, nothing to start) and, when
 * the machine has no policy-rc.d, one that refuses every service start is put in place for the
 * install and removed afterwards. Afterwards port 25 must be as it was before.
 */
export async function ensurePostfixTools(): Promise<void> {
  if (existsSync(SMTP_SOURCE) && existsSync(SMTP_SINK)) return;
  const how = 'install it by hand: apt-get install --no-install-recommends postfix (then make sure no Postfix runs)';
  if (process.platform !== 'linux' || !existsSync('/usr/bin/apt-get')) {
    throw new Error(`smtp-source/smtp-sink (Debian's postfix package) are missing and this is not a Debian-like system with apt-get; ${how}`);
  }
  if (process.getuid?.() !== 0) throw new Error(`smtp-source/smtp-sink are missing and the bench is not running as root, so it cannot install them; ${how}`);
  const port25Before = await accepts(25);
  const script = [
    'set -e',
    `[ -x ${SMTP_SOURCE} ] && [ -x ${SMTP_SINK} ] && exit 0`,
    // A policy-rc.d that exits 101 forbids invoke-rc.d to start any service (Debian policy 9.3.3.1).
    'made=',
    'if [ ! -e /usr/sbin/policy-rc.d ]; then printf "#!/bin/sh\\nexit 101\\n" > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made=1; fi',
    'trap \'[ -n "$made" ] && rm -f /usr/sbin/policy-rc.d\' EXIT',
    'echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections',
    'apt-get update -q',
    'DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postfix',
  ].join('\n');
  try {
    await run('flock', [path.join(tmpdir(), 'mailgate-postfix-install.lock'), 'sh', '-c', script], {
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      maxBuffer: 64 * 1024 * 1024,
      timeout: 10 * 60 * 1000,
    });
  } catch (err) {
    throw failure("Debian's postfix package", how, err);
  }
  if (!existsSync(SMTP_SOURCE) || !existsSync(SMTP_SINK)) throw new Error(`apt-get reported success but ${SMTP_SOURCE} or ${SMTP_SINK} is missing; ${how}`);
  if (!port25Before && (await accepts(25))) {
    throw new Error('Installing postfix started a server on port 25 (policy-rc.d did not stop it): stop it with `postfix stop` and check /usr/sbin/policy-rc.d');
  }
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
