/**
 * A real Postfix for tests (Debian's `postfix` package): a private, throwaway instance with its
 * own configuration, queue and data directories under a temporary directory, so it never
 * reads or changes /etc/postfix and never listens on port 25. This is the README's deployment:
 * a local Postfix whose `relayhost` is mailgate.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ensureDebianPackages } from './debian.js';
import { accepts, freePorts } from './ports.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const POSTFIX = '/usr/sbin/postfix';
export const SMTP_SOURCE = '/usr/sbin/smtp-source';
export const SMTP_SINK = '/usr/sbin/smtp-sink';
/** Debian's daemon_directory: master, smtpd, smtp, qmgr, postlogd. */
const DAEMONS = '/usr/lib/postfix/sbin';

/** True when the package's control command, daemons and load tools are all there. */
function postfixInstalled(): boolean {
  return [POSTFIX, SMTP_SOURCE, SMTP_SINK, ...['master', 'smtpd', 'smtp', 'qmgr', 'postlogd'].map((d) => path.join(DAEMONS, d))].every((f) => existsSync(f));
}

/**
 * Installs Debian's `postfix` package when it is missing, without a running Postfix: debconf
 * is told "No configuration" (no /etc/postfix/main.cf, nothing to start) and, when the machine
 * has no policy-rc.d, one that refuses every service start is put in place for the install
 * and removed afterwards. Afterwards port 25 must be as it was before. Concurrent test files
 * (and the bench) serialise on a lock file, so apt runs once.
 */
export async function ensurePostfix(): Promise<void> {
  if (postfixInstalled()) return;
  const port25Before = await accepts(25);
  await ensureDebianPackages({
    what: "Debian's postfix package",
    packages: ['postfix'],
    installed: postfixInstalled,
    installedTest: `[ -x ${POSTFIX} ] && [ -x ${DAEMONS}/master ] && [ -x ${SMTP_SOURCE} ] && [ -x ${SMTP_SINK} ]`,
    noServiceStarts: true,
    before: ['echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections'],
    how: 'install it by hand: apt-get install --no-install-recommends postfix (then make sure no Postfix runs)',
  });
  if (!port25Before && (await accepts(25))) {
    throw new Error(
      'Installing postfix started a server on port 25 (policy-rc.d did not stop it): stop it with `postfix stop` and check /usr/sbin/policy-rc.d',
    );
  }
}

/** How to start a test Postfix. */
export interface PostfixOptions {
  /** mailgate's SMTP port on 127.0.0.1: `relayhost = [127.0.0.1]:PORT` (brackets: no MX lookup). */
  relayPort: number;
  /** `myhostname`: the name Postfix gives in EHLO and in the `by` of its Received line. Default `postfix.mailgate.test`. */
  hostname?: string;
}

/** A Postfix running for a test, its smtpd on an ephemeral loopback port, relaying everything to `relayhost`. */
export interface TestPostfix {
  host: '127.0.0.1';
  /** smtpd's port. */
  port: number;
  /** `myhostname`. */
  hostname: string;
  /** The temporary directory: config/, queue/, data/ and postfix.log. */
  dir: string;
  logPath: string;
  /** Postfix's log so far (`maillog_file`). */
  readLog(): Promise<string>;
  /** The last `lines` lines of the log, for assertion messages. */
  logTail(lines?: number): Promise<string>;
  /** Stops Postfix (mail still in its queue is thrown away), waits until none of its processes is left, and removes its directory. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Starts a private Postfix and resolves once its smtpd accepts connections. Call `stop()` in
 * `t.after`. Needs root, as CI runs the tests: the master runs as root and its daemons drop
 * to the `postfix` user.
 */
export async function startPostfix(opts: PostfixOptions): Promise<TestPostfix> {
  await ensurePostfix();
  if (process.getuid?.() !== 0)
    throw new Error('A test Postfix needs root (its master starts as root and drops to the postfix user); run the tests as root, as CI does');
  // The free port is found by binding and closing: another process may take it before the
  // master binds it. Then try again with another port.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startPostfixOnce(opts);
    } catch (err) {
      if (attempt >= 3 || !/Address already in use/.test((err as Error).message)) throw err;
    }
  }
}

async function startPostfixOnce(opts: PostfixOptions): Promise<TestPostfix> {
  const hostname = opts.hostname ?? 'postfix.mailgate.test';
  const dir = await mkdtemp(path.join(tmpdir(), 'mailgate-postfix-'));
  // The daemons (user postfix) reach data/ and the log's directory by absolute path.
  await chmod(dir, 0o755);
  const configDir = path.join(dir, 'config');
  const queueDir = path.join(dir, 'queue');
  const dataDir = path.join(dir, 'data');
  const logPath = path.join(dir, 'postfix.log');
  await mkdir(configDir, { mode: 0o755 });
  // The queue directory is root's; `postfix start` (post-install create-missing) makes its
  // subdirectories with the owners Postfix wants. The data directory is the mail owner's.
  await mkdir(queueDir, { mode: 0o755 });
  await mkdir(dataDir, { mode: 0o700 });
  const { uid, gid } = await postfixOwner();
  await chown(dataDir, uid, gid);
  const [port] = (await freePorts(1)) as [number];

  const mainCf = [
    'compatibility_level = 3.6',
    `queue_directory = ${queueDir}`,
    `data_directory = ${dataDir}`,
    // The log goes to a file of its own, through postlogd (MAILLOG_README); only paths under
    // maillog_file_prefixes (default /var, /dev/stdout) are allowed.
    `maillog_file = ${logPath}`,
    `maillog_file_prefixes = ${dir}`,
    // Where syslog exists, the few lines logged before main.cf is read are told apart from a system Postfix's.
    'syslog_name = postfix-mailgate-test',
    `myhostname = ${hostname}`,
    'inet_interfaces = 127.0.0.1',
    'inet_protocols = ipv4',
    // The README's deployment: local clients may relay, nothing is delivered here, everything
    // goes to mailgate (postconf(5): relayhost, a bracketed address skips the MX lookup).
    'mynetworks = 127.0.0.0/8',
    'mydestination =',
    `relayhost = [127.0.0.1]:${opts.relayPort}`,
    'alias_maps =',
    'alias_database =',
    'smtpd_tls_security_level = none',
    'smtp_tls_security_level = none',
    // Retry soon when mailgate is not there yet; the queue manager still sends new mail at once.
    'queue_run_delay = 1s',
    'minimal_backoff_time = 1s',
    'maximal_backoff_time = 2s',
    'smtp_connect_timeout = 5s',
    'biff = no',
    '',
  ].join('\n');
  // chroot off ('n' in the fifth column): the daemons would need a copy of /etc files inside the queue directory.
  const masterCf = [
    `127.0.0.1:${port} inet n - n - - smtpd`,
    'pickup     unix  n - n 60    1 pickup',
    'cleanup    unix  n - n -     0 cleanup',
    'qmgr       unix  n - n 300   1 qmgr',
    'rewrite    unix  - - n -     - trivial-rewrite',
    'bounce     unix  - - n -     0 bounce',
    'defer      unix  - - n -     0 bounce',
    'trace      unix  - - n -     0 bounce',
    'verify     unix  - - n -     1 verify',
    'flush      unix  n - n 1000? 0 flush',
    'proxymap   unix  - - n -     - proxymap',
    'smtp       unix  - - n -     - smtp',
    'relay      unix  - - n -     - smtp',
    'showq      unix  n - n -     - showq',
    'error      unix  - - n -     - error',
    'retry      unix  - - n -     - error',
    'discard    unix  - - n -     - discard',
    'anvil      unix  - - n -     1 anvil',
    'scache     unix  - - n -     1 scache',
    'postlog    unix-dgram n - n - 1 postlogd',
    '',
  ].join('\n');
  await writeFile(path.join(configDir, 'main.cf'), mainCf, { mode: 0o644 });
  await writeFile(path.join(configDir, 'master.cf'), masterCf, { mode: 0o644 });

  const readLog = () => readFile(logPath, 'utf8').catch(() => '');
  const logTail = async (lines = 30) => (await readLog()).trimEnd().split('\n').slice(-lines).join('\n');
  let masterPid = 0;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    masterPid ||= await readMasterPid(queueDir);
    // `abort`, not `stop`: both signal the master, but `stop` then polls once a second for it
    // to go; waitSessionGone waits for every process of the instance, and sooner.
    await postfixCommand(configDir, 'abort', path.join(dir, 'stop.out')).catch(() => undefined);
    if (masterPid > 0) await waitSessionGone(masterPid);
    await rm(dir, { recursive: true, force: true });
  };

  try {
    // `-c DIR`: the instance's main.cf and master.cf (postfix(1)). No
    // alternate_config_directories entry in /etc/postfix/main.cf is needed: only the set-gid
    // postdrop and postqueue ask for one, and not of the super-user (postdrop(1), MAIL_CONFIG);
    // mail reaches this Postfix over SMTP anyway.
    const code = await postfixCommand(configDir, 'start', path.join(dir, 'start.out'));
    if (code !== 0) throw new Error(`postfix -c ${configDir} start exited with code ${code}`);
    masterPid = await readMasterPid(queueDir);
    const deadline = Date.now() + 15_000;
    while (!(await accepts(port))) {
      if (Date.now() > deadline) throw new Error(`smtpd's port ${port} does not accept connections`);
      await sleep(50);
    }
  } catch (err) {
    const output = await readFile(path.join(dir, 'start.out'), 'utf8').catch(() => '');
    const log = await logTail(20);
    await stop();
    throw new Error(`Postfix did not start: ${(err as Error).message}\n${output}\n${log}`, { cause: err });
  }
  return { host: '127.0.0.1', port, hostname, dir, logPath, readLog, logTail, stop };
}

/** The uid and gid of the `postfix` user (mail_owner), which owns the data directory. */
async function postfixOwner(): Promise<{ uid: number; gid: number }> {
  const passwd = await readFile('/etc/passwd', 'utf8');
  const fields = passwd
    .split('\n')
    .find((l) => l.startsWith('postfix:'))
    ?.split(':');
  if (!fields || fields.length < 4) throw new Error("No `postfix` user in /etc/passwd: is Debian's postfix package installed?");
  return { uid: Number(fields[2]), gid: Number(fields[3]) };
}

/**
 * Runs `postfix -c DIR COMMAND` with its output in a file: `start` leaves the master running
 * with the stdio it inherited, so pipes would never close.
 */
async function postfixCommand(configDir: string, command: 'start' | 'abort', outFile: string): Promise<number | null> {
  const fd = openSync(outFile, 'w');
  try {
    return await new Promise<number | null>((resolve, reject) => {
      const child = spawn(POSTFIX, ['-c', configDir, command], { stdio: ['ignore', fd, fd] });
      child.once('error', reject);
      child.once('exit', (c) => resolve(c));
    });
  } finally {
    closeSync(fd);
  }
}

/** The master's pid, from `pid/master.pid` in the queue directory (0 when there is none). */
async function readMasterPid(queueDir: string): Promise<number> {
  const text = await readFile(path.join(queueDir, 'pid', 'master.pid'), 'utf8').catch(() => '');
  return Number(text.trim()) || 0;
}

/**
 * Waits until no live process is left in the master's session (the master detaches with
 * setsid(); its daemons inherit the session), then kills what still runs. `postfix abort`
 * only signals the master; the daemons leave when they notice it is gone.
 */
async function waitSessionGone(sid: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const left = await sessionMembers(sid);
    if (left.length === 0) return;
    if (Date.now() > deadline) {
      for (const pid of left) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
      return;
    }
    await sleep(50);
  }
}

/** Live (not zombie) processes whose session id is `sid`, from /proc/PID/stat. */
async function sessionMembers(sid: number): Promise<number[]> {
  const members: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => '');
    // pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] !== 'Z' && Number(fields[3]) === sid) members.push(Number(name));
  }
  return members;
}
