/**
 * The error catalogue (lib/errors.ts): every code documented in README "Error codes" with its
 * SMTP reply (fastify checks its error codes so), the shape of an error with and without a
 * reply, and a store error reaching an SMTP session answered 451 4.3.0, never 250.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { asMailgateError, catalogue, errors, MailgateError, storeErrors } from '../lib/errors.js';
import type { Stage } from '../policy/chain/stage.js';
import { capturingLogger, startTestGateway } from './helpers/gateway.js';
import { projectRoot } from './helpers/paths.js';

/** Code -> `451 4.3.0` (or `none`), from the catalogue. */
function catalogueCodes(): Map<string, string> {
  const codes = new Map<string, string>();
  for (const [group, entries] of Object.entries(catalogue)) {
    for (const [name, entry] of Object.entries(entries)) {
      assert.match(String(entry.code), /^[A-Z][A-Z0-9_]*$/, `${group}.${name} has a code (is it built with entry()?)`);
      assert.ok(!codes.has(entry.code), `${entry.code} (${group}.${name}) is in the catalogue once`);
      codes.set(entry.code, entry.reply ? `${entry.reply.code} ${entry.reply.enhanced}` : 'none');
    }
  }
  return codes;
}

/** Code -> SMTP reply column, from the README's table. */
async function documentedCodes(): Promise<Map<string, string>> {
  const readme = await readFile(path.join(projectRoot, 'README.md'), 'utf8');
  const start = readme.indexOf('\n## Error codes\n');
  assert.ok(start >= 0, 'the README has a section "Error codes"');
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  const codes = new Map<string, string>();
  for (const line of section.split('\n')) {
    const row = /^\| `([^`]+)` \| ([^|]+?) \|/.exec(line);
    if (!row) continue;
    assert.ok(!codes.has(row[1]!), `${row[1]} is in the table once`);
    codes.set(row[1]!, row[2]!);
  }
  return codes;
}

test('README "Error codes" documents every code of the catalogue with its SMTP reply, and no other', async () => {
  const inCatalogue = catalogueCodes();
  const documented = await documentedCodes();
  assert.ok(inCatalogue.size > 20, `the catalogue is read (${inCatalogue.size} codes)`);
  const undocumented = [...inCatalogue.keys()].filter((c) => !documented.has(c));
  const unknown = [...documented.keys()].filter((c) => !inCatalogue.has(c));
  assert.deepEqual({ undocumented, unknown }, { undocumented: [], unknown: [] });
  for (const [code, reply] of inCatalogue) assert.equal(documented.get(code), reply, `the SMTP reply of ${code}`);
});

test('an error with an SMTP reply leads its message with the enhanced code; one without is its sentence alone', () => {
  const tooBig = errors.messageTooBig(1000);
  assert.ok(tooBig instanceof MailgateError);
  assert.deepEqual(
    { code: tooBig.code, responseCode: tooBig.responseCode, reply: tooBig.reply, message: tooBig.message, sentence: tooBig.sentence },
    {
      code: 'MESSAGE_TOO_BIG',
      responseCode: 552,
      reply: { code: 552, enhanced: '5.3.4' },
      message: '5.3.4 Message too large: the limit is 1000 bytes',
      sentence: 'Message too large: the limit is 1000 bytes',
    },
  );
  assert.equal(errors.messageTooBig.code, 'MESSAGE_TOO_BIG', 'an entry names its code without building an error');

  const missing = storeErrors.messageNotFound('01ZZZZZZZZZZZZZZZZZZZZZZZZ');
  assert.ok(missing instanceof MailgateError);
  assert.equal(missing.code, 'MESSAGE_NOT_FOUND');
  assert.equal(missing.message, 'No such message: 01ZZZZZZZZZZZZZZZZZZZZZZZZ');
  assert.equal(missing.reply, undefined);
  // smtp-server would send `responseCode || 450`: a store error has no code of its own to send.
  assert.ok(!('responseCode' in missing), 'no reply code');

  const cause = new Error('IO error');
  const locked = storeErrors.storeLocked('/var/lib/mailgate', cause);
  assert.equal(locked.message, 'The store at /var/lib/mailgate is in use by another process');
  assert.equal(locked.cause, cause);
  assert.equal(errors.storeFailed(cause).cause, cause);
});

test('asMailgateError: a reply is kept; a store error or anything else becomes 451 4.3.0 with it as the cause', () => {
  const relay = errors.relayDenied('someone@elsewhere.example');
  assert.equal(asMailgateError(relay), relay);
  for (const thrown of [storeErrors.storeUnavailable(new Error('disk')), new Error('boom'), 'not even an error']) {
    const e = asMailgateError(thrown);
    assert.deepEqual(
      { code: e.code, responseCode: e.responseCode, message: e.message, cause: e.cause },
      {
        code: 'STORE_WRITE_FAILED',
        responseCode: 451,
        message: '4.3.0 Temporary local problem: the message could not be stored, try again later',
        cause: thrown,
      },
    );
  }
});

test('a store error in the middle of a message reaches the SMTP client as 451 4.3.0, never 250, and nothing is stored', async (t) => {
  const log = capturingLogger();
  const refused = storeErrors.storeUnavailable(new Error('IO error: 000003.log: Input/output error'));
  // As the attachments stage would meet a store refusing writes while it quarantines a part.
  const failing: Stage = { name: 'quarantine-writer', create: () => ({ chunk: (chunk, emit) => emit(chunk), end: () => Promise.reject(refused) }) };
  const gw = await startTestGateway('', { stages: () => [failing], logger: log.logger });
  t.after(() => gw.cleanup());
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: gw.port, secure: false, ignoreTLS: true });
  await assert.rejects(
    transport.sendMail({ envelope: { from: 'customer@example.org', to: ['support@example.com'] }, raw: 'Subject: hello\r\n\r\nbody\r\n' }),
    (err: { responseCode?: number; response?: string }) => {
      assert.equal(err.responseCode, 451);
      assert.equal(err.response, '451 4.3.0 Temporary local problem: the message could not be stored, try again later');
      return true;
    },
  );
  assert.deepEqual(await gw.store.listMessages(), []);
  const line = await log.waitFor((e) => e.outcome === 'refused');
  assert.equal(line.reason, 'STORE_WRITE_FAILED');
  assert.equal((line.err as { code?: string }).code, 'STORE_UNAVAILABLE', 'the log names the store error');
});

test('no MailgateError is built outside the catalogue', async () => {
  const built: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(path.join(projectRoot, dir), { withFileTypes: true })) {
      const rel = path.join(dir, entry.name);
      if (entry.isDirectory()) await walk(rel);
      else if (entry.name.endsWith('.ts') && rel !== path.join('lib', 'errors.ts')) {
        if ((await readFile(path.join(projectRoot, rel), 'utf8')).includes('new MailgateError(')) built.push(rel);
      }
    }
  };
  for (const layer of ['lib', 'storage', 'policy', 'ingest', 'gateway']) await walk(layer);
  assert.deepEqual(built, []);
});
