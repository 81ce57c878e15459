import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { simpleParser } from 'mailparser';
import {
  UnparsableMessage,
  unparsableFrom,
  unparsableReasons,
  wrappingMessage,
  wrappingSectionSchema,
  wrappingStage,
  type UnparsableReason,
  type WrappingSection,
} from '../policy/wrapping/stage.js';
import { runPipeline, stageOf } from '../policy/chain/pipeline.js';
import type { Stage } from '../policy/chain/stage.js';
import { fixture } from './helpers/paths.js';
import { dryRunContext, failingStage, runStages } from './helpers/pipeline.js';
import { parseWrapped } from './helpers/wrapped.js';

const unparsable = (...parts: string[]) => fixture('unparsable', ...parts);
const section = (values: Partial<WrappingSection> = {}): WrappingSection => wrappingSectionSchema.parse(values);

const table: { file: string; reason: UnparsableReason; wrapping?: Partial<WrappingSection>; extra?: Stage; detail?: RegExp }[] = [
  { file: 'header-no-end.eml', reason: 'header_no_end', detail: /Line 6 of the message header is not a header field/ },
  { file: 'header-no-end-no-header.eml', reason: 'header_no_end', detail: /Line 1 of the message header/ },
  // mailsplit would drop this part's header bytes; wrapping keeps them in the attached original.
  { file: 'header-no-end-part.eml', reason: 'header_no_end', detail: /A part of the message has a header with no end/ },
  { file: 'header-too-large.eml', reason: 'header_too_large', wrapping: { max_header_size: 4096 }, detail: /over the limit of 4096/ },
  { file: 'header-nul.eml', reason: 'header_nul', detail: /NUL byte at offset 148/ },
  { file: 'header-undecodable.eml', reason: 'header_undecodable' },
  { file: 'header-line-too-long.eml', reason: 'header_line_too_long', detail: /Line 6 of the message header is 1212 octets, over the limit of 998/ },
  { file: 'boundary-missing.eml', reason: 'boundary_missing', detail: /multipart\/mixed without a usable boundary/ },
  { file: 'boundary-never-appears.eml', reason: 'boundary_missing', detail: /"sep-1" of the message never appears/ },
  { file: 'boundary-unterminated.eml', reason: 'boundary_unterminated', detail: /never reaches its closing boundary "sep" \(2 part/ },
  { file: 'nesting-too-deep.eml', reason: 'nesting_too_deep', detail: /nested 51 deep, over the limit of 50/ },
  { file: 'nesting-too-deep.eml', reason: 'nesting_too_deep', wrapping: { max_depth: 3 }, detail: /nested 4 deep/ },
  { file: 'too-many-parts.eml', reason: 'too_many_parts', wrapping: { max_parts: 10 }, detail: /more than 10 MIME parts/ },
  { file: 'quarantine-test.eml', reason: 'quarantine_test', detail: /\[mailgate quarantine test message\]/ },
  { file: 'pcemail-quarantine-test.eml', reason: 'quarantine_test', detail: /\[pcemail quarantine test message\]/ },
  { file: 'ok-multipart.eml', reason: 'parser_exception', extra: failingStage(), detail: /^flaky failed: Cannot read properties/ },
];

for (const row of table) {
  test(`${row.file}${row.wrapping ? ` with ${JSON.stringify(row.wrapping)}` : ''}${row.extra ? ` and a failing stage` : ''}: ${row.reason}`, async () => {
    const stages = [wrappingStage(section(row.wrapping), undefined), ...(row.extra ? [row.extra] : [])];
    const run = await runStages(unparsable(row.file), stages);
    assert.ok(run.error, 'the pipeline fails');
    const failure = unparsableFrom(run.error, stageOf(run.error));
    assert.equal(failure.reason, row.reason, failure.detail);
    if (row.detail) assert.match(failure.detail, row.detail);
    if (row.reason !== 'parser_exception') {
      // What `policy test` prints: the stage's findings say what would happen.
      assert.ok(run.error instanceof UnparsableMessage);
      const found = run.ctx.findings.wrapping;
      assert.equal(found?.reason, row.reason);
      assert.match(found?.summary[0] ?? '', /would be stored as a wrapping message/);
      assert.ok(found?.summary[0]?.includes(unparsableReasons[row.reason]));
    }
  });
}

for (const file of ['ok-multipart.eml', 'ok-headers-only.eml', 'ok-utf8-header.eml', 'ok-mbox-from-line.eml', 'ok-bare-lf.eml']) {
  test(`${file} parses and passes through byte for byte`, async () => {
    const run = await runStages(unparsable(file), [wrappingStage(undefined, undefined)]);
    assert.equal(run.error, undefined, String(run.error));
    assert.ok(run.output.equals(readFileSync(unparsable(file))));
    assert.match(run.ctx.findings.wrapping?.summary[0] ?? '', /^The message parsed cleanly/);
  });
}

/** Runs the wrapping stage on `bytes` written to the splitter in chunks of `size`; the error it fails with, or undefined when the output is the input. */
async function wrappedReason(bytes: Buffer, size: number): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += size) chunks.push(bytes.subarray(at, at + size));
  const parts: Buffer[] = [];
  const sink = new Writable({ write: (c: Buffer, _e, done) => (parts.push(c), done()) });
  try {
    await runPipeline(Readable.from(chunks), dryRunContext(), [wrappingStage(undefined, undefined)], sink);
  } catch (err) {
    return err instanceof UnparsableMessage ? err.reason : String(err);
  }
  assert.ok(Buffer.concat(parts).equals(bytes), `chunks of ${size}: the output is the input`);
  return undefined;
}

/**
 * The fixture as it is (CRLF) in chunks of every size from 1 byte to all of it; with bare LF
 * line ends, and without its last line end (a closing delimiter may end the input), in chunks
 * of 1 to 64 bytes and all at once.
 */
function chunkings(file: string): [string, Buffer, number[]][] {
  const bytes = readFileSync(unparsable(file));
  const every = (n: number) => Array.from({ length: n }, (_, i) => i + 1);
  const lf = Buffer.from(bytes.toString('latin1').replace(/\r\n/g, '\n'), 'latin1');
  const cut = bytes.subarray(0, bytes.length - 2);
  return [
    [file, bytes, every(bytes.length)],
    [`${file} with LF line ends`, lf, [...every(64), lf.length]],
    [`${file} without its last line end`, cut, [...every(64), cut.length]],
  ];
}

// Issue 17, fault 1: a multipart whose last child is a multipart closes both with two delimiter
// lines that mailsplit hands on as one data chunk of the inner multipart; every chunking
// (one byte at a time up to the whole message at once) must read both.
for (const file of ['ok-nested-last-apple-mail.eml', 'ok-nested-last-mixed.eml', 'ok-multipart.eml']) {
  test(`${file}: a multipart that ends with a nested multipart parses, in chunks of every size from 1 byte up`, async () => {
    for (const [name, bytes, sizes] of chunkings(file)) {
      for (const size of sizes) assert.equal(await wrappedReason(bytes, size), undefined, `${name} in chunks of ${size}`);
    }
  });
}

for (const file of ['boundary-unterminated-outer.eml', 'boundary-unterminated-inner.eml', 'boundary-unterminated.eml']) {
  test(`${file}: a multipart that never closes is still wrapped, in chunks of every size from 1 byte up`, async () => {
    for (const [name, bytes, sizes] of chunkings(file)) {
      for (const size of sizes) assert.equal(await wrappedReason(bytes, size), 'boundary_unterminated', `${name} in chunks of ${size}`);
    }
  });
}

test('a closing delimiter line with trailing blanks closes its multipart; one with text after it does not', async () => {
  const bytes = readFileSync(unparsable('ok-nested-last-mixed.eml')).toString('latin1');
  const padded = Buffer.from(bytes.replace(/^(--.*--)\r$/gm, '$1 \t \r'), 'latin1');
  assert.notEqual(padded.toString('latin1'), bytes);
  for (const size of [1, 3, 64, padded.length]) assert.equal(await wrappedReason(padded, size), undefined, `chunks of ${size}`);
  const trailing = Buffer.from(bytes.replace('----_NmP-outer-0001--\r\n', '----_NmP-outer-0001-- not the end\r\n'), 'latin1');
  for (const size of [1, 3, 64, trailing.length]) assert.equal(await wrappedReason(trailing, size), 'boundary_unterminated', `chunks of ${size}`);
});

test('the multipart fixture reports its parts and depth', async () => {
  const run = await runStages(unparsable('ok-multipart.eml'), [wrappingStage(undefined, undefined)]);
  assert.deepEqual({ parts: run.ctx.findings.wrapping?.parts, depth: run.ctx.findings.wrapping?.depth }, { parts: 5, depth: 2 });
});

test('the quarantine test marker can be switched off, by either file', async () => {
  for (const [p, d] of [
    [section({ quarantine_test: false }), undefined],
    [section(), section({ quarantine_test: false })],
  ] as const) {
    const run = await runStages(unparsable('quarantine-test.eml'), [wrappingStage(p, d)]);
    assert.equal(run.error, undefined);
  }
});

test('wrap_unterminated_multipart = false stores an unterminated multipart as received', async () => {
  const run = await runStages(unparsable('boundary-unterminated.eml'), [wrappingStage(section({ wrap_unterminated_multipart: false }), undefined)]);
  assert.equal(run.error, undefined);
  assert.ok(run.output.equals(readFileSync(unparsable('boundary-unterminated.eml'))));
  // A boundary that never appears at all is still wrapped.
  const never = await runStages(unparsable('boundary-never-appears.eml'), [wrappingStage(section({ wrap_unterminated_multipart: false }), undefined)]);
  assert.equal((never.error as UnparsableMessage).reason, 'boundary_missing');
});

test('a department section can make limits stricter but not looser', async () => {
  const strict = await runStages(unparsable('too-many-parts.eml'), [wrappingStage(section(), section({ max_parts: 10 }))]);
  assert.equal((strict.error as UnparsableMessage).reason, 'too_many_parts');
  const loose = await runStages(unparsable('too-many-parts.eml'), [wrappingStage(section({ max_parts: 10 }), section({ max_parts: 100 }))]);
  assert.equal((loose.error as UnparsableMessage).reason, 'too_many_parts');
  const partitionOnly = await runStages(unparsable('too-many-parts.eml'), [wrappingStage(section({ max_parts: 12 }), undefined)]);
  assert.equal(partitionOnly.error, undefined);
});

test('[wrapping] schema: empty is valid with defaults, unknown keys and nonsense values are refused', () => {
  assert.deepEqual(wrappingSectionSchema.parse({}), {
    max_header_size: 1048576,
    max_header_line: 998,
    max_parts: 1000,
    max_depth: 50,
    wrap_unterminated_multipart: true,
    quarantine_test: true,
  });
  assert.equal(wrappingSectionSchema.safeParse({ max_part: 5 }).success, false);
  assert.equal(wrappingSectionSchema.safeParse({ max_parts: 0 }).success, false);
  assert.equal(wrappingSectionSchema.safeParse({ max_depth: 2.5 }).success, false);
  assert.equal(wrappingSectionSchema.safeParse({ quarantine_test: 'yes' }).success, false);
});

test("the MIME splitter's own limits come out as the same reasons", async () => {
  const hugeHeader = Buffer.from(`Subject: x\r\n${'X-Filler: yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\r\n'.repeat(20000)}\r\nbody\r\n`);
  const big = await runStages(hugeHeader, [wrappingStage(undefined, undefined)]);
  assert.equal(unparsableFrom(big.error).reason, 'header_too_large');

  let parts = 'Subject: parts\r\nContent-Type: multipart/mixed; boundary="p"\r\n\r\n';
  for (let i = 0; i < 1001; i++) parts += `--p\r\nContent-Type: text/plain\r\n\r\n${i}\r\n`;
  const many = await runStages(Buffer.from(parts + '--p--\r\n'), [wrappingStage(undefined, undefined)]);
  assert.equal(unparsableFrom(many.error).reason, 'too_many_parts');
});

function originalOf(file: string) {
  const bytes = readFileSync(unparsable(file));
  return { bytes, open: () => Readable.from([bytes]) };
}

test('a wrapping message copies the original header, explains the reason and attaches the original byte for byte', async () => {
  const { bytes, open } = originalOf('boundary-unterminated.eml');
  const raw = await buffer(
    wrappingMessage({
      failure: { reason: 'boundary_unterminated', detail: 'The multipart the message never reaches its closing boundary' },
      original: open,
      defaultDomain: 'example.com',
    }),
  );
  const parsed = await simpleParser(raw, { skipTextToHtml: true });
  assert.equal(parsed.subject, 'truncated');
  assert.equal(parsed.from?.value[0]?.address, 'customer@example.org');
  assert.equal(parsed.messageId, '<unterm@example.org>');
  assert.match(
    parsed.text ?? '',
    /^Error encountered during preprocessing of this message: a multipart never reaches its closing boundary \[boundary_unterminated\]\./,
  );
  assert.match(parsed.text ?? '', /Original Incoming Email is attached to this Email\./);
  const [attachment] = parsed.attachments;
  assert.ok(attachment?.content.equals(bytes), 'the attached original is the original');
  assert.equal(attachment?.filename, 'original-message.eml');
  // Sent as octet-stream (base64 is not allowed on message/rfc822); readers map .eml back to a message.
  assert.match(
    raw.toString('latin1'),
    /\r\nContent-Type: application\/octet-stream; name="original-message\.eml"\r\nContent-Disposition: attachment; filename="original-message\.eml"\r\n/,
  );
  // The original's Content-Type (its broken multipart) must not describe the wrapper.
  const header = raw.subarray(0, raw.indexOf('\r\n\r\n')).toString('latin1');
  assert.equal(header.match(/^content-type:/gim)?.length, 1);
  assert.match(header, /^Content-Type: multipart\/mixed; boundary="mailgate-wrap-/m);
  assert.doesNotMatch(header, /boundary="sep"/);
  assert.equal(header.match(/^mime-version:/gim)?.length, 1);
  assert.match(header, /^X-Mailgate-Wrapped: boundary_unterminated$/m);
});

test('an unparsable original header gives "Unknown subject" and From unknown@<default_domain>', async () => {
  for (const file of ['header-nul.eml', 'header-no-end.eml', 'header-line-too-long.eml', 'header-undecodable.eml']) {
    const { bytes, open } = originalOf(file);
    const raw = await buffer(wrappingMessage({ failure: { reason: 'header_nul', detail: 'x' }, original: open, defaultDomain: 'support.example.com' }));
    const view = await parseWrapped(raw);
    assert.equal(view.subject, 'Unknown subject', file);
    assert.equal(view.from, 'unknown@support.example.com', file);
    assert.ok(view.original.equals(bytes), file);
  }
});

test('an original From that is not a valid address becomes unknown@<default_domain>; the rest is kept', async () => {
  const { open } = originalOf('quarantine-test-invalid-from.eml');
  const raw = await buffer(wrappingMessage({ failure: { reason: 'quarantine_test', detail: 'x' }, original: open, defaultDomain: 'example.com' }));
  const view = await parseWrapped(raw);
  assert.equal(view.from, 'unknown@example.com');
  assert.equal(view.subject, '[mailgate quarantine test message] from check');
  const header = raw.subarray(0, raw.indexOf('\r\n\r\n')).toString('latin1');
  assert.doesNotMatch(header, /not an address/);
  assert.equal(header.match(/^from:/gim)?.length, 1);
});

test('a large binary original is attached intact, streamed', async () => {
  const bytes = Buffer.concat([Buffer.from('Subject: binary junk\r\n\r\n'), randomBytes(3 * 1024 * 1024 + 7)]);
  const chunks = () =>
    Readable.from(
      (function* () {
        for (let i = 0; i < bytes.length; i += 65536) yield bytes.subarray(i, i + 65536);
      })(),
    );
  const raw = await buffer(wrappingMessage({ failure: { reason: 'parser_exception', detail: 'x' }, original: chunks, defaultDomain: 'example.com' }));
  const view = await parseWrapped(raw);
  assert.equal(view.subject, 'binary junk');
  assert.ok(view.original.equals(bytes));
  // Base64 lines of 76 characters (RFC 2045 6.8).
  const body = raw.toString('latin1');
  const longest = Math.max(...body.split('\r\n').map((l) => l.length));
  assert.ok(longest <= 998 && longest >= 76);
});
