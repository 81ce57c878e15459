/**
 * A busy shared queue on two `mailgate serve` nodes (issue 16, "Tests: Several nodes"): a few
 * hundred messages to two recipients each, submitted to both nodes and sent to a real SMTP
 * upstream; one node SIGKILLed while it holds claims and deliveries are in flight. The other
 * takes its messages over once their claims (`[queue] claim_ttl`) expire. Every recipient of
 * every acknowledged message gets it, the queue ends empty, and a recipient got a second copy
 * only in the windows the README documents ("Several nodes on one PostgreSQL: the shared
 * queue"): (1) the upstream accepted the first at the moment of the kill, before the dead
 * node's record of it (as in test/queue-crash.test.ts, within KILL_MOMENT_MS of it), or (2) the
 * node that sent the first had lost its claim by then (a pause past claim_ttl, which a short
 * lease on a loaded machine makes happen) and logged that its record was refused.
 *
 * @store-pinned: its nodes name their own PostgreSQL (test/helpers/fleet.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import nodemailer from 'nodemailer';
import { startFleet, type FleetNode, type LogEntry } from './helpers/fleet.js';
import { waitUntil } from './helpers/wait.js';
import { startUpstream } from './helpers/upstream.js';
import { submissionToml, SUBMIT_PASSWORD, SUBMIT_USER } from './helpers/outbound.js';

const MESSAGES = 300;
const RECIPIENTS = ['first@example.org', 'second@example.org'];
const CLAIM_TTL_S = 3;
/** "The moment of a kill", either side of it, as test/queue-crash.test.ts has it (its comment says why). */
const KILL_MOMENT_MS = 1000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One copy the upstream accepted: which submission try (its Message-ID), for whom, from which node (its EHLO name), when its 250 went out. */
interface Copy {
  messageId: string;
  rcptTo: string[];
  from: string;
  at: number;
}

/** Each node says its name in EHLO, so the upstream knows which node sends what. */
const heloOf = (node: string) => `${node}.example.com`;

const takingOver = (e: LogEntry) => e.msg === 'taking over a queued message whose claim by another node expired';
/** What a node logs when its attempt's record is refused because its claim lapsed and another node took the message (README window 2). */
const claimLost = (e: LogEntry) => typeof e.msg === 'string' && e.msg.startsWith("this node's claim on the queued message expired and another node took it");

test('a busy shared queue on two nodes, one SIGKILLed mid-delivery: every recipient delivered by the other, the queue empty, a second copy only in the documented windows', async (t) => {
  const copies: Copy[] = [];
  // Transactions between DATA and the upstream's reply, by the sending node's EHLO name.
  const inData = new Map<string, number>();
  const busy = (helo: string, by: number) => inData.set(helo, (inData.get(helo) ?? 0) + by);
  const upstream = await startUpstream({
    // Each DATA is held a little, so that at any moment several connections are mid-transaction.
    data: async (m) => {
      busy(m.helo, 1);
      try {
        await sleep(10 + Math.floor(Math.random() * 60));
      } finally {
        busy(m.helo, -1);
      }
      const messageId = /^Message-ID: <([^>]+)>/im.exec(m.raw.toString('latin1'))?.[1] ?? '';
      copies.push({ messageId, rcptTo: m.rcptTo, from: m.helo, at: Date.now() });
      return undefined;
    },
  });
  t.after(() => upstream.close());
  const fleet = await startFleet({
    nodes: 2,
    toml: (node) =>
      `
[smtp]
hostname = "${heloOf(node)}"

[[alias]]
name = "support"
address = "support@example.com"
[alias.outgoing]
host = "127.0.0.1"
port = ${upstream.port}
` + submissionToml(['support'], `retry_intervals = [1]\nretry_jitter = 0.0\nclaim_ttl = "${CLAIM_TTL_S}s"`),
  });
  t.after(() => fleet.stop());
  const [victim, survivor] = fleet.nodes as [FleetNode, FleetNode];
  const database = new URL(fleet.url).pathname.slice(1);

  // Submissions, to both nodes in turn; a try the kill cut off is submitted again to the
  // survivor. Every try has its own Message-ID, so a try stored but not acknowledged before the
  // kill is told apart from the one acknowledged.
  const acknowledged = new Map<number, string>();
  let tries = 0;
  const transports = new Map(
    fleet.nodes.map((n) => [
      n.name,
      nodemailer.createTransport({
        host: '127.0.0.1',
        port: n.submissionPort!,
        secure: false,
        ignoreTLS: true,
        pool: true,
        maxConnections: 3,
        auth: { user: SUBMIT_USER, pass: SUBMIT_PASSWORD },
      }),
    ]),
  );
  t.after(() => transports.forEach((c) => c.close()));
  const submit = async (i: number, node: FleetNode): Promise<void> => {
    const messageId = `fleet-${i}-try-${++tries}@app.example.com`;
    try {
      await transports.get(node.name)!.sendMail({
        from: 'support@example.com',
        to: RECIPIENTS,
        subject: `order ${i}`,
        text: `Your order ${i}.\r\n`,
        messageId: `<${messageId}>`,
      });
      acknowledged.set(i, messageId);
    } catch (err) {
      if (node === survivor) throw err;
      await submit(i, survivor);
    }
  };
  const submitting = Promise.all(Array.from({ length: MESSAGES }, (_, i) => submit(i, fleet.nodes[i % 2]!)));

  // The kill: once sending is well under way, while the victim holds claims and has several
  // transactions in flight.
  const victimClaims = async () =>
    Number((await fleet.postgres.query(`SELECT count(*) AS n FROM queue WHERE claimed_by = '${victim.name}' AND claimed_until > now()`, database)).rows[0].n);
  await waitUntil(
    "a busy moment: copies delivered, the victim holding claims, the victim's transactions in flight",
    async () => copies.length >= 60 && (inData.get(heloOf(victim.name)) ?? 0) >= 2 && (await victimClaims()) > 0,
  );
  const killAt = Date.now();
  const copiesAtKill = copies.length;
  await victim.kill();
  const kill = { at: killAt, exited: Date.now() };
  await submitting;

  // The survivor takes the victim's claimed messages over once the claims expire, and sends everything.
  const firstTakeover = await survivor.waitForLog(takingOver, "a takeover of the dead node's messages");
  t.diagnostic(`${survivor.name} took the first message over ${Number(firstTakeover.time) - kill.at} ms after the kill (claim_ttl ${CLAIM_TTL_S} s)`);
  const wanted = [...acknowledged.values()];
  const delivered = (id: string, rcpt: string) => copies.filter((c) => c.messageId === id && c.rcptTo.includes(rcpt));
  await waitUntil('every recipient of every acknowledged message delivered', () => wanted.every((id) => RECIPIENTS.every((r) => delivered(id, r).length > 0)));
  const store = await fleet.openStore();
  await waitUntil('the queue empty', async () => (await store.listQueue()).length === 0);
  assert.equal(survivor.child.exitCode, null, `${survivor.name} still runs`);

  const missing = wanted.flatMap((id) => RECIPIENTS.filter((r) => delivered(id, r).length === 0).map((r) => `${id} to ${r}`));
  assert.deepEqual(missing, [], 'every acknowledged message reached every recipient');
  const stored = await store.listMessages({ limit: Infinity });
  for (const id of wanted) {
    const meta = stored.find((m) => m.messageId === id);
    assert.equal(meta?.delivery?.status, 'delivered', `${id} is recorded as delivered`);
  }

  // A second copy (of any try) only in the README's two windows: (1) the killed node sent the
  // first one at the moment of the kill; (2) the node that sent the first one had lost its claim
  // meanwhile (renewals late on this loaded machine: a pause past claim_ttl), and says so in its
  // log, its record refused, while the node that took the message over sent it again.
  const storeIdOf = new Map(stored.map((m) => [m.messageId ?? '', m.id]));
  const duplicates: { id: string; rcpt: string; beforeKillMs: number; window: 1 | 2 | undefined }[] = [];
  for (const id of new Set(copies.map((c) => c.messageId))) {
    for (const rcpt of RECIPIENTS) {
      for (const first of delivered(id, rcpt).slice(0, -1)) {
        const sender = fleet.nodes.find((n) => heloOf(n.name) === first.from)!;
        const atKill = sender === victim && first.at >= kill.at - KILL_MOMENT_MS && first.at <= kill.exited + KILL_MOMENT_MS;
        const lostClaim = sender.count((e) => claimLost(e) && e.msg_id === storeIdOf.get(id)) > 0;
        duplicates.push({ id, rcpt, beforeKillMs: kill.at - first.at, window: atKill ? 1 : lostClaim ? 2 : undefined });
      }
    }
  }
  // How long the victim took from the upstream's reply to its log line of the attempt (written once the attempt is on record).
  const messageIdOf = new Map(stored.map((m) => [m.id, m.messageId ?? '']));
  const recordMs = victim.log
    .filter((e) => e.msg === 'delivery attempt')
    .map((e) => Number(e.time) - (copies.find((c) => c.messageId === messageIdOf.get(String(e.msg_id)) && c.from === heloOf(victim.name))?.at ?? NaN))
    .filter((ms) => !Number.isNaN(ms))
    .sort((a, b) => a - b);
  t.diagnostic(`${victim.name}: reply to logged record ${recordMs.join(', ')} ms`);
  t.diagnostic(
    `${copies.length} copies accepted upstream (${copiesAtKill} before the kill; ${copies.filter((c) => c.from === heloOf(victim.name)).length} from ${victim.name}), ` +
      `${survivor.count(takingOver)} message(s) taken over; ` +
      `${duplicates.length} recipient(s) sent twice: ${duplicates.filter((d) => d.window === 2).length} after a lost claim (window 2), the others accepted ` +
      `${
        duplicates
          .filter((d) => d.window !== 2)
          .map((d) => d.beforeKillMs)
          .join(', ') || 'none'
      } ms before the kill (negative: after it)`,
  );
  assert.deepEqual(
    duplicates.filter((d) => d.window === undefined),
    [],
    'no recipient was sent twice outside the two windows the README documents',
  );
});
