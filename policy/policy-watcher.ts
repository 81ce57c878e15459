import { watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { ConfigError } from '../lib/config-file/toml.js';
import { loadPolicyFile } from './policy-file.js';
import { allFiles, type PolicySet } from './policy-set.js';

/** Time to let an editor finish writing (several events per save) before reading the file. */
const SETTLE_MS = 150;

/**
 * Watches the policy files and swaps in a new PolicySet after each valid edit, so the next
 * message follows it without a restart (the seed products all need one). An invalid edit is
 * logged with file, line and key, and the last good policy stays in force.
 *
 * Directories are watched rather than files: editors save by writing a new file and
 * renaming it over the old one, which a watch on the old file's inode would not see.
 */
export function watchPolicies(
  initial: PolicySet,
  logger: Logger,
  onChange: (next: PolicySet | undefined, result: 'ok' | 'refused') => void,
): { close(): void } {
  let current = initial;
  const files = new Set(allFiles(initial.sources));
  const timers = new Map<string, NodeJS.Timeout>();
  const watchers: FSWatcher[] = [];

  const reload = (file: string) => {
    timers.delete(file);
    try {
      const policy = loadPolicyFile(file);
      current = current.withFile(file, policy);
      onChange(current, 'ok');
      logger.info({ policy: file }, 'policy reloaded; the next message follows it');
    } catch (err) {
      onChange(undefined, 'refused');
      const problems = err instanceof ConfigError ? err.problems : undefined;
      logger.error(
        { policy: file, problems, err: problems ? undefined : err },
        `policy edit refused, the last good policy stays in force: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
  };

  for (const dir of new Set([...files].map((f) => path.dirname(f)))) {
    try {
      const watcher = watch(dir, (_event, name) => {
        if (!name) return;
        const file = path.join(dir, name.toString());
        if (!files.has(file)) return;
        clearTimeout(timers.get(file));
        timers.set(
          file,
          setTimeout(() => reload(file), SETTLE_MS),
        );
      });
      watcher.on('error', (err) => logger.error({ err, dir }, 'cannot watch policy directory; edits there need a restart'));
      watchers.push(watcher);
    } catch (err) {
      logger.error({ err, dir }, 'cannot watch policy directory; edits there need a restart');
    }
  }

  return {
    close() {
      for (const w of watchers) w.close();
      for (const t of timers.values()) clearTimeout(t);
    },
  };
}
