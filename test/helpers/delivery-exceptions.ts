/**
 * Running the delivery-exception stage alone over one message, for the tests in
 * test/delivery-exceptions*.test.ts and test/corpora/delivery-exceptions.test.ts.
 */
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { Readable, Writable } from 'node:stream';
import { pino } from 'pino';
import { runPipeline } from '../../policy/chain/pipeline.js';
import type { MessageContext } from '../../policy/chain/stage.js';
import type { MessageSource } from '../../storage/records.js';
import { deliveryExceptionsSectionSchema, deliveryExceptionsStage, type DeliveryExceptionFindings } from '../../policy/delivery-exceptions/stage.js';

export const PERMANENT = 'email-permanent-undeliverable';
export const TEMPORARY = 'email-temporary-undeliverable';

export interface CheckOptions {
  partition?: Record<string, unknown> | undefined;
  department?: Record<string, unknown>;
  /** MAIL FROM; default alice@example.org. */
  mailFrom?: string;
  /** How the message came in; default smtp (the envelope counts). */
  source?: MessageSource['kind'];
  dryRun?: boolean;
}

export interface Checked {
  tags: string[];
  findings: DeliveryExceptionFindings;
  output: Buffer;
  input: Buffer | undefined;
  /** The failure type the tags say, or undefined when the message was not tagged undeliverable. */
  failure: 'permanent' | 'temporary' | undefined;
}

/** Runs the delivery-exception stage alone over a message (text, or a file read as a stream). */
export async function check(message: string | { file: string }, opts: CheckOptions = {}): Promise<Checked> {
  const section = (s?: Record<string, unknown>) => (s ? deliveryExceptionsSectionSchema.parse(s) : undefined);
  const stage = deliveryExceptionsStage(section(opts.partition), section(opts.department));
  const ctx: MessageContext = {
    id: 'test',
    envelope: { mailFrom: opts.mailFrom ?? 'alice@example.org', rcptTo: ['support@example.com'] },
    source: { kind: opts.source ?? 'smtp' },
    direction: 'inbound',
    findings: {},
    tags: new Set(),
    log: pino({ level: 'silent' }),
    dryRun: opts.dryRun ?? false,
    sideRecords: [],
  };
  const input = typeof message === 'string' ? Buffer.from(message) : undefined;
  const chunks: Buffer[] = [];
  const sink = new Writable({ write: (c: Buffer, _e, cb) => (chunks.push(c), cb()) });
  await runPipeline(typeof message === 'string' ? Readable.from([input!]) : createReadStream(message.file), ctx, [stage], sink);
  const tags = [...ctx.tags];
  const failure = tags.includes(PERMANENT) ? 'permanent' : tags.includes(TEMPORARY) ? 'temporary' : undefined;
  return { tags, findings: ctx.findings.delivery_exceptions as DeliveryExceptionFindings, output: Buffer.concat(chunks), input, failure };
}

/** A bounce and what an admin must see of it, for {@link assertBounces}. */
export interface BounceCase {
  name: string;
  msg: string | { file: string };
  failure: 'permanent' | 'temporary';
  failed: string[];
  decidedBy: string;
}

/** Each bounce (null sender) is typed as expected, lists its failed recipients, says what decided, and is in the exception queue. */
export async function assertBounces(cases: readonly BounceCase[]): Promise<void> {
  for (const c of cases) {
    const r = await check(c.msg, { mailFrom: '' });
    assert.equal(r.failure, c.failure, `${c.name}: ${r.findings.summary.join(' ')}`);
    assert.deepEqual(r.findings.failedRecipients, c.failed, c.name);
    assert.equal(r.findings.decidedBy, c.decidedBy, c.name);
    assert.ok(r.tags.includes('exception-queue'), c.name);
  }
}

/** A plain message; `headers` replace the defaults. */
export function mail(headers: Record<string, string> = {}, body = 'Hello, a question about my order.'): string {
  const all = { From: 'Alice <alice@example.org>', To: 'support@example.com', Subject: 'Order 4471', 'Message-ID': '<m1@example.org>', ...headers };
  return `${Object.entries(all)
    .map(([k, v]) => `${k}: ${v}`)
    .join('\r\n')}\r\n\r\n${body}\r\n`;
}

/** What a set of real bounces came to: counts by outcome and by deciding evidence, per group. */
export interface Tally {
  total: number;
  permanent: number;
  temporary: number;
  feedbackReport: number;
  untagged: number;
  decidedBy: Record<string, number>;
}

export function newTally(): Tally {
  return { total: 0, permanent: 0, temporary: 0, feedbackReport: 0, untagged: 0, decidedBy: {} };
}

/** Counts one message's outcome. */
export function count(tally: Tally, r: Checked): void {
  tally.total++;
  if (r.failure) tally[r.failure]++;
  else if (r.tags.includes('feedback-report')) tally.feedbackReport++;
  else tally.untagged++;
  const by = r.findings.decidedBy ?? 'untagged';
  tally.decidedBy[by] = (tally.decidedBy[by] ?? 0) + 1;
}

/** One line for a test diagnostic. */
export function describeTally(name: string, t: Tally): string {
  const by = Object.entries(t.decidedBy)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  return `${name}: ${t.total} messages: permanent ${t.permanent}, temporary ${t.temporary}, feedback-report ${t.feedbackReport}, untagged ${t.untagged}; decided by ${by}`;
}
