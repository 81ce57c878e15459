/** Messages: the search (AdminApi.listMessages) and one message (AdminApi.showMessage) with its findings, attachments and delivery timeline. */
import type { AttachmentDetail, MessageDetails, MessagePage, MessageMeta, TimelineStep } from '../../../admin/api.js';
import { html, type Html } from '../html.js';
import { actionButton, badge, fact, size, table, time } from '../layout.js';
import { canOperate, canReadContent, type PageContext } from './context.js';

/** The search form's fields, as the API's query names them. */
export type MessageSearch = Partial<Record<'text' | 'alias' | 'tag' | 'since' | 'until' | 'attachment' | 'wrapped' | 'thread', string>>;

function choice(name: string, label: string, value: string | undefined, options: readonly [string, string][]): Html {
  return html`<label
    >${label}
    <select name="${name}">
      ${options.map(([v, text]) => html`<option value="${v}" ${v === (value ?? '') ? html`selected` : ''}>${text}</option>`)}
    </select></label
  >`;
}

function searchForm(ctx: PageContext, q: MessageSearch): Html {
  const aliases: [string, string][] = [['', 'any'], ...ctx.config.alias.map((a): [string, string] => [a.name, a.name])];
  const yesNo: [string, string][] = [
    ['', 'any'],
    ['true', 'yes'],
    ['false', 'no'],
  ];
  return html`<form class="filters" method="get" action="/messages" role="search">
    <label>Search <input type="search" name="text" value="${q.text ?? ''}" placeholder="subject, from or to" /></label>
    ${choice('alias', 'Alias', q.alias, aliases)}
    <label>Tag <input type="text" name="tag" value="${q.tag ?? ''}" size="14" /></label>
    <label>Conversation <input type="text" name="thread" value="${q.thread ?? ''}" size="8" placeholder="K7P2QX" /></label>
    <label>Since (UTC) <input type="datetime-local" name="since" value="${q.since ?? ''}" /></label>
    <label>Until (UTC) <input type="datetime-local" name="until" value="${q.until ?? ''}" /></label>
    ${choice('attachment', 'Attachment', q.attachment, yesNo)} ${choice('wrapped', 'Wrapped', q.wrapped, yesNo)}
    <button type="submit">Search</button>
    <a class="button secondary" href="/messages">Clear</a>
  </form>`;
}

/** Badges for what the policy did to a message. */
export function outcomeBadges(m: MessageMeta): Html[] {
  const out: Html[] = [];
  if (m._WrappingMessageReason !== undefined) out.push(badge('wrapped', 'warn'));
  const blocked = m.attachments.filter((a) => a.blocked).length;
  if (blocked > 0) out.push(badge(`${blocked} blocked`, 'bad'));
  if (m.tags.includes('exception-queue')) out.push(badge('delivery exception', 'warn'));
  if (Number(m.findings['masking']?.['total'] ?? 0) > 0) out.push(badge('masked'));
  if (m.delivery)
    out.push(badge(m.delivery.status.replace('_', ' '), m.delivery.status === 'delivered' ? 'ok' : m.delivery.status === 'partly_delivered' ? 'warn' : 'bad'));
  else if (m.direction === 'outbound') out.push(badge('outbound'));
  return out;
}

export function messagesPage(ctx: PageContext, q: MessageSearch, found: MessagePage): Html {
  const next = new URLSearchParams(Object.entries(q).filter(([, v]) => v !== undefined && v !== '') as [string, string][]);
  if (found.next) next.set('cursor', found.next);
  return html`${searchForm(ctx, q)}
  ${table(
    'Messages, newest first',
    ['Received', 'Subject', 'From', 'To', 'Source', { label: 'Size', num: true }, 'Outcome'],
    found.messages.map(
      (m) =>
        html`<tr>
          <td>${time(m.receivedAt)}</td>
          <td><a href="/messages/${m.id}">${m.subject || '(no subject)'}</a></td>
          <td>${m.from ?? ''}</td>
          <td>${m.to.join(', ')}</td>
          <td>${m.source.kind}${m.source.alias ? html` <span class="muted">(${m.source.alias})</span>` : ''}</td>
          <td class="num">${size(m.size)}</td>
          <td>${outcomeBadges(m)}</td>
        </tr>`,
    ),
    'No messages match.',
  )}
  ${found.next ? html`<p><a href="/messages?${next.toString()}" rel="next">Older messages</a></p>` : ''}`;
}

function attachmentRow(ctx: PageContext, a: AttachmentDetail, info: MessageMeta['attachments'][number]): Html {
  const q = a.quarantined;
  let state: Html;
  if (!info.blocked) state = badge('attached', 'ok');
  else if (q) state = html`${badge('quarantined', 'bad')} <span class="muted">${q.rule}</span>`;
  else state = badge('blocked, deleted', 'bad');
  const actions: Html[] = [];
  if (q && canReadContent(ctx)) actions.push(html`<a class="button secondary" href="/api/v1/quarantine/${q.id}/content" download>Download</a>`);
  if (q && canOperate(ctx)) {
    actions.push(actionButton({ action: `/quarantine/${q.id}/restore`, label: 'Restore', back: ctx.here }));
    actions.push(
      actionButton({ action: `/quarantine/${q.id}/delete`, label: 'Delete', back: ctx.here, danger: true, confirm: `Delete ${q.fileName} for good?` }),
    );
  }
  return html`<tr>
    <td>${info.fileName}</td>
    <td class="mono">${info.contentType}</td>
    <td class="num">${size(q ? q.size : a.decodedSize)}</td>
    <td>${state}</td>
    <td><div class="actions">${actions}</div></td>
  </tr>`;
}

function step(s: TimelineStep): Html {
  const tone =
    s.event === 'delivered' ? 'ok' : s.event === 'failed' || s.event === 'dropped' ? 'bad' : s.event === 'held' || s.event === 'wrapped' ? 'warn' : 'muted';
  return html`<li>${badge(s.event.replace('_', ' '), tone)} ${time(s.at)} ${s.summary}</li>`;
}

/** The message's conversation: its other messages, newest first, each a link. */
function conversationSection(d: MessageDetails): Html {
  return html`<h2>Conversation</h2>
    ${table(
      'Conversation',
      ['Received', 'Way', 'From', 'Subject'],
      d.conversation.map(
        (c) =>
          html`<tr>
            <td>${time(c.receivedAt)}</td>
            <td>${c.direction === 'outbound' ? 'sent' : 'received'}${c.id === d.meta.inReplyTo ? ' (answered by this one)' : ''}</td>
            <td>${c.from ?? ''}</td>
            <td><a href="/messages/${c.id}">${c.subject || '(no subject)'}</a></td>
          </tr>`,
      ),
      'No other message in this conversation yet.',
    )}`;
}

export function messagePage(ctx: PageContext, d: MessageDetails): Html {
  const m = d.meta;
  const src = m.source;
  const source = [
    src.kind,
    src.alias && `alias ${src.alias}`,
    src.remoteAddress && `from ${src.remoteAddress}`,
    src.helo && `HELO ${src.helo}`,
    src.user && `user ${src.user}`,
  ]
    .filter(Boolean)
    .join(', ');
  const findings = Object.entries(m.findings);
  return html`<dl class="facts">
      <dt>Subject</dt>
      <dd>${m.subject || '(no subject)'}</dd>
      <dt>From</dt>
      <dd>${m.from ?? ''}</dd>
      <dt>To</dt>
      <dd>${m.to.join(', ')}</dd>
      ${fact('Cc', m.cc.join(', '))}
      <dt>Envelope</dt>
      <dd class="mono">MAIL FROM:&lt;${m.envelope.mailFrom}&gt; RCPT TO: ${m.envelope.rcptTo.map((r) => `<${r}>`).join(' ')}</dd>
      <dt>Received</dt>
      <dd>${time(m.receivedAt)} by ${source}</dd>
      <dt>Size</dt>
      <dd>${size(m.size)} stored, ${size(m.receivedSize)} received</dd>
      ${fact('Message-ID', m.messageId, 'mono')}
      <dt>Id</dt>
      <dd class="mono">${m.id}</dd>
      ${fact('Wrapped because', m._WrappingMessageReason)}
      ${m.conversation ? fact('Conversation', html`<a class="mono" href="/messages?thread=${encodeURIComponent(m.conversation)}">${m.conversation}</a>`) : ''}
      <dt>Tags</dt>
      <dd>
        ${m.tags.length ? m.tags.map((t) => html`<a class="badge" href="/messages?tag=${encodeURIComponent(t)}">${t}</a> `) : html`<span class="muted">none</span>`}
      </dd>
      <dt>Outcome</dt>
      <dd>${outcomeBadges(m)}</dd>
    </dl>
    <div class="actions">
      ${canReadContent(ctx) ? html`<a class="button secondary" href="/api/v1/messages/${m.id}/raw" download>Download raw message (.eml)</a>` : ''}
      ${
        canOperate(ctx)
          ? actionButton({
              action: `/messages/${m.id}/delete`,
              label: 'Delete message',
              back: '/messages',
              danger: true,
              confirm: 'Delete this message for good, with its quarantined attachments?',
            })
          : ''
      }
    </div>
    <h2>Attachments</h2>
    ${table(
      'Attachments',
      ['File', 'Type', { label: 'Size', num: true }, 'State', 'Actions'],
      d.attachments.map((a, i) => attachmentRow(ctx, a, m.attachments[i]!)),
      'No attachments.',
    )}
    ${m.conversation ? conversationSection(d) : ''}
    <h2>Findings</h2>
    ${
      findings.length === 0
        ? html`<p class="muted">No stage recorded anything.</p>`
        : html`<dl class="facts">
            ${findings.map(
              ([stage, f]) =>
                html`<dt>${stage}</dt>
                  <dd>${(Array.isArray(f.summary) ? f.summary : []).map((line) => html`<div>${line}</div>`)}</dd>`,
            )}
          </dl>`
    }
    <h2>Delivery timeline</h2>
    <ol class="timeline">
      ${d.timeline.map(step)}
    </ol>`;
}
