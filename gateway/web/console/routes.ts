/**
 * The console: server-rendered pages on the REST API's operations. A page reads through the
 * same route table (api-routes.ts) with the same permission checks, and a button is a form that
 * POSTs here, is done as the API does it (operations.ts: permission, AdminApi, audit log) and
 * comes back to the page with a line saying what happened. Every page works without
 * JavaScript; htmx and console.js only refresh the live parts and ask before a deletion.
 */
import { createReadStream } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import formbody from '@fastify/formbody';
import multipart from '@fastify/multipart';
import type { z } from 'zod';
import { errors } from '../../../lib/errors.js';
import type {
  AliasRow,
  AliasTestReport,
  AuditEntry,
  GatewaySummary,
  NodeRow,
  MessageDetails,
  MessagePage,
  PolicyReport,
  QuarantineBulkResult,
  QuarantineRecord,
  QueueEntry,
} from '../../admin/api.js';
import { errorBody, statusOf } from '../../admin/http-errors.js';
import type { Caller } from '../access.js';
import { apiRoutes } from '../api-routes.js';
import { authenticate, perform, sessionCookie, SESSION_COOKIE, signIn, type WebServerDeps } from '../operations.js';
import { html, Html } from './html.js';
import { barePage, page, type Flash } from './layout.js';
import type { PageContext } from './pages/context.js';
import { dashboardLive, dashboardPage } from './pages/dashboard.js';
import { messagePage, messagesPage, type MessageSearch } from './pages/messages.js';
import { quarantinePage, type QuarantineSearch } from './pages/quarantine.js';
import { aliasesPage } from './pages/aliases.js';
import { queuePage } from './pages/queue.js';
import { policyPage, type PolicyTestForm } from './pages/policy.js';
import { auditPage, windowMs } from './pages/audit.js';
import { signInPage } from './pages/sign-in.js';

const FLASH_COOKIE = 'mailgate_flash';

/** What the console serves besides its pages: ours, and htmx from its npm package. */
const ASSETS: Readonly<Record<string, { file: string; type: string }>> = {
  'console.css': { file: fileURLToPath(new URL('../../../../gateway/web/console/assets/console.css', import.meta.url)), type: 'text/css; charset=utf-8' },
  'console.js': { file: fileURLToPath(new URL('../../../../gateway/web/console/assets/console.js', import.meta.url)), type: 'text/javascript; charset=utf-8' },
  'favicon.svg': { file: fileURLToPath(new URL('../../../../gateway/web/console/assets/favicon.svg', import.meta.url)), type: 'image/svg+xml' },
  'htmx.min.js': { file: createRequire(import.meta.url).resolve('htmx.org/dist/htmx.min.js'), type: 'text/javascript; charset=utf-8' },
};

/** The pages run only our own scripts and styles, talk only to this site, and are never framed. */
const PAGE_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'same-origin',
  'cache-control': 'no-store',
};

/** A console button: the path its form posts to, the API operation it is, and the line said afterwards. */
interface ConsoleAction {
  path: string;
  /** `METHOD /url` of api-routes.ts. */
  operation: string;
  /** Where to come back to when the form does not say. */
  fallback: string;
  done(result: unknown, params: Record<string, string>): string;
}

const bulk = (verb: string) => (result: unknown) => {
  const r = result as QuarantineBulkResult;
  const failed = r.failed.length ? ` ${r.failed.length} could not be: ${r.failed.map((f) => f.message).join('; ')}` : '';
  return `${verb} ${r.done.length} attachment${r.done.length === 1 ? '' : 's'}.${failed}`;
};

const ACTIONS: readonly ConsoleAction[] = [
  {
    path: '/quarantine/:id/restore',
    operation: 'POST /quarantine/:id/restore',
    fallback: '/quarantine',
    done: (r) => `Restored ${(r as QuarantineRecord).fileName} to its message.`,
  },
  {
    path: '/quarantine/:id/delete',
    operation: 'DELETE /quarantine/:id',
    fallback: '/quarantine',
    done: (r) => `Deleted ${(r as QuarantineRecord).fileName} from the quarantine.`,
  },
  { path: '/quarantine/restore', operation: 'POST /quarantine/restore', fallback: '/quarantine', done: bulk('Restored') },
  { path: '/quarantine/delete', operation: 'DELETE /quarantine', fallback: '/quarantine', done: bulk('Deleted') },
  {
    path: '/messages/:id/delete',
    operation: 'DELETE /messages/:id',
    fallback: '/messages',
    done: (_r, p) => `Deleted message ${p['id']} for good.`,
  },
  { path: '/queue/:id/retry', operation: 'POST /queue/:id/retry', fallback: '/queue', done: (_r, p) => `Message ${p['id']} will be tried again now.` },
  {
    path: '/queue/retry',
    operation: 'POST /queue/retry',
    fallback: '/queue',
    done: (r) => `${(r as { retried: number }).retried} queued message(s) will be tried again now.`,
  },
  { path: '/queue/:id/drop', operation: 'DELETE /queue/:id', fallback: '/queue', done: (_r, p) => `Dropped message ${p['id']} from the queue.` },
  { path: '/aliases/:name/activate', operation: 'POST /aliases/:name/activate', fallback: '/aliases', done: (_r, p) => `Alias ${p['name']} is active.` },
  {
    path: '/aliases/:name/deactivate',
    operation: 'POST /aliases/:name/deactivate',
    fallback: '/aliases',
    done: (_r, p) => `Alias ${p['name']} is inactive: its mailbox is not fetched until it is activated.`,
  },
];

/** A catalogue sentence as the first words on a line. */
const sentence = (err: unknown) => {
  const text = errorBody(err).message;
  return text.charAt(0).toUpperCase() + text.slice(1);
};

const operations = new Map(apiRoutes.map((r) => [`${r.method} ${r.url}`, r]));

type Fields = Record<string, string | undefined>;

/** A datetime-local field has no zone: the form says UTC, so it is read as UTC. */
const asUtc = (v: string | undefined) => (v !== undefined && /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?$/.test(v) ? `${v}Z` : v);

/** FIELDS as the query of ROUTE's schema: empty fields left out; BAD_REQUEST naming a field that does not fit. */
function queryOf(schema: z.ZodObject | undefined, fields: Fields): object {
  if (!schema) return {};
  const given = Object.fromEntries(
    Object.entries(fields)
      .filter(([, v]) => v !== undefined && v !== '')
      .map(([k, v]) => [k, ['since', 'until', 'older_than'].includes(k) ? asUtc(v) : v]),
  );
  const parsed = schema.safeParse(given);
  if (!parsed.success) throw errors.badRequest(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
  return parsed.data;
}

/** A path on this site to come back to; anything else (another site, `//host`) is not followed. */
function localPath(value: string | undefined): string | undefined {
  return value !== undefined && value.startsWith('/') && !value.startsWith('//') && !value.startsWith('/\\') ? value : undefined;
}

export async function registerConsole(app: FastifyInstance, deps: WebServerDeps): Promise<void> {
  const { config } = deps;
  const access = app.access;
  await app.register(formbody);
  // One message per policy test, as large as the SMTP listener would take.
  await app.register(multipart, { limits: { files: 1, fields: 10, fileSize: config.smtp.max_message_size } });

  /** Operation KEY for CALLER, as the REST API does it. */
  const call = <T>(req: FastifyRequest, caller: Caller, key: string, params: Record<string, string> = {}, fields: Fields = {}, body?: Readable) => {
    const r = operations.get(key);
    if (!r) throw new Error(`the console names an operation the API does not have: ${key}`);
    return perform(deps, r, caller, req.ip, { params, query: queryOf(r.query, fields), body }) as Promise<T>;
  };

  /** The caller of a console request; undefined after answering with the sign-in page's address. */
  const callerOf = async (req: FastifyRequest, reply: FastifyReply): Promise<Caller | undefined> => {
    try {
      return await authenticate(req, access, deps);
    } catch (err) {
      if (errorBody(err).code !== 'SIGN_IN_REQUIRED') throw err;
      const next = req.method === 'GET' ? req.url : '/';
      await reply.redirect(`/sign-in?next=${encodeURIComponent(next)}`, 303);
      return undefined;
    }
  };

  const takeFlash = (req: FastifyRequest, reply: FastifyReply): Flash | undefined => {
    const raw = req.cookies[FLASH_COOKIE];
    if (raw === undefined) return undefined;
    reply.clearCookie(FLASH_COOKIE, { path: '/' });
    try {
      const f = JSON.parse(Buffer.from(raw, 'base64url').toString()) as Flash;
      return (f.kind === 'ok' || f.kind === 'error') && typeof f.text === 'string' ? { kind: f.kind, text: f.text } : undefined;
    } catch {
      return undefined;
    }
  };
  const setFlash = (reply: FastifyReply, flash: Flash) =>
    reply.setCookie(FLASH_COOKIE, Buffer.from(JSON.stringify(flash)).toString('base64url'), { ...sessionCookie(config), maxAge: 60 });

  const send = (reply: FastifyReply, body: Html, status = 200) => reply.code(status).headers(PAGE_HEADERS).type('text/html; charset=utf-8').send(body.text);

  /**
   * A page: signed in, rendered by RENDER, an error shown on the page with its status. A GET
   * reads; a POST here answers with a page of results (a connection test, a policy test)
   * rather than coming back as an action does.
   */
  const pageRoute = (
    path: string,
    title: string,
    render: (req: FastifyRequest, ctx: PageContext) => Promise<Html | { title: string; body: Html }>,
    method: 'GET' | 'POST' = 'GET',
  ) => {
    app.route({
      method,
      url: path,
      schema: { hide: true },
      handler: async (req, reply) => {
        const caller = await callerOf(req, reply);
        if (!caller) return reply;
        const ctx: PageContext = { caller, config, here: req.url };
        const flash = takeFlash(req, reply);
        const where = req.url.split('?')[0] ?? '/';
        try {
          const rendered = await render(req, ctx);
          const named = rendered instanceof Html ? { title, body: rendered } : rendered;
          return send(reply, page({ ...named, path: where, caller, flash }));
        } catch (err) {
          const failed = { kind: 'error' as const, text: sentence(err) };
          return send(reply, page({ title, path: where, caller, flash: failed, body: html`` }), statusOf(errorBody(err).code));
        }
      },
    });
  };

  app.get('/console/assets/:file', { schema: { hide: true } }, (req, reply) => {
    const asset = ASSETS[(req.params as { file: string }).file];
    if (!asset) return reply.code(404).type('text/plain').send('not found');
    return reply.headers({ 'x-content-type-options': 'nosniff', 'cache-control': 'max-age=300' }).type(asset.type).send(createReadStream(asset.file));
  });

  app.get('/sign-in', { schema: { hide: true } }, (req, reply) => {
    const next = localPath((req.query as Fields)['next']) ?? '/';
    return send(reply, barePage('Sign in', signInPage({ next, noUsers: config.admin.user.length === 0 })));
  });
  app.post('/sign-in', { schema: { hide: true } }, async (req, reply) => {
    const form = (req.body ?? {}) as Fields;
    const next = localPath(form['next']) ?? '/';
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== `${req.protocol}://${req.headers.host ?? ''}`) throw errors.crossSiteRequest(origin);
    try {
      const { sessionId } = await signIn(deps, access, form['user'] ?? '', form['password'] ?? '', req.ip);
      return reply.setCookie(SESSION_COOKIE, sessionId, sessionCookie(config)).redirect(next, 303);
    } catch (err) {
      const body = errorBody(err);
      const again = signInPage({ next, user: form['user'] ?? '', error: sentence(err), noUsers: config.admin.user.length === 0 });
      return send(reply, barePage('Sign in', again), statusOf(body.code));
    }
  });
  app.post('/sign-out', { schema: { hide: true } }, (req, reply) => {
    const sessionId = req.cookies[SESSION_COOKIE];
    if (sessionId !== undefined) access.signOut(sessionId);
    return reply.clearCookie(SESSION_COOKIE, sessionCookie(config)).redirect('/sign-in', 303);
  });

  const summary = (req: FastifyRequest, ctx: PageContext) => call<GatewaySummary>(req, ctx.caller, 'GET /summary');
  // The fleet's nodes under the numbers (issue 16): one on LevelDB, this one.
  const nodes = (req: FastifyRequest, ctx: PageContext) => call<NodeRow[]>(req, ctx.caller, 'GET /nodes');
  pageRoute('/', 'Dashboard', async (req, ctx) => dashboardPage(...(await Promise.all([summary(req, ctx), nodes(req, ctx)]))));
  app.get('/dashboard/live', { schema: { hide: true } }, async (req, reply) => {
    const caller = await authenticate(req, access, deps);
    const ctx = { caller, config, here: '/' };
    return send(reply, dashboardLive(...(await Promise.all([summary(req, ctx), nodes(req, ctx)]))));
  });

  pageRoute('/messages', 'Messages', async (req, ctx) => {
    const q = req.query as MessageSearch & { cursor?: string };
    return messagesPage(ctx, q, await call<MessagePage>(req, ctx.caller, 'GET /messages', {}, { ...q, limit: '50' }));
  });
  pageRoute('/messages/:id', 'Message', async (req, ctx) => {
    const { id } = req.params as { id: string };
    const details = await call<MessageDetails>(req, ctx.caller, 'GET /messages/:id', { id });
    return { title: details.meta.subject || '(no subject)', body: messagePage(ctx, details) };
  });
  pageRoute('/quarantine', 'Quarantine', async (req, ctx) => {
    const q = req.query as QuarantineSearch;
    return quarantinePage(ctx, q, await call<QuarantineRecord[]>(req, ctx.caller, 'GET /quarantine', {}, q));
  });
  pageRoute('/aliases', 'Aliases', async (req, ctx) => aliasesPage(ctx, await call<AliasRow[]>(req, ctx.caller, 'GET /aliases')));
  pageRoute('/queue', 'Queue', async (req, ctx) => queuePage(ctx, await call<QueueEntry[]>(req, ctx.caller, 'GET /queue')));
  pageRoute('/policy', 'Policy test', async (_req, ctx) => policyPage(ctx, {}));
  const AUDIT_LIMIT = 200;
  pageRoute('/audit', 'Audit log', async (req, ctx) => {
    const window = (req.query as Fields)['window'] ?? '';
    const ms = windowMs(window);
    const since = ms === undefined ? undefined : new Date(Date.now() - ms).toISOString();
    return auditPage(window, await call<AuditEntry[]>(req, ctx.caller, 'GET /audit', {}, { since, limit: String(AUDIT_LIMIT) }), AUDIT_LIMIT);
  });

  pageRoute(
    '/aliases/:name/test',
    'Aliases',
    async (req, ctx) => {
      const { name } = req.params as { name: string };
      const report = await call<AliasTestReport>(req, ctx.caller, 'POST /aliases/:name/test', { name });
      return aliasesPage({ ...ctx, here: '/aliases' }, await call<AliasRow[]>(req, ctx.caller, 'GET /aliases'), report);
    },
    'POST',
  );
  pageRoute(
    '/policy',
    'Policy test',
    async (req, ctx) => {
      const form: PolicyTestForm = {};
      let report: PolicyReport | undefined;
      // The form puts its fields before the file, so they are known when the file streams in.
      for await (const part of req.parts()) {
        if (part.type === 'field') {
          if (part.fieldname === 'department' && typeof part.value === 'string' && part.value !== '') form.department = part.value;
          if (part.fieldname === 'direction' && typeof part.value === 'string') form.direction = part.value;
        } else if (report === undefined) {
          form.fileName = part.filename;
          report = await call<PolicyReport>(
            req,
            ctx.caller,
            'POST /policy/test',
            {},
            { department: form.department, direction: form.direction },
            part.file,
          ).finally(() => part.file.resume());
        } else part.file.resume();
      }
      if (!report) throw errors.badRequest('message: choose a message file (.eml) to test');
      return policyPage(ctx, form, report);
    },
    'POST',
  );

  for (const action of ACTIONS) {
    app.post(action.path, { schema: { hide: true } }, async (req, reply) => {
      const caller = await callerOf(req, reply);
      if (!caller) return reply;
      const { back, ...fields } = (req.body ?? {}) as Fields;
      const params = req.params as Record<string, string>;
      try {
        setFlash(reply, { kind: 'ok', text: action.done(await call(req, caller, action.operation, params, fields), params) });
      } catch (err) {
        setFlash(reply, { kind: 'error', text: sentence(err) });
      }
      return reply.redirect(localPath(back) ?? action.fallback, 303);
    });
  }
}
