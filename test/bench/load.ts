/**
 * SMTP load generator, run as its own process so its CPU does not count against the
 * server measured: `node load.js PORT[,PORT...] SESSIONS MESSAGES SIZE reuse|new` (several
 * ports: the sessions take them in turn, for servers sharing the load). Prints one JSON
 * line: messages per second and the p50/p99 time from end of DATA to the 250 reply.
 */
import { connect, type Socket } from 'node:net';

const [portList, sessions, messages, size, mode] = process.argv.slice(2);
const ports = portList!.split(',').map(Number);
const total = Number(messages);
const body = Buffer.from(
  `From: load@example.org\r\nTo: support@example.com\r\nSubject: load\r\n\r\n` + `${'x'.repeat(74)}\r\n`.repeat(Math.max(1, Math.floor(Number(size) / 76))),
);

function session(socket: Socket) {
  let buffered = '';
  const waiting: ((line: string) => void)[] = [];
  socket.setEncoding('utf8');
  socket.on('data', (t: string) => {
    buffered += t;
    let nl: number;
    while ((nl = buffered.indexOf('\r\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 2);
      if (/^\d{3} /.test(line)) waiting.shift()?.(line);
    }
  });
  const reply = () => new Promise<string>((r) => waiting.push(r));
  const cmd = (line: string) => {
    socket.write(line + '\r\n');
    return reply();
  };
  return { reply, cmd };
}

async function open(port: number): Promise<ReturnType<typeof session> & { socket: Socket }> {
  const socket = connect(port, '127.0.0.1');
  socket.setNoDelay(true); // else Nagle and delayed ACKs add 40 ms to every reply
  const s = session(socket);
  await s.reply();
  await s.cmd('EHLO load.test');
  return { ...s, socket };
}

const latencies: number[] = [];
let next = 0;
async function worker(port: number): Promise<void> {
  let s = mode === 'reuse' ? await open(port) : undefined;
  while (next < total) {
    next++;
    if (!s) s = await open(port);
    await s.cmd('MAIL FROM:<load@example.org>');
    await s.cmd('RCPT TO:<support@example.com>');
    await s.cmd('DATA');
    const t0 = process.hrtime.bigint();
    const r = await s.cmd(Buffer.concat([body, Buffer.from('.')]).toString('latin1'));
    latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (!r.startsWith('250')) throw new Error(`not accepted: ${r}`);
    if (mode !== 'reuse') {
      s.socket.end('QUIT\r\n');
      s = undefined;
    }
  }
  s?.socket.end('QUIT\r\n');
}

const start = process.hrtime.bigint();
await Promise.all(Array.from({ length: Number(sessions) }, (_, i) => worker(ports[i % ports.length]!)));
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
latencies.sort((a, b) => a - b);
const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? 0;
console.log(JSON.stringify({ rate: total / seconds, p50: pct(0.5), p99: pct(0.99) }));
