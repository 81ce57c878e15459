/** The quarantine: blocked attachments (AdminApi.listQuarantine) to download, restore or delete, one by one or all that a filter shows. */
import type { QuarantineRecord } from '../../../admin/api.js';
import { html, type Html } from '../html.js';
import { actionButton, size, table, time } from '../layout.js';
import { canOperate, canReadContent, type PageContext } from './context.js';

/** The filter's fields, as the API's query names them. */
export type QuarantineSearch = Partial<Record<'message' | 'rule' | 'file' | 'older_than', string>>;

export function quarantinePage(ctx: PageContext, q: QuarantineSearch, list: QuarantineRecord[]): Html {
  const filtered = Object.values(q).some((v) => v !== undefined && v !== '');
  const operate = canOperate(ctx);
  const bulk =
    operate && list.length > 0
      ? filtered
        ? html`<div class="actions" aria-label="All shown">
            ${actionButton({ action: '/quarantine/restore', label: `Restore all ${list.length} shown`, back: ctx.here, fields: q, secondary: true })}
            ${actionButton({
              action: '/quarantine/delete',
              label: `Delete all ${list.length} shown`,
              back: ctx.here,
              fields: q,
              danger: true,
              confirm: `Delete these ${list.length} attachments for good?`,
            })}
          </div>`
        : html`<p class="muted">Filter the list to restore or delete in bulk.</p>`
      : '';
  return html`<form class="filters" method="get" action="/quarantine" role="search">
      <label>File name <input type="text" name="file" value="${q.file ?? ''}" placeholder="*.exe" /></label>
      <label>Rule <input type="text" name="rule" value="${q.rule ?? ''}" /></label>
      <label>Message id <input type="text" name="message" value="${q.message ?? ''}" /></label>
      <label>Quarantined before (UTC) <input type="datetime-local" name="older_than" value="${q.older_than ?? ''}" /></label>
      <button type="submit">Filter</button>
      <a class="button secondary" href="/quarantine">Clear</a>
    </form>
    ${bulk}
    ${table(
      'Quarantined attachments',
      ['File', { label: 'Size', num: true }, 'Rule', 'Message', 'Quarantined', 'Actions'],
      list.map((r) => {
        const actions: Html[] = [];
        if (canReadContent(ctx)) actions.push(html`<a class="button secondary" href="/api/v1/quarantine/${r.id}/content" download>Download</a>`);
        if (operate) {
          actions.push(actionButton({ action: `/quarantine/${r.id}/restore`, label: 'Restore', back: ctx.here }));
          actions.push(
            actionButton({ action: `/quarantine/${r.id}/delete`, label: 'Delete', back: ctx.here, danger: true, confirm: `Delete ${r.fileName} for good?` }),
          );
        }
        return html`<tr>
          <td>
            ${r.fileName}
            <div class="muted mono">${r.contentType}</div>
          </td>
          <td class="num">${size(r.size)}</td>
          <td>${r.rule}</td>
          <td><a class="mono" href="/messages/${r.messageId}">${r.messageId}</a></td>
          <td>${time(r.date)}</td>
          <td><div class="actions">${actions}</div></td>
        </tr>`;
      }),
      filtered ? 'Nothing in the quarantine matches.' : 'The quarantine is empty.',
    )}`;
}
