/**
 * Which quarantined attachments a list or a bulk restore or delete is about (issue 13:
 * "quarantine in bulk by filter"): by message, by rule, by file name pattern, by age. Written
 * once, so the list an admin checks first and the bulk action after pick the same records.
 */
import type { QuarantineRecord } from '../../storage/records.js';
import { errors } from '../../lib/errors.js';
import type { QuarantineQuery } from './api.js';

/** A test of a record against `query`; BAD_REQUEST for a time that is none. */
export function quarantineMatcher(query: QuarantineQuery): (record: QuarantineRecord) => boolean {
  const rule = query.rule?.toLowerCase();
  const name = query.fileName === undefined ? undefined : fileNamePattern(query.fileName);
  let before: number | undefined;
  if (query.olderThan !== undefined) {
    before = Date.parse(query.olderThan);
    if (Number.isNaN(before)) throw errors.badRequest(`olderThan: expected an ISO 8601 time, got "${query.olderThan}"`);
  }
  return (r) =>
    (query.messageId === undefined || r.messageId === query.messageId) &&
    (rule === undefined || r.rule.toLowerCase().includes(rule)) &&
    (name === undefined || name.test(r.fileName)) &&
    (before === undefined || Date.parse(r.date) < before);
}

/** A file name pattern as a whole-name, any-case expression: `*` any run of characters, `?` one; nothing else is special. */
export function fileNamePattern(pattern: string): RegExp {
  const source = [...pattern].map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[\\^$.|+()[\]{}]/g, '\\$&'))).join('');
  return new RegExp(`^${source}$`, 'is');
}
