/** Policy test: an uploaded .eml run through the policy as a dry run (AdminApi.testPolicy), each stage's result and why; nothing is stored. */
import type { PolicyReport } from '../../../admin/api.js';
import { html, type Html } from '../html.js';
import { badge, fact, size, table } from '../layout.js';
import { canOperate, type PageContext } from './context.js';

export interface PolicyTestForm {
  department?: string;
  direction?: string;
  fileName?: string;
}

function report(r: PolicyReport, fileName: string | undefined): Html {
  return html`<section aria-labelledby="report-title" id="policy-report">
    <h2 id="report-title">
      Result${fileName ? ` for ${fileName}` : ''}: ${r.outcome === 'stored' ? badge('would be stored', 'ok') : badge('would be wrapped', 'warn')}
    </h2>
    <dl class="facts">
      <dt>Direction</dt>
      <dd>${r.direction}</dd>
      <dt>Department</dt>
      <dd>${r.department ?? html`<span class="muted">the partition's policy</span>`}</dd>
      ${fact('Wrapped because', r.reason)}
      ${r.original ? fact('Original', html`${r.original.action === 'quarantine' ? 'quarantined' : 'deleted'} whole by rule ${r.original.rule}`) : ''}
      <dt>Tags</dt>
      <dd>${r.tags.length ? r.tags.map((t) => html`${badge(t)} `) : html`<span class="muted">none</span>`}</dd>
      ${fact('Stored size', r.size !== undefined && size(r.size))}
    </dl>
    ${table(
      'Each stage',
      ['Stage', 'What it found and did'],
      r.stages.map(
        (s) =>
          html`<tr>
            <th scope="row">${s.stage}</th>
            <td>${s.summary.length ? s.summary.map((line) => html`<div>${line}</div>`) : html`<span class="muted">nothing</span>`}</td>
          </tr>`,
      ),
      'No stage ran.',
    )}
  </section>`;
}

export function policyPage(ctx: PageContext, form: PolicyTestForm, result?: PolicyReport): Html {
  if (!canOperate(ctx)) return html`<p>Your role (${ctx.caller.role}) may not run policy tests.</p>`;
  const direction = form.direction ?? 'inbound';
  return html`<p>Upload a message (.eml) to see what each policy stage would do with it. Nothing is stored.</p>
    <form class="stack" method="post" action="/policy" enctype="multipart/form-data">
      <label
        >Department
        <select name="department">
          <option value="">the partition's policy</option>
          ${ctx.config.department.map((d) => html`<option value="${d.name}" ${d.name === form.department ? html`selected` : ''}>${d.name}</option>`)}
        </select></label
      >
      <label
        >Direction
        <select name="direction">
          ${['inbound', 'outbound'].map((d) => html`<option value="${d}" ${d === direction ? html`selected` : ''}>${d}</option>`)}
        </select></label
      >
      <label>Message (.eml) <input type="file" name="message" accept=".eml,message/rfc822" required /></label>
      <div><button type="submit">Test</button></div>
    </form>
    ${result ? report(result, form.fileName) : ''}`;
}
