/**
 * The gateway's web server: the REST API under `/api/v1` (api-routes.ts) with its OpenAPI 3.1
 * document at `/api/openapi.json` and a reference page at `/api/docs`, sign-in and sign-out
 * at `/api/v1/session`, and `/healthz` and `/readyz`. One fastify instance, HTTPS with
 * `[admin.tls]`; the console will be served from here too. Errors answer as the control socket's
 * do: JSON `{ code, message }` from the catalogue with a status that fits (http-errors.ts).
 */
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Readable } from 'node:stream';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import cookie from '@fastify/cookie';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import {
  hasZodFastifySchemaValidationErrors,
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { Logger } from 'pino';
import { errors } from '../../lib/errors.js';
import { parseListenAddress } from '../../lib/net.js';
import { errorBody, statusOf } from '../admin/http-errors.js';
import type { GatewayEvents } from '../events.js';
import { Access, requirePermission, type Caller } from './access.js';
import { apiRoutes, MESSAGE_TYPES, type ApiRoute } from './api-routes.js';
import { API_PREFIX, authenticate, perform, sessionCookie, SESSION_COOKIE, signIn, signInFirstRun, type WebServerDeps } from './operations.js';
import { registerConsole } from './console/routes.js';

export { API_PREFIX, SESSION_COOKIE, type WebServerDeps };

/** A running web server. */
export interface WebServer {
  /** The bound port (the configured one, or the ephemeral one for port 0). */
  readonly port: number;
  /** `http://` or `https://` and the bound address. */
  readonly url: string;
  /** With no `[[admin.user]]`: the link that signs in as admin, valid for this run. */
  readonly firstRunLink?: string;
  close(): Promise<void>;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Who made the request, once authenticated. */
    caller?: Caller;
  }
}

/**
 * Listens on `[admin] listen` at once, but builds the fastify app (routes, schemas, the OpenAPI
 * document, the console: some 10 MB of heap) only when the first request comes: a gateway
 * whose console nobody opens carries none of it while it takes in mail.
 */
export async function startWebServer(deps: WebServerDeps): Promise<WebServer> {
  const { config, logger } = deps;
  const at = parseListenAddress(config.admin.listen)!;
  const tls = config.admin.tls;
  const server = tls ? createHttpsServer({ cert: readFileSync(tls.cert), key: readFileSync(tls.key) }) : createHttpServer();
  // Made now: the first-run link's secret is printed at start.
  const access = new Access(config.admin, config.smtp.limits);
  let handle: ((req: IncomingMessage, res: ServerResponse) => void) | undefined;
  let built: Promise<FastifyInstance> | undefined;
  const build = () =>
    (built ??= (async () => {
      const app = Fastify({
        // Our logger's lines, not one per request: ingest is what the log is for.
        logger: false,
        serverFactory: (handler) => {
          handle = handler;
          return server;
        },
      });
      await buildApp(app, deps, access);
      await app.ready();
      return app;
    })());
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    if (handle) return handle(req, res);
    build().then(
      () => handle!(req, res),
      (err: unknown) => {
        logger.error({ err }, 'the console and REST API could not start');
        res
          .writeHead(500, { 'content-type': 'application/json' })
          .end(JSON.stringify({ code: 'INTERNAL', message: 'the web server could not start; see the log' }));
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(at.port, at.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const host = at.host.includes(':') ? `[${at.host}]` : at.host;
  const url = `${tls ? 'https' : 'http'}://${host}:${port}`;
  const firstRunLink = access.firstRunToken === undefined ? undefined : `${url}${API_PREFIX}/session/link?token=${access.firstRunToken}`;
  logger.info({ url, docs: `${url}/api/docs` }, 'console and REST API listening');
  return {
    port,
    url,
    ...(firstRunLink ? { firstRunLink } : {}),
    close: async () => {
      // fastify's close ends the event streams (preClose) and waits for requests in flight; the server is ours to close.
      if (built) await (await built.catch(() => undefined))?.close();
      server.closeAllConnections();
      if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

declare module 'fastify' {
  interface FastifyInstance {
    access: Access;
  }
}

/** Sets up APP with every route; exported for the test that checks the OpenAPI document without listening. */
export async function buildApp(app: FastifyInstance, deps: WebServerDeps, access = new Access(deps.config.admin, deps.config.smtp.limits)): Promise<void> {
  const { config } = deps;
  app.decorate('access', access);
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  // A message upload goes to the operation as the request stream: it is never held whole here.
  app.addContentTypeParser(MESSAGE_TYPES, (_req, payload, done) => done(null, payload));
  app.setErrorHandler((err, req, reply) => sendError(reply, requestError(err, req), deps.logger));
  app.setNotFoundHandler((req, reply) => sendError(reply, errors.unknownOperation(req.method, req.url.split('?')[0] ?? ''), deps.logger));

  await app.register(cookie);
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'mailgate admin API', version: '1', description: 'Every admin operation of mailgate, as the CLI does them (README "Console and API").' },
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'a token of [[admin.token]]' },
          session: { type: 'apiKey', in: 'cookie', name: SESSION_COOKIE, description: 'from POST /api/v1/session' },
        },
      },
      security: [{ bearer: [] }, { session: [] }],
    },
    transform: jsonSchemaTransform,
  });
  // The reference page's scripts and styles come from the package itself: no CDN at run time.
  await app.register(swaggerUi, { routePrefix: '/api/docs' });

  const zapp = app.withTypeProvider<ZodTypeProvider>();
  zapp.get('/api/openapi.json', { schema: { hide: true } }, () => app.swagger());
  zapp.get('/healthz', { schema: { summary: 'The process is up', security: [] } }, () => ({ status: 'ok' }));
  zapp.get('/readyz', { schema: { summary: 'The store is open and the listeners are bound', security: [] } }, async (_req, reply) => {
    const ready = await deps.ready().catch(() => false);
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready' });
  });

  const cookieOptions = sessionCookie(config);
  zapp.post(
    `${API_PREFIX}/session`,
    {
      schema: {
        summary: 'Signs a person in ([[admin.user]]): sets the session cookie',
        security: [],
        body: z.object({ user: z.string().min(1), password: z.string().min(1) }),
      },
    },
    async (req, reply) => {
      const { sessionId, caller } = await signIn(deps, access, req.body.user, req.body.password, req.ip);
      return reply.setCookie(SESSION_COOKIE, sessionId, cookieOptions).send({ user: req.body.user, role: caller.role });
    },
  );
  zapp.get(
    `${API_PREFIX}/session/link`,
    {
      schema: {
        summary: 'The first-run sign-in link (no [[admin.user]] configured): signs in as admin',
        security: [],
        querystring: z.object({ token: z.string().min(1) }),
      },
    },
    async (req, reply) => {
      const { sessionId } = await signInFirstRun(deps, access, req.query.token, req.ip);
      // Into the console, which the link is for.
      return reply.setCookie(SESSION_COOKIE, sessionId, cookieOptions).redirect('/', 303);
    },
  );
  zapp.delete(`${API_PREFIX}/session`, { schema: { summary: 'Signs out: ends the session' } }, (req, reply) => {
    const sessionId = req.cookies[SESSION_COOKIE];
    if (sessionId !== undefined) access.signOut(sessionId);
    return reply.clearCookie(SESSION_COOKIE, cookieOptions).code(204).send();
  });

  for (const r of apiRoutes) registerOperation(zapp, r, deps);
  registerEvents(app, deps.events);
  await registerConsole(app, deps);

  // Every route under /api/v1 but sign-in needs a caller; each operation then checks its permission.
  app.addHook('onRequest', async (req) => {
    const path = req.url.split('?')[0] ?? '';
    if (!path.startsWith(`${API_PREFIX}/`) || (path.startsWith(`${API_PREFIX}/session`) && req.method !== 'DELETE')) return;
    req.caller = await authenticate(req, access, deps);
  });
}

function registerOperation(app: FastifyInstance, r: ApiRoute, deps: WebServerDeps): void {
  app.route({
    method: r.method,
    url: `${API_PREFIX}${r.url}`,
    schema: {
      summary: r.summary,
      ...(r.params ? { params: r.params } : {}),
      ...(r.query ? { querystring: r.query } : {}),
      ...(r.upload ? { consumes: MESSAGE_TYPES } : {}),
      ...(r.bytes ? { produces: [r.bytes] } : {}),
    },
    handler: async (req: FastifyRequest, reply: FastifyReply) => {
      const body = r.upload ? (req.body as Readable | undefined) : undefined;
      const result = await perform(deps, r, req.caller!, req.ip, { params: req.params ?? {}, query: req.query ?? {}, body });
      // Bytes are streamed from the store as they are read.
      if (r.bytes) {
        if (r.fileName) reply.header('content-disposition', attachment(await r.fileName(deps.admin, { params: req.params as never })));
        return reply.type(r.bytes).send(result as Readable);
      }
      return reply.send(result);
    },
  });
}

/** A Content-Disposition saving as NAME: an ASCII fallback and the exact name (RFC 6266, RFC 8187). */
export function attachment(name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]|["\\%]/g, '_');
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)}`;
}

/** Seconds between SSE comments, so proxies and browsers keep an idle stream open. */
const HEARTBEAT_SECONDS = 15;

/** `/api/v1/events`: the gateway's events as Server-Sent Events, one `event: TYPE` with JSON `data` each. */
function registerEvents(app: FastifyInstance, events: GatewayEvents): void {
  const open = new Set<() => void>();
  // fastify's close waits for open requests: end the streams first.
  app.addHook('preClose', async () => {
    for (const end of open) end();
  });
  app.get(
    `${API_PREFIX}/events`,
    {
      schema: {
        summary: 'Live events (text/event-stream): message-stored, attachment-quarantined, attachment-restored, queue-changed, alias-status, backfill-progress',
        produces: ['text/event-stream'],
      },
    },
    (req, reply) => {
      requirePermission(req.caller!.role, 'read');
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive' });
      res.write(': mailgate events\n\n');
      const stop = events.listen((event) => res.write(`event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`));
      const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), HEARTBEAT_SECONDS * 1000);
      const end = () => {
        stop();
        clearInterval(heartbeat);
        open.delete(end);
        res.end();
      };
      open.add(end);
      res.once('close', end);
    },
  );
}

/** A request's failure as one of the catalogue: schema validation becomes BAD_REQUEST naming the field and why. */
function requestError(err: unknown, req: FastifyRequest): unknown {
  if (hasZodFastifySchemaValidationErrors(err)) {
    const where = err.validationContext ?? 'request';
    const detail = err.validation.map((v) => `${where}${v.instancePath.replaceAll('/', '.')}: ${v.message}`).join('; ');
    return errors.badRequest(detail);
  }
  const e = err as { statusCode?: number; code?: string; message?: string };
  // fastify's own refusals (a body that is not JSON, an unsupported media type, too large).
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500 && e.code?.startsWith('FST_')) {
    return errors.badRequest(`${req.method} ${req.url.split('?')[0] ?? ''}: ${e.message ?? e.code}`);
  }
  return err;
}

function sendError(reply: FastifyReply, err: unknown, logger: Logger): FastifyReply {
  const body = errorBody(err);
  const status = statusOf(body.code);
  if (status >= 500) logger.warn({ err, method: reply.request.method, path: reply.request.url }, 'REST API request failed');
  return reply.code(status).type('application/json; charset=utf-8').send(body);
}
