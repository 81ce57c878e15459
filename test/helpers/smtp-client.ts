import { connect, type Socket } from 'node:net';

/** A bare SMTP client for asserting exact replies: each command resolves with the full reply (multi-line joined). */
export interface RawSmtp {
  /** The greeting. */
  greeting: string;
  command(line: string): Promise<string>;
  /** Sends raw bytes (e.g. a DATA body) and resolves with the next reply. */
  write(data: string | Buffer): Promise<string>;
  close(): void;
}

export async function rawSmtp(port: number, host = '127.0.0.1'): Promise<RawSmtp> {
  const socket: Socket = connect(port, host);
  let buffered = '';
  const waiting: ((reply: string) => void)[] = [];
  const replies: string[] = [];
  let current: string[] = [];
  socket.setEncoding('utf8');
  socket.on('data', (text: string) => {
    buffered += text;
    let nl: number;
    while ((nl = buffered.indexOf('\r\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 2);
      current.push(line);
      if (/^\d{3} /.test(line) || /^\d{3}$/.test(line)) {
        const reply = current.join('\n');
        current = [];
        const w = waiting.shift();
        if (w) w(reply);
        else replies.push(reply);
      }
    }
  });
  const next = () =>
    new Promise<string>((resolve) => {
      const r = replies.shift();
      if (r !== undefined) resolve(r);
      else waiting.push(resolve);
    });
  const greeting = await next();
  return {
    greeting,
    command: (line) => {
      socket.write(line + '\r\n');
      return next();
    },
    write: (data) => {
      socket.write(data);
      return next();
    },
    close: () => socket.destroy(),
  };
}
