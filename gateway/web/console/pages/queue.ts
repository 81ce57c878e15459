/** The queue: messages waiting to be sent or relayed (AdminApi.listQueue), to retry or drop; every held one retried at once. */
import type { QueueEntry } from '../../../admin/api.js';
import { html, type Html } from '../html.js';
import { actionButton, badge, table, time } from '../layout.js';
import { canOperate, type PageContext } from './context.js';

function state(e: QueueEntry): Html {
  if (e.held !== undefined)
    return html`${badge('held', 'bad')}
      <div>${e.held}</div>`;
  if (e.attempts > 0) return badge('retrying', 'warn');
  return badge('waiting');
}

export function queuePage(ctx: PageContext, list: QueueEntry[]): Html {
  const operate = canOperate(ctx);
  const held = list.filter((e) => e.held !== undefined).length;
  return html`<div id="queue" data-live="queue-changed" hx-get="/queue" hx-select="#queue" hx-trigger="live" hx-swap="outerHTML">
    ${
      operate && held > 0
        ? html`<div class="actions">
            ${actionButton({ action: '/queue/retry', label: `Retry all ${held} held`, back: ctx.here, fields: { held: 'true' } })}
          </div>`
        : ''
    }
    ${table(
      'Queued messages, oldest first',
      ['Message', 'Kind', 'Recipients', 'State', { label: 'Attempts', num: true }, 'Next attempt', 'Last error', operate && 'Actions'],
      list.map(
        (e) =>
          html`<tr id="queued-${e.id}">
            <td>
              <a class="mono" href="/messages/${e.id}">${e.id}</a>
              <div class="muted">queued ${time(e.queuedAt)}</div>
            </td>
            <td>${e.kind}${e.alias ? html` <span class="muted">as ${e.alias}</span>` : ''}</td>
            <td>${e.recipients.map((r) => html`<div>${r.address} <span class="muted">${r.status}</span></div>`)}</td>
            <td>${state(e)}</td>
            <td class="num">${e.attempts}</td>
            <td>${e.held !== undefined ? html`<span class="muted">when an admin acts</span>` : time(e.nextAttemptAt)}</td>
            <td>${e.lastError ? `${e.lastError.code ?? ''} ${e.lastError.message}` : ''}</td>
            ${
              operate
                ? html`<td>
                    <div class="actions">
                      ${actionButton({ action: `/queue/${e.id}/retry`, label: 'Retry now', back: ctx.here })}
                      ${actionButton({
                        action: `/queue/${e.id}/drop`,
                        label: 'Drop',
                        back: ctx.here,
                        danger: true,
                        confirm: 'Drop this message from the queue? It stays stored but is not sent.',
                      })}
                    </div>
                  </td>`
                : ''
            }
          </tr>`,
      ),
      'The queue is empty.',
    )}
  </div>`;
}
