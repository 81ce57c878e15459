/**
 * A slow network on loopback (RECIPES.md): a TCP proxy that holds each chunk D ms in each
 * direction, keeping order, so a connection through it has round trips of 2D ms, as a mailbox
 * at a cloud provider seen from a customer's site. Changing the machine's loopback (tc netem)
 * would slow everything else on it; this slows only what goes through it.
 */
import { spawn } from 'node:child_process';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export interface DelayProxy {
  port: number;
  close(): Promise<void>;
}

/** Forwards 127.0.0.1:PORT (ephemeral) to 127.0.0.1:TARGET with DELAY ms each way. */
export async function startDelayProxy(target: number, delayMs: number): Promise<DelayProxy> {
  const sockets = new Set<Socket>();
  // Timers of one duration fire in the order they were set: the bytes keep their order.
  const later = (fn: () => void) => (delayMs > 0 ? setTimeout(fn, delayMs) : setImmediate(fn));
  const pipe = (from: Socket, to: Socket) => {
    from.on('data', (chunk: Buffer) => later(() => to.destroyed || to.write(chunk)));
    from.on('end', () => later(() => to.end()));
    from.on('error', () => later(() => to.destroy()));
    from.on('close', () => later(() => to.destroy()));
  };
  const server: Server = createServer((client) => {
    const upstream = connect(target, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.setNoDelay(true);
      s.on('close', () => sockets.delete(s));
    }
    pipe(client, upstream);
    pipe(upstream, client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * The same proxy in a process of its own, as a network is: in the measured process its timers
 * would wait behind the retriever's work, and a busy client would see longer round trips than
 * an idle one (the plain download). The bench uses this one.
 */
export async function startDelayProxyProcess(target: number, delayMs: number): Promise<DelayProxy> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), String(target), String(delayMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const first = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`the delay proxy exited (${code}) before listening`)));
  });
  return {
    port: Number(first),
    close: async () => {
      child.kill();
      await exited;
    },
  };
}

// `node delay-proxy.js TARGET DELAY`: run a proxy and print its port.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const proxy = await startDelayProxy(Number(process.argv[2]), Number(process.argv[3]));
  process.stdout.write(`${proxy.port}\n`);
}
