/**
 * What happens in the running gateway, for whoever watches live (the REST API's
 * `/api/v1/events`, the console later): a message stored, an attachment quarantined or
 * restored, a queue entry changed, an alias's state changed (and, from the retriever itself, a
 * backfill's progress). Reported at the one place every
 * part of the gateway writes them: the store it was given by gateway.ts (`reportingStore`), so
 * the listeners, the retriever, the dispatcher and the admin API report without knowing it.
 * Nothing is done when nobody listens.
 */
import { EventEmitter } from 'node:events';
import type { MessageWriter, MessageRewrite, QueueClaims, SideRecord, Store } from '../storage/store.js';
import type { AliasState, DeliveryRecord, MessageMeta, QueueEntry } from '../storage/records.js';
import type { Backfill } from './fetch/progress.js';

/** One thing that happened, as `/api/v1/events` sends it (the SSE event name is `type`). */
export type GatewayEvent =
  | { type: 'message-stored'; id: string; source: MessageMeta['source']['kind']; subject?: string }
  | { type: 'attachment-quarantined'; id: string; messageId: string; fileName?: string }
  | { type: 'attachment-restored'; id: string; messageId: string }
  | { type: 'queue-changed'; id: string; state: 'queued' | 'finished'; entry?: QueueEntry }
  | { type: 'alias-status'; alias: string; status: AliasState['status']; failures: number }
  // A mailbox's backlog (gateway/fetch/progress.ts) moved on, at most every few seconds; without `backfill` it is done.
  | { type: 'backfill-progress'; alias: string; backfill?: Backfill };

/** The gateway's events: typed, and with listeners counted so reporting costs nothing when idle. */
export class GatewayEvents {
  readonly #emitter = new EventEmitter();

  constructor() {
    // Every open event stream is a listener; many browser tabs are not a leak.
    this.#emitter.setMaxListeners(0);
  }

  /** True when someone listens: reporters skip building events otherwise. */
  get watched(): boolean {
    return this.#emitter.listenerCount('event') > 0;
  }

  report(event: GatewayEvent): void {
    this.#emitter.emit('event', event);
  }

  /** Calls LISTENER for each event until the returned function is called. */
  listen(listener: (event: GatewayEvent) => void): () => void {
    this.#emitter.on('event', listener);
    return () => this.#emitter.off('event', listener);
  }
}

/** STORE, reporting to EVENTS what is written through it. */
export function reportingStore(store: Store, events: GatewayEvents): Store {
  const committed = (meta: MessageMeta, side: readonly SideRecord[] = []) => {
    if (!events.watched) return;
    events.report({ type: 'message-stored', id: meta.id, source: meta.source.kind, ...(meta.subject !== undefined ? { subject: meta.subject } : {}) });
    for (const r of side) {
      if (r.type === 'quarantine')
        events.report({ type: 'attachment-quarantined', id: r.record.id, messageId: r.record.messageId, fileName: r.record.fileName });
      if (r.type === 'queue-entry') events.report({ type: 'queue-changed', id: r.entry.id, state: 'queued', entry: r.entry });
      if (r.type === 'queue-finished') events.report({ type: 'queue-changed', id: r.id, state: 'finished' });
    }
  };
  const wrapped: Partial<Store> = {
    createMessageWriter(id: string): MessageWriter {
      const writer = store.createMessageWriter(id);
      const commit = writer.commit.bind(writer);
      writer.commit = async (meta, side) => {
        await commit(meta, side);
        committed(meta, side);
      };
      return writer;
    },
    async rewriteMessage(id: string): Promise<MessageRewrite> {
      const rewrite = await store.rewriteMessage(id);
      const commit = rewrite.commit.bind(rewrite);
      rewrite.commit = async (meta, opts) => {
        await commit(meta, opts);
        const restored = opts?.restoredQuarantineId;
        if (restored !== undefined && events.watched) events.report({ type: 'attachment-restored', id: restored, messageId: meta.id });
      };
      return rewrite;
    },
    async putQueueEntries(entries: readonly QueueEntry[]): Promise<void> {
      await store.putQueueEntries(entries);
      if (events.watched) for (const entry of entries) events.report({ type: 'queue-changed', id: entry.id, state: 'queued', entry });
    },
    async finishQueueEntry(id, delivery): Promise<void> {
      await store.finishQueueEntry(id, delivery);
      if (events.watched) events.report({ type: 'queue-changed', id, state: 'finished' });
    },
    // A queue several nodes share saves and finishes entries through their claims.
    queueClaims: reportingClaims(store.queueClaims, events),
    async putAliasState(alias: string, state: AliasState): Promise<void> {
      await store.putAliasState(alias, state);
      if (events.watched) events.report({ type: 'alias-status', alias, status: state.status, failures: state.failures });
    },
  };
  return withOverrides(store, wrapped);
}

/** CLAIMS, reporting to EVENTS the entries saved and finished through them (as putQueueEntries and finishQueueEntry are). */
function reportingClaims(claims: QueueClaims, events: GatewayEvents): QueueClaims {
  return withOverrides(claims, {
    async saveClaimed(entry: QueueEntry, opts?: { release?: boolean }): Promise<boolean> {
      const saved = await claims.saveClaimed(entry, opts);
      if (saved && events.watched) events.report({ type: 'queue-changed', id: entry.id, state: 'queued', entry });
      return saved;
    },
    async finishClaimed(id: string, delivery: DeliveryRecord): Promise<boolean> {
      const finished = await claims.finishClaimed(id, delivery);
      if (finished && events.watched) events.report({ type: 'queue-changed', id, state: 'finished' });
      return finished;
    },
  });
}

/**
 * TARGET with the members of OVERRIDES in place of its own; everything else goes to TARGET
 * itself, its methods bound to it (it keeps `#` fields), once each rather than at every call:
 * the store is asked on every message's path.
 */
function withOverrides<T extends object>(target: T, overrides: Partial<T>): T {
  const bound = new Map<PropertyKey, unknown>();
  return new Proxy(target, {
    get(target, prop) {
      if (Object.hasOwn(overrides, prop)) return overrides[prop as keyof T];
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== 'function') return value;
      let fn = bound.get(prop);
      if (fn === undefined) bound.set(prop, (fn = (value as (...args: unknown[]) => unknown).bind(target)));
      return fn;
    },
  });
}
