/**
 * The default name of a node (`[node] name`): one place, so the config, openStore and a
 * LevelStore opened directly agree on who holds a lease or applied a migration.
 */
import os from 'node:os';

/** This machine's host name as a node name: the characters a node name may not have become `-`. */
export function defaultNodeName(): string {
  const name = os
    .hostname()
    .replace(/[^A-Za-z0-9._-]/g, '-')
    .slice(0, 64);
  return name === '' ? 'mailgate' : name;
}
