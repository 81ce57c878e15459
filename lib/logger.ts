import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

/**
 * Structured JSON logs (one object per line) for log shippers; a readable form when
 * stdout is a terminal, since an admin watching `mailgate serve` reads it by eye. `node`
 * (`[node] name`) is on every JSON line, so a fleet's logs shipped to one place tell the nodes
 * apart; the readable form, read on the node itself, leaves it out.
 */
export function createLogger(level: LevelWithSilent = 'info', opts: { pretty?: boolean; destination?: NodeJS.WritableStream; node?: string } = {}): Logger {
  const pretty = opts.pretty ?? Boolean(process.stdout.isTTY);
  if (pretty && !opts.destination) {
    return pino({
      level,
      transport: { target: 'pino-pretty', options: { translateTime: 'SYS:standard', ignore: 'pid,hostname' } },
    });
  }
  // Asynchronous writes keep a busy gateway's event loop off the disk; flushed on stop.
  return pino(
    { level, base: { service: 'mailgate', ...(opts.node === undefined ? {} : { node: opts.node }) } },
    (opts.destination as pino.DestinationStream | undefined) ?? pino.destination({ dest: 1, sync: false }),
  );
}

/** A logger that drops everything, for CLI commands that read the store and for tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
