import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { simpleParser } from 'mailparser';
import { startTestGateway } from './helpers/gateway.js';
import { startUpstream } from './helpers/upstream.js';
import { submissionToml, submit, waitDelivered } from './helpers/outbound.js';
import { tempDir } from './helpers/paths.js';

const CARD = '4111 1111 1111 1111';

test('outbound mail is masked and its blocked attachments removed only where the department policy covers outbound mail', async (t) => {
  const { dir, cleanup } = await tempDir();
  const upstream = await startUpstream();
  const files = {
    partition: path.join(dir, 'partition.toml'),
    sales: path.join(dir, 'sales.toml'),
    support: path.join(dir, 'support.toml'),
  };
  // The partition lets departments manage their own masking; each department decides about outbound mail.
  await writeFile(files.partition, '[masking]\nenabled = false\ndepartments_manage_own = true\n');
  await writeFile(
    files.sales,
    '[attachments]\nblocked_extensions = [".exe"]\nscan = "inbound_and_outbound"\naction = "quarantine"\n\n[masking]\nenabled = true\noutbound = true\nbuiltin = ["card"]\n',
  );
  await writeFile(
    files.support,
    '[attachments]\nblocked_extensions = [".exe"]\nscan = "inbound"\n\n[masking]\nenabled = true\noutbound = false\nbuiltin = ["card"]\n',
  );
  const alias = (name: string) => `
[[alias]]
name = "${name}"
address = "${name}@example.com"
department = "${name}"
[alias.outgoing]
host = "127.0.0.1"
port = ${upstream.port}
`;
  const gw = await startTestGateway(`
[partition]
policy = ${JSON.stringify(files.partition)}
[[department]]
name = "sales"
policy = ${JSON.stringify(files.sales)}
[[department]]
name = "support"
policy = ${JSON.stringify(files.support)}
${alias('sales')}${alias('support')}${submissionToml()}`);
  t.after(async () => {
    await gw.cleanup();
    await upstream.close();
    await cleanup();
  });
  const port = gw.gateway.submission!.addresses[0]!.port;
  const mail = (from: string) => ({
    from,
    to: 'customer@example.org',
    subject: 'Your refund',
    text: `We refunded the card ${CARD}.\r\n`,
    attachments: [{ filename: 'setup.exe', content: Buffer.from('MZ fake program') }],
  });
  const salesId = await submit(port, mail('sales@example.com'));
  const supportId = await submit(port, mail('support@example.com'));
  await waitDelivered(gw.store, salesId);
  await waitDelivered(gw.store, supportId);
  const [first, second] = await upstream.waitFor(2);
  const byFrom = new Map([first!, second!].map((m) => [m.mailFrom, m]));

  const sales = await simpleParser(byFrom.get('sales@example.com')!.raw);
  assert.doesNotMatch(sales.text ?? '', new RegExp(CARD), 'sales masks outbound mail');
  assert.match(sales.text ?? '', /\*{4} \*{4} \*{4} 1111/);
  assert.equal(
    sales.attachments.some((a) => a.filename === 'setup.exe'),
    false,
    'sales blocks .exe going out',
  );
  const salesMeta = (await gw.store.getMessage(salesId))!;
  assert.equal(salesMeta.attachments.find((a) => a.fileName === 'setup.exe')?.blocked, true);
  assert.ok(salesMeta.findings.masking, 'the findings are on the stored outbound message');

  const support = await simpleParser(byFrom.get('support@example.com')!.raw);
  assert.match(support.text ?? '', new RegExp(CARD), 'support does not mask outbound mail');
  assert.equal(support.attachments.find((a) => a.filename === 'setup.exe')?.content.toString(), 'MZ fake program', 'support scans inbound only');
});
