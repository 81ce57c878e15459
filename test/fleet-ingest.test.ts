/**
 * Two `mailgate serve` nodes on one PostgreSQL (issue 16, "Tests: Several nodes"): mail taken
 * in by either is seen by both (the CLI with each node's config, the REST API of the other),
 * and PostgreSQL stopped and started under ingest from several clients: while it is down the
 * clients are told 451 4.3.0 (try again), both gateways serve again once it is back without a
 * restart, nothing answered 250 is lost and nothing is stored twice.
 *
 * @store-pinned: its nodes name their own PostgreSQL (test/helpers/fleet.ts).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import nodemailer from 'nodemailer';
import { hashPassword } from '../gateway/config/password.js';
import type { MessageMeta } from '../storage/records.js';
import { startFleet, type FleetNode } from './helpers/fleet.js';
import { waitUntil } from './helpers/wait.js';
import { startPostgres, type TestPostgres } from './helpers/postgres.js';

const TOKEN = 'fleet-ingest-reader-0123456789';
const TOML = `
[admin]

[[admin.token]]
name = "fleet-test"
token_hash = "${hashPassword(TOKEN)}"
role = "auditor"
`;

let postgres: TestPostgres;
before(async () => {
  // fsync off: see helpers/fleet.ts (the server process is killed, never the machine).
  postgres = await startPostgres({ fsync: false });
});
after(() => postgres?.stop());

/** Sends one message to NODE; resolves with the reply code (250, or the refusal's) and text. */
async function send(node: FleetNode, messageId: string, subject: string): Promise<{ code: number; text: string }> {
  const client = nodemailer.createTransport({ host: '127.0.0.1', port: node.port, secure: false, ignoreTLS: true });
  try {
    const info = await client.sendMail({
      envelope: { from: 'customer@example.org', to: ['support@example.com'] },
      raw: `From: customer@example.org\r\nTo: support@example.com\r\nSubject: ${subject}\r\nMessage-ID: <${messageId}>\r\n\r\n${subject}, sent to ${node.name}.\r\n`,
    });
    return { code: Number(info.response.slice(0, 3)), text: info.response };
  } catch (err) {
    const e = err as { responseCode?: number; response?: string; message: string };
    return { code: e.responseCode ?? 0, text: e.response ?? e.message };
  } finally {
    client.close();
  }
}

/** Message-IDs a node's CLI lists (`messages list --json`). */
async function listedByCli(node: FleetNode): Promise<string[]> {
  const r = await node.cli(['messages', 'list', '--json', '--limit', '100000']);
  assert.equal(r.code, 0, `${node.name}'s messages list: ${r.stderr}`);
  return (JSON.parse(r.stdout.toString()) as MessageMeta[]).map((m) => m.messageId ?? '');
}

/** Message-IDs a node's REST API lists (GET /api/v1/messages). */
async function listedByApi(node: FleetNode): Promise<string[]> {
  const res = await fetch(`${node.api}/api/v1/messages?limit=100000`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(res.status, 200, `${node.name}'s REST API`);
  const body = (await res.json()) as { messages: MessageMeta[] };
  return body.messages.map((m) => m.messageId ?? '');
}

test('mail taken in by either node is listed by both, through the CLI and the REST API', async (t) => {
  const fleet = await startFleet({ nodes: 2, toml: TOML, postgres });
  t.after(() => fleet.stop());
  const sent: string[] = [];
  for (const [i, node] of fleet.nodes.entries()) {
    for (let n = 0; n < 5; n++) {
      const messageId = `both-${node.name}-${n}@example.org`;
      const reply = await send(node, messageId, `ticket ${i}-${n}`);
      assert.equal(reply.code, 250, `${node.name} took message ${n}: ${reply.text}`);
      sent.push(messageId);
    }
  }
  const [a, b] = fleet.nodes as [FleetNode, FleetNode];
  for (const node of [a, b]) assert.deepEqual((await listedByCli(node)).sort(), [...sent].sort(), `${node.name}'s CLI lists every message`);
  assert.deepEqual((await listedByApi(b)).sort(), [...sent].sort(), "node-b's REST API lists node-a's messages and its own");
  assert.deepEqual((await listedByApi(a)).sort(), [...sent].sort(), "node-a's REST API lists node-b's messages and its own");
});

for (const mode of ['fast', 'immediate'] as const) {
  test(`PostgreSQL stopped (${mode}) and started under ingest from several clients: 451 4.3.0 while down, nothing acknowledged lost, none stored twice`, async (t) => {
    const fleet = await startFleet({ nodes: 2, toml: TOML, postgres });
    t.after(() => fleet.stop());
    const nodes = fleet.nodes as [FleetNode, FleetNode];

    type Phase = 'before' | 'down' | 'after';
    let phase: Phase = 'before';
    const replies: { phase: Phase; node: string; code: number; text: string }[] = [];
    const acknowledged = new Set<string>();
    let stopping = false;
    // Each client sends its messages in turn to both nodes, and sends a message again (same
    // Message-ID, as a real client retries) until it is answered 250.
    const client = async (c: number) => {
      for (let n = 0; !stopping; n++) {
        const messageId = `pg-${mode}-${c}-${n}@example.org`;
        for (let attempt = 0; !stopping || attempt > 0; attempt++) {
          const node = nodes[(n + attempt + c) % 2]!;
          const at = phase;
          const reply = await send(node, messageId, `client ${c} message ${n}`);
          replies.push({ phase: at === phase ? at : 'down', node: node.name, code: reply.code, text: reply.text });
          if (reply.code === 250) {
            acknowledged.add(messageId);
            break;
          }
          if (attempt > 200) throw new Error(`${messageId} never accepted: ${reply.text}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    };
    const clients = Array.from({ length: 4 }, (_, c) => client(c));
    const count = (p: Phase, node: string, code: number) => replies.filter((r) => r.phase === p && r.node === node && r.code === code).length;

    await waitUntil('mail accepted by both nodes', () => nodes.every((n) => count('before', n.name, 250) >= 5));
    await postgres.stopServer(mode);
    phase = 'down';
    // While it is down, both nodes refuse each message with a temporary error, which clients retry.
    await waitUntil('refusals from both nodes while PostgreSQL is down', () => nodes.every((n) => count('down', n.name, 451) >= 3));
    await postgres.startServer();
    phase = 'after';
    // Both gateways, never restarted, take mail again.
    await waitUntil('mail accepted by both nodes after PostgreSQL is back', () => nodes.every((n) => count('after', n.name, 250) >= 5));
    stopping = true;
    await Promise.all(clients);
    for (const node of nodes) assert.equal(node.child.exitCode, null, `${node.name} still runs`);

    // Every refusal (down, or a message caught by the stop) was a temporary one, 451 4.3.0.
    const refused = replies.filter((r) => r.code !== 250);
    assert.deepEqual(
      [...new Set(refused.map((r) => `${r.code} ${/\b4\.\d+\.\d+\b/.exec(r.text)?.[0] ?? r.text}`))],
      ['451 4.3.0'],
      'every refusal is 451 4.3.0',
    );
    const store = await fleet.openStore();
    const stored = (await store.listMessages({ limit: Infinity })).map((m) => m.messageId ?? '');
    t.diagnostic(`${mode}: ${acknowledged.size} acknowledged, ${refused.length} refusals (451), ${stored.length} stored`);
    const missing = [...acknowledged].filter((id) => !stored.includes(id));
    assert.deepEqual(missing, [], 'every message answered 250 is stored');
    const twice = stored.filter((id, i) => stored.indexOf(id) !== i);
    assert.deepEqual(twice, [], 'no message is stored twice');
    // Only acknowledged messages are stored: a refusal left nothing behind that a retry would double.
    assert.deepEqual(
      stored.filter((id) => !acknowledged.has(id)),
      [],
      'nothing refused is stored',
    );
  });
}
