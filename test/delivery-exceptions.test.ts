/**
 * The delivery-exception stage (Cisco guide, "Delivery Exceptions") on messages of our own:
 * inline ones and the fixtures under test/fixtures/delivery-exceptions/, each written for the
 * case it tests. Real bounces: test/delivery-exceptions-flufl.test.ts (installed from Debian)
 * and test/corpora/delivery-exceptions.test.ts (the shared corpora, `npm run test:corpora`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import nodemailer from 'nodemailer';
import { deliveryExceptionsSectionSchema } from '../policy/delivery-exceptions/stage.js';
import { parseDeliveryStatus, recipientFailure } from '../policy/delivery-exceptions/delivery-status.js';
import { bounceTextVerdict, htmlText } from '../policy/delivery-exceptions/text.js';
import { addressTable, subjectTable } from './delivery-exceptions-table.js';
import { assertBounces, check, mail, type BounceCase } from './helpers/delivery-exceptions.js';
import { runCli, startTestGateway } from './helpers/gateway.js';
import { fixture } from './helpers/paths.js';

const here = (name: string) => ({ file: fixture('delivery-exceptions', name) });

test('every predefined address phrase in the From local part tags the message with its failure type', async () => {
  assert.equal(addressTable.length, 16);
  for (const [phrase, failure] of addressTable) {
    const from = `x${phrase}.7@example.net`;
    const r = await check(mail({ From: `Robot <${from}>` }));
    assert.equal(r.failure, failure, `${phrase}: ${r.findings.summary.join(' ')}`);
    assert.ok(r.tags.includes('exception-queue'), phrase);
    const m = r.findings.phraseMatches.find((x) => x.name === phrase);
    assert.ok(m, `${phrase} recorded`);
    assert.equal(m.where, 'From address');
    assert.equal(m.address, from);
  }
});

test('every predefined subject phrase tags the message with its failure type', async () => {
  assert.equal(subjectTable.length, 111);
  for (const [phrase, failure] of subjectTable) {
    const r = await check(mail({ Subject: `Re: ${phrase} (ticket 4471)` }));
    assert.equal(r.failure, failure, `${phrase}: ${r.findings.summary.join(' ')}`);
    const m = r.findings.phraseMatches.find((x) => x.name === phrase);
    assert.ok(m, `${phrase} recorded`);
    assert.equal(m.where, 'subject');
    assert.equal(r.findings.decidedBy, 'phrase');
  }
});

test("the guide's postmaster examples: only the part before @ is compared", async () => {
  const only = { use_predefined: false, phrase: [{ name: 'pm', type: 'address', phrase: 'postmaster', failure: 'temporary' }] };
  for (const [from, tagged] of [
    ['postmaster@abc.com', true],
    ['mail-postmaster.xyz@abc.com', true],
    ['exception@postmaster.com', false],
  ] as const) {
    for (const partition of [undefined, only]) {
      const r = await check(mail({ From: from }), { partition, mailFrom: 'someone@example.org' });
      assert.equal(r.failure, tagged ? 'temporary' : undefined, `${from}: ${r.findings.summary.join(' ')}`);
    }
  }
});

test('address phrases are checked against the From address only: a VERP envelope sender or Return-Path does not tag', async () => {
  // Issue 11: customer mail sent through a mailing service with a VERP envelope sender.
  const verp = 'bounces+unknown-9f3a=example.org@esp.example';
  const r = await check(mail({ 'Return-Path': `<${verp}>`, From: 'Shop <orders@shop.example>', Subject: 'Your order has shipped' }), { mailFrom: verp });
  assert.deepEqual(r.tags, [], r.findings.summary.join(' '));
  assert.deepEqual(r.findings.phraseMatches, []);
  assert.match(r.findings.summary[0]!, /^Not a delivery exception/);
  // A mail system's name in the envelope alone says nothing either...
  assert.equal((await check(mail(), { mailFrom: 'mailer-daemon@relay.example' })).failure, undefined);
  assert.equal((await check(mail({ 'Return-Path': '<postmaster@relay.example>' }), { source: 'imap' })).failure, undefined);
  // ...while in From it matches, and the findings say which address.
  const from = await check(mail({ From: 'MAILER-DAEMON@relay.example' }));
  const m = from.findings.phraseMatches.find((x) => x.name === 'Mailer');
  assert.equal(m?.where, 'From address');
  assert.equal(m?.address, 'MAILER-DAEMON@relay.example');
  // The null envelope sender stays a structural signal (RFC 5321 section 4.5.5).
  const nullSender = await check(mail(), { mailFrom: '' });
  assert.equal(nullSender.findings.decidedBy, 'empty_return_path');
  assert.equal(nullSender.failure, 'temporary');
});

test('matching ignores case, Unicode included, and reads encoded-word and folded subjects', async () => {
  const cases: [subject: string, name: string][] = [
    ['UNDELIVERABLE: order', 'Undeliverable'],
    ['undeliverable: order', 'Undeliverable'],
    ['ADRESSÄNDERUNG', 'Adressänderung'],
    ['Adressa\u0308nderung (decomposed)', 'Adressänderung'],
    ['=?ISO-8859-1?Q?R=E9ponse_automatique?=', 'Réponse automatique'],
    ['=?ISO-8859-1?Q?R=E9ponse_automatique?=', 'ponse_automatique'],
    ['=?UTF-8?B?QWJ3ZXNlbmhlaXRzbm90aXo6IE1heCBNdXN0ZXI=?=', 'Abwesenheitsnotiz'],
    ['=?UTF-8?Q?Undeliver?= =?UTF-8?Q?able?=', 'Undeliverable'],
    ['Delivery Status\r\n Notification (Failure)', 'Delivery Status Notification'],
    ['Automatisk svar: ferie', 'Automatisk_svar'],
    ['=?utf-8?Q?D=C3=ACkuji_za_maila?=', 'Dìkuji za maila'],
  ];
  for (const [subject, name] of cases) {
    const r = await check(mail({ Subject: subject }));
    assert.ok(
      r.findings.phraseMatches.some((m) => m.name === name),
      `${JSON.stringify(subject)} should match ${name}: ${r.findings.summary.join(' ')}`,
    );
    assert.ok(r.failure, subject);
  }
  const plain = await check(mail({ Subject: 'Re: my order 4471' }));
  assert.equal(plain.failure, undefined);
  assert.deepEqual(plain.tags, []);
  assert.match(plain.findings.summary[0]!, /Not a delivery exception/);
});

test('IT adds and removes phrases; a partition removal applies to every department', async () => {
  const added = { phrase: [{ name: 'zebra', type: 'subject', phrase: 'Zebra alert', failure: 'temporary', description: 'our monitoring' }] };
  assert.equal((await check(mail({ Subject: 'ZEBRA ALERT: disk' }), { department: added })).failure, 'temporary');
  const addr = { phrase: [{ name: 'noreply', type: 'address', phrase: 'no-reply', failure: 'permanent' }] };
  assert.equal((await check(mail({ From: 'no-reply@shop.example' }), { partition: addr })).failure, 'permanent');

  const admin = mail({ Subject: 'Admin question' });
  assert.equal((await check(admin)).failure, 'permanent');
  assert.equal((await check(admin, { partition: { remove: ['Admin'] } })).failure, undefined);
  // A department's own removal is its own: another department still tags.
  assert.equal((await check(admin, { department: { remove: ['Admin'] } })).failure, undefined);
  assert.equal((await check(admin, { department: { remove: ['system'] } })).failure, 'permanent');
  // The partition removed "system": no department gets it back, even one that removes nothing.
  const system = mail({ Subject: 'system outage' });
  assert.equal((await check(system, { partition: { remove: ['system'] }, department: { remove: [], use_predefined: true } })).failure, undefined);
  // A department cannot remove what the partition added for everyone.
  const zebra = { phrase: added.phrase };
  assert.equal((await check(mail({ Subject: 'Zebra alert' }), { partition: zebra, department: {} })).failure, 'temporary');
  assert.throws(() => deliveryExceptionsSectionSchema.parse({ remove: ['zebra'] }), /remove/);
  // use_predefined = false anywhere drops the guide's list; enabled = false turns the stage off.
  assert.equal((await check(admin, { partition: { use_predefined: false } })).failure, undefined);
  const off = await check(admin, { department: { enabled: false } });
  assert.equal(off.failure, undefined);
  assert.match(off.findings.summary[0]!, /off/);
});

test('policy errors name the key and the offending value', () => {
  const issues = (s: unknown) => {
    const r = deliveryExceptionsSectionSchema.safeParse(s);
    assert.equal(r.success, false);
    return r.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  };
  assert.match(issues({ remove: ['Admin', 'Nope'] }).join('\n'), /^remove\.1: the name of a predefined phrase/m);
  assert.match(issues({ remove: ['admin'] }).join('\n'), /did you mean "Admin"/);
  assert.match(issues({ phrase: [{ name: 'x', type: 'address', phrase: 'bounce@', failure: 'permanent' }] }).join('\n'), /phrase\.0\.phrase: .*"@"/);
  assert.match(
    issues({ phrase: [{ name: 'Admin', type: 'subject', phrase: 'Admin', failure: 'permanent' }] }).join('\n'),
    /phrase\.0\.name: a name not used by a predefined phrase/,
  );
  const twice = { name: 'x', type: 'subject', phrase: 'x', failure: 'permanent' };
  assert.match(issues({ phrase: [twice, twice] }).join('\n'), /phrase\.1\.name: a name not used by another phrase/);
  assert.equal(issues({ phrase_matches: 'sometimes' }).length, 1);
  assert.equal(issues({ colour: 'red' }).length, 1);
  assert.deepEqual(deliveryExceptionsSectionSchema.parse({}).phrase_matches, 'alone');
});

test('DSNs: the failure type comes from the per-recipient status, failed recipients are listed', async () => {
  const cases: BounceCase[] = [
    {
      name: 'Sendmail delay warning',
      msg: here('sendmail-delayed.eml'),
      failure: 'temporary',
      failed: ['customer@slow.example.org'],
      decidedBy: 'delivery_status',
    },
    {
      name: 'Exchange, two recipients',
      msg: here('exchange-two-recipients.eml'),
      failure: 'permanent',
      failed: ['j.doe@contoso.example', 'board@contoso.example'],
      decidedBy: 'delivery_status',
    },
    {
      name: 'base64 delivery-status part',
      msg: here('relay-base64-status.eml'),
      failure: 'permanent',
      failed: ['blocked@strict.example'],
      decidedBy: 'delivery_status',
    },
    {
      name: 'Action: failed with a 4.x.x status',
      msg: here('dsn-failed-447.eml'),
      failure: 'permanent',
      failed: ['away@far.example.org'],
      decidedBy: 'delivery_status',
    },
    {
      name: 'a bare message/delivery-status',
      msg: here('bare-delivery-status.eml'),
      failure: 'permanent',
      failed: ['nobody@client.example'],
      decidedBy: 'delivery_status',
    },
    {
      name: 'Exim: X-Failed-Recipients',
      msg: mail(
        { From: 'Mail Delivery System <Mailer-Daemon@relay.example.net>', Subject: 'Mail delivery failed', 'X-Failed-Recipients': 'gone@far.example.org' },
        'A message that you sent could not be delivered.',
      ),
      failure: 'permanent',
      failed: ['gone@far.example.org'],
      decidedBy: 'x_failed_recipients',
    },
  ];
  await assertBounces(cases);
});

test('delivery-status parts as real MTAs write them: no blank lines, many blank lines, a base64 tail, non-standard actions', async () => {
  const report = (status: string) =>
    mail(
      { From: 'MAILER-DAEMON@mx.example.net', Subject: 'Returned mail', 'Content-Type': 'multipart/report; report-type=delivery-status; boundary="b"' },
      `--b\r\nContent-Type: text/plain\r\n\r\nReturned.\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n${status}\r\n--b--`,
    );
  // Recipient blocks run together: a repeated field starts the next recipient.
  const joined = await check(
    report(
      'Reporting-MTA: dns; mx.example.net\r\nFinal-Recipient: rfc822; a@x.example\r\nAction: delayed\r\nStatus: 4.4.1\r\nFinal-Recipient: rfc822; b@x.example\r\nAction: failed\r\nStatus: 5.1.1',
    ),
  );
  assert.deepEqual(
    joined.findings.deliveryStatus?.recipients.map((r) => [r.finalRecipient, r.failure]),
    [
      ['a@x.example', 'temporary'],
      ['b@x.example', 'permanent'],
    ],
  );
  assert.equal(joined.failure, 'permanent');
  const spaced = await check(
    report('Reporting-MTA: dns; mx.example.net\r\n\r\n\r\n\r\nFinal-Recipient: rfc822; c@x.example\r\nAction: failed\r\nStatus: 5.2.1\r\n\r\n\r\n'),
  );
  assert.deepEqual(spaced.findings.failedRecipients, ['c@x.example']);
  // Outlook relayed by Postfix: a Content-Transfer-Encoding line among the fields, base64 after it.
  const tail = Buffer.from('Final-Recipient: rfc822; d@x.example\r\nAction: failed\r\nStatus: 5.4.1\r\n').toString('base64');
  const b64 = await check(report(`Reporting-MTA: dns; mx.example.net\r\nContent-Transfer-Encoding: base64\r\n\r\n${tail}`));
  assert.deepEqual(b64.findings.failedRecipients, ['d@x.example']);

  // RFC 3464 section 2.3.3: failed is final whatever the status class; delayed is temporary.
  assert.equal(recipientFailure({ action: 'failed', status: '4.4.7' }), 'permanent');
  assert.equal(recipientFailure({ action: 'delayed', status: '5.0.0' }), 'temporary');
  // What real reports write instead: "failure", "error", an SMTP reply code as the status.
  assert.equal(recipientFailure({ action: 'failure', status: '553 Exceeded maximum inbound message size' }), 'permanent');
  assert.equal(recipientFailure({ action: 'error', status: '5.0.0' }), 'permanent');
  assert.equal(recipientFailure({ status: '452 mailbox full' }), 'temporary');
  assert.equal(recipientFailure({ action: 'delivered', status: '2.0.0' }), undefined);
  assert.equal(recipientFailure({ action: 'deliverable', status: '2.1.5' }), undefined);
  assert.equal(parseDeliveryStatus('Final-Recipient: rfc822; e@x.example\nAction: failure\nStatus: 553 Exceeded').recipients[0]?.failure, 'permanent');
});

test('structure wins over the failure type of a matching phrase, and the findings say so', async () => {
  // The guide's appendix types "could not send message" permanent; the report says delayed.
  const r = await check(here('sendmail-delayed.eml'));
  assert.ok(r.findings.phraseMatches.some((m) => m.name === 'could not send message' && m.failure === 'permanent'));
  assert.equal(r.failure, 'temporary');
  assert.ok(
    r.findings.summary.some((s) => /The delivery status report wins over the phrase failure type \(permanent\)/.test(s)),
    r.findings.summary.join('\n'),
  );
  // "Undeliverable" is temporary in the appendix; the report says Action: failed.
  const undeliverable = await check(here('dsn-failed-447.eml'));
  assert.ok(undeliverable.findings.phraseMatches.some((m) => m.name === 'Undeliverable' && m.failure === 'temporary'));
  assert.equal(undeliverable.failure, 'permanent');
  assert.equal(undeliverable.findings.decidingEvidence, 'Action: failed, Status: 4.4.7 for away@far.example.org');
  const ex = await check(here('exchange-two-recipients.eml'));
  assert.deepEqual(
    ex.findings.deliveryStatus?.recipients.map((x) => [x.finalRecipient, x.originalRecipient, x.action, x.status, x.failure]),
    [
      ['jdoe@contoso.example', 'j.doe@contoso.example', 'failed', '5.1.10', 'permanent'],
      ['board@contoso.example', 'board@contoso.example', 'delayed', '4.4.7', 'temporary'],
    ],
  );
});

test('plain-text bounces of MTAs that write no report are typed by their status codes and sentences', async () => {
  const cases: [file: string, failure: 'permanent' | 'temporary', evidence: RegExp][] = [
    // qmail: "failure notice" and "Mailer" are temporary in the appendix.
    ['qmail-permanent.eml', 'permanent', /qmail: permanent error: "This is a permanent error; I've given up"/],
    ['exim-permanent.eml', 'permanent', /permanent error/],
    ['exim-delay.eml', 'temporary', /delay warning/],
    ['postfix-said-550.eml', 'permanent', /5\.1\.1|said: 550/],
    ['exchange-text.eml', 'permanent', /5\.1\.1/],
    ['text-4xx-code.eml', 'temporary', /4\.3\.0/],
  ];
  for (const [file, failure, evidence] of cases) {
    const r = await check(here(file), { source: 'imap' });
    assert.equal(r.failure, failure, `${file}: ${r.findings.summary.join(' ')}`);
    assert.equal(r.findings.decidedBy, 'bounce_text', file);
    assert.match(r.findings.decidingEvidence ?? '', evidence, file);
    assert.match(r.findings.summary[0]!, /failure type decided by bounce_text \(the text of the bounce: /, file);
  }
  // Exim quotes the original's subject in a warning; those words are the sender's, not the MTA's.
  const quoted = await check(here('exim-delay.eml'));
  assert.equal(quoted.failure, 'temporary');
});

test('the text of a bounce is decoded as a mail client decodes it: base64 padded line by line is read whole', async () => {
  // Each line its own padded base64 run: a decoder that stops at the first "=" reads only "Hi.".
  const lines = ['Hi.', 'Your message to bob@x.example could not be delivered.', "This is a permanent error; I've given up."];
  const body = lines.map((l) => Buffer.from(`${l}\r\n`).toString('base64')).join('\r\n');
  const r = await check(mail({ From: 'MAILER-DAEMON@mx.example.net', Subject: 'failure notice', 'Content-Transfer-Encoding': 'base64' }, body), {
    source: 'imap',
  });
  assert.equal(r.failure, 'permanent', r.findings.summary.join(' '));
  assert.equal(r.findings.decidedBy, 'bounce_text');
  assert.match(r.findings.decidingEvidence ?? '', /qmail: permanent error/);
});

test('the words of a bounce: sentences and codes, in order of what they say', () => {
  const cases: [text: string, failure: 'permanent' | 'temporary' | undefined][] = [
    ["Hi. This is the qmail-send program.\nThis is a permanent error; I've given up. Sorry it didn't work out.", 'permanent'],
    ["I'm not going to try again; this message has been in the queue too long.", 'permanent'],
    ['The following addresses had permanent fatal errors', 'permanent'],
    ['Delivery to the following recipient failed permanently:', 'permanent'],
    ['retry timeout exceeded', 'permanent'],
    ['    **  THIS IS A WARNING MESSAGE ONLY  **', 'temporary'],
    ['Warning: message still undelivered after 4 hours\nWill keep trying until message is 5 days old', 'temporary'],
    ['Delivery to the following recipient has been delayed:', 'temporary'],
    ['<a@b.example>: host mx.b.example[192.0.2.1] said: 550 5.1.1 User unknown', 'permanent'],
    ['Remote host said: 554 mailbox unavailable', 'permanent'],
    ['#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##', 'permanent'],
    ['Sorry, no mailbox here by that name. (#5.1.1)', 'permanent'],
    ['SMTP error from remote mail server after RCPT TO:<a@b.example>:\n550 user unknown', 'permanent'],
    ['<a@b.example>: 451 4.3.0 temporarily locked', 'temporary'],
    ['Your message could not be delivered.', 'permanent'],
    ['Your message did not reach some or all of the intended recipients.', 'permanent'],
    ['Invalid final delivery userid: a@b.example', 'permanent'],
    ['Die Nachricht konnte nicht zugestellt werden.', 'permanent'],
    // A class-4 code in a bounce that says it gave up: the MTA returned the message.
    ['Could not be delivered: 452 4.2.2 mailbox full', 'permanent'],
    // Neither: versions, addresses and dates are no status codes.
    ['Received by Exim 4.94.2 from 192.0.2.4 on 4.10.2024', undefined],
    ['Thank you for your message. I am out of the office until Monday.', undefined],
    // The returned original says what it likes; only the MTA's own words count.
    ['Delivery report.\n--- Below this line is a copy of the message.\n\nThis is a permanent error in our billing.', undefined],
  ];
  for (const [text, failure] of cases) assert.equal(bounceTextVerdict(text)?.failure, failure, text);

  // Exchange and GroupWise may send HTML only: read as text, scripts and styles left out.
  const html =
    '<html><style>p { color: red }</style><p>Your message <b>did not</b> reach<br>these recipients</p><script>var s = "permanent error";</script></html>';
  assert.equal(htmlText(html).replace(/\s+/g, ' ').trim(), 'Your message did not reach these recipients');
  assert.equal(bounceTextVerdict(htmlText(html))?.rule, 'not delivered');
  assert.equal(htmlText('a &lt;b&gt; &amp; c <unterminated tag and the rest'), 'a <b> & c ');
});

test('the words of a bounce never tag a message by themselves: a customer quoting a bounce is asking a question', async () => {
  const pasted =
    "Hi, I wrote to your sales team and got this back:\r\n\r\n> This is a permanent error; I've given up.\r\n> <sales@example.com>: said: 550 5.1.1 User unknown\r\n\r\nCan you help?";
  const r = await check(mail({ Subject: 'Why does my mail to sales bounce?' }, pasted));
  assert.deepEqual(r.tags, [], r.findings.summary.join(' '));
  // A phrase tags it (Cisco guide), and then the words it quotes type it.
  const phrased = await check(mail({ Subject: 'Returned mail from your sales team' }, pasted));
  assert.equal(phrased.failure, 'permanent');
});

test('a report forwarded by a mail system counts; a bounce a person forwards is their question', async () => {
  // A virus scanner that wraps the bounce it passes on as an attachment (originalmail.eml).
  const scanner = await check(here('forwarded-by-scanner.eml'));
  assert.equal(scanner.failure, 'permanent', scanner.findings.summary.join(' '));
  assert.equal(scanner.findings.decidedBy, 'forwarded_delivery_status');
  assert.deepEqual(scanner.findings.failedRecipients, ['left@client.example']);
  assert.equal(scanner.findings.forwardedReport?.counted, true);
  assert.ok(scanner.findings.summary.some((s) => /forwarded by a mail system: it counts/.test(s)));
  // The forwarded report's status part in base64 padded line by line (each line decoded on its
  // own, as mail clients and mailsplit do): the recipients are read all the same.
  const status = 'Reporting-MTA: dns;mx.scanner.example.net\n\nFinal-Recipient: rfc822;left@client.example\nAction: failed\nStatus: 5.1.1\n';
  const padded = status
    .split(/(?<=\n)/)
    .map((line) => Buffer.from(line.replace(/\n/g, '\r\n')).toString('base64'))
    .join('\n');
  const original = readFileSync(fixture('delivery-exceptions', 'forwarded-by-scanner.eml'), 'utf8');
  const encoded = original.replace(
    /Content-Type: message\/delivery-status\n\n[\s\S]*?\n\n--inner--/,
    `Content-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n${padded}\n\n--inner--`,
  );
  assert.notEqual(encoded, original);
  const base64 = await check(encoded);
  assert.equal(base64.findings.decidedBy, 'forwarded_delivery_status', base64.findings.summary.join(' '));
  assert.deepEqual(base64.findings.failedRecipients, ['left@client.example']);

  // A customer forwarding a bounce inline asks about it: not a delivery exception.
  const person = await check(here('forwarded-bounce.eml'));
  assert.equal(person.failure, undefined, person.findings.summary.join(' '));
  assert.deepEqual(person.tags, []);
  assert.deepEqual(person.findings.signals, []);
  assert.equal(person.findings.forwardedReport?.counted, false);
  assert.ok(
    person.findings.summary.some((s) => /forwarded by a person .*not counted/.test(s)),
    person.findings.summary.join('\n'),
  );

  // The same forward sent by a machine (Auto-Submitted on the outer message) counts.
  const automatic = readFileSync(fixture('delivery-exceptions', 'forwarded-bounce.eml'), 'utf8').replace(
    'MIME-Version: 1.0',
    'Auto-Submitted: auto-forwarded\nMIME-Version: 1.0',
  );
  const machine = await check(automatic);
  assert.equal(machine.failure, 'permanent', machine.findings.summary.join(' '));
  assert.equal(machine.findings.decidedBy, 'forwarded_delivery_status');
  assert.deepEqual(machine.findings.failedRecipients, ['orders@example.com']);

  // The returned original inside a bounce is not a forwarded report, whatever it holds.
  const inner = readFileSync(fixture('delivery-exceptions', 'forwarded-by-scanner.eml'), 'utf8');
  const nested = inner.replace(
    'Content-Type: multipart/mixed; boundary="scan"',
    'Content-Type: multipart/report; report-type=delivery-status; boundary="scan"',
  );
  const returned = await check(nested);
  assert.equal(returned.findings.forwardedReport, undefined);
  assert.notEqual(returned.findings.decidedBy, 'forwarded_delivery_status');
});

test('mailing-list posts are no delivery exception by their list headers; Precedence: junk alone neither', async () => {
  const post = await check(here('list-post.eml'), { mailFrom: 'users-bounces+petra=members.example.org@lists.example.org' });
  assert.deepEqual(post.tags, [], post.findings.summary.join(' '));
  assert.deepEqual(post.findings.signals, []);
  assert.match(post.findings.listPost ?? '', /^List-Id: /);
  assert.ok(post.findings.summary.some((s) => /a list post is no delivery exception by its list headers alone/.test(s)));
  const listHeaders: Record<string, string>[] = [
    { Precedence: 'bulk' },
    { Precedence: 'list' },
    { Precedence: 'junk' },
    { 'List-Id': '<users.lists.example.org>' },
    { 'List-Unsubscribe': '<mailto:leave@lists.example.org>' },
  ];
  for (const headers of listHeaders) {
    const r = await check(mail(headers));
    assert.deepEqual(r.tags, [], JSON.stringify(headers));
  }
  // A phrase still tags a list post (Cisco guide), and an auto-reply is still one on a list.
  assert.equal((await check(mail({ 'List-Id': '<users.lists.example.org>', Subject: 'Re: system outage' }))).failure, 'permanent');
  assert.equal((await check(mail({ 'List-Id': '<users.lists.example.org>', 'Auto-Submitted': 'auto-replied' }))).findings.decidedBy, 'auto_submitted');
});

test('an abuse complaint (RFC 5965 feedback report) is tagged feedback-report, not undeliverable', async () => {
  const r = await check(here('abuse-complaint.eml'));
  assert.deepEqual(r.tags.sort(), ['exception-queue', 'feedback-report']);
  assert.equal(r.failure, undefined);
  assert.equal(r.findings.tag, 'feedback-report');
  assert.equal(r.findings.decidedBy, 'feedback_report');
  assert.deepEqual(r.findings.feedbackReport, {
    feedbackType: 'abuse',
    complainants: ['reader@mailbox-provider.example'],
    originalMailFrom: 'newsletter@example.com',
    sourceIp: '192.0.2.25',
  });
  assert.match(r.findings.summary[0]!, /^Tagged feedback-report and put it in the exception queue: an abuse complaint, not a bounce/);
  assert.ok(
    r.findings.summary.some((s) => s === 'Feedback report: Feedback-Type: abuse; complaint from reader@mailbox-provider.example; Source-IP: 192.0.2.25.'),
  );
});

test('auto-replies and other machine mail are recognised from their headers', async () => {
  const auto = await check(here('auto-reply.eml'));
  assert.equal(auto.failure, 'temporary');
  assert.equal(auto.findings.decidedBy, 'auto_submitted');
  assert.match(auto.findings.summary[0]!, /Auto-Submitted: auto-replied/);

  const cases: [headers: Record<string, string>, signal: string | undefined][] = [
    [{ 'Auto-Submitted': 'no' }, undefined],
    [{ 'Auto-Submitted': 'auto-generated' }, 'auto_submitted'],
    [{ 'X-Autoreply': 'yes' }, 'x_autoreply'],
    [{ 'X-Autorespond': 'Out of office' }, 'x_autorespond'],
    [{ Precedence: 'auto_reply' }, 'precedence'],
    [{ Precedence: 'bulk' }, undefined],
    [{ Precedence: 'junk' }, undefined],
    [{ Precedence: 'list' }, undefined],
    [{ 'Return-Path': '<>' }, 'empty_return_path'],
  ];
  for (const [headers, signal] of cases) {
    const r = await check(mail(headers));
    assert.equal(r.findings.decidedBy, signal, JSON.stringify(headers));
    assert.equal(r.failure, signal ? 'temporary' : undefined, JSON.stringify(headers));
  }
  // The null reverse path counts when it came over SMTP; a file has no envelope to speak of.
  assert.equal((await check(mail(), { mailFrom: '' })).findings.decidedBy, 'empty_return_path');
  assert.equal((await check(mail(), { mailFrom: '', source: 'cli' })).failure, undefined);
  // signal_failure and switching a signal off.
  assert.equal((await check(here('auto-reply.eml'), { partition: { signal_failure: 'permanent' } })).failure, 'permanent');
  assert.equal((await check(here('auto-reply.eml'), { department: { structural_signals: ['delivery_status'] } })).failure, undefined);
  // With delivery_status off, neither the report nor a forwarded one is read.
  const off = await check(here('forwarded-by-scanner.eml'), { department: { structural_signals: ['auto_submitted'] } });
  assert.equal(off.findings.decidedBy, 'phrase');
  assert.equal(off.findings.forwardedReport, undefined);
  assert.equal(off.findings.deliveryStatus, undefined);
  const ownOff = await check(here('dsn-failed-447.eml'), { department: { structural_signals: ['auto_submitted'] } });
  assert.equal(ownOff.findings.deliveryStatus, undefined);
  assert.notEqual(ownOff.findings.decidedBy, 'delivery_status');
});

test('with phrase_matches = "with_structural_signal", a phrase alone does not tag', async () => {
  const strict = { phrase_matches: 'with_structural_signal' };
  const byDefault = await check(here('ordinary-admin.eml'));
  assert.equal(byDefault.failure, 'permanent', 'the guide: "Admin" and "system" tag ordinary mail');
  const r = await check(here('ordinary-admin.eml'), { department: strict });
  assert.deepEqual(r.tags, []);
  assert.deepEqual(
    r.findings.phraseMatches.map((m) => m.name),
    ['Admin', 'system'],
  );
  assert.match(r.findings.summary[0]!, /phrases matched, but phrase_matches = "with_structural_signal"/);
  const withSignal = await check(mail({ Subject: 'Admin notice', 'Auto-Submitted': 'auto-generated' }), { partition: strict });
  assert.equal(withSignal.failure, 'permanent');
  assert.equal(withSignal.findings.decidedBy, 'phrase');
});

test('a dry run says what would happen; every byte passes through unchanged', async () => {
  const dry = await check(mail({ Subject: 'Undeliverable: order' }), { dryRun: true });
  assert.match(
    dry.findings.summary[0]!,
    /^Would tag email-temporary-undeliverable and would put it in the exception queue; failure type decided by phrase \(the phrase: "Undeliverable" \(temporary\)\)/,
  );
  for (const name of readdirSync(fixture('delivery-exceptions'))) {
    const r = await check(here(name));
    assert.ok(r.output.equals(readFileSync(fixture('delivery-exceptions', name))), name);
  }
  // A delivery-status part far over the cap is read only up to it; the message is untouched.
  const recipient = (i: number) => `Final-Recipient: rfc822; user${i}@big.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n`;
  const big = mail(
    { 'Content-Type': 'multipart/report; report-type=delivery-status; boundary="b"' },
    `--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; big.example\r\n\r\n${Array.from({ length: 5000 }, (_, i) => recipient(i)).join('')}--b--`,
  );
  const r = await check(big);
  assert.ok(r.output.equals(Buffer.from(big)));
  assert.equal(r.failure, 'permanent');
  assert.equal(r.findings.deliveryStatus?.truncated, true);
  assert.equal(r.findings.deliveryStatus?.recipients.length, 100);
  // A bounce's text far over its cap: read up to the cap, passed on whole.
  const long = mail(
    { From: 'MAILER-DAEMON@mx.example.net', Subject: 'failure notice' },
    `${'Delivery log line.\r\n'.repeat(4000)}This is a permanent error; I've given up.`,
  );
  const capped = await check(long);
  assert.ok(capped.output.equals(Buffer.from(long)));
  assert.equal(capped.findings.decidedBy, 'phrase', 'the sentence past the cap is not read');
});

test('what decided is shown by `messages show` and named by `mailgate policy test`', async (t) => {
  const gw = await startTestGateway('');
  t.after(() => gw.cleanup());
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: gw.port, ignoreTLS: true });
  const info = await transport.sendMail({
    envelope: { from: '', to: ['support@example.com'] },
    raw: readFileSync(fixture('delivery-exceptions', 'qmail-permanent.eml')),
  });
  const id = /queued as (\S+)/.exec(info.response)?.[1];
  assert.ok(id, info.response);

  const show = await runCli(['messages', 'show', id, '--config', gw.configFile]);
  assert.equal(show.code, 0, show.stderr);
  const text = show.stdout.toString();
  assert.match(text, /^tags: +email-permanent-undeliverable, exception-queue$/m);
  assert.match(
    text,
    /^ {2}delivery_exceptions: +Tagged email-permanent-undeliverable and put it in the exception queue; failure type decided by bounce_text \(the text of the bounce: qmail: permanent error: "This is a permanent error; I've given up"\)\.$/m,
  );
  const shownJson = JSON.parse((await runCli(['messages', 'show', id, '--json', '--config', gw.configFile])).stdout.toString()) as {
    findings: { delivery_exceptions: { decidedBy: string } };
  };
  assert.equal(shownJson.findings.delivery_exceptions.decidedBy, 'bounce_text');

  const policy = await runCli(['policy', 'test', fixture('delivery-exceptions', 'qmail-permanent.eml'), '--config', gw.configFile]);
  assert.equal(policy.code, 0, policy.stderr);
  assert.match(
    policy.stdout.toString(),
    /^delivery_exceptions:\n {2}Would tag email-permanent-undeliverable and would put it in the exception queue; failure type decided by bounce_text \(the text of the bounce: qmail: permanent error/m,
  );
  const json = JSON.parse(
    (await runCli(['policy', 'test', fixture('delivery-exceptions', 'abuse-complaint.eml'), '--json', '--config', gw.configFile])).stdout.toString(),
  ) as {
    stages: { stage: string; details: Record<string, unknown> }[];
    tags: string[];
  };
  assert.equal(json.stages.find((s) => s.stage === 'delivery_exceptions')?.details.decidedBy, 'feedback_report');
  assert.ok(json.tags.includes('feedback-report'));
});
