/**
 * A retriever in this process for one alias fetching USER's mailbox on a test Dovecot (IMAP over
 * STARTTLS unless INCOMING says otherwise; password `pw-USER`), polling once an hour unless told;
 * its store (or REUSE) and directory go away in `t.after`. For the retriever's own tests.
 */
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfigText } from '../../gateway/config/load.js';
import { startRetriever, type PollResult, type RetrieverHooks } from '../../gateway/fetch/retriever.js';
import { Metrics } from '../../lib/metrics.js';
import type { Store } from '../../storage/store.js';
import { openTestStore } from './test-store.js';
import type { TestDovecot } from './dovecot.js';
import { capturingLogger } from './gateway.js';
import { fixture, tempDir } from './paths.js';

/** [alias.incoming] keys over the defaults; null leaves a default key out. */
export type Incoming = Record<string, string | number | boolean | null>;

/** [alias.incoming] keys that log in to USER's mailbox on DOVECOT: IMAP over STARTTLS, password `pw-USER`. */
export function dovecotIncoming(dovecot: TestDovecot, user: string) {
  return {
    type: 'imap',
    host: '127.0.0.1',
    port: dovecot.imapPort,
    security: 'starttls',
    ca_file: fixture('tls', 'cert.pem'),
    user,
    password: `pw-${user}`,
  };
}

export async function retrieveFrom(
  dovecot: TestDovecot,
  t: { after(fn: () => Promise<void>): void },
  user: string,
  incoming: Incoming,
  hooks: RetrieverHooks = {},
  reuse?: Store,
  /** More aliases (`NAME@example.com`) fetching the same mailbox, after USER. */
  siblings: readonly string[] = [],
) {
  const { dir, cleanup } = await tempDir();
  const settings: Incoming = {
    ...dovecotIncoming(dovecot, user),
    poll_interval: 3600,
    reconnect_interval: 3600,
    idle: false,
    ...incoming,
  };
  const aliasTable = (name: string) => [
    '[[alias]]',
    `name = "${name}"`,
    `address = "${name}@example.com"`,
    '[alias.incoming]',
    ...Object.entries(settings)
      .filter(([, v]) => v !== null)
      .map(([k, v]) => `${k} = ${JSON.stringify(v)}`),
  ];
  const toml = [`data_dir = ${JSON.stringify(path.join(dir, 'data'))}`, ...[user, ...siblings].flatMap(aliasTable)].join('\n');
  const config = loadConfigText(toml, path.join(dir, 'mailgate.toml'), {});
  const store = reuse ?? (await openTestStore(config.data_dir));
  const polls: PollResult[] = [];
  const log = capturingLogger();
  const metrics = new Metrics();
  const retriever = startRetriever({
    config,
    store,
    logger: log.logger,
    stages: () => [],
    metrics,
    hooks: {
      ...hooks,
      afterPoll: (alias, result) => {
        polls.push(result);
        hooks.afterPoll?.(alias, result);
      },
    },
  });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await retriever.stop();
  };
  t.after(async () => {
    await stop();
    if (!reuse) await store.close();
    await cleanup();
  });
  const waitForPolls = async (count: number, timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    while (polls.length < count) {
      if (Date.now() > deadline)
        throw new Error(`only ${polls.length} poll(s) in ${timeoutMs} ms; log: ${log.entries.map((e) => e.msg + ' ' + String(e.kind ?? '')).join(' | ')}`);
      await sleep(20);
    }
    return polls;
  };
  return { store, polls, log, metrics, stop, waitForPolls, retriever };
}
