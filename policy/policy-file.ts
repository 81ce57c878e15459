import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { loadToml } from '../lib/config-file/toml.js';
import { ConfigError } from '../lib/config-file/toml.js';
import { wrappingSectionSchema } from './wrapping/stage.js';
import { attachmentsSectionSchema } from './attachments/stage.js';
import { deliveryExceptionsSectionSchema } from './delivery-exceptions/stage.js';
import { maskingSectionSchema } from './masking/stage.js';

/**
 * A policy file, as IT writes it: one section per stage, every section optional. The same
 * schema serves the partition policy and each department's; how a partition section and a
 * department section combine is each stage's business (see its factory).
 */
export const policyFileSchema = z.strictObject({
  /** Limits beyond which a message counts as unparsable and is wrapped (Genesys). */
  wrapping: wrappingSectionSchema.optional(),
  /** Attachment-extension blocking and quarantine (Cisco, "Blocked File Extensions"). */
  attachments: attachmentsSectionSchema.optional(),
  /** Bounce and auto-reply tagging (Cisco, "Delivery Exceptions"). */
  delivery_exceptions: deliveryExceptionsSectionSchema.optional(),
  /** Masking of card numbers, SSNs and bank accounts (Cisco, "Data Masking for Email"). */
  masking: maskingSectionSchema.optional(),
});

export type PolicyFile = z.output<typeof policyFileSchema>;

/** Reads and validates a policy file; throws ConfigError naming file, line and key of each problem. */
export function loadPolicyFile(file: string, env: Readonly<Record<string, string | undefined>> = process.env): PolicyFile {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as { code?: string; message?: string };
    throw new ConfigError([
      { file, key: '', expected: 'a readable policy file', given: e.code ?? String(err), message: `cannot read the policy file: ${e.message ?? String(err)}` },
    ]);
  }
  const result = loadToml(text, file, policyFileSchema, { env });
  if (!result.ok) throw new ConfigError(result.problems);
  return result.value;
}

/** JSON Schema of a policy file, for editors. */
export function policyJsonSchema(): object {
  return { ...z.toJSONSchema(policyFileSchema, { io: 'input' }), title: 'mailgate policy file' };
}
