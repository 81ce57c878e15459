/** Aliases: each with its health (AdminApi.listAliases), a connection test showing every step (testAlias), activate and deactivate. */
import type { AliasRow, AliasTestReport } from '../../../admin/api.js';
import { backfillText } from '../../../admin/alias-rows.js';
import { html, type Html } from '../html.js';
import { actionButton, badge, table, time } from '../layout.js';
import { canOperate, type PageContext } from './context.js';

function status(a: AliasRow): Html {
  if (a.status === 'inactive') return badge('inactive', 'bad');
  return a.failures > 0 ? badge('active, failing', 'warn') : badge('active', 'ok');
}

/** The mailbox's backlog being fetched (issue 15): a bar, and the words `aliases list` prints. */
function backfill(a: AliasRow): Html | '' {
  const b = a.backfill;
  if (!b) return '';
  return html`<div class="backfill" role="status">
    <progress value="${b.done}" max="${b.total}" aria-label="Backfill of ${a.name}"></progress>
    <div class="muted">backfill ${backfillText(b)}</div>
  </div>`;
}

/** A connection test's steps, as `mailgate aliases test` prints them. */
export function testReport(report: AliasTestReport): Html {
  return html`<section aria-labelledby="test-title" id="test-report">
    <h2 id="test-title">Connection test of ${report.alias}: ${report.ok ? badge('passed', 'ok') : badge('failed', 'bad')}</h2>
    ${table(
      `Connection test of ${report.alias}`,
      ['Server', 'Step', 'Result', 'Detail'],
      report.steps.map(
        (s) =>
          html`<tr>
            <td>${s.server}</td>
            <td>${s.step}</td>
            <td>${badge(s.result, s.result === 'pass' ? 'ok' : s.result === 'fail' ? 'bad' : 'muted')}</td>
            <td>${s.detail}</td>
          </tr>`,
      ),
      'No steps were run.',
    )}
  </section>`;
}

/** Several nodes: which one fetches the alias's mailbox now (none on a store of one node). */
function fetchedBy(a: AliasRow): Html | string {
  return a.node !== undefined ? html`<div class="muted">fetched by node ${a.node}</div>` : '';
}

export function aliasesPage(ctx: PageContext, rows: AliasRow[], report?: AliasTestReport): Html {
  const operate = canOperate(ctx);
  return html`${report ? testReport(report) : ''}
    <div id="alias-table" data-live="alias-status backfill-progress" hx-get="/aliases" hx-select="#alias-table" hx-trigger="live" hx-swap="outerHTML">
      ${table(
        'Aliases',
        ['Alias', 'Incoming', 'Status', { label: 'Failures', num: true }, 'Reason', 'Next retry', 'Changed', operate && 'Actions'],
        rows.map(
          (a) =>
            html`<tr id="alias-${a.name}">
              <th scope="row">
                ${a.name}
                <div class="muted">${a.address}${a.department ? ` · ${a.department}` : ''}</div>
                ${(a.warnings ?? []).map((w) => html`<div class="warn" role="note">${badge('warning', 'warn')} ${w}</div>`)}
              </th>
              <td class="mono">${a.incoming ?? html`<span class="muted">none</span>`}${fetchedBy(a)}</td>
              <td>${status(a)}${backfill(a)}</td>
              <td class="num">${a.failures}</td>
              <td>${a.reason ?? ''}${a.lastError && a.lastError !== a.reason ? html`<div class="muted">${a.lastError}</div>` : ''}</td>
              <td>${time(a.retryAt)}</td>
              <td>${time(a.changedAt)}${a.changedBy ? html` <span class="muted">by ${a.changedBy}</span>` : ''}</td>
              ${
                operate
                  ? html`<td>
                      <div class="actions">
                        ${actionButton({ action: `/aliases/${a.name}/test`, label: 'Test connection', back: ctx.here, secondary: true })}
                        ${
                          a.status === 'inactive'
                            ? actionButton({ action: `/aliases/${a.name}/activate`, label: 'Activate', back: ctx.here })
                            : actionButton({
                                action: `/aliases/${a.name}/deactivate`,
                                label: 'Deactivate',
                                back: ctx.here,
                                danger: true,
                                confirm: `Stop fetching mail for ${a.name}?`,
                              })
                        }
                      </div>
                    </td>`
                  : ''
              }
            </tr>`,
        ),
        'No aliases are configured: add [[alias]] tables to the configuration file.',
      )}
    </div>`;
}
