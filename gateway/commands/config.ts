import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { Command } from 'commander';
import { formatProblem } from '../../lib/config-file/problems.js';
import { UsageError } from './common.js';

export function configCommand(): Command {
  const config = new Command('config').description('check the configuration, print its JSON Schema, hash passwords, seal secrets');

  config
    .command('check')
    .description('validate a configuration file (default: --config, else ./mailgate.toml); exit 2 when invalid')
    .argument('[file]', 'configuration file')
    .action(async (file: string | undefined, _opts: unknown, cmd: Command) => {
      const globalFile = cmd.optsWithGlobals<{ config?: string }>().config;
      const path = file ?? globalFile;
      const { resolveConfig } = await import('../config/load.js');
      const { clearSecrets } = await import('../config/secrets.js');
      const { whoMayRelay } = await import('../smtp/recipient-rules.js');
      // The file is checked, not this shell: secrets are often set only where the gateway runs.
      // Sealed secrets must open, though: the key is part of the setup, as the file is.
      const { config: cfg, file: found, unsetSecrets } = resolveConfig({ file: path, cwd: process.cwd(), secrets: 'check' });
      const where = path ?? found ?? 'built-in defaults';
      process.stdout.write(
        `${where}: ok (${cfg.department.length} departments, ${cfg.alias.length} aliases; SMTP on ${cfg.smtp.listen.join(', ')}, ` +
          `${cfg.smtp.accept_all ? 'accepting any recipient' : `accepting ${cfg.smtp.domains.length} domains and the alias addresses`}; ${whoMayRelay(cfg)})\n`,
      );
      if (unsetSecrets.length) {
        process.stderr.write(
          `secrets not set in this environment (\`mailgate serve\` needs them where it runs):\n${unsetSecrets.map((p) => `  ${formatProblem(p)}\n`).join('')}`,
        );
      }
      // A warning, not a failure: a password in clear works, it is only readable by whoever reads the file.
      const clear = found === undefined ? [] : clearSecrets(readFileSync(found, 'utf8'), where);
      if (clear.length) {
        process.stderr.write(
          `warning: secrets written in clear (anyone who can read the file can use them):\n${clear.map((p) => `  ${formatProblem(p)}\n`).join('')}`,
        );
      }
    });

  config
    .command('schema')
    .description('print the JSON Schema of the configuration file, for editors that validate and complete TOML')
    .action(async () => {
      const { configJsonSchema } = await import('../config/load.js');
      process.stdout.write(JSON.stringify(configJsonSchema(), null, 2) + '\n');
    });

  config
    .command('hash-password')
    .description('read a password from stdin (one line) and print its scrypt hash, for password_hash in [[smtp.user]] or [[submission.user]]')
    .action(async () => {
      const password = await passwordLine();
      if (password === '') throw new UsageError('config hash-password: the password is empty');
      const { hashPassword } = await import('../config/password.js');
      process.stdout.write(hashPassword(password) + '\n');
    });

  config
    .command('encrypt-secret')
    .description(
      "read a secret from stdin (one line) and print it sealed with the gateway's secret key (MAILGATE_SECRET_KEY or secret_key_file), as enc:v1:..., for any password or client_secret in the configuration",
    )
    .action(async (_opts: unknown, cmd: Command) => {
      const file = cmd.optsWithGlobals<{ config?: string }>().config;
      const { resolveConfig } = await import('../config/load.js');
      const { MISSING_KEY, sealSecret } = await import('../config/secrets.js');
      const { readSecretKey, SecretKeyError } = await import('../../lib/secret-box.js');
      // Only secret_key_file is wanted from the file: its own secrets may be unset or sealed here.
      const { config: cfg } = resolveConfig({ file, cwd: process.cwd(), secrets: 'deferred' });
      let key: Buffer;
      try {
        key = readSecretKey({ env: process.env, ...(cfg.secret_key_file === undefined ? {} : { keyFile: cfg.secret_key_file }) }, MISSING_KEY);
      } catch (err) {
        // CCaaS: "If the Tenant Encryption Key does not exist, the password cannot be saved".
        if (err instanceof SecretKeyError) throw new UsageError(`config encrypt-secret: the secret cannot be sealed: ${err.message}`);
        throw err;
      }
      const secret = await passwordLine('Secret: ');
      if (secret === '') throw new UsageError('config encrypt-secret: the secret is empty');
      process.stdout.write(sealSecret(key, secret) + '\n');
    });

  return config;
}

/** The first line of stdin, newline stripped and nothing else: spaces may be part of a password. Not echoed on a terminal. */
async function passwordLine(prompt = 'Password: '): Promise<string> {
  const tty = Boolean(process.stdin.isTTY);
  if (tty) process.stderr.write(prompt);
  // On a terminal readline echoes what is typed to its output: give it one that shows nothing.
  const output = new Writable({ write: (_chunk, _enc, done) => done() });
  const lines = createInterface({ input: process.stdin, output, terminal: tty });
  try {
    for await (const line of lines) return line;
    return '';
  } finally {
    lines.close();
    if (tty) process.stderr.write('\n');
  }
}
