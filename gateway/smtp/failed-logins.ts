/**
 * Failed logins per client address within a window: past the limit, logins from that address
 * are refused for the rest of the window, right password or not. SMTP AUTH (session-limits.ts)
 * and the REST API's sign-in (gateway/web) both count here, each with its own instance and the
 * `[smtp.limits]` auth_failures_per_ip and auth_failure_window.
 */
export class FailedLogins {
  readonly #max: number;
  readonly #windowMs: number;
  readonly #failures = new Map<string, number[]>();

  constructor(limits: { auth_failures_per_ip: number; auth_failure_window: number }) {
    this.#max = limits.auth_failures_per_ip;
    this.#windowMs = limits.auth_failure_window * 1000;
  }

  /** True while the address has had too many failed logins lately. */
  locked(ip: string): boolean {
    return this.#recent(ip).length >= this.#max;
  }

  failed(ip: string): void {
    this.#failures.set(ip, [...this.#recent(ip), Date.now()]);
  }

  #recent(ip: string): number[] {
    const since = Date.now() - this.#windowMs;
    const recent = (this.#failures.get(ip) ?? []).filter((t) => t > since);
    if (recent.length) this.#failures.set(ip, recent);
    else this.#failures.delete(ip);
    return recent;
  }
}
