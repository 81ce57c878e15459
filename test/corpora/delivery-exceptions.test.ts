/**
 * The delivery-exception stage against what lives in ../shared: the Cisco guide's appendix
 * (the seed), and the real bounces and reports of the sisimai and MimeKit corpora. Runs in
 * `npm run test:corpora` only: ../shared is not beside a user's clone. The same behaviours are
 * covered on messages of our own in test/delivery-exceptions.test.ts, and on real bounces
 * installed from Debian in test/delivery-exceptions-flufl.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { predefinedAddressPhrases, predefinedPhrases, predefinedSubjectPhrases } from '../../policy/delivery-exceptions/phrases.js';
import {
  assertBounces,
  check,
  count,
  describeTally,
  newTally,
  PERMANENT,
  TEMPORARY,
  type BounceCase,
  type Checked,
  type Tally,
} from '../helpers/delivery-exceptions.js';
import { corpus, projectRoot } from '../helpers/paths.js';

const sisimai = (dir: string, name: string) => ({ file: corpus('sisimai-set-of-emails', dir, name) });
const mimekit = (name: string) => ({ file: corpus('mimekit-messages', 'messages', name) });

test('the predefined phrases are the appendix rows of the Cisco guide, exactly', () => {
  // Read the guide's appendix tables in place and compare row by row.
  const seed = readFileSync(path.join(projectRoot, '..', 'shared', 'seeds', '000_f18eae85ac8d59e2.txt'), 'utf8');
  const appendix = seed.slice(seed.indexOf('Appendix: Predefined Delivery Exceptions', seed.indexOf('Deleting Delivery Exceptions')));
  const [addressPart, subjectPart] = appendix.split('Phrases Checked in the Subject of Emails');
  const rows = (text: string) =>
    [...text.matchAll(/^\| (.+?) +\| (.+?) +\| (Permanent|Temporary) *\|/gm)].map((m) => ({ name: m[1], phrase: m[2], failure: m[3]!.toLowerCase() }));
  const strip = (list: readonly { name: string; phrase: string; failure: string }[]) => list.map(({ name, phrase, failure }) => ({ name, phrase, failure }));
  assert.deepEqual(strip(predefinedAddressPhrases), rows(addressPart!));
  assert.deepEqual(strip(predefinedSubjectPhrases), rows(subjectPart!));
  // The guide says 16 and 112; its subject table has 111 rows, and we ship what it lists.
  assert.match(appendix, /The following 16 phrases are checked in email addresses/);
  assert.match(appendix, /The following 112 phrases are checked in the subject/);
  assert.equal(predefinedAddressPhrases.length, 16);
  assert.equal(predefinedSubjectPhrases.length, 111);
  assert.equal(predefinedPhrases.length, 127);
  for (const accented of ['Adressänderung', 'Dìkuji za maila', 'Réponse automatique', 'NDN:', 'E-mail Received!']) {
    assert.ok(
      predefinedPhrases.some((p) => p.phrase === accented),
      accented,
    );
  }
});

test('the seed: address phrases are compared against the From address of the incoming email', () => {
  const seed = readFileSync(path.join(projectRoot, '..', 'shared', 'seeds', '000_f18eae85ac8d59e2.txt'), 'utf8');
  assert.match(seed, /This would then be compared against the from email address of the incoming email and checked/);
});

test('DSNs from different MTAs: failure type from the per-recipient status, failed recipients listed', async () => {
  const cases: BounceCase[] = [
    {
      name: 'Postfix',
      msg: sisimai('bsd', 'lhost-postfix-02.eml'),
      failure: 'permanent',
      failed: ['filtered@example.co.jp', 'userunknown@example.co.jp'],
      decidedBy: 'delivery_status',
    },
    // Action: failed with Status: 4.1.1: Postfix returned the message, it will not try again.
    {
      name: 'Postfix, failed with a 4.x.x status',
      msg: sisimai('bsd', 'lhost-postfix-05.eml'),
      failure: 'permanent',
      failed: ['kijitora@example.org'],
      decidedBy: 'delivery_status',
    },
    {
      name: 'Sendmail',
      msg: sisimai('bsd', 'lhost-sendmail-01.eml'),
      failure: 'permanent',
      failed: ['userunknown@bouncehammer.jp'],
      decidedBy: 'delivery_status',
    },
    {
      name: 'Exchange 2007',
      msg: sisimai('bsd', 'lhost-exchange2007-01.eml'),
      failure: 'permanent',
      failed: ['mikeneko@example.co.jp'],
      decidedBy: 'delivery_status',
    },
    { name: 'Exim', msg: sisimai('bsd', 'lhost-exim-01.eml'), failure: 'permanent', failed: ['kijitora@example.ed.jp'], decidedBy: 'x_failed_recipients' },
    { name: 'Gmail', msg: sisimai('bsd', 'lhost-gmail-01.eml'), failure: 'permanent', failed: ['userunknown@example.jp'], decidedBy: 'x_failed_recipients' },
    {
      name: 'OpenSMTPD delay',
      msg: sisimai('bsd', 'lhost-opensmtpd-06.eml'),
      failure: 'temporary',
      failed: ['nekochan@libsisimai.org'],
      decidedBy: 'delivery_status',
    },
    {
      name: 'Outlook via Postfix (base64 inside the report)',
      msg: mimekit('bounce.txt'),
      failure: 'permanent',
      failed: ['netec.test@netecgc.com'],
      decidedBy: 'delivery_status',
    },
    {
      name: 'report without blank line',
      msg: mimekit('delivery-status-no-blank-line.txt'),
      failure: 'permanent',
      failed: ['newsletter-request@imusic.com'],
      decidedBy: 'delivery_status',
    },
    {
      name: 'report with many blank lines',
      msg: mimekit('delivery-status-multiple-blank-lines.txt'),
      failure: 'permanent',
      failed: ['orig_recip@customer.com'],
      decidedBy: 'delivery_status',
    },
  ];
  await assertBounces(cases);
});

test('plain-text bounces in the corpora: qmail, Exim, Sendmail and OpenSMTPD without a usable report', async () => {
  const cases: [file: string, failure: 'permanent' | 'temporary'][] = [
    ['lhost-qmail-01.eml', 'permanent'],
    ['lhost-exim-38.eml', 'temporary'],
    ['lhost-v5sendmail-02.eml', 'permanent'],
    // OpenSMTPD's delay notice, which says "only a temporary failure report".
    ['lhost-opensmtpd-04.eml', 'temporary'],
  ];
  for (const [file, failure] of cases) {
    const r = await check(sisimai('bsd', file), { source: 'imap' });
    assert.equal(r.failure, failure, `${file}: ${r.findings.summary.join(' ')}`);
    assert.equal(r.findings.decidedBy, 'bounce_text', file);
  }
});

test('the MimeKit feedback report is tagged feedback-report; its MDN is tagged disposition-notification, not a bounce', async () => {
  const arf = await check(mimekit('feedback-report.txt'));
  assert.ok(arf.tags.includes('feedback-report'), arf.findings.summary.join(' '));
  assert.equal(arf.failure, undefined);
  assert.equal(arf.findings.decidedBy, 'feedback_report');
  // A read receipt (RFC 8098) reports a display, not a delivery failure (issue 14, Genesys).
  const mdn = await check(mimekit('disposition-notification.txt'));
  assert.deepEqual(mdn.tags.sort(), ['disposition-notification', 'exception-queue'], mdn.findings.summary.join(' '));
  assert.equal(mdn.failure, undefined);
  // From the null sender, as RFC 8098 section 3 has it, still a receipt.
  assert.equal((await check(mimekit('disposition-notification.txt'), { mailFrom: '' })).failure, undefined);
});

test('the messages in sisimai not/: the two ordinary ones show no machine-mail sign', async () => {
  for (const name of ['is-not-bounce-01.eml', 'is-not-bounce-02.eml']) {
    const r = await check(sisimai('not', name));
    assert.deepEqual(r.tags, [], name);
    assert.deepEqual(r.findings.signals, [], name);
  }
  // rb-issue-368-bug.eml sits in not/ because sisimai failed to parse it, but it is a real
  // bounce ("reject reason: Mailbox full") with Auto-Submitted and an empty Return-Path.
  const bug = await check(sisimai('not', 'rb-issue-368-bug.eml'));
  assert.deepEqual(bug.findings.signals.map((s) => s.signal).sort(), ['auto_submitted', 'empty_return_path']);
});

/**
 * sisimai bounces no evidence of ours marks, and why: Amazon SES notifications delivered as
 * JSON through SNS (an API format, not mail structure); Verizon's and Apache James's
 * "post_master@" with no phrase and no structure; fml mailing-list server notices ("you are
 * not a member", "loop alert"), which are list administrivia rather than bounces; KDDI's
 * "no-reply@" with a Japanese subject; and Hotmail complaints forwarded as plain attachments
 * without an ARF report (arf-22 to arf-24).
 */
const unmarked = new Set([
  'arf-22.eml',
  'arf-23.eml',
  'arf-24.eml',
  'lhost-amazonses-09.eml',
  'lhost-amazonses-10.eml',
  'lhost-amazonses-11.eml',
  'lhost-amazonses-12.eml',
  'lhost-amazonses-13.eml',
  'lhost-apachejames-01.eml',
  'lhost-fml-02.eml',
  'lhost-fml-03.eml',
  'lhost-kddi-01.eml',
  'lhost-verizon-02.eml',
]);

test('sisimai corpus: what each of the 629 real bounces, reports and auto-replies is typed, and which evidence decided it, by MTA', async (t) => {
  const dir = corpus('sisimai-set-of-emails', 'bsd');
  const names = readdirSync(dir)
    .filter((n) => n.endsWith('.eml'))
    .sort();
  assert.equal(names.length, 629);
  const all = newTally();
  const byMta = new Map<string, Tally>();
  const results = new Map<string, Checked>();
  for (const name of names) {
    const r = await check(sisimai('bsd', name), { source: 'imap' });
    results.set(name, r);
    count(all, r);
    // The file name says the MTA or provider: lhost-postfix-02.eml, rhost-google-01.eml, arf-01.eml.
    const mta = name.replace(/-\d+\.eml$/, '');
    if (!byMta.has(mta)) byMta.set(mta, newTally());
    count(byMta.get(mta)!, r);
  }
  t.diagnostic(describeTally('sisimai', all));
  for (const [mta, tally] of [...byMta].sort((a, b) => b[1].total - a[1].total)) t.diagnostic(describeTally(mta, tally));
  const untagged = [...results].filter(([, r]) => r.tags.length === 0).map(([n]) => n);
  t.diagnostic(`untagged: ${untagged.join(', ')}`);
  const temporary = [...results].filter(([, r]) => r.failure === 'temporary').map(([n, r]) => `${n} (${r.findings.decidedBy}: ${r.findings.decidingEvidence})`);
  t.diagnostic(`temporary: ${temporary.join('; ')}`);

  // What the sets say: arf- are abuse reports, never bounces; rfc3834- are auto-replies,
  // typed by their headers or phrases, never by a bounce's structure; everything else is a
  // bounce or delay report and is tagged, unless we know why nothing marks it.
  const wrong: string[] = [];
  for (const [name, r] of results) {
    const by = r.findings.decidedBy;
    if (unmarked.has(name)) {
      if (r.tags.length) wrong.push(`${name}: tagged ${r.tags.join(', ')}; take it off the list of unmarked messages`);
    } else if (name.startsWith('arf-')) {
      if (r.tags.includes(PERMANENT)) wrong.push(`${name}: an abuse report tagged ${PERMANENT}`);
      if (!r.tags.length) wrong.push(`${name}: untagged`);
    } else if (name.startsWith('rfc3834-')) {
      if (!r.failure || ['delivery_status', 'bounce_text', 'x_failed_recipients'].includes(by ?? ''))
        wrong.push(`${name}: auto-reply ${r.failure ?? 'untagged'} by ${by}`);
    } else if (!r.tags.includes(PERMANENT) && !r.tags.includes(TEMPORARY)) {
      wrong.push(`${name}: a bounce, untagged (${r.findings.summary[0]})`);
    }
  }
  assert.deepEqual(wrong, []);
  assert.ok(all.feedbackReport >= 13, `abuse reports tagged feedback-report: ${all.feedbackReport}`);
});
