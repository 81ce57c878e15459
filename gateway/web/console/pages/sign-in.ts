/** The sign-in form: `User`, `Password`, `Sign in`. */
import { html, type Html } from '../html.js';

export function signInPage(opts: { next: string; user?: string; error?: string; noUsers: boolean }): Html {
  return html`<h1>Sign in to mailgate</h1>
    ${opts.error ? html`<p class="flash error" role="alert">${opts.error}</p>` : ''}
    ${
      opts.noUsers
        ? html`<p>
            No <code>[[admin.user]]</code> is configured yet. Use the sign-in link mailgate printed when it started, or add a user with a password hash from
            <code>mailgate config hash-password</code>.
          </p>`
        : ''
    }
    <form class="stack" method="post" action="/sign-in">
      <input type="hidden" name="next" value="${opts.next}" />
      <label>User <input name="user" autocomplete="username" required value="${opts.user ?? ''}" autofocus /></label>
      <label>Password <input name="password" type="password" autocomplete="current-password" required /></label>
      <div><button type="submit">Sign in</button></div>
    </form>`;
}
