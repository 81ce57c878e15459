import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, readFileSync } from 'node:fs';
import { Readable, Writable } from 'node:stream';
import { pino } from 'pino';
import { runPipeline } from '../policy/chain/pipeline.js';
import type { Direction, MessageContext } from '../policy/chain/stage.js';
import { attachmentsSectionSchema, attachmentsStage, type AttachmentFinding } from '../policy/attachments/stage.js';
import { attachmentFileNames } from '../policy/chain/summary.js';
import { attachmentRules } from '../policy/attachments/rules.js';
import { blockedInOriginal } from '../policy/attachments/original-scan.js';
import { hiddenExecutableCases } from './helpers/fuzz.js';
import { openTestStore, storeLeftovers } from './helpers/test-store.js';
import type { Store } from '../storage/store.js';
import { newMessageId } from '../storage/ids.js';

import { fixture, tempDir } from './helpers/paths.js';

const BASE = { blocked_extensions: ['.exe', 'VBS', '.js', '.sh'] };

interface Run {
  output: Buffer;
  ctx: MessageContext;
  found: AttachmentFinding[];
  store: Store;
}

async function run(file: string, opts: { partition?: object; department?: object | null; direction?: Direction; dryRun?: boolean } = {}): Promise<Run> {
  const { dir, cleanup } = await tempDir();
  const store = await openTestStore(dir);
  const partition = opts.partition ? attachmentsSectionSchema.parse(opts.partition) : undefined;
  // null: the department file has no [attachments] section.
  const department = opts.department === null ? undefined : attachmentsSectionSchema.parse(opts.department ?? BASE);
  const id = newMessageId();
  const ctx: MessageContext = {
    id,
    envelope: { mailFrom: 'a@example.org', rcptTo: ['b@example.com'] },
    source: { kind: 'cli' },
    direction: opts.direction ?? 'inbound',
    findings: {},
    tags: new Set(),
    log: pino({ level: 'silent' }),
    dryRun: opts.dryRun ?? false,
    ...(opts.dryRun ? {} : { store }),
    sideRecords: [],
  };
  const parts: Buffer[] = [];
  const sink = new Writable({ write: (c: Buffer, _e, cb) => (parts.push(c), cb()) });
  const writer = store.createMessageWriter(id);
  await runPipeline(createReadStream(fixture('attachments', file)), ctx, [attachmentsStage(partition, department)], sink);
  const output = Buffer.concat(parts);
  // Commit as ingest does, so quarantine records become visible with the message.
  writer.end(output);
  await writer.commit(
    {
      id,
      version: 1,
      receivedAt: new Date().toISOString(),
      size: 0,
      receivedSize: 0,
      envelope: ctx.envelope,
      source: ctx.source,
      to: [],
      cc: [],
      _AttachmentFileNames: [],
      attachments: [],
      findings: ctx.findings,
      tags: [],
    },
    ctx.sideRecords,
  );
  const found = (ctx.findings['attachments'] as { attachments?: AttachmentFinding[] } | undefined)?.attachments ?? [];
  const close = store.close.bind(store);
  store.close = async () => {
    await close();
    await cleanup();
  };
  return { output, ctx, found, store };
}

const blockedNames = (r: Run) => r.found.filter((a) => a.blocked).map((a) => a.fileName);

// Every evasion the issue lists, one fixture each.
const evasions: { file: string; blocked: string; rule: RegExp; evidence?: RegExp; opts?: Parameters<typeof run>[1]; gone?: string }[] = [
  { file: 'case.eml', blocked: 'REPORT.ExE', rule: /blocked extension \.exe \(department policy\)/ },
  { file: 'trailing-dots.eml', blocked: 'invoice.exe', rule: /\.exe/, evidence: /trailing dots or spaces stripped/ },
  { file: 'double-extension.eml', blocked: 'invoice.pdf.exe', rule: /\.exe/, evidence: /double extension: only the last one, \.exe/ },
  { file: 'rfc2231-continuations.eml', blocked: 'résumé.exe', rule: /\.exe/ },
  { file: 'rfc2231-charset.eml', blocked: 'résumé.vbs', rule: /blocked extension \.vbs/ },
  { file: 'encoded-word.eml', blocked: 'pièce.js', rule: /blocked extension \.js/ },
  { file: 'name-disagrees.eml', blocked: 'notes.txt', rule: /\.exe/, evidence: /different names: "notes\.txt", "setup\.exe"/ },
  { file: 'name-only.eml', blocked: 'macro.vbs', rule: /\.vbs/ },
  { file: 'direction-override.eml', blocked: 'invoicefdp.exe', rule: /\.exe/, evidence: /right-to-left override U\+202E removed/ },
  { file: 'nested-rfc822-inline.eml', blocked: 'tool.exe', rule: /\.exe/ },
  { file: 'nested-rfc822-attached.eml', blocked: 'forwarded.eml', rule: /attached message contains tool\.exe: blocked extension \.exe/ },
  {
    file: 'pe-as-pdf.eml',
    blocked: 'statement.pdf',
    rule: /Windows executable .* blocked as \.exe/,
    evidence: /content is a Windows executable .* named \.pdf/,
  },
  { file: 'script-as-txt.eml', blocked: 'notes.txt', rule: /script .* blocked as \.sh/ },
  { file: 'zip-with-exe.eml', blocked: 'documents.zip', rule: /archive contains setup\.exe: blocked extension \.exe/ },
  { file: 'zip-in-zip.eml', blocked: 'outer.zip', rule: /archive contains tool\.exe/, evidence: /inner\.zip\/deep\/tool\.exe/ },
  {
    file: 'zip-bomb.eml',
    blocked: 'bomb.zip',
    rule: /cannot be inspected safely: .*suspected zip bomb/,
    opts: { department: { ...BASE, zip_max_ratio: 100 } },
  },
];

for (const row of evasions) {
  test(`blocks ${row.file}: ${row.blocked}`, async () => {
    const r = await run(row.file, row.opts);
    try {
      assert.deepEqual(blockedNames(r), [row.blocked]);
      const a = r.found.find((f) => f.blocked)!;
      assert.match(a.rule ?? '', row.rule);
      if (row.evidence) assert.match(a.evidence.join('\n'), row.evidence);
      assert.equal(a.action, 'quarantined');
      // The stored message has the notice instead of the file.
      const text = r.output.toString('latin1');
      assert.match(text, new RegExp(`X-Mailgate-Quarantine-Id: ${a.quarantineId!.replace('.', '\\.')}`));
      assert.match(r.output.toString('utf8'), /was removed by the mail gateway/);
      const records = await r.store.listQuarantine();
      assert.equal(records.length, 1);
      assert.equal(records[0]!.id, a.quarantineId);
      // The quarantined bytes are the part exactly as it stood in the original message.
      const quarantined = Buffer.concat(await r.store.openQuarantined(a.quarantineId!).toArray());
      assert.ok(readFileSync(fixture('attachments', row.file)).includes(quarantined), 'quarantined bytes are a slice of the original');
      assert.ok(!r.output.includes(quarantined.subarray(quarantined.indexOf('\r\n\r\n') + 4)), 'the blocked body is not in the stored message');
    } finally {
      await r.store.close();
    }
  });
}

test('a clean PDF and a clean zip pass byte for byte', async () => {
  for (const file of ['clean.eml', 'zip-clean.eml']) {
    const r = await run(file);
    try {
      assert.deepEqual(blockedNames(r), []);
      assert.equal(r.found.length, 1);
      assert.ok(r.output.equals(readFileSync(fixture('attachments', file))), `${file} unchanged`);
      assert.deepEqual(await r.store.listQuarantine(), []);
      assert.deepEqual((await storeLeftovers(r.store)).quarantineChunks, [], 'a spooled archive leaves nothing behind');
    } finally {
      await r.store.close();
    }
  }
});

// Settings, as the Cisco guide describes them.
const settings: { name: string; file: string; opts: Parameters<typeof run>[1]; blocked: string[]; quarantined: number }[] = [
  {
    name: 'block_all_attachments blocks a clean PDF',
    file: 'clean.eml',
    opts: { department: { block_all_attachments: true } },
    blocked: ['report.pdf'],
    quarantined: 1,
  },
  {
    name: 'block_all_attachments overrides an empty list',
    file: 'case.eml',
    opts: { department: { block_all_attachments: true, blocked_extensions: [] } },
    blocked: ['REPORT.ExE'],
    quarantined: 1,
  },
  { name: 'scan = inbound leaves outbound mail alone', file: 'case.eml', opts: { direction: 'outbound' }, blocked: [], quarantined: 0 },
  {
    name: 'scan = inbound_and_outbound scans outbound mail',
    file: 'case.eml',
    opts: { direction: 'outbound', department: { ...BASE, scan: 'inbound_and_outbound' } },
    blocked: ['REPORT.ExE'],
    quarantined: 1,
  },
  { name: 'action = delete keeps nothing', file: 'case.eml', opts: { department: { ...BASE, action: 'delete' } }, blocked: ['REPORT.ExE'], quarantined: 0 },
  {
    name: 'action = delete on a spooled archive keeps nothing',
    file: 'zip-with-exe.eml',
    opts: { department: { ...BASE, action: 'delete' } },
    blocked: ['documents.zip'],
    quarantined: 0,
  },
  {
    name: 'a partition allow supersedes a department block',
    file: 'case.eml',
    opts: { partition: { allowed_extensions: ['exe'] } },
    blocked: [],
    quarantined: 0,
  },
  {
    name: 'a partition block supersedes a department allow',
    file: 'clean.eml',
    opts: { partition: { blocked_extensions: ['.pdf'] }, department: { allowed_extensions: ['.pdf'] } },
    blocked: ['report.pdf'],
    quarantined: 1,
  },
  {
    name: 'a partition allow exempts from block_all_attachments',
    file: 'clean.eml',
    opts: { partition: { allowed_extensions: ['.pdf'] }, department: { block_all_attachments: true } },
    blocked: [],
    quarantined: 0,
  },
  {
    name: 'the partition file applies when the department has no section',
    file: 'clean.eml',
    opts: { partition: { blocked_extensions: ['.pdf'], action: 'delete' }, department: null },
    blocked: ['report.pdf'],
    quarantined: 0,
  },
  {
    name: 'a PE named .pdf passes when no PE extension is listed',
    file: 'pe-as-pdf.eml',
    opts: { department: { blocked_extensions: ['.vbs'] } },
    blocked: [],
    quarantined: 0,
  },
];

for (const row of settings) {
  test(`settings: ${row.name}`, async () => {
    const r = await run(row.file, row.opts);
    try {
      assert.deepEqual(blockedNames(r), row.blocked);
      assert.equal((await r.store.listQuarantine()).length, row.quarantined);
      if (row.blocked.length === 0) assert.ok(r.output.equals(readFileSync(fixture('attachments', row.file))));
      if (row.quarantined === 0) assert.deepEqual((await storeLeftovers(r.store)).quarantineChunks, []);
    } finally {
      await r.store.close();
    }
  });
}

test('a dry run says what would be blocked and changes and writes nothing', async () => {
  const r = await run('zip-with-exe.eml', { dryRun: true });
  try {
    assert.deepEqual(blockedNames(r), ['documents.zip']);
    assert.equal(r.found[0]!.action, 'would be quarantined');
    assert.match(r.ctx.findings['attachments']!.summary.join(' '), /"documents\.zip" would be quarantined: archive contains setup\.exe/);
    assert.ok(r.output.equals(readFileSync(fixture('attachments', 'zip-with-exe.eml'))));
    assert.deepEqual((await storeLeftovers(r.store)).quarantineChunks, []);
  } finally {
    await r.store.close();
  }
});

test('the section schema normalises extensions and refuses outbound-only scanning with the reason', () => {
  const s = attachmentsSectionSchema.parse({ blocked_extensions: ['EXE', '.Vbs', ' js '] });
  assert.deepEqual(s.blocked_extensions, ['.exe', '.vbs', '.js']);
  assert.equal(s.scan, 'inbound');
  assert.equal(s.action, 'quarantine');
  const bad = attachmentsSectionSchema.safeParse({ scan: 'outbound' });
  assert.equal(bad.success, false);
  assert.match(bad.error!.issues[0]!.message, /outbound-only scanning is not allowed.*You cannot block only the outgoing attachments/);
  assert.equal(attachmentsSectionSchema.safeParse({ blocked_extension: ['.exe'] }).success, false, 'unknown keys are errors');
  assert.equal(attachmentsSectionSchema.safeParse({ blocked_extensions: ['a/b'] }).success, false);
});

test('_AttachmentFileNames marks blocked attachments', () => {
  assert.deepEqual(
    attachmentFileNames([
      { fileName: 'a.pdf', contentType: 'application/pdf', size: 1 },
      { fileName: 'b.exe', contentType: 'application/octet-stream', size: 2, blocked: true },
    ]),
    ['a.pdf', 'b.exe [blocked]'],
  );
});

test('content is sniffed from the bytes a mail client decodes: base64 padded line by line', async () => {
  const { runStages } = await import('./helpers/pipeline.js');
  const { simpleParser } = await import('mailparser');
  // A PE executable named .pdf; each byte encoded on its own line with its padding (`TQ==`), which
  // libbase64 (mailparser, mail clients) decodes run by run. A decoder that dropped the `=` read garbage.
  const pe = Buffer.concat([Buffer.from('MZ'), Buffer.alloc(62), Buffer.from('PE\0\0'), Buffer.alloc(200, 0x41)]);
  const lines: string[] = [];
  for (let at = 0; at < pe.length; at++) lines.push(pe.subarray(at, at + 1).toString('base64'));
  const message = [
    'From: a@example.org',
    'To: support@example.com',
    'Subject: statement',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="b"',
    '',
    '--b',
    'Content-Type: text/plain',
    '',
    'see attached',
    '--b',
    'Content-Type: application/pdf; name="statement.pdf"',
    'Content-Disposition: attachment; filename="statement.pdf"',
    'Content-Transfer-Encoding: base64',
    '',
    ...lines,
    '--b--',
    '',
  ].join('\r\n');
  const parsed = await simpleParser(Buffer.from(message));
  assert.ok(parsed.attachments[0]!.content.equals(pe), 'mailparser decodes the padded runs into the executable');
  const stages = [attachmentsStage(attachmentsSectionSchema.parse({ blocked_extensions: ['exe'] }), undefined)];
  const run = await runStages(Buffer.from(message), stages);
  const found = run.ctx.findings['attachments']!['attachments'] as AttachmentFinding[];
  assert.equal(found[0]?.blocked, true, JSON.stringify(found));
  assert.match(found[0]!.rule ?? '', /exe|executable/i);
});

test('the original of a wrapping message is judged alike whatever the chunks it is read in (1 byte up), and its harmless twins pass', async () => {
  const rules = attachmentRules(attachmentsSectionSchema.parse({ blocked_extensions: ['.exe'] }), undefined);
  for (const c of hiddenExecutableCases().filter((h) => h.bytes.length < 100_000)) {
    const whole = await blockedInOriginal(Readable.from([c.bytes]), rules);
    assert.equal(Boolean(whole), c.hides, `${c.name}: ${whole?.rule}`);
    if (whole) assert.match(`${whole.fileName}: ${whole.rule}`, /\.exe|executable/, c.name);
    for (const size of [1, 3, 7, 64, 4096]) {
      const chunks: Buffer[] = [];
      for (let at = 0; at < c.bytes.length; at += size) chunks.push(c.bytes.subarray(at, at + size));
      assert.deepEqual(await blockedInOriginal(Readable.from(chunks), rules), whole, `${c.name} in chunks of ${size}`);
    }
  }
});
