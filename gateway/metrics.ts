import { createServer, type Server } from 'node:http';
import { once } from 'node:events';

type Labels = Record<string, string>;

/**
 * Counters an admin graphs and alerts on, in Prometheus's text format. Kept by hand: a few
 * counters do not justify a metrics library.
 */
export class Metrics {
  readonly #counters = new Map<string, { help: string; values: Map<string, number> }>();

  constructor() {
    this.#define('mailgate_messages_total', 'Messages taken in, by source and outcome (stored, wrapped, refused).');
    this.#define('mailgate_message_bytes_total', 'Bytes of messages stored, by source.');
    this.#define('mailgate_refusals_total', 'Messages refused, by SMTP reply code.');
    this.#define('mailgate_policy_reloads_total', 'Policy file reloads, by result (ok, refused).');
    this.#define(
      'mailgate_outbound_recipients_total',
      'Recipients of queued messages by kind (outbound, relay) and result (delivered, deferred, failed) of each attempt.',
    );
    this.#define('mailgate_queue_finished_total', 'Messages that left the queue, by kind and status (delivered, partly_delivered, failed, dropped).');
    this.#define(
      'mailgate_alias_status_changes_total',
      'Alias status changes, by alias, new status (active, inactive), who changed it (retriever, admin) and failure kind.',
    );
  }

  #define(name: string, help: string): void {
    this.#counters.set(name, { help, values: new Map() });
  }

  /** Adds `by` (default 1) to a counter. */
  inc(name: string, labels: Labels = {}, by = 1): void {
    const counter = this.#counters.get(name);
    if (!counter) throw new Error(`unknown metric ${name}`);
    const key = Object.entries(labels)
      .map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, '_')}"`)
      .join(',');
    counter.values.set(key, (counter.values.get(key) ?? 0) + by);
  }

  /** The Prometheus text exposition. */
  render(): string {
    let out = '';
    for (const [name, { help, values }] of this.#counters) {
      out += `# HELP ${name} ${help}\n# TYPE ${name} counter\n`;
      for (const [labels, value] of values) out += `${name}${labels ? `{${labels}}` : ''} ${value}\n`;
    }
    return out;
  }
}

/** Serves `/metrics` on host:port. */
export async function startMetricsServer(metrics: Metrics, host: string, port: number): Promise<{ port: number; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end('not found; try /metrics\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(metrics.render());
  });
  server.listen(port, host);
  await once(server, 'listening');
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
