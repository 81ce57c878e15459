/**
 * The console's page shell and the small pieces every page uses: times, sizes, badges, an
 * action button (a form, so it works without JavaScript), the flash line after an action.
 */
import { html, type Html } from './html.js';
import type { Caller } from '../access.js';

/** The pages in the navigation, in order. */
const NAV: readonly { path: string; label: string }[] = [
  { path: '/', label: 'Dashboard' },
  { path: '/messages', label: 'Messages' },
  { path: '/quarantine', label: 'Quarantine' },
  { path: '/aliases', label: 'Aliases' },
  { path: '/queue', label: 'Queue' },
  { path: '/policy', label: 'Policy test' },
  { path: '/audit', label: 'Audit log' },
];

/** What an action left to say on the next page. */
export interface Flash {
  kind: 'ok' | 'error';
  text: string;
}

// htmx must not add an inline <style> (the pages' CSP allows none) nor evaluate attributes.
const HTMX_CONFIG = JSON.stringify({ includeIndicatorStyles: false, allowEval: false, allowScriptTags: false, historyCacheSize: 0 });

function head(title: string): Html {
  return html`<head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <meta name="htmx-config" content="${HTMX_CONFIG}" />
    <title>${title} · mailgate</title>
    <link rel="icon" href="/console/assets/favicon.svg" type="image/svg+xml" />
    <link rel="stylesheet" href="/console/assets/console.css" />
    <script src="/console/assets/htmx.min.js" defer></script>
    <script src="/console/assets/console.js" defer></script>
  </head>`;
}

/** A whole page: header with the navigation and who is signed in, the title, the flash, BODY. */
export function page(opts: { title: string; path: string; caller: Caller; flash?: Flash | undefined; body: Html }): Html {
  const { title, path, caller, flash, body } = opts;
  const current = (p: string) => (p === '/' ? path === '/' : path === p || path.startsWith(`${p}/`));
  return html`<!doctype html>
    <html lang="en">
      ${head(title)}
      <body>
        <a class="skip" href="#main">Skip to content</a>
        <header>
          <a class="brand" href="/">mailgate</a>
          <nav aria-label="Main">
            <ul>
              ${NAV.map((n) => html`<li><a href="${n.path}" ${current(n.path) ? html`aria-current="page"` : ''}>${n.label}</a></li>`)}
            </ul>
          </nav>
          <form class="who" method="post" action="/sign-out">
            <span>${caller.who.replace(/^user /, '')} <span class="muted-inverse">(${caller.role})</span></span>
            <button type="submit">Sign out</button>
          </form>
        </header>
        <main id="main" tabindex="-1">
          <h1>${title}</h1>
          ${flash ? html`<p class="flash ${flash.kind}" role="${flash.kind === 'error' ? 'alert' : 'status'}">${flash.text}</p>` : ''} ${body}
        </main>
      </body>
    </html>`;
}

/** A page without the navigation (sign-in). */
export function barePage(title: string, body: Html): Html {
  return html`<!doctype html>
    <html lang="en">
      ${head(title)}
      <body>
        <main id="main" class="signin">${body}</main>
      </body>
    </html>`;
}

/** An ISO time as `<time>`: UTC in the page, the reader's zone once console.js runs. */
export function time(iso: string | undefined): Html | string {
  if (iso === undefined) return '';
  return html`<time datetime="${iso}">${iso.replace('T', ' ').replace(/\.\d+Z$|Z$/, ' UTC')}</time>`;
}

/** Bytes in the unit a person reads. */
export function size(bytes: number | undefined): string {
  if (bytes === undefined) return '';
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** A `<dt>`/`<dd>` pair of a facts list; nothing when VALUE is absent or empty. */
export function fact(label: string, value: unknown, cls?: string): Html | '' {
  if (value === undefined || value === null || value === '' || value === false) return '';
  return html`<dt>${label}</dt>
    <dd ${cls ? html`class="${cls}"` : ''}>${value}</dd>`;
}

export function badge(text: string, tone: 'ok' | 'warn' | 'bad' | 'muted' = 'muted'): Html {
  return html`<span class="badge ${tone}">${text}</span>`;
}

/** A button that POSTs to ACTION, coming back to BACK; CONFIRM asks first (with JavaScript on). */
export function actionButton(opts: {
  action: string;
  label: string;
  back: string;
  confirm?: string;
  danger?: boolean;
  secondary?: boolean;
  fields?: Record<string, string | undefined>;
  describedBy?: string;
}): Html {
  const { action, label, back, confirm, danger, secondary, fields = {}, describedBy } = opts;
  const cls = danger ? 'danger' : secondary ? 'secondary' : '';
  return html`<form method="post" action="${action}" ${confirm ? html`data-confirm="${confirm}"` : ''}>
    <input type="hidden" name="back" value="${back}" />
    ${Object.entries(fields).map(([k, v]) => (v === undefined || v === '' ? '' : html`<input type="hidden" name="${k}" value="${v}" />`))}
    <button type="submit" class="${cls}" ${describedBy ? html`aria-describedby="${describedBy}"` : ''}>${label}</button>
  </form>`;
}

/** A column heading: its label, right-aligned for numbers; false leaves the column out (a button the role may not use). */
export type Column = string | { label: string; num: true } | false;

/** A table in a box that scrolls sideways on a narrow screen rather than the whole page. */
export function table(caption: string, columns: readonly Column[], rows: Html[], empty: string): Html {
  if (rows.length === 0) return html`<p class="muted">${empty}</p>`;
  const heads = columns.map((c) =>
    c === false ? '' : typeof c === 'string' ? html`<th scope="col">${c}</th>` : html`<th scope="col" class="num">${c.label}</th>`,
  );
  return html`<div class="scroll">
    <table>
      <caption class="visually-hidden">
        ${caption}
      </caption>
      <thead>
        <tr>
          ${heads}
        </tr>
      </thead>
      <tbody>
        ${rows}
      </tbody>
    </table>
  </div>`;
}
