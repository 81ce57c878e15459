/**
 * The SMTP listener's recipient rules, in one place: which recipients it takes, and what
 * happens to each one it takes. Every accepted recipient is stored for us, queued for delivery,
 * or both, on purpose; nothing is answered 250 and then left to go nowhere.
 *
 * In this order (Postfix: relay_domains, permit_mynetworks, permit_sasl_authenticated, then
 * reject_unauth_destination):
 * 1. a `[[relay]]` covers it (its domains or aliases): stored, and forwarded downstream;
 * 2. it is ours (an alias or redirection address, `[smtp] domains`): stored;
 * 3. the client may relay out (in `[smtp] trusted_networks`, or authenticated, and
 *    `[partition.default_smtp]` is set): stored, and sent on through the default SMTP;
 * 4. `[smtp] accept_all` (the loopback default: a test sink): stored;
 * 5. otherwise refused, 550 5.7.1.
 * `accept_all` comes after the relay decision on purpose: a trusted client's mail for another
 * domain is relayed whether or not the listener also takes any recipient.
 */
import net from 'node:net';
import { domainToASCII } from 'node:url';
import type { SMTPServerSession } from 'smtp-server';
import { parseCidr } from '../../lib/net.js';
import type { Config, RelayConfig } from '../config/schema.js';
import { errors, MailgateError } from '../../lib/errors.js';
import { aliasIndex } from '../config/alias-addresses.js';
import { DEFAULT_ROUTE, relayMatcher } from '../dispatch/entries.js';

/** What becomes of one accepted recipient. */
export type RecipientRoute =
  /** Ours: stored for the alias or domain, nothing sent. */
  | { kind: 'local' }
  /** Stored and forwarded through a `[[relay]]`. */
  | { kind: 'relay'; relay: RelayConfig }
  /** Stored and sent on through `[partition.default_smtp]` (a trusted or authenticated client's mail for another domain). */
  | { kind: 'default_smtp' }
  /** Not ours, and nobody relays it: stored only, because `[smtp] accept_all` takes any recipient. */
  | { kind: 'accept_all' };

/** The rules for one configuration; `route` answers for one recipient in one session. */
export interface RecipientRules {
  /** The recipient's route, or the refusal to answer RCPT TO with. */
  route(session: SMTPServerSession, address: string): RecipientRoute | MailgateError;
  /** The queue route of a recipient accepted in `session` (for the relay entry), undefined when it is only stored. */
  forwardTo(session: SMTPServerSession): (address: string) => RelayConfig | typeof DEFAULT_ROUTE | undefined;
}

export function recipientRules(config: Config): RecipientRules {
  const ours = ourRecipients(config);
  const relayFor = relayMatcher(config);
  const mayRelayOut = outwardRelay(config);
  const route = (session: SMTPServerSession, address: string): RecipientRoute | MailgateError => {
    const trick = addressTrick(address);
    if (trick) return trick;
    const relay = relayFor(address);
    if (relay) return { kind: 'relay', relay };
    if (ours(address)) return { kind: 'local' };
    if (mayRelayOut(session)) return { kind: 'default_smtp' };
    if (config.smtp.accept_all) return { kind: 'accept_all' };
    return errors.relayDenied(address);
  };
  return {
    route,
    forwardTo: (session) => (address) => {
      const r = route(session, address);
      if (r instanceof MailgateError) return undefined;
      return r.kind === 'relay' ? r.relay : r.kind === 'default_smtp' ? DEFAULT_ROUTE : undefined;
    },
  };
}

/** Whether a recipient is ours: an alias address (or redirection address), or in `[smtp] domains` or a `[[relay]]`'s domains. `accept_all` plays no part. */
export function ourRecipients(config: Config): (address: string) => boolean {
  const aliases = aliasIndex(config);
  // Relayed domains are ours to accept too (Postfix: relay_domains).
  const domains = new Set([...config.smtp.domains, ...config.relay.flatMap((r) => r.domains)].map(comparableDomain));
  return (address) => {
    const at = address.lastIndexOf('@');
    if (at <= 0) return false;
    const local = address.slice(0, at);
    const domain = comparableDomain(address.slice(at + 1));
    if (aliases.has(`${local}@${domain}`.toLowerCase())) return true;
    return domains.has(domain);
  };
}

/**
 * A domain as configured domains are compared: lower case, without a trailing dot, IDN in its
 * ASCII (punycode) form, so `Example.COM.` and `bücher.example` / `xn--bcher-kva.example` each
 * match one way only. An IP literal (`[192.0.2.1]`) is never one of ours.
 */
function comparableDomain(domain: string): string {
  const d = domain.toLowerCase().replace(/\.$/, '');
  if (d.startsWith('[')) return d;
  return domainToASCII(d) || d;
}

/**
 * Whether a client may send to domains that are not ours (Postfix's permit_mynetworks,
 * permit_sasl_authenticated): from `[smtp] trusted_networks` or after AUTH, and only when
 * `[partition.default_smtp]` has a server to send it on through.
 */
function outwardRelay(config: Config): (session: SMTPServerSession) => boolean {
  const trusted = new net.BlockList();
  for (const c of config.smtp.trusted_networks) {
    const { address, prefix, family } = parseCidr(c)!;
    trusted.addSubnet(address, prefix, family);
  }
  const smartHost = config.partition.default_smtp?.server !== undefined;
  return (session) => {
    if (!smartHost) return false;
    if (typeof session.user === 'string') return true;
    const ip = session.remoteAddress.replace(/^::ffff:(?=\d+\.)/, '');
    const family = net.isIP(ip);
    return family !== 0 && trusted.check(ip, family === 4 ? 'ipv4' : 'ipv6');
  };
}

/**
 * Addresses whose local part routes somewhere else: the percent hack (`user%other@ours`) and
 * bang paths (`other!user@ours`). Old MTAs, and some downstream servers still, forward such
 * mail to `other`: accepting them would make mailgate a relay through its downstream.
 * (smtp-server already strips source routes `@ours:user@other`, leaving `user@other` to the
 * relay check, and refuses a quoted `@` in the local part as bad syntax.)
 */
function addressTrick(address: string): MailgateError | undefined {
  const local = address.slice(0, address.lastIndexOf('@'));
  if (!/[%!]/.test(local)) return undefined;
  return errors.addressRouting(address);
}

/** Who may relay to other domains (rule 3 above), in words, for `mailgate config check`. */
export function whoMayRelay(cfg: Config): string {
  const smartHost = cfg.partition.default_smtp?.server;
  if (smartHost === undefined) return 'relaying for nobody (no [partition.default_smtp])';
  const who = [
    ...(cfg.smtp.trusted_networks.length ? [`${cfg.smtp.trusted_networks.length} trusted network${cfg.smtp.trusted_networks.length === 1 ? '' : 's'}`] : []),
    ...(cfg.smtp.user.length ? ['logged-in [[smtp.user]]s'] : []),
  ];
  return who.length ? `relaying for ${who.join(' and ')} through ${smartHost}` : 'relaying for nobody (no trusted_networks or [[smtp.user]])';
}
