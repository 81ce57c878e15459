/**
 * HTML written as template literals, every value escaped unless it is already Html: a page is
 * built from strings and cannot be made to run what a message's subject or file name holds.
 */

/** Markup that is safe as it is: made by `html` or `trusted`. */
export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

/** Text with &, <, >, " and ' as entities, safe in content and in quoted attributes. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A value in a template: Html as it is, a list item by item, nothing for undefined, null and false, anything else escaped. */
function render(value: unknown): string {
  if (value instanceof Html) return value.text;
  if (Array.isArray(value)) return value.map(render).join('');
  if (value === undefined || value === null || value === false) return '';
  return escapeHtml(String(value));
}

/** The `html\`...\`` tag. */
export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0]!;
  for (let i = 0; i < values.length; i++) out += render(values[i]) + strings[i + 1]!;
  return new Html(out);
}

/** Markup written by us (never from a message or a request). */
export const trusted = (text: string): Html => new Html(text);
