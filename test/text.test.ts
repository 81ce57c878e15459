import { test } from 'node:test';
import assert from 'node:assert/strict';
import { oneLine, rfc5322Date } from '../lib/text.js';

test('rfc5322Date writes the date in UTC with a numeric zone (RFC 5322 section 3.3)', () => {
  assert.equal(rfc5322Date(new Date('2026-11-23T10:00:00.000Z')), 'Mon, 23 Nov 2026 10:00:00 +0000');
  assert.equal(rfc5322Date(new Date('2026-01-05T23:59:59.999+02:00')), 'Mon, 05 Jan 2026 21:59:59 +0000');
});

test('oneLine leaves no line break or control character to start a new field or reply line', () => {
  assert.equal(oneLine('  550-5.1.1 first\r\n550 5.1.1 second\r\n'), '550-5.1.1 first 550 5.1.1 second');
  assert.equal(oneLine('a\tb\x00\x1b[31mc\x7fd   e\rf\ng'), 'a b [31mc d e f g');
  assert.equal(oneLine(''), '');
});

test('oneLine cuts to a length when asked, after making one line', () => {
  assert.equal(oneLine('ab\r\n\r\ncd', 4), 'ab c');
  assert.equal(oneLine('x'.repeat(600), 500).length, 500);
  assert.equal(oneLine('short', 500), 'short');
});
