/** The dashboard: the gateway at a glance (AdminApi.summary), refreshed live as events arrive. */
import type { GatewaySummary, NodeRow, TrafficRow } from '../../../admin/api.js';
import { html, type Html } from '../html.js';
import { badge, table, time } from '../layout.js';

/** The events after which the dashboard's numbers may have changed. */
const LIVE_EVENTS = 'message-stored attachment-quarantined attachment-restored queue-changed alias-status';

/**
 * The dashboard counts a day of messages from the store at each refresh: on a busy gateway at
 * most every 2 s per open dashboard, so watching it costs ingest little.
 */
const LIVE_DELAY_MS = 2000;

const COLUMNS = [
  ['messages', 'Messages'],
  ['wrapped', 'Wrapped'],
  ['blocked', 'Attachment blocked'],
  ['exceptions', 'Delivery exception'],
  ['masked', 'Masked'],
  ['delivered', 'Delivered'],
  ['failed', 'Failed'],
] as const;

const SOURCES: Record<string, string> = {
  smtp: 'SMTP listener',
  submission: 'Submission',
  imap: 'IMAP fetch',
  pop3: 'POP3 fetch',
  cli: 'mailgate send',
  dsn: 'Delivery notices',
  quarantine: 'Quarantine forwards',
  'auto-reply': 'Auto-replies',
};

function traffic(title: string, rows: TrafficRow[]): Html {
  const total = rows.reduce((n, r) => n + r.messages, 0);
  return html`<h2>${title}: ${total} message${total === 1 ? '' : 's'}</h2>
    ${table(
      `${title} by source and outcome`,
      ['Source', ...COLUMNS.map(([, label]) => ({ label, num: true as const }))],
      rows.map(
        (r) =>
          html`<tr>
            <th scope="row">${SOURCES[r.source] ?? r.source}</th>
            ${COLUMNS.map(([key]) => html`<td class="num">${r[key]}</td>`)}
          </tr>`,
      ),
      'No messages.',
    )}`;
}

/** The dashboard page: whether it is live (console.js says), then the part that live updates replace. */
export function dashboardPage(s: GatewaySummary, nodes: NodeRow[]): Html {
  return html`<p class="live muted" id="live-status" role="status">Not live: the page shows the numbers as they were when it loaded.</p>
    ${dashboardLive(s, nodes)}`;
}

/** The nodes sharing the store (issue 16, "Several nodes: Admin"): each one's health and what it holds. */
function nodesTable(nodes: NodeRow[]): Html {
  return html`<h2>Nodes</h2>
    ${table(
      'Nodes',
      ['Node', 'State', 'Started', 'Last seen', { label: 'Mailboxes', num: true }, { label: 'Delivering', num: true }],
      nodes.map(
        (n) =>
          html`<tr id="node-${n.name}">
            <th scope="row">
              ${n.name}${n.thisNode ? html` <span class="muted">(this node)</span>` : ''}
              ${
                n.configDiffers?.length
                  ? html`<div class="warn" role="note">${badge('warning', 'warn')} configuration differs from this node's: ${n.configDiffers.join(', ')}</div>`
                  : ''
              }
            </th>
            <td>${n.live ? badge('live', 'ok') : badge('gone', 'bad')}</td>
            <td>${time(n.startedAt)}</td>
            <td>${time(n.seenAt)}</td>
            <td class="num">${n.mailboxes}</td>
            <td class="num">${n.delivering ?? '-'}</td>
          </tr>`,
      ),
      'No node has started yet.',
    )}`;
}

/** The part of the dashboard that live updates fetch again (GET /dashboard/live). */
export function dashboardLive(s: GatewaySummary, nodes: NodeRow[]): Html {
  const q = s.queue;
  const unhealthy = s.aliases.filter((a) => a.status !== 'active' || a.failures > 0).length;
  return html`<div id="dashboard" data-live="${LIVE_EVENTS}" data-live-delay="${LIVE_DELAY_MS}" hx-get="/dashboard/live" hx-trigger="live" hx-swap="outerHTML">
    <p class="muted">Counted at ${time(s.at)}.</p>
    <div class="cards">
      <div class="card">
        <div>Last hour</div>
        <div class="value" data-testid="last-hour">${s.lastHour.reduce((n, r) => n + r.messages, 0)}</div>
      </div>
      <div class="card">
        <div>Last day</div>
        <div class="value" data-testid="last-day">${s.lastDay.reduce((n, r) => n + r.messages, 0)}</div>
      </div>
      <div class="card">
        <div><a href="/queue">Queue</a></div>
        <div class="value">${q.total}</div>
        <div class="muted">${q.waiting} waiting, ${q.retrying} retrying, ${q.held} held</div>
      </div>
      <div class="card">
        <div><a href="/quarantine">Quarantine</a></div>
        <div class="value">${s.quarantined}</div>
        <div class="muted">attachment${s.quarantined === 1 ? '' : 's'}</div>
      </div>
      <div class="card">
        <div><a href="/aliases">Aliases</a></div>
        <div class="value">${s.aliases.length}</div>
        <div class="muted">${unhealthy === 0 ? 'all healthy' : `${unhealthy} need${unhealthy === 1 ? 's' : ''} attention`}</div>
      </div>
    </div>
    ${s.countedAtMost !== undefined ? html`<p class="muted">More than ${s.countedAtMost} messages today: the newest ${s.countedAtMost} are counted.</p>` : ''}
    ${traffic('Last hour', s.lastHour)} ${traffic('Last day', s.lastDay)}
    <h2>Alias health</h2>
    ${table(
      'Alias health',
      ['Alias', 'Status', { label: 'Failures', num: true }, 'Reason'],
      s.aliases.map(
        (a) =>
          html`<tr>
            <th scope="row"><a href="/aliases#alias-${a.name}">${a.name}</a></th>
            <td>${a.status === 'active' ? badge(a.failures > 0 ? 'active, failing' : 'active', a.failures > 0 ? 'warn' : 'ok') : badge('inactive', 'bad')}</td>
            <td class="num">${a.failures}</td>
            <td>${a.reason ?? ''}</td>
          </tr>`,
      ),
      'No aliases are configured.',
    )}
    ${nodesTable(nodes)}
  </div>`;
}
