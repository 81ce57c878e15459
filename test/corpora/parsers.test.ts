import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { spoolDir } from '../../ingest/spool.js';
import { wrappingStage, unparsableReasons } from '../../policy/wrapping/stage.js';
import { startTestGateway } from '../helpers/gateway.js';
import { corpus } from '../helpers/paths.js';
import { asReceivedOverSmtp, parseWrapped, storedMessage } from '../helpers/wrapped.js';

/** Every raw message of the two parser-robustness corpora, read in place. */
const folders = [corpus('james-mime4j', 'testmsgs'), corpus('james-mime4j', 'mimetools-testmsgs'), corpus('mimekit-messages', 'messages')];
const files = folders.flatMap((dir) =>
  readdirSync(dir)
    .filter((f) => /\.(msg|txt|eml)$/.test(f))
    .sort()
    .map((f) => path.join(dir, f)),
);

// Messages whose fault is known, and must be found for that reason (the rest may go either way).
const knownFaults: Record<string, string> = {
  'malformedHeader-noheader.msg': 'header_no_end',
  'malformedHeaderStartsBody-nocrlfcrlf.msg': 'header_no_end',
  'hdr-fakeout.msg': 'header_no_end',
  'missing-boundary.msg': 'boundary_missing',
  'badbound.msg': 'boundary_missing',
  'empty-multipart.txt': 'boundary_missing',
  'multi-bad.msg': 'boundary_unterminated',
  'obsolete.msg': 'header_undecodable',
  // mailsplit drops the header of a part cut off by the next boundary; it must be wrapped, not stored short.
  'double-bound.msg': 'header_no_end',
  // The inner multipart's boundary is never used; the outer one closes.
  'missing-inner-boundary.msg': 'boundary_missing',
};
const knownGood = [
  'basic-plain.msg',
  'simple-attachment.msg',
  'multi-nested.msg',
  'bounce.txt',
  'delivery-status.txt',
  'stack-overflow.txt',
  'japanese.txt',
  // A multipart whose last part is a multipart, every delimiter in place (issue 17: were wrapped as boundary_unterminated).
  'bluedot-postcard.msg',
  'multipartnestedemptypartsnorfc822.msg',
  'uu-junk-target.msg',
];

test('every corpus message goes in over SMTP and comes out stored: parsed byte for byte, or wrapped with the original intact', async (t) => {
  assert.ok(files.length >= 100, `found ${files.length} corpus messages`);
  const gw = await startTestGateway('', { stages: () => [wrappingStage(undefined, undefined)] });
  t.after(() => gw.cleanup());
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: gw.port, ignoreTLS: true, pool: true, maxConnections: 2, maxMessages: Infinity });
  t.after(() => transport.close());

  const outcomes = new Map<string, string>(); // file name -> 'parsed' or the reason
  for (const file of files) {
    const name = path.basename(file);
    const sent = readFileSync(file);
    const info = await transport.sendMail({ envelope: { from: 'corpus@example.org', to: ['support@example.com'] }, raw: sent });
    const id = /queued as (\S+)/.exec(info.response)?.[1];
    assert.ok(id, `${name}: ${info.response}`);
    // The corpora mix LF and CRLF files; SMTP carries CRLF only, and nodemailer converts: what
    // the gateway received (and must keep) is the file with every line end made CRLF.
    const received = asReceivedOverSmtp(sent);
    const { meta, raw } = await storedMessage(gw.store, id);
    assert.equal(meta.receivedSize, received.length, name);
    if (meta.tags.includes('wrapped')) {
      const reason = String(meta.findings.wrapping?.reason);
      assert.ok(reason in unparsableReasons, `${name}: reason ${reason}`);
      assert.ok(meta._WrappingMessageReason?.startsWith(`${reason}: `), name);
      const view = await parseWrapped(raw, meta);
      assert.ok(view.original.equals(received), `${name}: the attached original is what was received`);
      assert.match(view.text, /^Error encountered during preprocessing of this message/);
      outcomes.set(name, reason);
    } else {
      assert.ok(raw.equals(received), `${name}: stored bytes are what was received`);
      outcomes.set(name, 'parsed');
    }
  }

  assert.equal((await gw.store.listMessages({ limit: Infinity })).length, files.length, 'none lost, none twice');
  for (const [name, reason] of Object.entries(knownFaults)) assert.equal(outcomes.get(name), reason, name);
  for (const name of knownGood) assert.equal(outcomes.get(name), 'parsed', name);
  const tally: Record<string, number> = {};
  for (const outcome of outcomes.values()) tally[outcome] = (tally[outcome] ?? 0) + 1;
  t.diagnostic(`outcomes: ${JSON.stringify(tally)}`);
  assert.ok((tally.parsed ?? 0) > files.length / 2, 'most of the corpus parses');

  // Still up and answering after all of it.
  const info = await transport.sendMail({ envelope: { from: 'a@example.org', to: ['b@example.com'] }, raw: 'Subject: still here\r\n\r\nok\r\n' });
  assert.match(info.response, /^250/);
  assert.deepEqual(readdirSync(spoolDir(gw.store.dir)), [], 'no spool file left');
});
