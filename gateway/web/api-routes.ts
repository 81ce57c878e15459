/**
 * The REST API's operations under `/api/v1`: each one an AdminApi call (gateway/admin/api.ts),
 * so the CLI, the control socket and this API do the same thing; nothing is computed here.
 * Each route names the permission it needs (access.ts) and its inputs as zod schemas, from
 * which fastify validates requests and @fastify/swagger writes the OpenAPI document.
 */
import type { Readable } from 'node:stream';
import { z } from 'zod';
import { errors } from '../../lib/errors.js';
import type { AdminApi } from '../admin/api.js';
import type { Permission } from './access.js';

/** The message a route takes as its request body, as uploaded (`policy/test`). */
export const MESSAGE_TYPES = ['message/rfc822', 'application/octet-stream'];

/** One operation of the REST API. */
export interface ApiRoute {
  method: 'GET' | 'POST' | 'DELETE';
  /** Under `/api/v1`, with `:name` for a path parameter. */
  url: string;
  permission: Permission;
  /** One line for the OpenAPI document. */
  summary: string;
  params?: z.ZodObject;
  query?: z.ZodObject;
  /** The request body is a message (MESSAGE_TYPES). */
  upload?: true;
  /** The answer is bytes of this media type rather than JSON. */
  bytes?: string;
  /** The file name a browser saves the bytes under (Content-Disposition: attachment). */
  fileName?(api: AdminApi, input: { params: never }): Promise<string>;
  /** A change (or export) the audit log records under this action name, with the path's id or name as its target. */
  audit?: string;
  run(api: AdminApi, input: { params: never; query: never; body: Readable | undefined }): Promise<unknown>;
}

/** A route with its inputs' types known to `run`. */
function route<P extends z.ZodObject = z.ZodObject<z.ZodRawShape>, Q extends z.ZodObject = z.ZodObject<z.ZodRawShape>>(
  def: Omit<ApiRoute, 'run' | 'params' | 'query'> & {
    params?: P;
    query?: Q;
    run(api: AdminApi, input: { params: z.output<P>; query: z.output<Q>; body: Readable | undefined }): Promise<unknown>;
    fileName?(api: AdminApi, input: { params: z.output<P> }): Promise<string>;
  },
): ApiRoute {
  return def as unknown as ApiRoute;
}

const id = z.object({ id: z.string().min(1).describe('the id as listed') });
const name = z.object({ name: z.string().min(1).describe('the alias name as configured') });
const isoTime = z.string().refine((v) => !Number.isNaN(Date.parse(v)), 'expected an ISO 8601 time');
const flag = z.enum(['true', 'false']).transform((v) => v === 'true');
const quarantineFilter = z.object({
  message: z.string().min(1).optional().describe("only this message's"),
  rule: z.string().min(1).optional().describe('only those whose blocking rule contains this text, in any letter case'),
  file: z.string().min(1).optional().describe('only those whose file name fits this pattern (`*` any run of characters, `?` one), in any letter case'),
  older_than: isoTime.optional().describe('only those quarantined before this ISO 8601 time'),
});
const quarantineQuery = (q: z.output<typeof quarantineFilter>) => defined({ messageId: q.message, rule: q.rule, fileName: q.file, olderThan: q.older_than });

export const apiRoutes: readonly ApiRoute[] = [
  route({
    method: 'GET',
    url: '/messages',
    permission: 'read',
    summary: 'Stored messages, newest first',
    query: z.object({
      alias: z.string().min(1).optional().describe('only messages fetched for or sent as this alias'),
      tag: z.string().min(1).optional().describe('only messages with this tag'),
      since: isoTime.optional().describe('only messages received at or after this ISO 8601 time'),
      until: isoTime.optional().describe('only messages received before this ISO 8601 time'),
      text: z.string().min(1).optional().describe('only messages whose subject, From or To contains this text, in any letter case'),
      attachment: flag.optional().describe('true: only messages with an attachment (a blocked one counts); false: only those without'),
      wrapped: flag.optional().describe('true: only wrapping messages; false: only the others'),
      thread: z.string().min(1).optional().describe('only messages of this conversation (its reference, e.g. K7P2QX)'),
      cursor: z.string().min(1).optional().describe('the `next` of the page before, for the page that follows it'),
      limit: z.coerce.number().int().min(1).optional().describe('at most this many (default 100)'),
    }),
    run: (api, { query }) => {
      const { attachment, ...rest } = query;
      return api.listMessages(defined({ ...rest, hasAttachment: attachment }));
    },
  }),
  route({
    method: 'GET',
    url: '/messages/:id',
    permission: 'read',
    summary: 'One message: metadata, findings, tags, attachments',
    params: id,
    run: (api, { params }) => api.showMessage(params.id),
  }),
  route({
    method: 'GET',
    url: '/messages/:id/raw',
    permission: 'read-content',
    summary: 'The stored bytes of a message',
    bytes: 'message/rfc822',
    params: id,
    fileName: async (_api, { params }) => `${params.id}.eml`,
    run: (api, { params }) => api.rawMessage(params.id),
  }),
  route({
    method: 'DELETE',
    url: '/messages/:id',
    audit: 'delete-message',
    permission: 'operate',
    summary: 'Deletes a message for good with its bytes and quarantined attachments (refused, 409 MESSAGE_QUEUED, while it is in the outbound queue)',
    params: id,
    run: (api, { params }) => api.deleteMessage(params.id),
  }),

  route({
    method: 'GET',
    url: '/quarantine',
    permission: 'read',
    summary: 'Quarantined attachments, newest message first',
    query: quarantineFilter,
    run: (api, { query }) => api.listQuarantine(quarantineQuery(query)),
  }),
  route({
    method: 'POST',
    url: '/quarantine/restore',
    audit: 'restore',
    permission: 'operate',
    summary: 'Restores every quarantined attachment the filter matches (at least one filter is required)',
    query: quarantineFilter,
    run: (api, { query }) => api.bulkQuarantine('restore', quarantineQuery(query)),
  }),
  route({
    method: 'DELETE',
    url: '/quarantine',
    audit: 'delete',
    permission: 'operate',
    summary: 'Deletes every quarantined attachment the filter matches, for good (at least one filter is required)',
    query: quarantineFilter,
    run: (api, { query }) => api.bulkQuarantine('delete', quarantineQuery(query)),
  }),
  route({
    method: 'GET',
    url: '/quarantine/:id',
    permission: 'read',
    summary: 'One quarantined attachment',
    params: id,
    run: (api, { params }) => api.showQuarantined(params.id),
  }),
  route({
    method: 'GET',
    url: '/quarantine/:id/content',
    audit: 'export',
    permission: 'read-content',
    summary: 'The quarantined file, decoded, as the sender attached it',
    bytes: 'application/octet-stream',
    params: id,
    fileName: async (api, { params }) => (await api.showQuarantined(params.id)).fileName,
    run: (api, { params }) => api.exportQuarantined(params.id),
  }),
  route({
    method: 'POST',
    url: '/quarantine/:id/restore',
    audit: 'restore',
    permission: 'operate',
    summary: 'Puts the attachment back into its message, byte for byte',
    params: id,
    run: (api, { params }) => api.restoreQuarantined(params.id),
  }),
  route({
    method: 'DELETE',
    url: '/quarantine/:id',
    audit: 'delete',
    permission: 'operate',
    summary: 'Deletes a quarantined attachment for good',
    params: id,
    run: (api, { params }) => api.deleteQuarantined(params.id),
  }),

  route({ method: 'GET', url: '/aliases', permission: 'read', summary: 'Every configured alias with its health', run: (api) => api.listAliases() }),
  route({
    method: 'GET',
    url: '/aliases/:name',
    permission: 'read',
    summary: 'One alias with its health',
    params: name,
    run: async (api, { params }) => {
      const row = (await api.listAliases()).find((a) => a.name === params.name);
      if (!row) throw errors.aliasNotConfigured(params.name);
      return row;
    },
  }),
  route({
    method: 'POST',
    url: '/aliases/:name/test',
    audit: 'test',
    permission: 'operate',
    summary: "Tries the alias's servers step by step",
    params: name,
    run: (api, { params }) => api.testAlias(params.name),
  }),
  route({
    method: 'POST',
    url: '/aliases/:name/activate',
    audit: 'activate',
    permission: 'operate',
    summary: 'Makes the alias active',
    params: name,
    run: (api, { params }) => api.setAliasStatus(params.name, 'active'),
  }),
  route({
    method: 'POST',
    url: '/aliases/:name/deactivate',
    audit: 'deactivate',
    permission: 'operate',
    summary: 'Makes the alias inactive',
    params: name,
    run: (api, { params }) => api.setAliasStatus(params.name, 'inactive'),
  }),

  route({ method: 'GET', url: '/queue', permission: 'read', summary: 'Queued messages, oldest first', run: (api) => api.listQueue() }),
  route({
    method: 'GET',
    url: '/queue/:id',
    permission: 'read',
    summary: 'One queued message',
    params: id,
    run: (api, { params }) => api.showQueued(params.id),
  }),
  route({
    method: 'POST',
    url: '/queue/retry',
    audit: 'retry',
    permission: 'operate',
    summary: 'Makes every queued message due now, or with held=true only the held ones',
    query: z.object({ held: flag.optional().describe('true: only the entries held after failures') }),
    run: (api, { query }) => api.retryQueued(undefined, { heldOnly: query.held === true }),
  }),
  route({
    method: 'POST',
    url: '/queue/:id/retry',
    audit: 'retry',
    permission: 'operate',
    summary: 'Makes a queued message due now, held or not',
    params: id,
    run: (api, { params }) => api.retryQueued(params.id),
  }),
  route({
    method: 'DELETE',
    url: '/queue/:id',
    audit: 'drop',
    permission: 'operate',
    summary: 'Takes a message out of the queue unsent',
    params: id,
    run: (api, { params }) => api.dropQueued(params.id),
  }),

  route({
    method: 'GET',
    url: '/summary',
    permission: 'read',
    summary: "The gateway at a glance: the last hour's and day's messages by source and outcome, the queue by state, the quarantine, the aliases",
    run: (api) => api.summary(),
  }),
  route({
    method: 'GET',
    url: '/nodes',
    permission: 'read',
    summary:
      'The nodes sharing the store (one on LevelDB): started, last seen, live, mailboxes held, queued messages being delivered, configuration differences',
    run: (api) => api.listNodes(),
  }),
  route({
    method: 'GET',
    url: '/audit',
    permission: 'read',
    summary: 'The audit log: changes made through this API and sign-ins, newest first',
    query: z.object({
      since: isoTime.optional().describe('only entries recorded at or after this ISO 8601 time'),
      limit: z.coerce.number().int().min(1).optional().describe('at most this many (default 100)'),
    }),
    run: (api, { query }) => api.listAudit(defined(query)),
  }),
  route({
    method: 'POST',
    url: '/policy/test',
    permission: 'operate',
    summary: "Runs the policy on an uploaded message (message/rfc822) and gives each stage's result; stores nothing",
    upload: true,
    query: z.object({
      department: z.string().min(1).optional().describe("the department whose policy applies (default: the partition's)"),
      direction: z.enum(['inbound', 'outbound']).default('inbound'),
    }),
    run: (api, { query, body }) => {
      if (!body) throw errors.badRequest('body: expected the message, as message/rfc822');
      return api.testPolicy(body, defined(query));
    },
  }),
];

/** `object` without its undefined fields (exactOptionalPropertyTypes: absent, not undefined). */
function defined<T extends Record<string, unknown>>(object: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(object).filter(([, v]) => v !== undefined)) as { [K in keyof T]: Exclude<T[K], undefined> };
}
