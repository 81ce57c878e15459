/**
 * Taking in a message to send: the outbound side of the pipeline (masking and attachment
 * blocking where the department's policy covers outbound mail), then stored and queued in one
 * synced write. Both the submission listener and `mailgate send` come through here.
 */
import type { Readable } from 'node:stream';
import addressparser from 'nodemailer/lib/addressparser';
import type { AliasConfig, Config } from '../config/schema.js';
import type { MessageMeta, MessageSource, QueueEntry } from '../../storage/records.js';
import { newMessageId } from '../../storage/ids.js';
import { ingestMessage, type IngestDeps } from '../../ingest/ingest.js';
import { errors } from '../../lib/errors.js';
import { aliasAddresses } from '../config/alias-addresses.js';
import { outboundEntry } from './entries.js';

/** Messages up to this size are handed to the dispatcher as stored, in memory (the dispatcher bounds how many it keeps). */
const KEEP_STORED_MAX = 256 * 1024;

export interface SubmitDeps extends IngestDeps {
  config: Config;
  /** The running dispatcher, told about the new entry; absent when the gateway is stopped (it is sent at the next start). */
  dispatcher?: { queued(entry: QueueEntry, meta?: MessageMeta, raw?: Buffer): void } | undefined;
}

export interface Submission {
  alias: AliasConfig;
  envelope: { mailFrom: string; rcptTo: string[] };
  source: MessageSource;
  maxSize?: number;
}

/** Stores and queues a message sent as `alias`; resolves once both are durable. */
export async function submitOutbound(deps: SubmitDeps, input: Readable, sub: Submission): Promise<{ meta: MessageMeta; entry: QueueEntry }> {
  const id = newMessageId();
  const entry = outboundEntry(id, sub.alias, sub.envelope);
  const allowed = aliasAddresses(sub.alias);
  let raw: Buffer | undefined;
  const meta = await ingestMessage(deps, input, {
    envelope: sub.envelope,
    source: sub.source,
    direction: 'outbound',
    ...(sub.alias.department ? { department: sub.alias.department } : {}),
    id,
    ...(sub.maxSize ? { maxSize: sub.maxSize } : {}),
    defaultDomain: deps.config.partition.default_domain,
    sideRecords: [{ type: 'queue-entry', entry }],
    // A wrapper must not go out to a customer: refuse (the submitter keeps the message).
    wrapUnparsable: false,
    // Sent at once: the dispatcher's first attempt takes the bytes from here instead of reading them back.
    ...(deps.dispatcher ? { keepStored: { maxBytes: KEEP_STORED_MAX, stored: (bytes: Buffer) => (raw = bytes) } } : {}),
    beforeCommit(stored) {
      // What recipients see must be the alias too, not only the envelope.
      const from = stored.from ? (addressparser(stored.from, { flatten: true })[0]?.address ?? '') : '';
      if (!allowed.includes(from.toLowerCase())) throw errors.fromHeaderDenied(from, sub.alias.name);
    },
  });
  deps.dispatcher?.queued(entry, meta, raw);
  return { meta, entry };
}
