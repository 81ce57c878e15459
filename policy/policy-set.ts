import { readFileSync } from 'node:fs';
import { keyLocator, type ConfigProblem } from '../lib/config-file/toml.js';
import type { Stage } from './chain/stage.js';
import { loadPolicyFile, type PolicyFile } from './policy-file.js';
import { wrappingStage } from './wrapping/stage.js';
import { attachmentsStage } from './attachments/stage.js';
import { deliveryExceptionsStage } from './delivery-exceptions/stage.js';
import { departmentMaskingProblem, maskingStage } from './masking/stage.js';

/** The policy files of a configuration, by path: the partition's and each department's. */
export interface PolicySources {
  partition?: string;
  departments: ReadonlyMap<string, string | undefined>;
}

/** The keys of `mailgate.toml` that name policy files (`[partition] policy`, each `[[department]] policy`). */
export interface PolicyConfig {
  partition: { policy?: string | undefined };
  department: readonly { name: string; policy?: string | undefined }[];
}

export function policySources(config: PolicyConfig): PolicySources {
  return {
    ...(config.partition.policy ? { partition: config.partition.policy } : {}),
    departments: new Map(config.department.map((d) => [d.name, d.policy])),
  };
}

/**
 * The policy in force: parsed files, and the stages built from them per department. Built
 * whole and swapped whole, so a message sees one consistent policy from start to end.
 */
export class PolicySet {
  readonly #stages = new Map<string, readonly Stage[]>();

  constructor(
    readonly sources: PolicySources,
    /** Parsed policy files by path; a department without a file has none. */
    readonly files: ReadonlyMap<string, PolicyFile>,
  ) {
    this.#stages.set('', buildStages(this.partitionPolicy(), undefined));
    for (const name of sources.departments.keys()) this.#stages.set(name, buildStages(this.partitionPolicy(), this.departmentPolicy(name)));
  }

  /** Loads every file; throws ConfigError (file, line, key) at the first invalid one. */
  static load(sources: PolicySources): PolicySet {
    const files = new Map<string, PolicyFile>();
    for (const file of allFiles(sources)) files.set(file, loadPolicyFile(file));
    return new PolicySet(sources, files);
  }

  /** A new set with one file replaced (after an edit). */
  withFile(file: string, policy: PolicyFile): PolicySet {
    return new PolicySet(this.sources, new Map(this.files).set(file, policy));
  }

  partitionPolicy(): PolicyFile | undefined {
    return this.sources.partition ? this.files.get(this.sources.partition) : undefined;
  }

  departmentPolicy(department: string): PolicyFile | undefined {
    const file = this.sources.departments.get(department);
    return file ? this.files.get(file) : undefined;
  }

  /** Stages for a message of `department` (partition policy alone when unknown), in pipeline order. */
  stagesFor(department?: string): readonly Stage[] {
    return this.#stages.get(department ?? '') ?? this.#stages.get('')!;
  }
}

/** Every policy file named by the sources, each once. */
export function allFiles(sources: PolicySources): string[] {
  const files = new Set<string>();
  if (sources.partition) files.add(sources.partition);
  for (const file of sources.departments.values()) if (file) files.add(file);
  return [...files];
}

/**
 * The stages in the order the pipeline runs them: wrapping first (it watches the raw
 * structure), then attachment blocking, delivery-exception tagging, and masking last so
 * that nothing after it sees unmasked text.
 */
export function buildStages(partition: PolicyFile | undefined, department: PolicyFile | undefined): readonly Stage[] {
  return [
    wrappingStage(partition?.wrapping, department?.wrapping),
    attachmentsStage(partition?.attachments, department?.attachments),
    deliveryExceptionsStage(partition?.delivery_exceptions, department?.delivery_exceptions),
    maskingStage(partition?.masking, department?.masking),
  ];
}

/** A setting that is valid but will not take effect, located like a problem: file, line, key. */
export type PolicyWarning = ConfigProblem;

/**
 * What in a department's policy file will not take effect under the partition's policy: its
 * masking patterns when the partition does not let departments manage their own (they would
 * only show up as a note in each message's findings). `partitionFile` names the partition
 * policy in the warning; none means the configuration has no partition policy.
 */
export function departmentPolicyWarnings(
  file: string,
  department: PolicyFile,
  partition: PolicyFile | undefined,
  partitionFile: string | undefined,
): PolicyWarning[] {
  const masking = department.masking;
  const problem = departmentMaskingProblem(partition?.masking, masking);
  if (!masking || !problem) return [];
  const locate = keyLocator(readFileSync(file, 'utf8'));
  const names = masking.pattern.map((p) => p.name);
  const what = names.length ? `the department's patterns (${names.join(', ')}) will not be applied` : 'enabled = true will not be applied';
  const why = partitionFile
    ? `the partition policy ${partitionFile} does not let departments manage their own (it needs departments_manage_own = true in [masking])`
    : 'the configuration has no partition policy, and only a partition policy with departments_manage_own = true in [masking] lets departments manage their own';
  return [
    {
      file,
      line: locate(names.length ? ['masking', 'pattern', 0] : ['masking', 'enabled']),
      key: names.length ? 'masking.pattern' : 'masking.enabled',
      expected: 'departments_manage_own = true in the partition policy',
      given: partitionFile ?? 'no partition policy',
      message: `${what}: ${why}`,
    },
  ];
}
