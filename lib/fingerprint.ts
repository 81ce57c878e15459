import { createHash } from 'node:crypto';

/**
 * A short fingerprint of VALUE's JSON (sha256, 16 base64url characters): whether settings changed
 * (an alias's incoming server), or whether two sets of them are equal (nodes' shared settings,
 * pooled transports). Equal JSON text gives an equal fingerprint: whoever wants key order not
 * to matter orders the keys first.
 */
export function fingerprint(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('base64url').slice(0, 16);
}
