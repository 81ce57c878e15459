/**
 * New queue entries: who a message is sent to. Worked out once, when the message is queued,
 * so the queue shows exactly what will happen and a config change later cannot make a
 * half-sent message go to a different set of people.
 */
import type { AliasConfig, Config, RelayConfig } from '../config/schema.js';
import type { QueueEntry, QueueRecipient } from '../../storage/records.js';
import { aliasAddresses } from '../config/alias-addresses.js';

const pending = (address: string, relay?: string): QueueRecipient => ({ address, status: 'pending', attempts: 0, ...(relay ? { relay } : {}) });

function unique(addresses: string[]): string[] {
  const seen = new Set<string>();
  return addresses.filter((a) => {
    const k = a.toLowerCase();
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/**
 * The entry for mail sent from `alias` (Cisco guide, "Aliases"): `send_mail_to`, when set,
 * replaces every recipient (testing); otherwise `automatic_bcc` is added. With both, only
 * `send_mail_to` gets it.
 */
export function outboundEntry(
  id: string,
  alias: AliasConfig | undefined,
  envelope: { mailFrom: string; rcptTo: string[] },
  now = new Date(),
  opts: { dsn?: boolean } = {},
): QueueEntry {
  let to = envelope.rcptTo;
  if (alias?.send_mail_to) to = [alias.send_mail_to];
  else if (alias?.automatic_bcc) to = [...to, alias.automatic_bcc];
  return {
    id,
    kind: 'outbound',
    ...(alias ? { alias: alias.name } : {}),
    mailFrom: envelope.mailFrom,
    requestedRecipients: [...envelope.rcptTo],
    recipients: unique(to).map((a) => pending(a)),
    queuedAt: now.toISOString(),
    attempts: 0,
    nextAttemptAt: now.toISOString(),
    ...(opts.dsn ? { dsn: true } : {}),
  };
}

/** Finds the `[[relay]]` a recipient of inbound mail is forwarded through, if any. */
export function relayMatcher(config: Config): (recipient: string) => RelayConfig | undefined {
  const byAddress = new Map<string, RelayConfig>();
  const byDomain = new Map<string, RelayConfig>();
  for (const relay of config.relay) {
    for (const name of relay.aliases) {
      const alias = config.alias.find((a) => a.name === name);
      if (!alias) continue;
      for (const address of aliasAddresses(alias)) if (!byAddress.has(address)) byAddress.set(address, relay);
    }
    for (const domain of relay.domains) if (!byDomain.has(domain)) byDomain.set(domain, relay);
  }
  return (recipient) => {
    const lower = recipient.toLowerCase();
    return byAddress.get(lower) ?? byDomain.get(lower.slice(lower.lastIndexOf('@') + 1).replace(/\.$/, ''));
  };
}

/** A recipient forwarded through the partition's default SMTP (a trusted or authenticated client's mail for another domain), not a `[[relay]]`. */
export const DEFAULT_ROUTE = 'default_smtp' as const;

/** The entry forwarding an inbound message's relayed recipients downstream; undefined when none is relayed (the store alone keeps it). */
export function relayEntry(
  id: string,
  match: (recipient: string) => RelayConfig | typeof DEFAULT_ROUTE | undefined,
  envelope: { mailFrom: string; rcptTo: string[] },
  now = new Date(),
): QueueEntry | undefined {
  const recipients = unique(envelope.rcptTo).flatMap((address) => {
    const relay = match(address);
    if (relay === DEFAULT_ROUTE) return [pending(address)];
    return relay ? [pending(address, relay.name)] : [];
  });
  if (recipients.length === 0) return undefined;
  return {
    id,
    kind: 'relay',
    mailFrom: envelope.mailFrom,
    requestedRecipients: [...envelope.rcptTo],
    recipients,
    queuedAt: now.toISOString(),
    attempts: 0,
    nextAttemptAt: now.toISOString(),
  };
}
