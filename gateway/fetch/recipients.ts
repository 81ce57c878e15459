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
  /** The message names no alias of its mailbox: filed under this alias (`[partition] unknown_recipient`). */
  unknownRecipient?: true;
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

/** Who a mailbox message is addressed to, among the aliases of its mailbox. */
export interface Addressed {
  /** The aliases it is addressed to; when none, every alias of the mailbox (in configured order), one of which takes it. */
  aliases: AliasConfig[];
  /** False when the message names none of the mailbox's aliases. */
  matched: boolean;
  /** Its To and Cc addresses, lower-cased, each once (for `split_recipients`). */
  toCc: string[];
}

/**
 * The aliases of this mailbox (GROUP, every alias that fetches it) the message is addressed to:
 * their address or a redirection address in To, Cc, Delivered-To, X-Original-To or Envelope-To.
 */
export function addressedTo(rawHeaders: Buffer, group: readonly AliasConfig[]): Addressed {
  const headers = new Headers(rawHeaders);
  const delivered = new Set(addresses(headers, RECIPIENT_FIELDS));
  const matched = group.filter((a) => aliasAddresses(a).some((x) => delivered.has(x)));
  return { aliases: matched.length ? matched : [...group], matched: matched.length > 0, toCc: addresses(headers, ['to', 'cc']) };
}

/**
 * What to store for a message: one copy for each alias it is addressed to that RECEIVES mail
 * now (is active: an inactive alias is not retrieved, Cisco "Changing the Status of Aliases");
 * a message addressed to none of them goes to the first alias that receives. Then, for aliases
 * with `split_recipients`, one copy per unique To/Cc recipient. Empty when every alias it is
 * for is inactive: the message is left in the mailbox.
 */
export function targetsFor(addressed: Addressed, receives: (alias: AliasConfig) => boolean = () => true): DeliveryTarget[] {
  const open = addressed.aliases.filter(receives);
  const aliases = addressed.matched ? open : open.slice(0, 1);
  const toCc = addressed.toCc;
  const unknown = addressed.matched ? {} : { unknownRecipient: true as const };
  return aliases.flatMap((alias) =>
    alias.incoming?.split_recipients && toCc.length > 1 ? toCc.map((recipient) => ({ alias, recipient, ...unknown })) : [{ alias, ...unknown }],
  );
}

/** `targetsFor(addressedTo(...))`: the copies to store for a message with these headers. */
export function deliveryTargets(rawHeaders: Buffer, group: readonly AliasConfig[], receives?: (alias: AliasConfig) => boolean): DeliveryTarget[] {
  return targetsFor(addressedTo(rawHeaders, group), receives);
}

/** Whether a mailbox's messages need their headers read before they are stored (`unknownRecipient`: `[partition] unknown_recipient`). */
export function needsTargets(group: readonly AliasConfig[], unknownRecipient: 'file' | 'auto_reply' | 'quarantine' = 'file'): boolean {
  return group.length > 1 || group.some((a) => a.incoming?.split_recipients) || unknownRecipient !== 'file';
}

/**
 * The identity of the mailbox an alias fetches from: aliases with the same one share a worker.
 * The authorization identity is part of it: one login opening two shared mailboxes is two mailboxes.
 */
export function mailboxIdentity(alias: AliasConfig): string {
  const i = alias.incoming!;
  return [i.type, i.host.toLowerCase(), i.port, i.user ?? '', i.auth_identity ?? '', i.folder].join('|');
}
