/**
 * Why a message counts as unparsable, and the error that says so. Genesys seed, "Handling
 * Unparsable E-Mails": such a message is stored as a wrapping message that names the reason
 * (`_WrappingMessageReason`) and carries the original as an attachment.
 */

/**
 * The reasons a message is wrapped instead of stored as it came. Each is a stable code (in the
 * metadata, the logs and `policy test`) with a sentence for the admin in {@link unparsableReasons}.
 *
 * - `header_no_end`: the header section never ends: the input stops inside it, or a line that
 *   is neither a header field nor a folded continuation shows that the empty line separating
 *   header and body is missing (RFC 5322 2.1, 2.2).
 * - `header_too_large`: one header section (of the message or of a MIME part) is over
 *   `max_header_size` bytes (each line counting at least 64, as the splitter counts), or over
 *   the splitter's own memory bound; or a Content-Type or Content-Disposition field is over
 *   16 KiB (content-field-guard.ts).
 * - `header_nul`: a NUL byte in a header section (RFC 5322 2.2: printable US-ASCII only).
 * - `header_undecodable`: header bytes that are neither US-ASCII nor UTF-8 (RFC 6532 allows
 *   UTF-8; anything else has no declared charset and cannot be read reliably).
 * - `header_line_too_long`: a header line over `max_header_line` octets (RFC 5322 2.1.1: 998).
 * - `boundary_missing`: a multipart without a usable `boundary` parameter, or whose boundary
 *   never appears in its body, so its parts cannot be found (RFC 2046 5.1.1).
 * - `boundary_unterminated`: a multipart whose closing delimiter `--boundary--` never comes:
 *   the message is truncated or its structure is broken (RFC 2046 5.1.1).
 * - `nesting_too_deep`: MIME parts nested deeper than `max_depth`.
 * - `too_many_parts`: more MIME parts than `max_parts` (mailsplit and Haraka: 1000).
 * - `parser_exception`: anything else thrown while the message went through the MIME splitter
 *   or a policy stage; the stage is named in the detail.
 * - `quarantine_test`: the subject holds `[mailgate quarantine test message]` or the Emplifi
 *   seed's `[pcemail quarantine test message]`; treated as a fatal failure on purpose so admins
 *   can check the wrapping path end to end.
 */
export type UnparsableReason =
  | 'header_no_end'
  | 'header_too_large'
  | 'header_nul'
  | 'header_undecodable'
  | 'header_line_too_long'
  | 'boundary_missing'
  | 'boundary_unterminated'
  | 'nesting_too_deep'
  | 'too_many_parts'
  | 'parser_exception'
  | 'quarantine_test';

/** Every reason with the sentence an admin reads (and what the body of a wrapping message starts its explanation with). */
export const unparsableReasons: Readonly<Record<UnparsableReason, string>> = {
  header_no_end: 'the header section has no end (the empty line after the header fields is missing)',
  header_too_large: 'a header section is larger than the limit',
  header_nul: 'a header contains a NUL byte',
  header_undecodable: 'a header contains bytes that are neither ASCII nor UTF-8',
  header_line_too_long: 'a header line is longer than the limit (998 octets in RFC 5322)',
  boundary_missing: 'a multipart has no boundary, or its boundary never appears',
  boundary_unterminated: 'a multipart never reaches its closing boundary',
  nesting_too_deep: 'MIME parts are nested deeper than the limit',
  too_many_parts: 'the message has more MIME parts than the limit',
  parser_exception: 'processing failed with an error',
  quarantine_test: 'the subject holds the quarantine test marker',
};

/** Raised (by the wrapping stage, or made from any other failure) when a message cannot be processed as it is. */
export class UnparsableMessage extends Error {
  /** Stable code, one of {@link unparsableReasons}. */
  readonly reason: UnparsableReason;
  /** What exactly was wrong, for an admin: which header, which line, which limit. */
  readonly detail: string;

  constructor(reason: UnparsableReason, detail: string, options?: { cause?: unknown }) {
    super(detail, options);
    this.name = 'UnparsableMessage';
    this.reason = reason;
    this.detail = detail;
  }
}

/**
 * The unparsable-message reason for any failure of the pipeline: an UnparsableMessage as it is;
 * mailsplit's size errors (`EMAXLEN`) as the limit they hit; anything else as
 * `parser_exception`, naming `where` it happened (a stage name, or the MIME splitter).
 */
export function unparsableFrom(err: unknown, where = 'MIME splitter'): UnparsableMessage {
  if (err instanceof UnparsableMessage) return err;
  const e = err as { code?: unknown; message?: unknown } | null;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  if (e?.code === 'EMAXLEN') {
    if (/child nodes/i.test(message)) return new UnparsableMessage('too_many_parts', `More MIME parts than the splitter allows (${message})`, { cause: err });
    if (/header/i.test(message))
      return new UnparsableMessage('header_too_large', `A header section is larger than the splitter allows (${message})`, { cause: err });
  }
  return new UnparsableMessage('parser_exception', `${where} failed: ${printable(message)}`, { cause: err });
}

/** Text safe to show in a log, a header or a 7-bit body: printable ASCII, at most `max` characters. */
export function printable(text: string, max = 200): string {
  const clean = text.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > max ? `${clean.slice(0, max)}...` : clean;
}
