/**
 * An OAuth app's client secret expires (Cisco guide: an Azure client secret lasts 24 months at
 * most): from 30 days before `client_secret_expires`, and after it, the admin is told in the
 * log (at start and daily), in `aliases list` and the console, and by a metric. Kept apart from
 * store.ts so the admin API can use it without loading msal.
 */
import type { Logger } from 'pino';
import type { AliasConfig, Config, OAuthAppConfig } from '../config/schema.js';
import type { Metrics } from '../../lib/metrics.js';

/** Days before the expiry day from which it is warned about. */
export const EXPIRY_WARNING_DAYS = 30;
const DAY_MS = 86_400_000;

/** Whole days from NOW's day (UTC) to the app's expiry day: 0 on the day itself, negative after it; undefined when not tracked. */
export function clientSecretDaysLeft(app: OAuthAppConfig, now: Date): number | undefined {
  if (app.client_secret_expires === undefined) return undefined;
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  return Math.round((Date.parse(`${app.client_secret_expires}T00:00:00Z`) - today) / DAY_MS);
}

/** The warning about APP's client secret on NOW's day, or undefined when it is more than 30 days away (or not tracked). */
export function clientSecretWarning(app: OAuthAppConfig, now: Date): string | undefined {
  const days = clientSecretDaysLeft(app, now);
  if (days === undefined || days > EXPIRY_WARNING_DAYS) return undefined;
  const when = days < 0 ? 'expired on' : 'expires on';
  return `client secret of oauth_app ${app.name} ${when} ${app.client_secret_expires}: create a new secret for the app registration and set client_secret`;
}

/** The warnings for ALIAS: that of the app it signs in with, fetching or sending. */
export function aliasWarnings(config: Config, alias: AliasConfig, now: Date): string[] {
  const name = alias.incoming?.oauth2 ?? alias.outgoing?.oauth2;
  const app = name === undefined ? undefined : config.oauth_app.find((a) => a.name === name);
  const warning = app && clientSecretWarning(app, now);
  return warning ? [warning] : [];
}

/**
 * Logs a warning for each app whose secret is within 30 days of expiry or past it, and sets the
 * metric mailgate_oauth_client_secret_expiry_days for every app that tracks it: now, then every
 * EVERYMS (a day). `stop()` ends it.
 */
export function watchClientSecrets(config: Config, logger: Logger, metrics: Metrics, everyMs = DAY_MS): { stop(): void } {
  const check = () => {
    const now = new Date();
    for (const app of config.oauth_app) {
      const days = clientSecretDaysLeft(app, now);
      if (days === undefined) continue;
      metrics.set('mailgate_oauth_client_secret_expiry_days', { app: app.name }, days);
      const warning = clientSecretWarning(app, now);
      if (warning) logger.warn({ oauth_app: app.name, expires: app.client_secret_expires, days_left: days }, warning);
    }
  };
  check();
  if (!config.oauth_app.some((a) => a.client_secret_expires !== undefined)) return { stop: () => {} };
  const timer = setInterval(check, everyMs);
  // Never what keeps the process alive.
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
