import { constants, createReadStream } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { Command } from 'commander';
import type MailComposer from 'nodemailer/lib/mail-composer';
import type { Config } from '../config/schema.js';
import { aliasOfAddress } from '../config/alias-addresses.js';
import type { SendRequest } from '../admin/api.js';
import { commandConfig, UsageError, withAdminApi } from './common.js';

interface SendOptions {
  from?: string;
  department?: string;
  to: string[];
  cc: string[];
  bcc: string[];
  subject?: string;
  text?: string;
  textFile?: string;
  html?: string;
  eml?: string;
  attach: string[];
}

// No default ([]) for repeated options: commander would print "(default: [])" in the help.
const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];

/**
 * `mailgate send`: a message sent as an alias, taken in as the submission listener takes
 * one (policy, then stored and queued in one synced write). Through the running gateway
 * when there is one, else on the store, to go out when the gateway starts.
 */
export function sendCommand(): Command {
  return new Command('send')
    .description(
      'send a message as an alias: composed from the options, or an .eml file as it is; it is stored and queued like mail from the submission listener',
    )
    .option('--from <alias>', 'alias name, or one of its addresses (the From header and envelope sender)')
    .option('--department <name>', "without --from: send as the department's default alias (default = true in its [[alias]])")
    .option('--to <address>', 'recipient; repeat for more', collect)
    .option('--cc <address>', 'copy recipient; repeat for more', collect)
    .option('--bcc <address>', 'blind copy recipient (envelope only); repeat for more', collect)
    .option('--subject <text>', 'subject')
    .option('--text <text>', 'plain text body; "-" reads it from stdin')
    .option('--text-file <file>', 'plain text body from a file')
    .option('--html <file>', 'HTML body from a file (with --text or --text-file, the two are alternatives)')
    .option('--eml <file>', 'send this message file as it is; its From must be an address of the alias, and --to, --cc, --bcc are the envelope only')
    .option('--attach <file>', 'attach a file; repeat for more', collect)
    .action(async (given: Partial<SendOptions>, cmd: Command) => {
      const opts: SendOptions = { ...given, to: given.to ?? [], cc: given.cc ?? [], bcc: given.bcc ?? [], attach: given.attach ?? [] };
      const { config } = await commandConfig(cmd);
      const request = requestFrom(config, opts);
      await checkFiles(opts);
      try {
        await withAdminApi(
          cmd,
          async (api) => {
            const sent = await api.sendMessage(request, await message(request.mailFrom, opts));
            process.stdout.write(`queued as ${sent.id} for ${sent.recipients.join(', ')}\n`);
            if (!api.gatewayRunning) process.stderr.write('the gateway is not running: the message is sent when it starts\n');
          },
          // With the gateway stopped, the message goes into its store, made if need be, as `serve` would.
          { create: true },
        );
      } finally {
        if (opts.text === '-') process.stdin.destroy(); // a refusal may leave it unread, which would keep us running
      }
    });
}

/** The alias and envelope the options ask for; a UsageError (exit 2) when they make no sense. */
function requestFrom(config: Config, opts: SendOptions): SendRequest {
  if (opts.to.length === 0) throw new UsageError('send: give at least one --to');
  for (const address of [...opts.to, ...opts.cc, ...opts.bcc]) {
    if (!/^[^\s@<>,]+@[^\s@<>,]+$/.test(address))
      throw new UsageError(`send: "${address}" is not an email address (give the bare address, as name@example.com)`);
  }
  if (opts.text !== undefined && opts.textFile !== undefined) throw new UsageError('send: give --text or --text-file, not both');
  if (opts.eml !== undefined && (opts.text ?? opts.textFile ?? opts.html ?? opts.subject) !== undefined) {
    throw new UsageError('send: --eml sends the file as it is; it cannot be combined with --subject, --text, --text-file or --html');
  }
  if (opts.eml !== undefined && opts.attach.length > 0) throw new UsageError('send: --eml sends the file as it is; it cannot be combined with --attach');
  if (opts.from === undefined) {
    if (opts.department === undefined) throw new UsageError('send: give --from ALIAS, or --department NAME to send as its default alias');
    const alias = departmentDefault(config, opts.department);
    return { alias: alias.name, mailFrom: alias.address, rcptTo: [...opts.to, ...opts.cc, ...opts.bcc] };
  }
  if (opts.department !== undefined)
    throw new UsageError('send: give --from or --department, not both (--department names the sender when --from is not given)');
  const byAddress = opts.from.includes('@') ? aliasOfAddress(config, opts.from) : undefined;
  const alias = byAddress ?? config.alias.find((a) => a.name === opts.from);
  if (!alias) {
    const known = config.alias.map((a) => a.name);
    throw new UsageError(
      `send: --from ${opts.from} is neither the name nor an address of an alias; known aliases: ${known.length ? known.join(', ') : '(none configured)'}`,
    );
  }
  return { alias: alias.name, mailFrom: byAddress ? opts.from : alias.address, rcptTo: [...opts.to, ...opts.cc, ...opts.bcc] };
}

/** Cisco guide: the department's default alias is the sender when none is named. A UsageError when there is none. */
function departmentDefault(config: Config, department: string): Config['alias'][number] {
  if (!config.department.some((d) => d.name === department)) {
    const known = config.department.map((d) => d.name);
    throw new UsageError(
      `send: --department ${department} is not a configured department; known departments: ${known.length ? known.join(', ') : '(none configured)'}`,
    );
  }
  // The schema keeps it to at most one per department, and active.
  const alias = config.alias.find((a) => a.department === department && a.default);
  if (!alias) {
    throw new UsageError(`send: department ${department} has no default alias (set default = true on one of its [[alias]] tables), so give --from`);
  }
  return alias;
}

/** Every file the options name is a readable file, before anything is sent: a message cut short by a missing attachment is no message. */
async function checkFiles(opts: SendOptions): Promise<void> {
  const files: [string, string | undefined][] = [
    ['--text-file', opts.textFile],
    ['--html', opts.html],
    ['--eml', opts.eml],
    ...opts.attach.map((f): [string, string] => ['--attach', f]),
  ];
  for (const [option, file] of files) {
    if (file === undefined) continue;
    try {
      await access(file, constants.R_OK);
      if (!(await stat(file)).isFile()) throw new Error('not a regular file');
    } catch (err) {
      throw new UsageError(`send: ${option} ${file}: ${(err as { code?: string }).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
    }
  }
}

/** The message bytes: the .eml file as it is, or one composed with the alias as From, files streamed as they are read. */
async function message(from: string, opts: SendOptions): Promise<Readable> {
  if (opts.eml !== undefined) return createReadStream(opts.eml);
  const { default: MailComposer } = await import('nodemailer/lib/mail-composer');
  const text = opts.text === '-' ? process.stdin : (opts.text ?? (opts.textFile !== undefined ? { path: opts.textFile } : undefined));
  const mail: MailComposer.Options = {
    from,
    to: opts.to,
    ...(opts.cc.length ? { cc: opts.cc } : {}),
    ...(opts.subject !== undefined ? { subject: opts.subject } : {}),
    ...(text !== undefined ? { text } : {}),
    ...(opts.html !== undefined ? { html: { path: opts.html } } : {}),
    attachments: opts.attach.map((path) => ({ path })),
    // Only the files named on the command line: never a URL a path happens to look like.
    disableUrlAccess: true,
    // A body typed or piped on Unix has bare LF; mail has CRLF (RFC 5322 section 2.3).
    newline: 'win',
  };
  return new MailComposer(mail).compile().createReadStream();
}
