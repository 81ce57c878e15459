import { createReadStream } from 'node:fs';
import path from 'node:path';
import { Command, Option } from 'commander';
import { formatProblem } from '../../lib/config-file/problems.js';
import type { Config } from '../config/schema.js';
import type { Direction } from '../../policy/chain/stage.js';
import type { PolicyReport } from '../admin/api.js';
import { commandConfig, UsageError, withAdminApi } from './common.js';

export function policyCommand(): Command {
  const policy = new Command('policy').description('check policy files and try them on a message');

  policy
    .command('check')
    .description(
      "validate a policy file; every problem names the file, line and key; exit 2 when invalid. A department's file is also checked against the partition's " +
        '(--partition, else the one the configuration names for it): settings it may not make are warned about on stderr',
    )
    .argument('<file>', 'policy TOML file')
    .option('--partition <file>', 'the partition policy to check a department policy against')
    .action(async (file: string, opts: { partition?: string }, cmd: Command) => {
      const { loadPolicyFile } = await import('../../policy/policy-file.js');
      const { departmentPolicyWarnings } = await import('../../policy/policy-set.js');
      const parsed = loadPolicyFile(file);
      const sections = Object.keys(parsed).filter((k) => parsed[k as keyof typeof parsed] !== undefined);
      process.stdout.write(`${file}: ok (${sections.length ? sections.join(', ') : 'no sections: built-in defaults'})\n`);
      const partitionFile = opts.partition ?? partitionFor(file, (await commandConfig(cmd)).config);
      if (partitionFile === false) return;
      const partition = partitionFile === undefined ? undefined : loadPolicyFile(partitionFile);
      for (const w of departmentPolicyWarnings(file, parsed, partition, partitionFile)) process.stderr.write(`warning: ${formatProblem(w)}\n`);
    });

  policy
    .command('test')
    .description('run the policy stages on a message file without storing anything, and say what each stage would do and why')
    .argument('<message>', 'the message, as an .eml file')
    .option('--department <name>', "apply this department's policy (default: the partition's alone)")
    .addOption(new Option('--direction <direction>', 'which way the message goes').choices(['inbound', 'outbound']).default('inbound'))
    .option('--json', 'print JSON')
    .action(async (file: string, opts: { department?: string; direction: Direction; json?: boolean }, cmd: Command) => {
      const { config } = await commandConfig(cmd);
      if (opts.department && !config.department.some((d) => d.name === opts.department)) {
        throw new UsageError(
          `--department: no department "${opts.department}" in the configuration (have: ${config.department.map((d) => d.name).join(', ') || 'none'})`,
        );
      }
      // The running gateway's policy, or the files' as `serve` would load them; a dry run either way.
      const found = await withAdminApi(cmd, (api) =>
        api.testPolicy(createReadStream(file), { ...(opts.department ? { department: opts.department } : {}), direction: opts.direction }),
      );
      const report = { file, ...found };
      process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : describe(report));
    });

  policy
    .command('schema')
    .description('print the JSON Schema of a policy file, for editors')
    .action(async () => {
      const { policyJsonSchema } = await import('../../policy/policy-file.js');
      process.stdout.write(JSON.stringify(policyJsonSchema(), null, 2) + '\n');
    });

  return policy;
}

/**
 * The partition policy a department policy file is under, as the configuration says: its
 * path, undefined when the configuration has none, false when no department uses the file.
 */
function partitionFor(file: string, config: Config): string | undefined | false {
  const target = path.resolve(file);
  if (!config.department.some((d) => d.policy !== undefined && path.resolve(d.policy) === target)) return false;
  return config.partition.policy;
}

function describe(r: PolicyReport & { file: string }): string {
  let out = `${r.file} (${r.direction}, ${r.department ? `department ${r.department}` : 'partition policy'})\n`;
  for (const s of r.stages) {
    out += `${s.stage}:\n`;
    for (const line of s.summary) out += `  ${line}\n`;
  }
  if (r.tags.length) out += `tags: ${r.tags.join(', ')}\n`;
  out += r.outcome === 'stored' ? `result: would be stored (${r.size} bytes)\n` : `result: would be wrapped: ${r.reason}\n`;
  if (r.original) out += `original: would be ${r.original.action === 'quarantine' ? 'quarantined whole' : 'deleted'}: ${r.original.rule}\n`;
  return out;
}
