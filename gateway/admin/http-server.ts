/**
 * The control socket: the running gateway serves its admin API (api.ts) over HTTP on a Unix
 * socket in the data directory, one route per operation (routes.ts). The gateway holds
 * LevelDB's lock, so this is how the CLI reaches the store while it runs. The socket is as
 * private as the data directory (mode 0600): whoever can open it is the admin.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { once } from 'node:events';
import { chmod, rm } from 'node:fs/promises';
import { PassThrough, type Readable } from 'node:stream';
import type { Logger } from 'pino';
import { errors } from '../../lib/errors.js';
import type { AdminApi } from './api.js';
import { routes, type AnyRoute, type HttpCall, type Operation } from './routes.js';
import { ERROR_TRAILER, errorBody, statusOf } from './http-errors.js';

/** Largest JSON request body: requests are small; anything longer is not a client of ours. */
const MAX_JSON_BODY = 64 * 1024;

interface Compiled {
  op: Operation;
  route: AnyRoute;
  /** The path's segments; a parameter's is its name after `:`. */
  segments: string[];
}

const compiled: Compiled[] = (Object.keys(routes) as Operation[]).map((op) => ({ op, route: routes[op], segments: routes[op].path.split('/') }));

/** The route for METHOD and PATHNAME, with the path's parameters. */
function match(method: string, pathname: string): { op: Operation; route: AnyRoute; params: Record<string, string> } | undefined {
  const segments = pathname.split('/');
  for (const { op, route, segments: pattern } of compiled) {
    if (route.method !== method || pattern.length !== segments.length) continue;
    const params: Record<string, string> = {};
    const fits = pattern.every((p, i) => {
      const s = segments[i]!;
      if (!p.startsWith(':')) return p === s;
      try {
        params[p.slice(1)] = decodeURIComponent(s);
      } catch {
        return false;
      }
      return s !== '';
    });
    if (fits) return { op, route, params };
  }
  return undefined;
}

/** Serves `api` on the control socket for as long as the gateway runs. */
export async function startAdminServer(api: AdminApi, socketPath: string, logger: Logger): Promise<{ close(): Promise<void> }> {
  // A socket file left by a killed gateway would make listen() fail; we hold the store lock, so it is stale.
  await rm(socketPath, { force: true });
  // The upload in progress on each connection, to fail when the client half-closes mid-body.
  const uploads = new WeakMap<Socket, PassThrough>();
  const server = createServer((req, res) => void serve(api, req, res, uploads, logger));
  server.on('clientError', (err: Error & { code?: string }, socket: Socket) => {
    // A client that ends its side before the last chunk: the message is cut short, and it may still read the refusal.
    const body = uploads.get(socket);
    if (body && socket.writable) return void body.destroy(errors.clientGone());
    if (socket.writable && err.code !== 'ECONNRESET') {
      const json = JSON.stringify(errorBody(errors.badRequest(`not an HTTP request: ${err.message}`)));
      socket.end(
        `HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(json)}\r\nConnection: close\r\n\r\n${json}`,
      );
    } else socket.destroy();
  });
  server.listen(socketPath);
  await once(server, 'listening');
  await chmod(socketPath, 0o600); // the store's contents are as private as the data directory
  return {
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(socketPath, { force: true });
    },
  };
}

async function serve(api: AdminApi, req: IncomingMessage, res: ServerResponse, uploads: WeakMap<Socket, PassThrough>, logger: Logger): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://mailgate');
  const method = req.method ?? 'GET';
  const found = match(method, url.pathname);
  let body: PassThrough | undefined;
  try {
    if (!found) throw errors.unknownOperation(method, url.pathname);
    const { op, route, params } = found;
    const call: HttpCall = { params, query: url.searchParams };
    if (route.upload) {
      body = requestBody(req);
      uploads.set(req.socket, body);
      call.body = body;
    } else if (method === 'POST' || method === 'PUT') {
      const json = await jsonBody(req);
      if (json !== undefined) call.json = json;
    }
    const operation = api[op] as (...args: unknown[]) => Promise<unknown>;
    const result = await operation.apply(api, route.decode(call));
    if (route.bytes) bytes(res, result as Readable, route.bytes, logger);
    else reply(res, 200, result);
  } catch (err) {
    const answer = errorBody(err);
    const status = statusOf(answer.code);
    if (status >= 500) logger.warn({ err, method, path: url.pathname }, 'admin request failed');
    reply(res, status, answer);
  } finally {
    // A body the operation did not read to its end (a refusal) is read on and dropped, so the client can finish and read the answer.
    uploads.delete(req.socket);
    body?.resume();
    req.resume();
  }
}

function reply(res: ServerResponse, status: number, value: unknown): void {
  if (res.headersSent) return void res.destroy();
  // One request per connection, as the client makes them.
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', connection: 'close' });
  res.end(JSON.stringify(value ?? null));
}

/** Streams bytes; an error after they began goes in the trailer, for the client to fail its stream with. */
function bytes(res: ServerResponse, source: Readable, type: string, logger: Logger): void {
  res.writeHead(200, { 'content-type': type, trailer: ERROR_TRAILER, connection: 'close' });
  source.once('error', (err) => {
    logger.warn({ err }, 'admin request failed while sending bytes');
    res.addTrailers({ [ERROR_TRAILER]: encodeURIComponent(JSON.stringify(errorBody(err))) });
    res.end();
  });
  // The client went away: stop reading the store.
  res.once('close', () => source.destroy());
  source.pipe(res);
}

/**
 * The uploaded message. A request that ends before its last chunk (the client killed, or its
 * message unreadable) fails it as the client gone: a message cut short is never stored.
 */
function requestBody(req: IncomingMessage): PassThrough {
  const body = new PassThrough();
  const gone = () => {
    if (!req.complete) body.destroy(errors.clientGone());
  };
  req.once('error', gone);
  req.once('close', gone);
  req.pipe(body);
  return body;
}

async function jsonBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_JSON_BODY) throw errors.badRequest(`the request body is over ${MAX_JSON_BODY} bytes`);
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw errors.badRequest('the request body is not JSON');
  }
}
