/**
 * The addresses an alias answers to: its own and its redirection addresses (Cisco guide: mail
 * redirected from other addresses belongs to the alias, and replies may show them as From).
 * The one place that says so, for the listener, the relay, submission and the retriever.
 */
import type { AliasConfig, Config } from './schema.js';

/** The alias's address and redirection addresses, lower-cased. */
export function aliasAddresses(alias: AliasConfig): string[] {
  return [alias.address, ...alias.redirection_addresses].map((a) => a.toLowerCase());
}

// The configuration is frozen: one index per configuration object.
const indexes = new WeakMap<Config, Map<string, AliasConfig>>();

/** Lower-cased address → its alias; where two aliases list one redirection address, the first in the file. */
export function aliasIndex(config: Config): ReadonlyMap<string, AliasConfig> {
  let index = indexes.get(config);
  if (!index) {
    index = new Map();
    for (const alias of config.alias) for (const a of aliasAddresses(alias)) if (!index.has(a)) index.set(a, alias);
    indexes.set(config, index);
  }
  return index;
}

/** The alias an address belongs to, if any. */
export function aliasOfAddress(config: Config, address: string): AliasConfig | undefined {
  return aliasIndex(config).get(address.toLowerCase());
}
