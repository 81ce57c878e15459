import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import nodemailer from 'nodemailer';
import type { MessageMeta } from '../storage/records.js';
import type { QuarantineRecord } from '../storage/records.js';
import { attachmentsSectionSchema, attachmentsStage } from '../policy/attachments/stage.js';
import { runCli, startTestGateway } from './helpers/gateway.js';
import { fixture } from './helpers/paths.js';

// The Windows program inside the fixtures (see test/fixtures/attachments/).
const PE = Buffer.concat([
  Buffer.from([0x4d, 0x5a, 0x90, 0, 3, 0, 0, 0, 4, 0, 0, 0, 0xff, 0xff, 0, 0]),
  Buffer.from('This program cannot be run in DOS mode.'.repeat(4)),
]);

async function send(port: number, file: string): Promise<string> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
  const info = await transport.sendMail({
    envelope: { from: 'customer@example.org', to: ['support@example.com'] },
    raw: readFileSync(fixture('attachments', file)),
  });
  const id = /queued as (\S+)/.exec(info.response)?.[1];
  assert.ok(id, info.response);
  return id;
}

test('quarantine round trip: block, list, export, restore byte for byte, delete', async (t) => {
  const department = attachmentsSectionSchema.parse({ blocked_extensions: ['.exe'] });
  const gw = await startTestGateway('', { stages: () => [attachmentsStage(undefined, department)] });
  t.after(() => gw.cleanup());
  const cli = async (...args: string[]) => {
    const r = await runCli([...args, '--config', gw.configFile]);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };

  const byName = await send(gw.port, 'double-extension.eml');
  const byArchive = await send(gw.port, 'zip-with-exe.eml');

  // The stored message carries the notice, and its metadata lists the file as blocked.
  const meta = JSON.parse((await cli('messages', 'show', byName, '--json')).toString()) as MessageMeta;
  assert.deepEqual(
    meta.attachments.map((a) => [a.fileName, a.blocked]),
    [['invoice.pdf.exe', true]],
  );
  assert.ok(meta._AttachmentFileNames.includes('invoice.pdf.exe [blocked]'), `the blocked file is listed and marked: ${meta._AttachmentFileNames}`);
  assert.match(JSON.stringify(meta.findings['attachments']), /invoice\.pdf\.exe.*quarantined: blocked extension \.exe \(department policy\)/);
  const stored = await cli('messages', 'raw', byName);
  assert.match(stored.toString(), /The attachment "invoice\.pdf\.exe" was removed by the mail gateway: blocked extension \.exe/);

  // list: through the running gateway's control socket.
  const all = JSON.parse((await cli('quarantine', 'list', '--json')).toString()) as QuarantineRecord[];
  assert.deepEqual(
    all.map((r) => [r.messageId, r.fileName]).sort(),
    [
      [byArchive, 'documents.zip'],
      [byName, 'invoice.pdf.exe'],
    ].sort(),
  );
  const onlyOne = JSON.parse((await cli('quarantine', 'list', '--message', byName, '--json')).toString()) as QuarantineRecord[];
  assert.equal(onlyOne.length, 1);
  const record = onlyOne[0]!;
  assert.equal(record.size, PE.length);
  assert.equal(record.rule, 'blocked extension .exe (department policy)');
  const table = (await cli('quarantine', 'list')).toString();
  assert.match(table, new RegExp(`${record.id.replace('.', '\\.')} .* ${PE.length} +invoice\\.pdf\\.exe +${byName} +blocked extension \\.exe`));

  // export writes the decoded file.
  const out = path.join(gw.dir, 'exported.bin');
  await cli('quarantine', 'export', record.id, out);
  assert.ok((await readFile(out)).equals(PE));

  // restore puts the part back: the whole message is again what was sent.
  assert.match((await cli('quarantine', 'restore', record.id)).toString(), /restored "invoice\.pdf\.exe"/);
  const restored = await cli('messages', 'raw', byName);
  assert.ok(restored.equals(readFileSync(fixture('attachments', 'double-extension.eml'))), 'restored bytes equal the original');
  const after = JSON.parse((await cli('messages', 'show', byName, '--json')).toString()) as MessageMeta;
  assert.deepEqual(after._AttachmentFileNames, ['invoice.pdf.exe']);
  assert.equal(after.attachments[0]!.blocked, undefined);
  assert.equal(after.size, restored.length);
  assert.deepEqual(JSON.parse((await cli('quarantine', 'list', '--message', byName, '--json')).toString()), []);

  // With the gateway stopped the CLI opens the store itself: delete, and restore of a deleted id fails.
  await gw.stop();
  const zip = all.find((r) => r.messageId === byArchive)!;
  await cli('quarantine', 'delete', zip.id);
  assert.deepEqual(JSON.parse((await cli('quarantine', 'list', '--json')).toString()), []);
  const again = await runCli(['quarantine', 'restore', zip.id, '--config', gw.configFile]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /No quarantined attachment with id/);
  // The notice stays in the message after a delete.
  assert.match((await cli('messages', 'raw', byArchive)).toString(), /"documents\.zip" was removed/);
  // The restored message still reads back after a reopen (its new generation of chunks).
  assert.ok((await cli('messages', 'raw', byName)).equals(readFileSync(fixture('attachments', 'double-extension.eml'))));
});

test('a message that is itself the attachment is listed in _AttachmentFileNames and attachments, allowed or blocked, and after a restore', async (t) => {
  const department = attachmentsSectionSchema.parse({ blocked_extensions: ['.exe'] });
  const gw = await startTestGateway('', { stages: () => [attachmentsStage(undefined, department)] });
  t.after(() => gw.cleanup());
  const show = async (id: string) => {
    const r = await runCli(['messages', 'show', id, '--json', '--config', gw.configFile]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout.toString()) as MessageMeta;
  };

  const pdf = await show(await send(gw.port, 'root-pdf.eml'));
  assert.deepEqual(pdf._AttachmentFileNames, ['statement.pdf']);
  assert.deepEqual(
    pdf.attachments.map((a) => [a.fileName, a.contentType, a.blocked]),
    [['statement.pdf', 'application/pdf', undefined]],
  );
  assert.equal(pdf.subject, 'statement', 'the message header is still read');

  const exeId = await send(gw.port, 'root-exe.eml');
  const exe = await show(exeId);
  assert.deepEqual(exe._AttachmentFileNames, ['setup.exe [blocked]']);
  assert.deepEqual(
    exe.attachments.map((a) => [a.fileName, a.blocked]),
    [['setup.exe', true]],
  );
  const [record] = JSON.parse(
    (await runCli(['quarantine', 'list', '--message', exeId, '--json', '--config', gw.configFile])).stdout.toString(),
  ) as QuarantineRecord[];
  assert.ok(record);
  const restored = await runCli(['quarantine', 'restore', record.id, '--config', gw.configFile]);
  assert.equal(restored.code, 0, restored.stderr);
  const raw = await runCli(['messages', 'raw', exeId, '--config', gw.configFile]);
  assert.ok(raw.stdout.equals(readFileSync(fixture('attachments', 'root-exe.eml'))), 'restored byte for byte');
  const after = await show(exeId);
  assert.deepEqual(after._AttachmentFileNames, ['setup.exe']);
  assert.deepEqual(
    after.attachments.map((a) => [a.fileName, a.contentType, a.blocked]),
    [['setup.exe', 'application/octet-stream', undefined]],
  );
});
