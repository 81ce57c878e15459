/**
 * The bytes on the control socket: a request or reply is one JSON line; a stream reply's body
 * follows raw; a `submit` request's message follows in frames.
 */
import type { Socket } from 'node:net';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { errors } from '../../lib/errors.js';

/** The JSON line that answers a request. */
export interface Reply {
  ok: boolean;
  stream?: boolean;
  result?: unknown;
  error?: { code?: string; message: string };
}

export async function firstChunk(stream: Readable): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      stream.off('readable', onReadable);
      stream.off('error', reject);
      stream.off('end', onEnd);
    };
    const onReadable = () => {
      const chunk = stream.read() as Buffer | null;
      if (chunk === null && !stream.readableEnded) return;
      cleanup();
      resolve(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(null);
    };
    stream.on('readable', onReadable);
    stream.once('error', (err) => {
      cleanup();
      reject(err);
    });
    stream.once('end', onEnd);
  });
}

/** Reads the JSON reply line and leaves whatever follows it (a stream body) unread on the socket. */
export async function readReply(socket: Socket): Promise<Reply> {
  const line = await readLine(socket, Infinity, 'the gateway closed the control connection without answering');
  return JSON.parse(line.toString('utf8')) as Reply;
}

/**
 * The bytes up to the first newline (without it). The socket is left paused with whatever
 * followed the newline unshifted back, byte for byte, for the next reader.
 */
export function readLine(socket: Socket, limit: number, closedEarly = 'the connection closed before a whole line arrived'): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = () => {
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
    };
    const onData = (chunk: Buffer) => {
      const nl = chunk.indexOf(0x0a);
      if (nl < 0) {
        chunks.push(chunk);
        size += chunk.length;
        if (size > limit) onError(new Error(`line longer than ${limit} bytes`));
        return;
      }
      cleanup();
      socket.pause();
      const rest = chunk.subarray(nl + 1);
      if (rest.length) socket.unshift(rest);
      resolve(Buffer.concat([...chunks, chunk.subarray(0, nl)]));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onEnd = () => onError(new Error(closedEarly));
    socket.on('data', onData);
    socket.once('error', onError);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
  });
}

/**
 * The message body of `submit`: each chunk as a 4-byte big-endian length and the bytes, then
 * a zero length. The end of the connection alone cannot tell a whole message from a client
 * killed halfway (both close the socket), and a truncated message must not be stored and
 * sent; the empty frame is the client saying the message is complete, as "." ends SMTP DATA.
 */
export class FrameWriter extends Transform {
  override _transform(chunk: Buffer | string, _enc: BufferEncoding, done: TransformCallback): void {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    if (bytes.length === 0) return done(); // an empty frame would end the message
    const length = Buffer.alloc(4);
    length.writeUInt32BE(bytes.length);
    this.push(length);
    done(null, bytes);
  }

  override _flush(done: TransformCallback): void {
    done(null, Buffer.alloc(4));
  }
}

/** The message from FrameWriter's frames; fails unless the empty frame came before the connection ended. */
class FrameReader extends Transform {
  #length = Buffer.alloc(0);
  #remaining = 0;
  #complete = false;

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    let at = 0;
    while (at < chunk.length && !this.#complete) {
      if (this.#remaining > 0) {
        const n = Math.min(this.#remaining, chunk.length - at);
        this.push(chunk.subarray(at, at + n));
        this.#remaining -= n;
        at += n;
        continue;
      }
      const take = Math.min(4 - this.#length.length, chunk.length - at);
      this.#length = Buffer.concat([this.#length, chunk.subarray(at, at + take)]);
      at += take;
      if (this.#length.length < 4) break;
      this.#remaining = this.#length.readUInt32BE(0);
      this.#length = Buffer.alloc(0);
      if (this.#remaining === 0) this.#complete = true;
    }
    done(); // bytes after the empty frame are not the message's
  }

  override _flush(done: TransformCallback): void {
    done(this.#complete ? null : clientGone());
  }
}

const clientGone = errors.clientGone;

/** The message that follows a `submit` line on the socket. */
export function framedMessage(socket: Socket): Readable {
  const message = new FrameReader();
  // A destroyed connection never ends the pipe: the message must fail, not wait.
  socket.once('close', () => {
    if (!message.writableFinished) message.destroy(clientGone());
  });
  socket.pipe(message);
  return message;
}
