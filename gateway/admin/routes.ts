/**
 * The admin API over HTTP: one route per operation, and for each how a call becomes a request
 * (the client, http-client.ts) and a request becomes the call again (the server,
 * http-server.ts). Answers are JSON, or bytes for the operations that give a Readable; the
 * upload of `send` and `policy test` is the message itself, its other inputs in the query.
 * Kept free of Node's http objects so the REST API can register the same table.
 */
import type { Readable } from 'node:stream';
import { errors } from '../../lib/errors.js';
import type { AdminApi, AliasStatus, QuarantineQuery, SendRequest } from './api.js';
import type { PolicyTestRequest } from './policy-test.js';

/** The operations of AdminApi (all of it but its lifecycle). */
export type Operation = Exclude<keyof AdminApi, 'gatewayRunning' | 'close'>;

/** A request as both sides see it. */
export interface HttpCall {
  /** The `:name` segments of the path, decoded. */
  params: Record<string, string>;
  query: URLSearchParams;
  /** A JSON body. */
  json?: unknown;
  /** The bytes of an upload (a message). */
  body?: Readable;
}

export interface Route<K extends Operation> {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** The path, with `:name` for a parameter, e.g. `/queue/:id`. */
  path: string;
  /** The call's arguments as a request. */
  encode(...args: Parameters<AdminApi[K]>): Partial<HttpCall>;
  /** The request as the call's arguments, checked: anything may arrive on the socket. */
  decode(call: HttpCall): Parameters<AdminApi[K]>;
  /** The answer is bytes of this media type rather than JSON. */
  bytes?: string;
  /** The request body is a message rather than JSON. */
  upload?: true;
}

/** A route with its operation's types forgotten, for the code that serves or calls any of them. */
export interface AnyRoute {
  method: Route<Operation>['method'];
  path: string;
  encode(...args: never[]): Partial<HttpCall>;
  decode(call: HttpCall): unknown[];
  bytes?: string;
  upload?: true;
}

/** Encodes and decodes an operation whose one argument is the path parameter `name`. */
const byParam = (name: string) => ({
  encode: (value: string) => ({ params: { [name]: value } }),
  decode: ({ params }: HttpCall): [string] => [params[name] ?? ''],
});

const none = { encode: () => ({}), decode: (): [] => [] };

export const routes: { readonly [K in Operation]: Route<K> } = {
  listMessages: {
    method: 'GET',
    path: '/messages',
    encode: (q) => ({
      query: queryOf({
        alias: q.alias,
        tag: q.tag,
        since: q.since,
        until: q.until,
        text: q.text,
        attachment: flagText(q.hasAttachment),
        wrapped: flagText(q.wrapped),
        thread: q.thread,
        cursor: q.cursor,
        limit: q.limit,
      }),
    }),
    decode: ({ query }) => [
      defined({
        alias: text(query, 'alias'),
        tag: text(query, 'tag'),
        since: time(query, 'since'),
        until: time(query, 'until'),
        text: text(query, 'text'),
        hasAttachment: flag(query, 'attachment'),
        wrapped: flag(query, 'wrapped'),
        thread: text(query, 'thread'),
        cursor: text(query, 'cursor'),
        limit: positive(query, 'limit'),
      }),
    ],
  },
  showMessage: { method: 'GET', path: '/messages/:id', ...byParam('id') },
  rawMessage: { method: 'GET', path: '/messages/:id/raw', bytes: 'message/rfc822', ...byParam('id') },
  deleteMessage: { method: 'DELETE', path: '/messages/:id', ...byParam('id') },

  listQuarantine: {
    method: 'GET',
    path: '/quarantine',
    encode: (q) => ({ query: quarantineQueryOf(q) }),
    decode: ({ query }) => [quarantineQuery(query)],
  },
  showQuarantined: { method: 'GET', path: '/quarantine/:id', ...byParam('id') },
  restoreQuarantined: { method: 'POST', path: '/quarantine/:id/restore', ...byParam('id') },
  deleteQuarantined: { method: 'DELETE', path: '/quarantine/:id', ...byParam('id') },
  exportQuarantined: { method: 'GET', path: '/quarantine/:id/content', bytes: 'application/octet-stream', ...byParam('id') },
  bulkQuarantine: {
    method: 'POST',
    // `restore` or `delete`: never a quarantine id (those are `<message id>.<n>`).
    path: '/quarantine-bulk/:action',
    encode: (action, q) => ({ params: { action }, query: quarantineQueryOf(q) }),
    decode: ({ params, query }) => [bulkAction(params['action']), quarantineQuery(query)],
  },

  listAliases: { method: 'GET', path: '/aliases', ...none },
  setAliasStatus: {
    method: 'PUT',
    path: '/aliases/:name/status',
    encode: (alias, status) => ({ params: { name: alias }, json: { status } }),
    decode: ({ params, json }) => [params['name'] ?? '', aliasStatus(json)],
  },
  testAlias: { method: 'POST', path: '/aliases/:name/test', ...byParam('name') },

  listQueue: { method: 'GET', path: '/queue', ...none },
  showQueued: { method: 'GET', path: '/queue/:id', ...byParam('id') },
  retryQueued: {
    method: 'POST',
    path: '/queue/retry',
    // Without an id: every queued message (every held one with held=true).
    encode: (id, opts) => ({ query: queryOf({ id, held: opts?.heldOnly ? 'true' : undefined }) }),
    decode: ({ query }) => {
      const id = text(query, 'id');
      const heldOnly = flag(query, 'held');
      return heldOnly === undefined ? (id === undefined ? [] : [id]) : [id, { heldOnly }];
    },
  },
  dropQueued: { method: 'DELETE', path: '/queue/:id', ...byParam('id') },

  sendMessage: {
    method: 'POST',
    path: '/send',
    upload: true,
    encode: (request, message) => ({ query: queryOf({ alias: request.alias, from: request.mailFrom, to: request.rcptTo }), body: message }),
    decode: ({ query, body }) => [sendRequest(query), uploaded(body)],
  },
  listAudit: {
    method: 'GET',
    path: '/audit',
    encode: (q) => ({ query: queryOf({ since: q.since, limit: q.limit }) }),
    decode: ({ query }) => [defined({ since: time(query, 'since'), limit: positive(query, 'limit') })],
  },
  summary: { method: 'GET', path: '/summary', ...none },
  listNodes: { method: 'GET', path: '/nodes', ...none },
  testPolicy: {
    method: 'POST',
    path: '/policy/test',
    upload: true,
    encode: (message, request) => ({ query: queryOf({ department: request.department, direction: request.direction }), body: message }),
    decode: ({ query, body }) => [uploaded(body), policyTestRequest(query)],
  },
};

/** The query string of `fields`, leaving out the absent ones; a list gives the name once per value. */
export function queryOf(fields: Record<string, string | number | readonly string[] | undefined>): URLSearchParams {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) query.append(name, String(v));
  }
  return query;
}

/** `object` without its undefined fields (exactOptionalPropertyTypes: absent, not undefined). */
function defined<T extends Record<string, unknown>>(object: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(object).filter(([, v]) => v !== undefined)) as { [K in keyof T]?: Exclude<T[K], undefined> };
}

const text = (query: URLSearchParams, name: string): string | undefined => query.get(name) ?? undefined;

function time(query: URLSearchParams, name: string): string | undefined {
  const value = text(query, name);
  if (value !== undefined && Number.isNaN(Date.parse(value))) throw errors.badRequest(`${name}: expected an ISO 8601 time, got "${value}"`);
  return value;
}

function positive(query: URLSearchParams, name: string): number | undefined {
  const value = text(query, name);
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw errors.badRequest(`${name}: expected a whole number of at least 1, got "${value}"`);
  return n;
}

/** `true` or `false` in a query; anything else is a bad request. */
function flag(query: URLSearchParams, name: string): boolean | undefined {
  const value = text(query, name);
  if (value === undefined) return undefined;
  if (value !== 'true' && value !== 'false') throw errors.badRequest(`${name}: expected true or false, got "${value}"`);
  return value === 'true';
}

const flagText = (value: boolean | undefined) => (value === undefined ? undefined : String(value));

function quarantineQueryOf(q: QuarantineQuery): URLSearchParams {
  return queryOf({ message: q.messageId, rule: q.rule, file: q.fileName, older_than: q.olderThan });
}

function quarantineQuery(query: URLSearchParams): QuarantineQuery {
  return defined({ messageId: text(query, 'message'), rule: text(query, 'rule'), fileName: text(query, 'file'), olderThan: time(query, 'older_than') });
}

function bulkAction(action: string | undefined): 'restore' | 'delete' {
  if (action !== 'restore' && action !== 'delete') throw errors.badRequest(`a bulk action is restore or delete, got ${String(action)}`);
  return action;
}

function aliasStatus(json: unknown): AliasStatus {
  const status = (json as { status?: unknown } | undefined)?.status;
  if (status !== 'active' && status !== 'inactive') throw errors.badRequest(`status must be active or inactive, got ${String(status)}`);
  return status;
}

function sendRequest(query: URLSearchParams): SendRequest {
  const alias = text(query, 'alias');
  const mailFrom = text(query, 'from');
  const rcptTo = query.getAll('to');
  if (alias === undefined || mailFrom === undefined || rcptTo.length === 0) throw errors.badRequest('send needs alias, from and at least one to');
  return { alias, mailFrom, rcptTo };
}

function policyTestRequest(query: URLSearchParams): PolicyTestRequest {
  const department = text(query, 'department');
  const direction = text(query, 'direction') ?? 'inbound';
  if (direction !== 'inbound' && direction !== 'outbound') throw errors.badRequest(`direction must be inbound or outbound, got ${direction}`);
  return { ...(department !== undefined ? { department } : {}), direction };
}

function uploaded(body: Readable | undefined): Readable {
  if (!body) throw errors.badRequest('this operation takes a message as the request body');
  return body;
}
