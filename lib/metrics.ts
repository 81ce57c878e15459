import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * The counters an admin graphs and alerts on, each with the labels it is counted by. One
 * table, so a name or label misspelt at a call site is a type error, not a silent new series.
 */
const COUNTERS = {
  mailgate_messages_total: { help: 'Messages taken in, by source and outcome (stored, wrapped, queued, refused, oversize).', labels: ['source', 'outcome'] },
  mailgate_message_bytes_total: { help: 'Bytes of messages stored, by source.', labels: ['source'] },
  mailgate_refusals_total: { help: 'Messages refused, by SMTP reply code.', labels: ['code'] },
  mailgate_policy_reloads_total: { help: 'Policy file reloads, by result (ok, refused).', labels: ['result'] },
  mailgate_outbound_recipients_total: {
    help: 'Recipients of queued messages by kind (outbound, relay) and result (delivered, deferred, failed) of each attempt.',
    labels: ['kind', 'result'],
  },
  mailgate_queue_finished_total: {
    help: 'Messages that left the queue, by kind and status (delivered, partly_delivered, failed, dropped).',
    labels: ['kind', 'status'],
  },
  mailgate_alias_status_changes_total: {
    help: 'Alias status changes, by alias, new status (active, inactive), who changed it (retriever, admin) and failure kind.',
    labels: ['alias', 'to', 'by', 'kind'],
  },
  mailgate_retention_deleted_total: {
    help: 'Records the retention sweep deleted, by kind (message, quarantine, audit).',
    labels: ['kind'],
  },
} as const;

export type CounterName = keyof typeof COUNTERS;
type LabelsOf<N extends CounterName> = Partial<Record<(typeof COUNTERS)[N]['labels'][number], string>>;

/** The values an admin alerts on that go up and down, as COUNTERS. */
const GAUGES = {
  mailgate_oauth_client_secret_expiry_days: {
    help: "Days until an OAuth app's client secret expires (client_secret_expires), negative once it has; by app. Absent for apps that do not set it.",
    labels: ['app'],
  },
  mailgate_node_info: {
    help: "Always 1, labelled with this gateway's [node] name: joined on `instance` where several nodes share one store, it names the node without a label on every series.",
    labels: ['node'],
  },
  mailgate_mailbox_waiting_messages: {
    help: "Messages waiting in an alias's mailbox to be fetched, as of its last poll and while a backfill runs (gateway/fetch/progress.ts); held ones for inactive aliases not counted. By the mailbox's leading alias.",
    labels: ['alias'],
  },
} as const;

export type GaugeName = keyof typeof GAUGES;
type GaugeLabelsOf<N extends GaugeName> = Record<(typeof GAUGES)[N]['labels'][number], string>;

/**
 * A gateway's metrics, in Prometheus's text format (prom-client), on a registry of its own so
 * gateways can run side by side in one process (tests do): the counters above, the time from
 * the end of DATA to our reply, and, where they are served, Node's process metrics (CPU,
 * memory, event-loop lag, file descriptors) under the `mailgate_` prefix.
 */
export class Metrics {
  readonly #registry = new Registry();
  readonly #counters = new Map<CounterName, Counter<string>>();
  readonly #gauges = new Map<GaugeName, Gauge<string>>();
  /** Seconds from the end of a message's DATA to our reply (250 or a refusal), by listener: the wait a client sees. */
  readonly replySeconds: Histogram<'listener' | 'reply'>;

  /** `processMetrics`: also Node's process collectors (CPU, memory, GC, event-loop lag, file descriptors); off by default, since they cost every message a little and are worth it only where `/metrics` is served. */
  constructor(opts: { processMetrics?: boolean } = {}) {
    for (const [name, { help, labels }] of Object.entries(COUNTERS)) {
      this.#counters.set(name as CounterName, new Counter({ name, help, labelNames: [...labels], registers: [this.#registry] }));
    }
    for (const [name, { help, labels }] of Object.entries(GAUGES)) {
      this.#gauges.set(name as GaugeName, new Gauge({ name, help, labelNames: [...labels], registers: [this.#registry] }));
    }
    this.replySeconds = new Histogram({
      name: 'mailgate_data_to_reply_seconds',
      help: 'Seconds from the end of DATA to the reply (a 250 only after the synced write), by listener and reply class (2xx, 4xx, 5xx).',
      labelNames: ['listener', 'reply'],
      // A synced write is milliseconds; seconds mean a stall the client feels.
      buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [this.#registry],
    });
    if (opts.processMetrics) collectDefaultMetrics({ register: this.#registry, prefix: 'mailgate_' });
  }

  /** Adds `by` (default 1) to a counter. */
  inc<N extends CounterName>(name: N, labels: LabelsOf<N> = {}, by = 1): void {
    this.#counters.get(name)!.inc(labels as Record<string, string>, by);
  }

  /** Sets a gauge. */
  set<N extends GaugeName>(name: N, labels: GaugeLabelsOf<N>, value: number): void {
    this.#gauges.get(name)!.set(labels as Record<string, string>, value);
  }

  /** Starts timing a reply: call the result with the reply code when the reply is sent. */
  timeReply(listener: 'smtp' | 'submission'): (code: number) => void {
    const end = this.replySeconds.startTimer({ listener });
    return (code) => void end({ reply: `${Math.floor(code / 100)}xx` });
  }

  /** The Prometheus text exposition. */
  render(): Promise<string> {
    return this.#registry.metrics();
  }

  get contentType(): string {
    return this.#registry.contentType;
  }
}

/** Serves `/metrics` on host:port. */
export async function startMetricsServer(metrics: Metrics, host: string, port: number): Promise<{ port: number; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end('not found; try /metrics\n');
      return;
    }
    metrics.render().then(
      (text) => res.writeHead(200, { 'content-type': metrics.contentType }).end(text),
      () => res.writeHead(500).end('metrics could not be collected\n'),
    );
  });
  server.listen(port, host);
  await once(server, 'listening');
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
