/**
 * The PostgreSQL layout: tables, their version, and the migrations that make or upgrade them.
 * Migrations are ordered and numbered like the LevelDB layout's (storage/leveldb/layout.ts);
 * each runs in one transaction under an advisory lock, so two nodes upgrading at once take
 * turns and a failed migration leaves the schema as it was.
 *
 * Ids (message, quarantine, audit) are ULID-shaped and sort by time as strings: their columns
 * are `COLLATE "C"` so they sort byte by byte whatever the database's locale.
 */

/** The schema this build reads and writes. */
export const SCHEMA_VERSION = 1;

/** Taken by every migration run: a number of our own for `pg_advisory_xact_lock`. */
export const MIGRATION_LOCK = 0x6d61696c; // "mail"

/** Migration N (1-based) brings the schema from version N-1 to N. */
export const MIGRATIONS: readonly { version: number; description: string; sql: string }[] = [
  {
    version: 1,
    description: 'the store for one node or a fleet',
    sql: `
CREATE TABLE mailgate_schema (
  version integer PRIMARY KEY,
  description text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now(),
  applied_by text NOT NULL
);

-- Messages: metadata as the JSON text mailgate wrote, with the columns the console and CLI filter
-- on beside it. json, not jsonb: jsonb reorders an object's keys, and the order of the findings is
-- the order the stages ran (the timeline shows them so); nothing queries inside it.
CREATE TABLE messages (
  id text COLLATE "C" PRIMARY KEY,
  received_at timestamptz NOT NULL,
  alias text,
  source_kind text NOT NULL,
  message_id text,
  conversation text,
  tags text[] NOT NULL DEFAULT '{}',
  size bigint NOT NULL,
  -- Which chunks hold the bytes: a quarantine restore writes a new generation and swaps it in.
  generation integer NOT NULL DEFAULT 0,
  meta json NOT NULL
);
CREATE INDEX messages_by_alias ON messages (alias, id);
CREATE INDEX messages_by_message_id ON messages (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX messages_by_conversation ON messages (conversation, id) WHERE conversation IS NOT NULL;
CREATE INDEX messages_by_tag ON messages USING gin (tags);

-- The bytes, written while the message streams in: 256 KiB rows, every one but the last full
-- (storage/postgres/chunks.ts). A message that fits one row gets it in its commit.
CREATE TABLE message_chunks (
  message text COLLATE "C" NOT NULL,
  generation integer NOT NULL,
  seq integer NOT NULL,
  data bytea NOT NULL,
  PRIMARY KEY (message, generation, seq)
);

-- Bytes being written (a new message, a rewrite, a quarantine spool) and by which node: what a
-- crash leaves here is swept by that node when it starts again, or by any node once stale.
-- kind 'message': the chunks of uncommitted message id; 'spool': the quarantine_chunks of its
-- spools (<id>.<n>); 'rewrite': its chunks of that generation. The commit deletes the mark.
CREATE TABLE unfinished (
  id text COLLATE "C" NOT NULL,
  kind text NOT NULL,
  generation integer NOT NULL DEFAULT 0,
  node text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (id, kind, generation)
);

-- record: json, as the records below (a NUL in a file name or the evidence must not fail the message's commit).
CREATE TABLE quarantine (
  id text COLLATE "C" PRIMARY KEY,
  message text COLLATE "C" NOT NULL,
  record json NOT NULL
);
CREATE INDEX quarantine_by_message ON quarantine (message);

CREATE TABLE quarantine_chunks (
  quarantine text COLLATE "C" NOT NULL,
  seq integer NOT NULL,
  data bytea NOT NULL,
  PRIMARY KEY (quarantine, seq)
);

-- The records below are kept as the JSON text mailgate wrote (json, not jsonb): nothing
-- queries inside them, and jsonb refuses the NUL character a server's reply, a mailbox's error or a
-- name typed at the sign-in page may carry, which would make the write fail.

-- The outbound queue, one row per message; claimed_by/claimed_until: which node is delivering it.
CREATE TABLE queue (
  id text COLLATE "C" PRIMARY KEY,
  next_attempt_at timestamptz NOT NULL,
  entry json NOT NULL,
  claimed_by text,
  claimed_until timestamptz
);
CREATE INDEX queue_due ON queue (next_attempt_at);

CREATE TABLE alias_states (
  alias text PRIMARY KEY,
  state json NOT NULL
);

-- The retriever's record that a mailbox message is stored; key: IMAP <uidvalidity>:<uid>, POP3 pop3:<uidl>.
CREATE TABLE fetched (
  alias text NOT NULL,
  key text NOT NULL,
  record json NOT NULL,
  PRIMARY KEY (alias, key)
);

-- Sealed (encrypted) by gateway/oauth/cache.ts before it comes here.
CREATE TABLE token_caches (
  alias text PRIMARY KEY,
  sealed bytea NOT NULL
);

-- When ALIAS last answered SENDER (lower-cased); a claim checks and moves it in one statement.
CREATE TABLE auto_replies (
  alias text NOT NULL,
  sender text NOT NULL,
  at timestamptz NOT NULL,
  PRIMARY KEY (alias, sender)
);

-- entry: the whole AuditEntry, its id included.
CREATE TABLE audit (
  id text COLLATE "C" PRIMARY KEY,
  entry json NOT NULL
);

-- Which node fetches which mailbox (type, host, port, user, folder): one holder at a time.
-- epoch grows with every change of holder, and recording a fetched message checks it.
CREATE TABLE mailbox_leases (
  mailbox text PRIMARY KEY,
  holder text,
  epoch bigint NOT NULL DEFAULT 0,
  expires_at timestamptz
);

-- The nodes of the fleet, each seen at every lease round (storage/postgres/leases.ts); a
-- node live (seen within the lease time, not stopped) counts when mailboxes are shared out.
-- stopped_at: it gave its leases back on shutdown, so the others share without waiting.
CREATE TABLE nodes (
  name text PRIMARY KEY,
  started_at timestamptz NOT NULL,
  seen_at timestamptz NOT NULL,
  stopped_at timestamptz,
  info jsonb NOT NULL DEFAULT '{}'
);
`,
  },
];
