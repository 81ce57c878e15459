/**
 * The admin across nodes (issue 16, "Several nodes: Admin"): which node holds an alias's
 * mailbox, and the notices by which an admin on any node reaches the node that holds a
 * mailbox or is delivering a queued message. What an admin asks is recorded in the store
 * first (so a node that takes the mailbox or the entry later finds it there); the notice only
 * makes the holder apply it now. A node that was not listening (its LISTEN connection lost)
 * catches up when it listens again: it reads the alias states and applies an admin's change it
 * missed. A missed retry needs no catch-up: every node polls the shared queue for due entries
 * every few seconds, so the entry is tried at its next scheduled attempt instead of at once.
 */
import type { Logger } from 'pino';
import type { Notice, Store } from '../../storage/store.js';
import type { AliasStatus } from '../../storage/records.js';
import type { AliasConfig, Config } from '../config/schema.js';
import { mailboxIdentity } from '../fetch/recipients.js';
import { unheardAdminChangeFields, unheardAdminChangeText } from '../fetch/alias-health.js';
import type { Retriever } from '../fetch/retriever.js';
import { retryQueued, type QueueWorker } from '../dispatch/queue-actions.js';

/** An admin's activate or deactivate, for the node holding the alias's mailbox: `{ alias, status, holder }`. */
export const ALIAS_STATUS_NOTICE = 'alias-status';
/** An admin's retry of an entry another node is delivering, for that node: `{ id, holder }`. */
export const QUEUE_RETRY_NOTICE = 'queue-retry';

/** The node holding each fetched alias's mailbox now, by alias name; none on a store of one node. */
export async function mailboxHolders(store: Store, config: Config): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  if (!store.leases.shared) return found;
  const held = new Map((await store.leases.list()).filter((l) => l.held && l.holder !== undefined).map((l) => [l.mailbox, l.holder!]));
  for (const alias of config.alias) {
    const holder = alias.incoming && held.get(mailboxIdentity(alias));
    if (holder) found.set(alias.name, holder);
  }
  return found;
}

/** The node holding ALIAS's mailbox now, or undefined (one node, no incoming server, nobody holds it). */
export async function mailboxHolder(store: Store, config: Config, alias: AliasConfig): Promise<string | undefined> {
  return (await mailboxHolders(store, config)).get(alias.name);
}

/** Sends a notice; one that cannot be sent is logged: the change is recorded, and the holder applies it when it next reads it. */
export async function tell(store: Store, logger: Logger, topic: string, payload: Record<string, unknown>): Promise<void> {
  try {
    await store.notify(topic, payload);
  } catch (err) {
    logger.warn({ err, topic, ...payload }, 'could not notify the node concerned; the change is recorded in the store');
  }
}

/** What a running node applies when another node's admin asks. */
export interface NoticeFollowerDeps {
  store: Store;
  logger: Logger;
  retriever: () => Retriever | undefined;
  dispatcher: QueueWorker;
}

/** Applies other nodes' admin notices meant for this node; returns the function that stops. On a store of one node there are none. */
export function followAdminNotices(deps: NoticeFollowerDeps): () => void {
  const { store, logger } = deps;
  if (!store.leases.shared) return () => {};
  const me = store.leases.node;
  const apply = async (notice: Notice) => {
    const { payload, from } = notice;
    if (payload['holder'] !== me || from === me) return;
    if (notice.topic === ALIAS_STATUS_NOTICE) {
      const alias = String(payload['alias']);
      const status = payload['status'] === 'inactive' ? 'inactive' : ('active' satisfies AliasStatus);
      // Its worker records and logs the change, and connects or pauses now; a mailbox this node
      // no longer holds needs nothing: the next holder reads the state the admin recorded.
      const state = await deps.retriever()?.setStatus(alias, status);
      logger.info(
        { alias, status, from, applied: state !== undefined },
        `alias ${alias} ${status === 'active' ? 'activated' : 'deactivated'} by an admin on node ${from}`,
      );
    } else if (notice.topic === QUEUE_RETRY_NOTICE) {
      const id = String(payload['id']);
      deps.dispatcher.retryAsked(id);
      // Made due now here as on the asking node: claimed if free (the attempt just ended), else tried again right after the attempt.
      try {
        await retryQueued(store, id, deps.dispatcher);
      } catch (err) {
        // Delivered, failed for good or dropped meanwhile: nothing left to retry.
        if ((err as { code?: string }).code === 'QUEUE_ENTRY_NOT_FOUND') return;
        throw err;
      }
      logger.info({ msg_id: id, from }, `queued message retried by an admin on node ${from}`);
    }
  };
  const stopNotices = store.onNotice((notice) => {
    apply(notice).catch((err: unknown) => logger.warn({ err, topic: notice.topic, from: notice.from }, "could not apply another node's admin notice"));
  });
  const stopResumed = store.onNoticesResumed(() => {
    catchUpAliasChanges(deps).catch((err: unknown) =>
      logger.warn(
        { err },
        "could not read the alias states after listening again for other nodes' notices; an admin's change made meanwhile waits for the next",
      ),
    );
  });
  return () => {
    stopNotices();
    stopResumed();
  };
}

/**
 * After a time this node could not hear notices: the admin changes to the aliases it fetches
 * that were recorded meanwhile and not applied here are applied now, each logged once.
 */
async function catchUpAliasChanges(deps: NoticeFollowerDeps): Promise<void> {
  const retriever = deps.retriever();
  if (!retriever || retriever.aliases.length === 0) return;
  const applied = await retriever.catchUp(await deps.store.listAliasStates());
  for (const [alias, state] of applied) deps.logger.info(unheardAdminChangeFields(alias, state), unheardAdminChangeText(alias, state));
}
