/**
 * The CLI's side of the control socket: an AdminApi whose every operation is one HTTP request
 * to the running gateway (routes.ts), answered by the gateway's own Admin.
 */
import { existsSync } from 'node:fs';
import { request, type ClientRequest, type IncomingMessage } from 'node:http';
import { createConnection } from 'node:net';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import type { AdminApi } from './api.js';
import { routes, type AnyRoute, type HttpCall, type Operation } from './routes.js';
import { ERROR_TRAILER, errorFromBody } from './http-errors.js';

/** The control socket of a data directory: the gateway listens there while it runs (mode 0600). */
export const controlSocketPath = (dataDir: string) => path.join(dataDir, 'control.sock');

/** Whether a gateway accepts connections on the socket (a file left by a killed one does not). */
export function gatewayAnswers(socketPath: string): Promise<boolean> {
  if (!existsSync(socketPath)) return Promise.resolve(false);
  return new Promise((resolve) => {
    const socket = createConnection(socketPath);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** The running gateway's admin API, through its control socket. */
export function adminClient(socketPath: string): AdminApi {
  const operations = Object.fromEntries((Object.keys(routes) as Operation[]).map((op) => [op, (...args: unknown[]) => call(socketPath, routes[op], args)]));
  // The route table is typed operation by operation (routes.ts); each answer is what the gateway's Admin returned.
  return { ...operations, gatewayRunning: true, close: async () => {} } as unknown as AdminApi;
}

async function call(socketPath: string, route: AnyRoute, args: unknown[]): Promise<unknown> {
  const parts: Partial<HttpCall> = route.encode(...(args as never[]));
  const query = parts.query?.toString();
  const headers: Record<string, string> = { host: 'mailgate' };
  let json: string | undefined;
  if (parts.json !== undefined) {
    json = JSON.stringify(parts.json);
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(json));
  }
  if (parts.body) headers['content-type'] = 'message/rfc822';
  const req = request({ socketPath, method: route.method, path: pathOf(route.path, parts.params ?? {}) + (query ? `?${query}` : ''), headers, agent: false });
  try {
    const res = await (parts.body ? upload(req, parts.body) : answer(req, json));
    if (res.statusCode !== 200) throw errorFromBody(await jsonOf(res), res.statusCode ?? 0);
    return route.bytes ? bytesOf(res) : await jsonOf(res);
  } finally {
    // After an early refusal, this stops sending the rest of the message.
    if (parts.body) req.destroy();
  }
}

/** The path with its `:name` parameters filled in. */
function pathOf(pattern: string, params: Record<string, string>): string {
  return pattern.replace(/:(\w+)/g, (_, name: string) => encodeURIComponent(params[name] ?? ''));
}

function answer(req: ClientRequest, json?: string): Promise<IncomingMessage> {
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    req.once('response', resolve);
    req.once('error', reject);
  });
  req.end(json);
  return response;
}

/**
 * Sends the message as the request body; resolves with the answer, which may come before the
 * end (a refusal). A message that cannot be read destroys the request before its last chunk,
 * so the gateway sees it cut short and stores nothing; that failure is the one reported.
 */
async function upload(req: ClientRequest, message: Readable): Promise<IncomingMessage> {
  let unreadable: Error | undefined;
  message.once('error', (err) => (unreadable ??= err));
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    req.once('response', resolve);
    req.once('error', reject);
  });
  const sending = pipeline(message, req).catch(() => {});
  try {
    return await response;
  } catch (err) {
    await sending;
    throw unreadable ?? err;
  }
}

async function jsonOf(res: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  if (text === '') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined; // not ours: errorFromBody says so, and a 200 without JSON is no answer
  }
}

/** The bytes of an answer; an error the gateway met after they began (its trailer) fails the stream with that error. */
function bytesOf(res: IncomingMessage): Readable {
  const out = new PassThrough();
  res.pipe(out, { end: false });
  finished(res).then(
    () => {
      const trailer = res.trailers[ERROR_TRAILER];
      if (trailer) out.destroy(errorFromBody(JSON.parse(decodeURIComponent(trailer)), 500));
      else out.end();
    },
    (err: Error) => out.destroy(err),
  );
  // A reader that stops early (or fails) lets go of the connection.
  out.once('close', () => res.destroy());
  return out;
}
