import { Command } from 'commander';
import { configJsonSchema, loadConfigFile, resolveConfig } from '../config/load.js';

export function configCommand(): Command {
  const config = new Command('config').description('check the configuration, or print its JSON Schema');

  config
    .command('check')
    .description('validate a configuration file (default: --config, else ./mailgate.toml); exit 2 when invalid')
    .argument('[file]', 'configuration file')
    .action((file: string | undefined, _opts: unknown, cmd: Command) => {
      const globalFile = cmd.optsWithGlobals<{ config?: string }>().config;
      const path = file ?? globalFile;
      const { config: cfg, file: used } = path ? { config: loadConfigFile(path), file: path } : resolveConfig({ cwd: process.cwd() });
      const where = used ?? 'built-in defaults';
      process.stdout.write(
        `${where}: ok (${cfg.department.length} departments, ${cfg.alias.length} aliases; SMTP on ${cfg.smtp.listen.join(', ')}, ` +
          `${cfg.smtp.accept_all ? 'accepting any recipient' : `accepting ${cfg.smtp.domains.length} domains and the alias addresses`})\n`,
      );
    });

  config
    .command('schema')
    .description('print the JSON Schema of the configuration file, for editors that validate and complete TOML')
    .action(() => {
      process.stdout.write(JSON.stringify(configJsonSchema(), null, 2) + '\n');
    });

  return config;
}
