/**
 * What the nodes of a fleet share in their mailgate.toml (issue 16, "Several nodes": each node
 * reads its own files, distributed by configuration management, as for Postfix): the aliases
 * and the departments. Each node records a fingerprint of them, name by name, with its node
 * row, and logs a warning once per difference it sees with another node's, naming the node and
 * the aliases or departments that differ, at its start and when another node announces itself.
 */
import type { Logger } from 'pino';
import { fingerprint } from '../../lib/fingerprint.js';
import type { Store } from '../../storage/store.js';
import type { Config } from '../config/schema.js';

/** A node's shared configuration, as recorded: a hash per alias and per department, by name, and one of them all. */
export interface SharedConfig {
  fingerprint: string;
  aliases: Record<string, string>;
  departments: Record<string, string>;
}

/** The notice a node sends when it has announced its configuration: `{ fingerprint }`. */
export const NODE_CONFIG_NOTICE = 'node-config';

// Secrets are left out: nodes may keep them in their own way (an environment variable, enc:v1:), and a hash of one is not to be stored.
const SECRET_KEYS = new Set(['password', 'client_secret', 'password_hash']);

/** JSON with keys in order and secrets left out, so equal settings give equal text whatever the file's order. */
function normalised(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(normalised);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort()) if (!SECRET_KEYS.has(key)) out[key] = normalised((value as Record<string, unknown>)[key]);
  return out;
}

const hash = (value: unknown) => fingerprint(normalised(value));

/** CONFIG's aliases and departments, as a node records them. */
export function sharedConfig(config: Config): SharedConfig {
  const aliases = Object.fromEntries(config.alias.map((a) => [a.name, hash(a)]));
  const departments = Object.fromEntries(config.department.map((d) => [d.name, hash(d)]));
  return { fingerprint: hash({ aliases, departments }), aliases, departments };
}

/**
 * The alias and department names whose settings differ between MINE and THEIRS, another node's
 * recorded configuration (one has it and the other not, or other settings); undefined when
 * they are the same, or THEIRS is not one (a node that recorded none).
 */
export function sharedDifferences(mine: SharedConfig, theirs: unknown): { aliases: string[]; departments: string[] } | undefined {
  if (!isShared(theirs) || theirs.fingerprint === mine.fingerprint) return undefined;
  const differ = (a: Record<string, string>, b: Record<string, string>) =>
    [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((name) => a[name] !== b[name]).sort();
  return { aliases: differ(mine.aliases, theirs.aliases), departments: differ(mine.departments, theirs.departments) };
}

function isShared(value: unknown): value is SharedConfig {
  const v = value as Partial<SharedConfig> | undefined;
  return (
    typeof v?.fingerprint === 'string' && typeof v.aliases === 'object' && v.aliases !== null && typeof v.departments === 'object' && v.departments !== null
  );
}

/**
 * Announces this node's shared configuration and compares it with every other live node's,
 * now and whenever another node announces one; each difference is logged once. Returns the
 * function that stops watching. On a store of one node there is no one to compare with.
 */
export async function watchSharedConfig(store: Store, config: Config, logger: Logger): Promise<() => void> {
  if (!store.leases.shared) return () => {};
  const mine = sharedConfig(config);
  const me = store.leases.node;
  const logged = new Set<string>();
  // At start: every live node. On a notice: the node that sent it (it may not have had its first lease round yet).
  const compare = async (sender?: string) => {
    for (const node of await store.leases.nodes()) {
      if (sender === undefined ? !node.live : node.name !== sender) continue;
      const differ = node.name === me ? undefined : sharedDifferences(mine, node.config);
      if (!differ) continue;
      // Once per node and configuration of it: a node that changes again is logged again.
      const key = `${node.name} ${String(node.config?.['fingerprint'])} ${mine.fingerprint}`;
      if (logged.has(key)) continue;
      logged.add(key);
      const { aliases, departments } = differ;
      const what = [aliases.length ? `aliases ${aliases.join(', ')}` : '', departments.length ? `departments ${departments.join(', ')}` : '']
        .filter(Boolean)
        .join('; ');
      // `node` is this node's, on every line (lib/logger.ts): the other one is named apart.
      logger.warn(
        { other_node: node.name, aliases, departments },
        `node ${node.name} has another configuration of what the nodes share (${what}): copy the same mailgate.toml to every node`,
      );
    }
  };
  const check = (sender?: string) =>
    compare(sender).catch((err: unknown) => logger.warn({ err }, "could not compare this node's configuration with the other nodes'"));
  const stop = store.onNotice((notice) => {
    if (notice.topic === NODE_CONFIG_NOTICE && notice.from !== me) void check(notice.from);
  });
  try {
    await store.leases.announce({ ...mine });
    await store.notify(NODE_CONFIG_NOTICE, { fingerprint: mine.fingerprint });
  } catch (err) {
    logger.warn({ err }, "could not record this node's configuration for the other nodes to compare");
  }
  await check();
  return stop;
}
