#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { ConfigError } from '../lib/config-file/problems.js';
import { serveCommand } from './commands/serve.js';
import { messagesCommand } from './commands/messages.js';
import { configCommand } from './commands/config.js';
import { quarantineCommand } from './commands/quarantine.js';
import { policyCommand } from './commands/policy.js';
import { aliasesCommand } from './commands/aliases.js';
import { oauthCommand } from './commands/oauth.js';
import { queueCommand } from './commands/queue.js';
import { sendCommand } from './commands/send.js';
import { adminCommand } from './commands/admin.js';
import { auditCommand } from './commands/audit.js';
import { nodesCommand } from './commands/nodes.js';
import { statusCommand } from './commands/status.js';
import { storageCommand } from './commands/storage.js';
import { UsageError } from './commands/common.js';

// Each command module only defines its command (name, options, help); its action imports what it
// runs when it runs, with `await import('...')` and a literal path (test/store-dependent.ts follows
// those). So `--help`, or a script running one command in a loop, does not load the whole gateway
// (the store, pg, the policy stages, zod schemas) at every start. Keep new commands that way.

/** The version in package.json (compiled to dist/gateway/cli.js, two folders below it), so a release changes it in one place. */
function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

/** Exit codes, as Unix tools use them: 0 ok, 1 runtime failure, 2 usage or configuration error. */
const EXIT_RUNTIME = 1;
const EXIT_USAGE = 2;

const program = new Command('mailgate')
  .description('Self-hosted mail gateway: SMTP and IMAP/POP3 in, policy stages, LevelDB store, SMTP out')
  .version(packageVersion())
  .option('-c, --config <file>', 'configuration file (default: ./mailgate.toml if present, else built-in defaults)')
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();

program.addCommand(serveCommand());
program.addCommand(messagesCommand());
program.addCommand(configCommand());
program.addCommand(quarantineCommand());
program.addCommand(policyCommand());
program.addCommand(aliasesCommand());
program.addCommand(oauthCommand());
program.addCommand(queueCommand());
program.addCommand(sendCommand());
program.addCommand(adminCommand());
program.addCommand(auditCommand());
program.addCommand(nodesCommand());
program.addCommand(statusCommand());
program.addCommand(storageCommand());
// Commands built with `new Command()` don't inherit these settings, so apply them to the whole tree.
(function inherit(cmd: Command) {
  for (const sub of cmd.commands) {
    sub.exitOverride().showHelpAfterError('(run with --help for usage)');
    inherit(sub);
  }
})(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  process.exitCode = exitCodeFor(err);
}

function exitCodeFor(err: unknown): number {
  if (err instanceof CommanderError) {
    // commander has already printed its message (or the help).
    return err.exitCode === 0 ? 0 : EXIT_USAGE;
  }
  if (err instanceof ConfigError || err instanceof UsageError) {
    process.stderr.write(`mailgate: ${err.message}\n`);
    return EXIT_USAGE;
  }
  const e = err as { message?: string };
  process.stderr.write(`mailgate: ${e.message ?? String(err)}\n`);
  return EXIT_RUNTIME;
}
