/**
 * Installing what the tests run against from Debian's packages, on first use: `npm test` on a
 * fresh Debian machine needs nothing beside the clone (we run as root there, as CI does).
 * Concurrent test files serialise on one lock file, so apt runs once per package set and two
 * installs never overlap (apt refuses a second one while dpkg runs, and a policy-rc.d one install
 * put in place and removes must not go while another is installing).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface DebianPackages {
  /** What the packages are, for errors: `Dovecot`, `Debian's postfix package`. */
  what: string;
  packages: readonly string[];
  /** True when what the tests need is there (checked before and after installing). */
  installed: () => boolean;
  /** The same check as a shell test, run under the lock so a second waiter skips apt. */
  installedTest: string;
  /** Shell lines run before `apt-get install` (debconf answers). */
  before?: readonly string[];
  /**
   * The packages hold a daemon the install would start as a system service (PostgreSQL's
   * cluster on 5432, Postfix on 25, Dovecot on 143 and 110): the tests start their own, so service starts are refused
   * for the install only. Default false.
   */
  noServiceStarts?: boolean;
  /** How to install by hand, when we cannot. Default: `apt-get install PACKAGES`. */
  how?: string;
}

/**
 * A policy-rc.d that exits 101 forbids invoke-rc.d to start any service (Debian policy 9.3.3.1).
 * Put in place only when the machine has none (a container's own one stays as it is) and
 * removed when the install ends, so the admin's later service starts are not refused.
 */
const NO_SERVICE_STARTS = [
  'made=',
  'if [ ! -e /usr/sbin/policy-rc.d ]; then printf "#!/bin/sh\\nexit 101\\n" > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made=1; fi',
  'trap \'[ -n "$made" ] && rm -f /usr/sbin/policy-rc.d\' EXIT',
];

/** Installs `p.packages` when `p.installed()` is false; throws an error saying what to do when that is impossible. */
export async function ensureDebianPackages(p: DebianPackages): Promise<void> {
  if (p.installed()) return;
  const how = p.how ?? `install by hand: apt-get install --no-install-recommends ${p.packages.join(' ')}`;
  if (process.platform !== 'linux' || !existsSync('/usr/bin/apt-get')) {
    throw new Error(`${p.what} (${p.packages.join(', ')}) is not installed and this is not a Debian-like system with apt-get; ${how}`);
  }
  if (process.getuid?.() !== 0) {
    throw new Error(`${p.what} (${p.packages.join(', ')}) is not installed and the tests are not running as root, so they cannot install it; ${how}`);
  }
  const script = [
    'set -e',
    `if ${p.installedTest}; then exit 0; fi`,
    ...(p.noServiceStarts === true ? NO_SERVICE_STARTS : []),
    ...(p.before ?? []),
    'apt-get update -q',
    `DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ${p.packages.join(' ')}`,
  ].join('\n');
  const lock = path.join(tmpdir(), 'mailgate-apt-install.lock');
  try {
    await run('flock', [lock, 'sh', '-c', script], {
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      maxBuffer: 64 * 1024 * 1024,
      timeout: 10 * 60 * 1000,
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    const tail = (e.stderr ?? '').trim().split('\n').slice(-15).join('\n');
    throw new Error(`Installing ${p.what} with apt-get failed (${e.message.split('\n')[0]}); ${how}\n${tail}`, { cause: err });
  }
  if (!p.installed()) throw new Error(`apt-get reported success but ${p.what} is still missing; ${how}`);
}
