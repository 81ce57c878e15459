import { spawn } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { closeSync, existsSync, openSync, readdirSync, readFileSync } from 'node:fs';

import { tmpdir } from 'node:os';
import path from 'node:path';
import { ensureDebianPackages } from './debian.js';
import { fixture } from './paths.js';
import { accepts, freePorts } from './ports.js';

/** A mailbox user of the test Dovecot. */
export interface DovecotUser {
  name: string;
  password: string;
}

/** How to start a test Dovecot. Every option has a default that suits most tests. */
export interface DovecotOptions {
  /** Mailbox users (default: one user `agent` with password `secret`). */
  users?: DovecotUser[];
  /** `ssl = yes` (default; STARTTLS/STLS offered, imaps/pop3s listening), `no` (no TLS at all, TLS ports are 0) or `required`. */
  ssl?: 'yes' | 'no' | 'required';
  /**
   * `disable_plaintext_auth` (default false). Dovecot counts a connection whose remote address
   * equals the local one (127.0.0.1 to 127.0.0.1) as secure, so to see the refusal a test must
   * connect from another loopback address, e.g. `localAddress: '127.0.0.2'`.
   */
  disablePlaintextAuth?: boolean;
  /** Adds an OAuth2 passdb (mechanisms XOAUTH2 and OAUTHBEARER) checking tokens at this introspection URL (RECIPES.md). */
  oauth?: { introspectionUrl: string; /** PEM file Dovecot trusts for an https introspection URL (its oauth2 `tls_ca_cert_file`). */ caFile?: string };
  /** `pop3_lock_session = yes`: a second POP3 session on the same mailbox gets `-ERR [IN-USE]`. */
  pop3LockSession?: boolean;
  /**
   * Master users (Dovecot's master passdb): each logs in to any user's mailbox with SASL PLAIN,
   * naming that user as the authorization identity, the way a shared mailbox is opened with
   * `auth_identity`. They have no mailbox of their own.
   */
  masterUsers?: DovecotUser[];
  /** Extra lines appended to the generated dovecot.conf. */
  extraConfig?: string;
  /** Another address, besides 127.0.0.1, every listener binds too (a non-loopback address of this machine, to be a server "on the local network"). */
  alsoListenOn?: string;
  /**
   * Dovecot's auth penalty (anvil, per client IP; default true): after a failed login, every
   * login from that IP waits 4 s, doubling with each different wrong password up to 15 s.
   * false turns it off (its socket is made unusable to the auth process, which then skips it),
   * for tests that fail logins on purpose but do not test the penalty.
   */
  authPenalty?: boolean;
}

/** A Dovecot running for a test, on ephemeral loopback ports, with its own directories. */
export interface TestDovecot {
  host: '127.0.0.1';
  imapPort: number;
  /** 0 when started with `ssl: 'no'`. */
  imapsPort: number;
  pop3Port: number;
  /** 0 when started with `ssl: 'no'`. */
  pop3sPort: number;
  users: DovecotUser[];
  /** The certificate Dovecot presents (PEM), to pass as `ca` to clients that should trust it. */
  certPem: string;
  /** The temporary directory holding config, state, logs and home directories. */
  dir: string;
  configFile: string;
  logPath: string;
  /** Drops a message into the user's Maildir/new (or into FOLDER's maildir, created when missing). Returns the file name. */
  deliver(user: string, rawMessage: string | Buffer, folder?: string): Promise<string>;
  /** File names in cur/ and new/ of the user's INBOX or FOLDER (its length is the message count). */
  listMessages(user: string, folder?: string): Promise<string[]>;
  /** Dovecot's log so far, for assertion messages. */
  readLog(): Promise<string>;
  /** Stops Dovecot and removes its directory. Safe to call twice. */
  stop(): Promise<void>;
}

const PACKAGES = ['dovecot-imapd', 'dovecot-pop3d'];

/** True when the Dovecot master and its IMAP and POP3 servers are installed. */
function dovecotInstalled(): boolean {
  return ['/usr/sbin/dovecot', '/usr/lib/dovecot/imap', '/usr/lib/dovecot/pop3'].every((f) => existsSync(f));
}

/** Installs Debian's Dovecot packages when they are missing (test/helpers/debian.ts). */
export async function ensureDovecot(): Promise<void> {
  await ensureDebianPackages({
    what: 'Dovecot',
    packages: PACKAGES,
    installed: dovecotInstalled,
    installedTest: '[ -x /usr/lib/dovecot/pop3 ] && [ -x /usr/lib/dovecot/imap ] && [ -x /usr/sbin/dovecot ]',
    // Debian's package would start a system Dovecot on 143 and 110; the tests start their own.
    noServiceStarts: true,
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The numeric uid/gid of the `mail` user: Dovecot refuses uid 0 for mail users (RECIPES.md). */
async function mailOwner(): Promise<{ uid: number; gid: number }> {
  const passwd = await readFile('/etc/passwd', 'utf8');
  const line = passwd.split('\n').find((l) => l.startsWith('mail:'));
  const fields = line?.split(':');
  if (!fields || fields.length < 4) throw new Error('No `mail` user in /etc/passwd: Dovecot needs a non-root uid for mailboxes');
  return { uid: Number(fields[2]), gid: Number(fields[3]) };
}

/** Maildir++ directory of FOLDER under a Maildir root: INBOX is the root, `A/B` is `.A.B`. */
function folderDir(maildir: string, folder?: string): string {
  if (!folder || folder.toUpperCase() === 'INBOX') return maildir;
  return path.join(maildir, '.' + folder.replace(/\//g, '.'));
}

/**
 * Starts a real Dovecot (IMAP and POP3, plus imaps/pop3s unless `ssl: 'no'`) with a generated,
 * self-contained configuration in a temporary directory, and resolves once every port accepts
 * connections. Call `stop()` in `t.after`.
 */
export async function startDovecot(opts: DovecotOptions = {}): Promise<TestDovecot> {
  await ensureDovecot();
  // The free ports are found by binding and closing: another process may take one before
  // Dovecot binds it. Then try again with other ports.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startDovecotOnce(opts);
    } catch (err) {
      if (attempt >= 3 || !/Address already in use/.test((err as Error).message)) throw err;
    }
  }
}

async function startDovecotOnce(opts: DovecotOptions): Promise<TestDovecot> {
  const users = opts.users ?? [{ name: 'agent', password: 'secret' }];
  const ssl = opts.ssl ?? 'yes';
  const { uid, gid } = await mailOwner();
  const dir = await mkdtemp(path.join(tmpdir(), 'mailgate-dovecot-'));
  // Login processes (dovenull) and mail processes (mail) must traverse it.
  await chmod(dir, 0o755);
  const [imapPort, pop3Port, imapsPort, pop3sPort] = (await freePorts(4)) as [number, number, number, number];
  const tlsPorts = ssl === 'no' ? { imaps: 0, pop3s: 0 } : { imaps: imapsPort, pop3s: pop3sPort };

  const homes = path.join(dir, 'home');
  await mkdir(homes, { mode: 0o755 });
  for (const u of users) {
    if (/[:\n]/.test(u.name) || /[:\n]/.test(u.password)) throw new Error(`user ${u.name}: ':' and newlines cannot appear in a passwd-file`);
    const home = path.join(homes, u.name);
    for (const sub of ['', 'Maildir', 'Maildir/cur', 'Maildir/new', 'Maildir/tmp']) {
      await mkdir(path.join(home, sub), { recursive: true, mode: 0o700 });
      await chown(path.join(home, sub), uid, gid);
    }
  }
  const passwdFile = path.join(dir, 'users.passwd');
  await writeFile(passwdFile, users.map((u) => `${u.name}:{PLAIN}${u.password}:${uid}:${gid}::${path.join(homes, u.name)}::\n`).join(''), { mode: 0o644 });
  const masterFile = path.join(dir, 'master-users.passwd');
  const masters = opts.masterUsers ?? [];
  if (masters.length) await writeFile(masterFile, masters.map((u) => `${u.name}:{PLAIN}${u.password}\n`).join(''), { mode: 0o644 });

  const certPem = await readFile(fixture('tls', 'cert.pem'), 'utf8');
  const configFile = path.join(dir, 'dovecot.conf');
  const logPath = path.join(dir, 'dovecot.log');
  const oauthFile = path.join(dir, 'oauth2.conf');
  if (opts.oauth) {
    await writeFile(
      oauthFile,
      [
        'introspection_mode = post',
        `introspection_url = ${opts.oauth.introspectionUrl}`,
        ...(opts.oauth.caFile ? [`tls_ca_cert_file = ${opts.oauth.caFile}`] : []),
        'username_attribute = username',
        'active_attribute = active',
        'active_value = true',
        '',
      ].join('\n'),
      { mode: 0o644 },
    );
  }
  const mechanisms = opts.oauth ? 'plain login xoauth2 oauthbearer' : 'plain login';
  const addresses = ['127.0.0.1', ...(opts.alsoListenOn ? [opts.alsoListenOn] : [])].join(', ');
  const config = [
    `base_dir = ${path.join(dir, 'run')}`,
    `state_dir = ${path.join(dir, 'state')}`,
    `instance_name = ${path.basename(dir)}`,
    `log_path = ${logPath}`,
    'auth_verbose = yes',
    'protocols = imap pop3',
    `listen = ${addresses}`,
    `ssl = ${ssl}`,
    ...(ssl === 'no' ? [] : [`ssl_cert = <${fixture('tls', 'cert.pem')}`, `ssl_key = <${fixture('tls', 'key.pem')}`]),
    `disable_plaintext_auth = ${opts.disablePlaintextAuth ? 'yes' : 'no'}`,
    `auth_mechanisms = ${mechanisms}`,
    // Tests check wrong passwords; the failure delay only slows them down. Dovecot's auth penalty
    // (anvil, per client IP) still delays every login from an IP after its failures: tests that
    // fail logins on purpose connect from their own loopback address (localAddress 127.0.0.N), or
    // start Dovecot with `authPenalty: false`.
    'auth_failure_delay = 0',
    'first_valid_uid = 1',
    'mail_location = maildir:~/Maildir',
    'pop3_uidl_format = %08Xu%08Xv',
    `pop3_lock_session = ${opts.pop3LockSession ? 'yes' : 'no'}`,
    ...(masters.length ? ['passdb {', '  driver = passwd-file', '  master = yes', `  args = scheme=PLAIN username_format=%u ${masterFile}`, '}'] : []),
    'passdb {',
    '  driver = passwd-file',
    `  args = scheme=PLAIN username_format=%u ${passwdFile}`,
    ...(opts.oauth ? ['  mechanisms = plain login'] : []),
    '}',
    ...(opts.oauth ? ['passdb {', '  driver = oauth2', '  mechanisms = xoauth2 oauthbearer', `  args = ${oauthFile}`, '}'] : []),
    'userdb {',
    '  driver = passwd-file',
    `  args = username_format=%u ${passwdFile}`,
    '}',
    'service imap-login {',
    '  chroot =',
    `  inet_listener imap {\n    address = ${addresses}\n    port = ${imapPort}\n  }`,
    `  inet_listener imaps {\n    address = ${addresses}\n    port = ${tlsPorts.imaps}\n  }`,
    '}',
    'service pop3-login {',
    '  chroot =',
    `  inet_listener pop3 {\n    address = ${addresses}\n    port = ${pop3Port}\n  }`,
    `  inet_listener pop3s {\n    address = ${addresses}\n    port = ${tlsPorts.pop3s}\n  }`,
    '}',
    'service anvil {',
    '  chroot =',
    ...(opts.authPenalty === false ? ['  unix_listener anvil-auth-penalty {', '    mode = 0', '  }'] : []),
    '}',
    opts.extraConfig ?? '',
    '',
  ].join('\n');
  await writeFile(configFile, config, { mode: 0o644 });

  const pidFile = path.join(dir, 'run', 'master.pid');
  const readLog = () => readFile(logPath, 'utf8').catch(() => '');
  let stopped = false;

  const stop = async () => {
    if (stopped) return;
    stopped = true;
    const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
    if (pid > 0) {
      // A test's Dovecot keeps nothing worth a clean shutdown, and a clean one (`doveadm stop`)
      // took 2.5 to 8 s here, the master waiting on its login processes: the master and its
      // services (all its children) are killed, and waited for, so their ports are free.
      const pids = [pid, ...childrenOf(pid)];
      for (const p of pids) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
      for (let i = 0; i < 100 && pids.some(running); i++) await sleep(20);
    }
    await rm(dir, { recursive: true, force: true });
  };

  try {
    await startMaster(configFile, path.join(dir, 'dovecot.stderr'));
    const ports = [imapPort, pop3Port, ...(ssl === 'no' ? [] : [imapsPort, pop3sPort])];
    const deadline = Date.now() + 15_000;
    for (const port of ports) {
      while (!(await accepts(port))) {
        if (Date.now() > deadline) throw new Error(`port ${port} does not accept connections`);
        await sleep(50);
      }
    }
  } catch (err) {
    const log = await readLog();
    const stderr = (err as { stderr?: string }).stderr ?? '';
    await stop();
    throw new Error(`Dovecot did not start: ${(err as Error).message}\n${stderr}\n${log.split('\n').slice(-20).join('\n')}`, { cause: err });
  }

  const maildirOf = (user: string) => {
    if (!users.some((u) => u.name === user)) throw new Error(`no Dovecot user ${user}`);
    return path.join(homes, user, 'Maildir');
  };
  let sequence = 0;

  return {
    host: '127.0.0.1',
    imapPort,
    imapsPort: tlsPorts.imaps,
    pop3Port,
    pop3sPort: tlsPorts.pop3s,
    users,
    certPem,
    dir,
    configFile,
    logPath,
    async deliver(user, rawMessage, folder) {
      const target = folderDir(maildirOf(user), folder);
      for (const sub of ['', 'cur', 'new', 'tmp']) {
        const d = path.join(target, sub);
        if (!existsSync(d)) {
          await mkdir(d, { mode: 0o700 });
          await chown(d, uid, gid);
        }
      }
      const bytes = typeof rawMessage === 'string' ? Buffer.from(rawMessage) : rawMessage;
      // Maildir delivery: write under tmp/, then rename into new/ so Dovecot never sees half a file.
      const name = `${Date.now()}.M${++sequence}P${process.pid}.mailgate,S=${bytes.length}`;
      const tmp = path.join(target, 'tmp', name);
      await writeFile(tmp, bytes, { mode: 0o600 });
      await chown(tmp, uid, gid);
      await rename(tmp, path.join(target, 'new', name));
      return name;
    },
    async listMessages(user, folder) {
      const target = folderDir(maildirOf(user), folder);
      // new/ first: Dovecot moves a file from new/ to cur/ (adding ":2,flags") when a session
      // sees it, and read the other way round a file moving between the two reads was in neither
      // (a mailbox looked empty while two messages waited). Seen in both, it is counted once.
      const seen = new Map<string, string>();
      for (const sub of ['new', 'cur']) for (const name of await readdir(path.join(target, sub)).catch(() => [])) seen.set(name.split(':')[0]!, name);
      return [...seen.values()].sort();
    },
    readLog,
    stop,
  };
}

/**
 * Runs `dovecot -c FILE` and waits for it to daemonize. Its output goes to a file: the daemon
 * keeps the stdio it inherited, so pipes would never close and execFile would never return.
 */
async function startMaster(configFile: string, stderrFile: string): Promise<void> {
  const fd = openSync(stderrFile, 'w');
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn('dovecot', ['-c', configFile], { stdio: ['ignore', fd, fd] });
      child.once('error', reject);
      child.once('exit', (c) => resolve(c));
    });
    if (code !== 0) {
      throw Object.assign(new Error(`dovecot -c ${configFile} exited with code ${code}`), { stderr: await readFile(stderrFile, 'utf8').catch(() => '') });
    }
  } finally {
    closeSync(fd);
  }
}

/** State and parent of process PID from /proc/PID/stat ("N (comm) state ppid ...", comm may hold spaces), or undefined once it is gone. */
function procStat(pid: number | string): { state: string; ppid: number } | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const [state = '', ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { state, ppid: Number(ppid) };
}

/** The processes whose parent is PID. */
function childrenOf(pid: number): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry) && procStat(entry)?.ppid === pid)
    .map(Number);
}

/** Whether PID still runs: a zombie has exited (its sockets are closed) and waits only to be reaped by init, which may take a while. */
function running(pid: number): boolean {
  const state = procStat(pid)?.state;
  return state !== undefined && state !== 'Z';
}

/**
 * The `[alias.incoming]` lines of an alias that fetches from this Dovecot's IMAP as USER (password
 * "pw" unless given), over STARTTLS with the test CA, on Dovecot's port or PORT (a proxy in
 * front of it); a test adds its own keys (poll_interval, idle...) after.
 */
export function dovecotIncoming(dovecot: { imapPort: number }, user: string, opts: { password?: string; port?: number } = {}): string[] {
  return [
    '[alias.incoming]',
    'type = "imap"',
    'host = "127.0.0.1"',
    `port = ${opts.port ?? dovecot.imapPort}`,
    'security = "starttls"',
    `ca_file = ${JSON.stringify(fixture('tls', 'cert.pem'))}`,
    `user = ${JSON.stringify(user)}`,
    `password = ${JSON.stringify(opts.password ?? 'pw')}`,
  ];
}
