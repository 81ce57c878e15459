import type { Readable, Transform } from 'node:stream';
import type { Logger } from 'pino';
import type { Envelope, MessageSource } from '../../storage/records.js';
import type { SideRecord, Store } from '../../storage/store.js';
import type { ChunkHandler } from './stage-chain.js';
import type { OriginalFinding } from '../attachments/original-scan.js';

/** Which way a message is going: into the store from outside, or out through the dispatcher. */
export type Direction = 'inbound' | 'outbound';

/** What a stage knows about the message it is working on, besides the bytes. */
export interface MessageContext {
  readonly id: string;
  readonly envelope: Envelope;
  readonly source: MessageSource;
  readonly direction: Direction;
  /** The department the message belongs to, when known (selects the policy file). */
  readonly department?: string;
  /**
   * What each stage found and did, by stage name; copied onto the stored metadata. Each
   * stage's entry has a `summary` of sentences an admin can read (`policy test` prints them)
   * next to its details.
   */
  readonly findings: Record<string, StageFindings>;
  /** Labels for the message, e.g. `email-permanent-undeliverable`. */
  readonly tags: Set<string>;
  readonly log: Logger;
  /** True for `mailgate policy test`: stages say what they would do and write nothing. */
  readonly dryRun: boolean;
  /** The store; absent in a dry run. Stages that keep data (quarantine) write it here. */
  readonly store?: Store;
  /**
   * Records that become durable and visible with the message, in its one commit (e.g.
   * quarantine records). Bytes a stage writes ahead through a quarantine spool are removed
   * if the message is aborted (storage/store.ts).
   */
  readonly sideRecords: SideRecord[];
}

/** What one stage recorded about one message. */
export interface StageFindings {
  /** Sentences for an admin: what the stage did and why. */
  summary: string[];
  [detail: string]: unknown;
}

/**
 * A policy stage. For each message it may return a handler of mailsplit chunks (the objects
 * a mailsplit Splitter emits: `node`, `data` and `body`; see stage-chain.ts), which can
 * rewrite bodies and headers and record findings on `ctx.findings[name]`; or null when it has
 * nothing to do for this message. Stages never see the whole message at once.
 */
export interface Stage {
  /** Stable name, used as the key of the stage's findings. */
  readonly name: string;
  create(ctx: MessageContext): ChunkHandler | null;
  /** The stage's part in the original of a wrapping message; absent when it has none. */
  readonly wrappedOriginal?: WrappedOriginalPart;
}

/**
 * What a stage does with the original attached to a wrapping message (Genesys seed, "Handling
 * Unparsable E-Mails"). The original could not be parsed, so `create` never sees it; a stage
 * whose promise must hold for it too (nothing blocked gets in, nothing unmasked is stored,
 * bounces are still tagged) says here how it applies to the original's raw bytes. Ingest's
 * wrapping fallback asks each stage for its part instead of knowing the stages by name.
 */
export interface WrappedOriginalPart {
  /**
   * Judges the original as received; a finding blocks it whole, with the policy's action
   * (policy/attachments/original.ts). Undefined when nothing is blocked or mail going this
   * way is not judged.
   */
  blocks?(direction: Direction, original: () => Readable): Promise<{ finding: OriginalFinding; action: 'quarantine' | 'delete' } | undefined>;
  /**
   * Masks the original as raw text: a transform of its bytes that adds what it masks to
   * `counts`, or null when nothing is masked going this way.
   */
  rawMasker?(direction: Direction, counts: Record<string, number>): Transform | null;
  /** Tags the wrapping message from the original's header block, which it is run on as a message of its own. */
  tagsFromHeader?: true;
}
