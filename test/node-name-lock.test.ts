/**
 * One process per node name on PostgreSQL (storage/postgres/node-name.ts): leases and queue
 * claims are held by name, so a second `mailgate serve` with a name in use is refused while the
 * first keeps serving; a node killed frees its name with its database session, so it starts
 * again at once; CLI commands with the same name keep working (and do not sweep the running
 * node's writes in progress); a lost hold is taken again, and a node whose name another process
 * took meanwhile stops.
 *
 * @store-pinned: its nodes name their own PostgreSQL.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import nodemailer from 'nodemailer';
import pg from 'pg';
import { PgStore } from '../storage/postgres/store.js';
import { NODE_NAME_LOCK } from '../storage/postgres/node-name.js';
import { newMessageId } from '../storage/ids.js';
import type { MessageMeta } from '../storage/records.js';
import { sampleMeta } from './helpers/store-contract.js';
import { startFleet, type Fleet, type FleetNode } from './helpers/fleet.js';
import { runCli, spawnServe, writeTestConfig } from './helpers/gateway.js';
import { tempDir } from './helpers/paths.js';
import { startPostgres, type TestPostgres } from './helpers/postgres.js';

let postgres: TestPostgres;
before(async () => {
  // fsync off: see helpers/fleet.ts (processes are killed, never the machine).
  postgres = await startPostgres({ fsync: false });
});
after(() => postgres?.stop());

/** A config for another process under NAME on the fleet's database: its own data directory (so no control socket of the running node answers). */
async function sameNameConfig(fleet: Fleet, name: string): Promise<string> {
  const { dir } = await tempDir('mailgate-same-name-');
  await mkdir(dir, { recursive: true });
  return writeTestConfig(dir, `[storage]\npostgres = ${JSON.stringify(fleet.url)}\n\n[node]\nname = "${name}"\n`);
}

async function send(node: FleetNode, subject: string): Promise<number> {
  const client = nodemailer.createTransport({ host: '127.0.0.1', port: node.port, secure: false, ignoreTLS: true });
  try {
    const info = await client.sendMail({
      envelope: { from: 'customer@example.org', to: ['support@example.com'] },
      raw: `From: customer@example.org\r\nTo: support@example.com\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/ /g, '-')}@example.org>\r\n\r\n${subject}\r\n`,
    });
    return Number(info.response.slice(0, 3));
  } finally {
    client.close();
  }
}

/** The database session holding NAME's lock, as pg_locks says. */
async function holderPid(fleet: Fleet, name: string): Promise<number | undefined> {
  const { rows } = await postgres.query(
    `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = ${NODE_NAME_LOCK}::oid AND objid = hashtext('${name}')::oid AND objsubid = 2`,
    new URL(fleet.url).pathname.slice(1),
  );
  return (rows[0] as { pid: number } | undefined)?.pid;
}

test('a second serve with a name in use is refused, naming the name and the process holding it, while the first keeps serving; CLI commands with the name work', async () => {
  const fleet = await startFleet({ nodes: 1, toml: '', postgres });
  try {
    const first = fleet.nodes[0]!;
    const config = await sameNameConfig(fleet, first.name);
    await assert.rejects(spawnServe(config), (err: Error) => {
      assert.match(err.message, /exited with 1 before it was ready/);
      assert.match(err.message, /Node name node-a is in use by another mailgate serve/);
      assert.match(err.message, new RegExp(`pid ${first.child.pid}\\b`), 'the first process is named by its pid');
      assert.match(err.message, /give each node its own \[node\] name/);
      return true;
    });
    assert.equal(first.child.exitCode, null, 'the first still runs');
    assert.equal(await send(first, 'after the refusal'), 250);

    // The CLI opens the store under the same name, without taking it.
    const listed = await runCli(['messages', 'list', '--json', '--config', config]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual(
      (JSON.parse(listed.stdout.toString()) as MessageMeta[]).map((m) => m.subject),
      ['after the refusal'],
    );
    const nodes = await runCli(['nodes', '--config', config]);
    assert.equal(nodes.code, 0, nodes.stderr);
    assert.equal(await send(first, 'after the CLI'), 250, 'the first serves on after the CLI');
  } finally {
    await fleet.stop();
  }
});

test('a node SIGKILLed frees its name with its database session: it starts again at once', async () => {
  const fleet = await startFleet({ nodes: 1, toml: '', postgres });
  try {
    const killed = await holderPid(fleet, 'node-a');
    assert.ok(killed !== undefined, 'the first run holds the name');
    await fleet.nodes[0]!.kill();
    // No wait for a lease or claim time: the restart is refused if the name is still held.
    const again = await fleet.restart(0);
    assert.equal(await send(again, 'after the restart'), 250);
    const holder = await holderPid(fleet, 'node-a');
    assert.ok(holder !== undefined && holder !== killed, 'the new run holds the name');
    await assert.rejects(spawnServe(await sameNameConfig(fleet, 'node-a')), /Node name node-a is in use/);
  } finally {
    await fleet.stop();
  }
});

test('a node whose hold on its name was lost takes it again, and a second serve is still refused', async () => {
  const fleet = await startFleet({ nodes: 1, toml: '', postgres });
  try {
    const node = fleet.nodes[0]!;
    const pid = await holderPid(fleet, node.name);
    assert.ok(pid !== undefined, 'a session holds the name');
    await postgres.query(`SELECT pg_terminate_backend(${pid}, 10000)`);
    await node.waitForLog((e) => e.msg === "holding this node's name again", 'that it holds its name again');
    assert.ok(node.count((e) => e.msg === "the database connection holding this node's name was lost; taking the name again") >= 1);
    assert.notEqual(await holderPid(fleet, node.name), pid, 'a new session holds it');
    await assert.rejects(spawnServe(await sameNameConfig(fleet, node.name)), /Node name node-a is in use/);
    assert.equal(await send(node, 'after the hold came back'), 250);
  } finally {
    await fleet.stop();
  }
});

test('a node whose name another process took while its hold was lost logs NODE_NAME_IN_USE and stops', async () => {
  const fleet = await startFleet({ nodes: 1, toml: '', postgres });
  const other = new pg.Client({ connectionString: fleet.url });
  await other.connect();
  try {
    const node = fleet.nodes[0]!;
    const pid = await holderPid(fleet, node.name);
    assert.ok(pid !== undefined);
    // Queued behind the node's hold: granted the moment the node's session ends, before it can come back.
    const taken = other.query('SELECT pg_advisory_lock($1, hashtext($2))', [NODE_NAME_LOCK, node.name]);
    await postgres.query(`SELECT pg_terminate_backend(${pid}, 10000)`);
    await taken;
    const entry = await node.waitForLog((e) => e.code === 'NODE_NAME_IN_USE', 'that another process took its name');
    assert.equal(entry.level, 50, 'an error');
    assert.match(String(entry.msg), /^stopping: Node name node-a is in use/);
    assert.equal(await node.exited, 1, 'it stops with a failure');
    assert.ok(node.count((e) => e.msg === 'mailgate stopped') === 1, 'after a clean stop');
  } finally {
    await other.end();
    await fleet.stop();
  }
});

test("opening the store under a held name (a CLI command) leaves the running node's writes in progress alone", async () => {
  const url = await postgres.createDatabase();
  const { dir, cleanup } = await tempDir();
  const serving = await PgStore.open({ url, dir, node: 'node-w', createIfEmpty: true, maxConnections: 4 });
  try {
    await serving.holdNodeName(() => {});
    const id = newMessageId();
    const writer = serving.createMessageWriter(id);
    await new Promise<void>((resolve, reject) => writer.write(Buffer.alloc(600 * 1024, 'x'), (err) => (err ? reject(err) : resolve())));
    // Its rows are there and marked unfinished: a store opened now under the name must not sweep them.
    const cli = await PgStore.open({ url, dir, node: 'node-w' });
    await cli.close();
    writer.end();
    await writer.commit(sampleMeta(id));
    assert.equal((await serving.getMessage(id))?.size, 600 * 1024, 'the message committed whole');
    // The name is held until the store closes; a second hold is refused.
    const second = await PgStore.open({ url, dir, node: 'node-w' });
    try {
      await assert.rejects(
        second.holdNodeName(() => {}),
        { code: 'NODE_NAME_IN_USE' },
      );
    } finally {
      await second.close();
    }
  } finally {
    await serving.close();
    await cleanup();
  }
  const after = await PgStore.open({ url, dir, node: 'node-w' });
  try {
    await after.holdNodeName(() => {});
  } finally {
    await after.close();
  }
});
