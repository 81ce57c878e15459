/**
 * The floor of the outbound bench: the least any gateway must do in one Node process for the
 * bench's traffic, to know what ratio is reachable at all. It stands in for `mailgate serve`
 * (same command line, same two log lines the bench waits for): it takes the submissions with a
 * bare smtp-server (any login accepted), writes each message and its queue record in one
 * synced LevelDB batch before the 250, sends it with a pooled nodemailer (the dispatcher's pool
 * settings) to the alias's outgoing server, and with `MAILGATE_FLOOR_OUTCOME=1` records the
 * outcome in a second synced batch, as a queue must. No policy, no metadata, no logging.
 *
 * `npm run bench -- outbound-floor` runs the outbound bench through it, with and without the
 * outcome, beside `mailgate serve`; by hand:
 *   node outbound-floor.js serve --config FILE    (the config the outbound bench writes)
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ClassicLevel } from 'classic-level';
import nodemailer from 'nodemailer';
import { SMTPServer } from 'smtp-server';

const configFile = process.argv[process.argv.indexOf('--config') + 1];
if (!configFile) throw new Error('usage: node outbound-floor.js serve --config FILE');
// The alias's [alias.outgoing] port: the only port in the bench's config.
const sinkPort = Number(/\[alias\.outgoing\][^[]*?port\s*=\s*(\d+)/.exec(readFileSync(configFile, 'utf8'))?.[1]);
if (!sinkPort) throw new Error(`no [alias.outgoing] port in ${configFile}`);
const recordOutcome = process.env.MAILGATE_FLOOR_OUTCOME === '1';

const dir = await mkdtemp(path.join(os.tmpdir(), 'mailgate-floor-'));
const db = new ClassicLevel<string, Buffer>(dir, { valueEncoding: 'buffer' });
await db.open();
const transport = nodemailer.createTransport({
  host: '127.0.0.1',
  port: sinkPort,
  secure: false,
  ignoreTLS: true,
  pool: true,
  maxConnections: 5,
  maxMessages: 100,
});
let next = 0;

const server = new SMTPServer({
  authMethods: ['PLAIN'],
  allowInsecureAuth: true,
  disableReverseLookup: true,
  disabledCommands: ['STARTTLS'],
  logger: false,
  onAuth(auth, _session, callback) {
    callback(null, { user: auth.username });
  },
  onData(stream, session, callback) {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      const raw = Buffer.concat(chunks);
      const id = String(++next).padStart(10, '0');
      const envelope = { from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '', to: session.envelope.rcptTo.map((r) => r.address) };
      const queued = Buffer.from(JSON.stringify({ id, ...envelope, status: 'pending' }));
      db.batch(
        [
          { type: 'put', key: `m:${id}`, value: raw },
          { type: 'put', key: `q:${id}`, value: queued },
        ],
        { sync: true },
      ).then(
        () => {
          callback(null, `queued as ${id}`);
          transport.sendMail({ envelope, raw }).then(
            () => {
              if (!recordOutcome) return;
              const done = Buffer.from(JSON.stringify({ id, ...envelope, status: 'delivered' }));
              db.batch(
                [
                  { type: 'del', key: `q:${id}` },
                  { type: 'put', key: `d:${id}`, value: done },
                ],
                { sync: true },
              ).catch((err: Error) => console.error(err));
            },
            (err: Error) => console.error(`floor: sending ${id} failed: ${err.message}`),
          );
        },
        (err: Error) => callback(err),
      );
    });
  },
});

server.listen(0, '127.0.0.1', () => {
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  console.log(JSON.stringify({ msg: 'submission listener ready', port }));
  console.log(JSON.stringify({ msg: 'mailgate ready' }));
});
process.on('SIGTERM', () => {
  transport.close();
  server.close(() => void db.close().then(() => rm(dir, { recursive: true, force: true }).then(() => process.exit(0))));
});
