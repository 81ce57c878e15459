/** A bounded wait for a state, shared by the tests that poll for one. */

/**
 * Resolves once DONE holds (checked every 20 ms); rejects after `boundMs` (default 120 s), a
 * bound against a hung test, not a timing claim. WHAT names the state in the error; a function
 * is called at the failure, to tell what was seen instead (a log so far).
 */
export async function waitUntil(what: string | (() => string), done: () => boolean | Promise<boolean>, boundMs = 120_000): Promise<void> {
  const deadline = Date.now() + boundMs;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`waited ${boundMs} ms for ${typeof what === 'string' ? what : what()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
