/**
 * Who a fetched message is for. One mailbox may serve several aliases (CCaaS "Manage
 * mailboxes": a message addressed to several of them is stored once per matched alias), and an
 * alias may ask for one stored message per recipient (Genesys: split the To and Cc list and
 * create an interaction for each unique recipient).
 */
import { Headers } from '@zone-eu/mailsplit';
import addressparser from 'nodemailer/lib/addressparser';
import type { AliasConfig } from '../config/schema.js';
import { aliasAddresses } from '../config/alias-addresses.js';

/** One message to store for one fetched mailbox message. */
export interface DeliveryTarget {
  alias: AliasConfig;
  /** With `split_recipients`: the To/Cc recipient this copy is for. */
  recipient?: string;
}

/** Header fields whose addresses say who a message was delivered to. */
const RECIPIENT_FIELDS = ['to', 'cc', 'delivered-to', 'x-original-to', 'envelope-to'];

/** Addresses of the given header fields, lower-cased, in order, each once. */
function addresses(headers: Headers, fields: readonly string[]): string[] {
  const out = new Set<string>();
  for (const field of fields) {
    for (const line of headers.get(field)) {
      for (const entry of addressparser(line.slice(line.indexOf(':') + 1), { flatten: true })) {
        if (entry.address) out.add(entry.address.toLowerCase());
      }
    }
  }
  return [...out];
}

/**
 * The aliases of this mailbox the message is addressed to (their address or a redirection
 * address in To, Cc, Delivered-To, X-Original-To or Envelope-To), the mailbox's own alias
 * when none is; then, for aliases with `split_recipients`, one target per unique To/Cc recipient.
 */
export function deliveryTargets(rawHeaders: Buffer, group: readonly AliasConfig[]): DeliveryTarget[] {
  const headers = new Headers(rawHeaders);
  const delivered = new Set(addresses(headers, RECIPIENT_FIELDS));
  const matched = group.filter((a) => aliasAddresses(a).some((x) => delivered.has(x)));
  const aliases = matched.length ? matched : group.slice(0, 1);
  const toCc = addresses(headers, ['to', 'cc']);
  return aliases.flatMap((alias) =>
    alias.incoming?.split_recipients && toCc.length > 1 ? toCc.map((recipient) => ({ alias, recipient })) : [{ alias }],
  );
}

/** Whether a mailbox's messages need their headers read before they are stored. */
export function needsTargets(group: readonly AliasConfig[]): boolean {
  return group.length > 1 || group.some((a) => a.incoming?.split_recipients);
}

/** The identity of the mailbox an alias fetches from: aliases with the same one share a worker. */
export function mailboxIdentity(alias: AliasConfig): string {
  const i = alias.incoming!;
  return [i.type, i.host.toLowerCase(), i.port, i.user ?? '', i.folder].join('|');
}
