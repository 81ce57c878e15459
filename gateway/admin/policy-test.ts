/**
 * `mailgate policy test`: the policy stages run on a message without storing anything, and
 * what each would do and why. The message arrives as a stream (a file the CLI read, or an
 * upload to the running gateway), so it is spooled as it passes: a message that would be
 * wrapped is read again from the spool, to say what the attachment rules would do with its
 * original, as ingest does.
 */
import { THREADING } from '../../policy/threading/stage.js';
import { tmpdir } from 'node:os';
import { Writable, type Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { runPipeline } from '../../policy/chain/pipeline.js';
import { originalVerdict } from '../../policy/attachments/original.js';
import type { Direction, MessageContext, Stage, StageFindings } from '../../policy/chain/stage.js';
import { SpoolTee, fileSpool } from '../../ingest/spool.js';
import { silentLogger } from '../../lib/logger.js';

/** Which policy `policy test` applies. */
export interface PolicyTestRequest {
  /** The department whose policy applies; absent: the partition's alone. */
  department?: string;
  /** Which way the message goes. */
  direction: Direction;
}

/** What `policy test` found. */
export interface PolicyReport {
  department?: string;
  direction: Direction;
  /** `stored` when the message would be stored (rewritten as the stages say), `wrapped` when it could not be processed. */
  outcome: 'stored' | 'wrapped';
  /** Why it would be wrapped. */
  reason?: string;
  stages: { stage: string; summary: string[]; details: Record<string, unknown> }[];
  tags: string[];
  /** Bytes the stored message would have. */
  size?: number;
  /** When wrapped: the attachment rules block something in the original, so it would be blocked whole. */
  original?: { action: 'quarantine' | 'delete'; rule: string };
}

/** Runs `stages` on `message` as a dry run. Fails (rather than reporting "wrapped") when the message itself cannot be read. */
export async function tryPolicy(message: Readable, allStages: readonly Stage[], request: PolicyTestRequest): Promise<PolicyReport> {
  const { department, direction } = request;
  // The policy's stages: reply threading is the gateway's, not the policy files', and a dry run cannot look up a conversation.
  const stages = allStages.filter((s) => s.name !== THREADING);
  const ctx: MessageContext = {
    id: 'policy-test',
    envelope: { mailFrom: '', rcptTo: [] },
    source: { kind: 'cli' },
    direction,
    ...(department ? { department } : {}),
    findings: {},
    tags: new Set(),
    log: silentLogger(),
    dryRun: true,
    sideRecords: [],
  };
  let size = 0;
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      size += chunk.length;
      done();
    },
  });
  // Encrypted under a key held in memory, and a message under 64 KiB never reaches the disk (spool.ts).
  const spool = fileSpool(tmpdir());
  const tee = new SpoolTee(spool);
  const spooled = finished(tee);
  spooled.catch(() => {});
  let unreadable: unknown;
  message.once('error', (err) => {
    unreadable = err;
    tee.destroy(err);
  });
  message.pipe(tee);
  const report: PolicyReport = { ...(department ? { department } : {}), direction, outcome: 'stored', stages: [], tags: [] };
  try {
    try {
      await runPipeline(tee.branch, ctx, stages, sink);
      report.size = size;
    } catch (err) {
      if (unreadable !== undefined) throw unreadable;
      const e = err as { message?: string; reason?: string };
      report.outcome = 'wrapped';
      report.reason = e.reason ? `${e.reason}: ${e.message}` : (e.message ?? String(err));
      await spooled;
      // Wrapping is no way around attachment blocking: say what ingest would do with the original.
      const verdict = await originalVerdict(stages, direction, () => spool.open());
      if (verdict) report.original = { action: verdict.action, rule: verdict.rule };
    }
  } finally {
    message.unpipe(tee);
    await spool.discard();
  }
  for (const stage of stages) {
    const found: StageFindings | undefined = ctx.findings[stage.name];
    const { summary = [], ...details } = found ?? { summary: [] };
    report.stages.push({ stage: stage.name, summary: summary.length ? summary : ['nothing to do'], details });
  }
  report.tags = [...ctx.tags];
  return report;
}
