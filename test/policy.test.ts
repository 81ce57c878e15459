import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, rename } from 'node:fs/promises';
import path from 'node:path';
import nodemailer from 'nodemailer';
import type { MessageMeta } from '../storage/records.js';
import { capturingLogger, runCli, startTestGateway } from './helpers/gateway.js';
import { fixture, projectRoot, tempDir } from './helpers/paths.js';
import { parseWrapped, storedMessage } from './helpers/wrapped.js';
import { hiddenExecutableCases } from './helpers/fuzz.js';

const phrasePolicy = (failure: string) => `
[delivery_exceptions]
[[delivery_exceptions.phrase]]
name = "zebra"
type = "subject"
phrase = "Zebra alert"
failure = "${failure}"
`;

/** Saves a file the way editors do: write a new file, rename it over the old one. */
async function save(file: string, text: string): Promise<void> {
  await writeFile(`${file}.tmp`, text);
  await rename(`${file}.tmp`, file);
}

async function send(port: number, subject: string): Promise<MessageMeta['id']> {
  const info = await nodemailer.createTransport({ host: '127.0.0.1', port, ignoreTLS: true }).sendMail({
    envelope: { from: 'someone@example.org', to: ['support@example.com'] },
    raw: `From: someone@example.org\r\nTo: support@example.com\r\nSubject: ${subject}\r\n\r\nbody\r\n`,
  });
  return /queued as (\S+)/.exec(info.response)![1]!;
}

test('a policy edit takes effect for the next message; a broken edit is refused and the last good policy stays', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const policyFile = path.join(dir, 'support.toml');
  await writeFile(policyFile, phrasePolicy('permanent'));
  const log = capturingLogger();
  const gw = await startTestGateway(
    `[[department]]\nname = "support"\npolicy = ${JSON.stringify(policyFile)}\n\n[[alias]]\nname = "support"\naddress = "support@example.com"\ndepartment = "support"\n`,
    { logger: log.logger },
  );
  t.after(() => gw.cleanup());

  const first = await gw.store.getMessage(await send(gw.port, 'Zebra alert: first'));
  assert.ok(first?.tags.includes('email-permanent-undeliverable'), `tagged permanent: ${first?.tags}`);
  assert.equal(first?.source.alias, 'support');

  await save(policyFile, phrasePolicy('temporary'));
  await log.waitFor((e) => e.msg === 'policy reloaded; the next message follows it');
  const second = await gw.store.getMessage(await send(gw.port, 'Zebra alert: second'));
  assert.ok(second?.tags.includes('email-temporary-undeliverable'), `tagged temporary after the edit: ${second?.tags}`);

  await save(policyFile, phrasePolicy('sometimes'));
  const refused = await log.waitFor((e) => typeof e.msg === 'string' && e.msg.startsWith('policy edit refused'));
  assert.match(String(refused.msg), /support\.toml:7: delivery_exceptions\.phrase\[0\]\.failure: expected .*permanent.*temporary.*, got "sometimes"/);
  const third = await gw.store.getMessage(await send(gw.port, 'Zebra alert: third'));
  assert.ok(third?.tags.includes('email-temporary-undeliverable'), `the last good policy is still in force: ${third?.tags}`);
});

test('policy check validates a file and names file, line and key of a problem', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const bad = path.join(dir, 'bad.toml');
  await writeFile(bad, '[attachments]\nblocked_extensions = [".exe"]\nblock_all = true\n');
  const r = await runCli(['policy', 'check', bad]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /bad\.toml:3: attachments\.block_all: unknown key/);

  for (const example of ['partition.toml', 'department.toml']) {
    const ok = await runCli(['policy', 'check', path.join(projectRoot, 'policy', 'examples', example)]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout.toString(), /: ok/);
  }
});

const examplePolicy = (name: string) => path.join(projectRoot, 'policy', 'examples', name);

test("a department's own masking patterns are added to the partition's, as the example policies say", async (t) => {
  const gw = await startTestGateway(
    `[partition]\npolicy = ${JSON.stringify(examplePolicy('partition.toml'))}\n\n[[department]]\nname = "support"\npolicy = ${JSON.stringify(examplePolicy('department.toml'))}\n\n` +
      `[[alias]]\nname = "support"\naddress = "support@example.com"\ndepartment = "support"\n`,
  );
  t.after(() => gw.cleanup());
  // department.toml has [masking] with its contract-number pattern and no `enabled`: the partition sets departments_manage_own.
  const raw =
    'From: a@example.org\r\nTo: support@example.com\r\nSubject: contract\r\n\r\nContract K-123456, customer CUST-12345678, card 4111 1111 1111 1111.\r\n';
  const id = await sendRaw(gw.port, raw);
  const { meta, raw: stored } = await storedMessage(gw.store, id);
  assert.equal(meta.source.alias, 'support');
  assert.match(stored.toString(), /^Contract \*-\*\*\*\*\*\*, customer ####-######78, card \*\*\*\* \*\*\*\* \*\*\*\* 1111\.\r$/m);
  assert.deepEqual((meta.findings.masking as { masked?: Record<string, number> }).masked, { 'contract-number': 1, 'customer-id': 1, card: 1 });
});

test("policy check warns, naming the file, line and key, when a department's masking patterns cannot apply", async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const partition = path.join(dir, 'partition.toml');
  await writeFile(partition, '[masking]\nenabled = true\n');
  const department = examplePolicy('department.toml');
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(configFile, `[partition]\npolicy = "partition.toml"\n\n[[department]]\nname = "support"\npolicy = ${JSON.stringify(department)}\n`);
  const line = (await readFile(department, 'utf8')).split('\n').indexOf('[[masking.pattern]]') + 1;

  // The department named in the configuration is checked against the configuration's partition policy.
  const r = await runCli(['policy', 'check', department, '--config', configFile]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout.toString(), /department\.toml: ok/);
  assert.equal(
    r.stderr,
    `warning: ${department}:${line}: masking.pattern: the department's patterns (contract-number) will not be applied: the partition policy ${partition} ` +
      'does not let departments manage their own (it needs departments_manage_own = true in [masking])\n',
  );

  // --partition names the partition policy directly; the example one lets departments manage their own.
  const explicit = await runCli(['policy', 'check', department, '--partition', partition]);
  assert.match(explicit.stderr, /masking\.pattern: the department's patterns \(contract-number\) will not be applied/);
  const allowed = await runCli(['policy', 'check', department, '--partition', examplePolicy('partition.toml')]);
  assert.equal(allowed.code, 0);
  assert.equal(allowed.stderr, '');

  // A configuration without a partition policy lets no department manage its own patterns.
  await writeFile(configFile, `[[department]]\nname = "support"\npolicy = ${JSON.stringify(department)}\n`);
  const none = await runCli(['policy', 'check', department, '--config', configFile]);
  assert.match(none.stderr, new RegExp(`^warning: .*department\\.toml:${line}: masking\\.pattern: .*no partition policy`));
});

test('policy test says stage by stage what would happen, without storing anything', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(
    configFile,
    `data_dir = "data"\n[partition]\npolicy = ${JSON.stringify(path.join(projectRoot, 'policy', 'examples', 'partition.toml'))}\n\n[[department]]\nname = "support"\npolicy = ${JSON.stringify(path.join(projectRoot, 'policy', 'examples', 'department.toml'))}\n`,
  );
  const r = await runCli(['policy', 'test', fixture('policy', 'bounce-with-exe.eml'), '--department', 'support', '--config', configFile]);
  assert.equal(r.code, 0, r.stderr);
  const text = r.stdout.toString();
  assert.match(text, /^attachments:\n.*tool\.exe/m);
  assert.match(text, /delivery_exceptions:\n.*email-permanent-undeliverable.*decided by bounce_text/);
  assert.match(text, /masking:\n.*card/);
  assert.match(text, /result: would be stored/);

  const json = await runCli(['policy', 'test', fixture('policy', 'bounce-with-exe.eml'), '--department', 'support', '--json', '--config', configFile]);
  const report = JSON.parse(json.stdout.toString()) as { stages: { stage: string }[]; tags: string[] };
  assert.deepEqual(
    report.stages.map((s) => s.stage),
    ['wrapping', 'attachments', 'delivery_exceptions', 'masking'],
  );
  assert.ok(report.tags.includes('email-permanent-undeliverable'));

  // A message wrapped as unparsable with a program in it: the original would be blocked whole, as ingest does.
  const hidden = path.join(dir, 'hidden.eml');
  await writeFile(hidden, hiddenExecutableCases().find((c) => c.name === 'header_undecodable, a name= in raw GBK ending in .exe')!.bytes);
  const wrapped = (await runCli(['policy', 'test', hidden, '--config', configFile])).stdout.toString();
  assert.match(wrapped, /^result: would be wrapped: header_undecodable: /m);
  assert.match(wrapped, /^original: would be quarantined whole: the original contains ".*\.exe"/m);
  const clean = (await runCli(['policy', 'test', fixture('unparsable', 'header-undecodable.eml'), '--config', configFile])).stdout.toString();
  assert.match(clean, /^result: would be wrapped: header_undecodable: /m);
  assert.doesNotMatch(clean, /^original:/m, 'nothing in it is blocked');

  const unknown = await runCli(['policy', 'test', fixture('policy', 'bounce-with-exe.eml'), '--department', 'nope', '--config', configFile]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /no department "nope"/);
  assert.equal((await import('node:fs')).existsSync(path.join(dir, 'data')), false, 'nothing stored, not even a store created');
});

test('where masking is on, the original attached to a wrapping message is masked too', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const policyFile = path.join(dir, 'partition.toml');
  await writeFile(policyFile, '[masking]\nenabled = true\n');
  const gw = await startTestGateway(`[partition]\npolicy = ${JSON.stringify(policyFile)}\n`);
  t.after(() => gw.cleanup());
  const raw =
    'From: a@example.org\r\nMessage-ID: <5105105105105100@mail.example.org>\r\nX-Ticket: 4242 4242 4242 4242\r\n' +
    'Subject: card 4111 1111 1111 1111 [mailgate quarantine test message]\r\n\r\n' +
    'My card is 5500-0000-0000-0004, see https://shop.example/pay?card=4012888888881881 thanks.\r\n';
  const id = await sendRaw(gw.port, raw);
  const { meta, raw: stored } = await storedMessage(gw.store, id);
  assert.deepEqual(meta.tags, ['wrapped']);
  const view = await parseWrapped(stored, meta);
  const original = view.original.toString('latin1');
  assert.doesNotMatch(stored.toString('latin1') + original, /4111 1111 1111 1111|5500-0000-0000-0004/);
  assert.match(original, /\*\*\*\* \*\*\*\* \*\*\*\* 1111/);
  assert.match(original, /\*\*\*\*-\*\*\*\*-\*\*\*\*-0004/);
  // Header fields but the subject, and URLs, keep their digits (issue 17 #4).
  assert.match(original, /^Message-ID: <5105105105105100@mail\.example\.org>\r\nX-Ticket: 4242 4242 4242 4242\r$/m);
  assert.match(original, /pay\?card=4012888888881881 thanks/);
  assert.deepEqual((meta.findings.masking as { masked?: Record<string, number> } | undefined)?.masked, { card: 2 });
});

async function sendRaw(port: number, raw: string): Promise<string> {
  const info = await nodemailer
    .createTransport({ host: '127.0.0.1', port, ignoreTLS: true })
    .sendMail({ envelope: { from: 'a@example.org', to: ['support@example.com'] }, raw });
  return /queued as (\S+)/.exec(info.response)![1]!;
}
