import nodemailer from 'nodemailer';
import type Mail from 'nodemailer/lib/mailer';
import { hashPassword } from '../../gateway/config/password.js';
import type { Store } from '../../storage/store.js';
import type { MessageMeta } from '../../storage/records.js';
import type { QueueEntry } from '../../storage/records.js';

export const SUBMIT_USER = 'helpdesk';
export const SUBMIT_PASSWORD = 'helpdesk pass';

/** `[submission]` on an ephemeral loopback port with one user who may send as `sendAs`, and a fast retry schedule. */
export function submissionToml(sendAs: string[] = ['*'], queue = 'retry_intervals = [1]\nretry_jitter = 0.0'): string {
  return `
[submission]
listen = ["127.0.0.1:0"]
[submission.auth]
allow_insecure_on_loopback = true
[[submission.user]]
name = "${SUBMIT_USER}"
password_hash = "${hashPassword(SUBMIT_PASSWORD)}"
send_as = ${JSON.stringify(sendAs)}

[queue]
${queue}
`;
}

/** Submits a message as an application would; resolves with the id from the 250 reply. */
export async function submit(port: number, mail: Mail.Options, auth = { user: SUBMIT_USER, pass: SUBMIT_PASSWORD }): Promise<string> {
  const client = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true, auth });
  try {
    const info = await client.sendMail(mail);
    const id = /queued as (\S+)/.exec(info.response)?.[1];
    if (!id) throw new Error(`no id in the reply: ${info.response}`);
    return id;
  } finally {
    client.close();
  }
}

/** Waits until the message left the queue and returns its metadata (with `delivery`). */
export async function waitDelivered(store: Store, id: string, timeoutMs = 20_000): Promise<MessageMeta & { delivery: NonNullable<MessageMeta['delivery']> }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const meta = await store.getMessage(id);
    if (meta?.delivery) return meta as MessageMeta & { delivery: NonNullable<MessageMeta['delivery']> };
    if (Date.now() > deadline)
      throw new Error(`message ${id} did not leave the queue within ${timeoutMs} ms: ${JSON.stringify(await store.getQueueEntry(id))}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Waits until the queue entry satisfies `done`. */
export async function waitQueue(store: Store, id: string, done: (e: QueueEntry) => boolean, timeoutMs = 20_000): Promise<QueueEntry> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const entry = await store.getQueueEntry(id);
    if (entry && done(entry)) return entry;
    if (Date.now() > deadline) throw new Error(`queue entry ${id} not as expected within ${timeoutMs} ms: ${JSON.stringify(entry)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
