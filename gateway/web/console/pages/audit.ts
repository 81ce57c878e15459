/** The audit log (AdminApi.listAudit): who changed what, from where, with what outcome; who signed in. */
import type { AuditEntry } from '../../../admin/api.js';
import { html, type Html } from '../html.js';
import { badge, table, time } from '../layout.js';

/** The windows the page offers, as `since` ages. */
const WINDOWS: readonly [string, string][] = [
  ['', 'all'],
  ['1h', 'last hour'],
  ['24h', 'last day'],
  ['7d', 'last week'],
];

export function auditPage(window: string, list: AuditEntry[], limit: number): Html {
  return html`<form class="filters" method="get" action="/audit">
      <label
        >Show
        <select name="window">
          ${WINDOWS.map(([v, label]) => html`<option value="${v}" ${v === window ? html`selected` : ''}>${label}</option>`)}
        </select></label
      >
      <button type="submit">Show</button>
    </form>
    ${table(
      'Audit log, newest first',
      ['When', 'Who', 'Action', 'Target', 'From', 'Outcome'],
      list.map(
        (e) =>
          html`<tr>
            <td>${time(e.at)}</td>
            <td>${e.who}</td>
            <td>${e.action}</td>
            <td class="mono">${e.target ?? ''}</td>
            <td class="mono">${e.from}</td>
            <td>${e.outcome === 'ok' ? badge('ok', 'ok') : badge(e.outcome, 'bad')}</td>
          </tr>`,
      ),
      'Nothing in the audit log for this time.',
    )}
    ${list.length >= limit ? html`<p class="muted">The newest ${limit} entries are shown; <code>mailgate audit list --json</code> gives them all.</p>` : ''}`;
}

/** The age a window stands for, in milliseconds. */
export function windowMs(window: string): number | undefined {
  return { '1h': 3_600_000, '24h': 86_400_000, '7d': 7 * 86_400_000 }[window];
}
