/**
 * Real bounces from many MTAs, installed from Debian: python3-flufl.bounce (GNU Mailman's bounce
 * detector) ships about 115 of them as test data. Read in place, never copied into the repo.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

const PACKAGE = 'python3-flufl.bounce';
/** Where the package puts its bounces. */
export const FLUFL_DATA = '/usr/lib/python3/dist-packages/flufl/bounce/tests/data';

const installed = () => existsSync(FLUFL_DATA) && readdirSync(FLUFL_DATA).some((f) => f.endsWith('.txt'));

/**
 * Installs Debian's python3-flufl.bounce when its bounces are missing (we run as root on a fresh
 * Debian machine in CI) and returns the folder that holds them. Concurrent test files serialise
 * on a lock file, so apt runs once. Throws an error saying what to do when installing is impossible.
 */
export async function ensureFluflBounces(): Promise<string> {
  if (installed()) return FLUFL_DATA;
  const how = `install it by hand: apt-get install ${PACKAGE}`;
  if (process.platform !== 'linux' || !existsSync('/usr/bin/apt-get')) {
    throw new Error(`The real bounces of ${PACKAGE} are not installed (${FLUFL_DATA}) and this is not a Debian-like system with apt-get; ${how}`);
  }
  if (process.getuid?.() !== 0) {
    throw new Error(`The real bounces of ${PACKAGE} are not installed (${FLUFL_DATA}) and the tests are not running as root, so they cannot install them; ${how}`);
  }
  // flock: two test files may start at once; the second waits and then finds the package installed.
  const script = [
    'set -e',
    `[ -d ${FLUFL_DATA} ] && exit 0`,
    'apt-get update -q',
    `DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ${PACKAGE}`,
  ].join('\n');
  try {
    await run('flock', [path.join(tmpdir(), 'mailgate-flufl-install.lock'), 'sh', '-c', script], {
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      maxBuffer: 64 * 1024 * 1024,
      timeout: 10 * 60 * 1000,
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    const tail = (e.stderr ?? '').trim().split('\n').slice(-15).join('\n');
    throw new Error(`Installing ${PACKAGE} with apt-get failed (${e.message.split('\n')[0]}); ${how}\n${tail}`, { cause: err });
  }
  if (!installed()) throw new Error(`apt-get reported success but ${FLUFL_DATA} holds no bounces; ${how}`);
  return FLUFL_DATA;
}
