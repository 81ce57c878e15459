/**
 * `[[oauth_app]]`: an OAuth2 app registration aliases log in with (issue 4, "OAuth2"). Kept apart
 * from schema.ts so that file stays small; the same conventions apply.
 */
import { z } from 'zod';

import { is, text } from './fields.js';

const DAY = 'a date in quotes, "YYYY-MM-DD"';
/** A calendar day written "YYYY-MM-DD" that exists (not 2027-02-30). */
const day = z.string(is(DAY)).refine((d) => {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(d);
  return m !== null && new Date(`${d}T00:00:00Z`).toISOString().startsWith(d);
}, is(DAY));

/** One `[[oauth_app]]` table. */
export const oauthApp = z.strictObject({
  /** Name aliases use in `[alias.incoming] oauth2`; unique. */
  name: text,
  /** Identity provider; only `microsoft365` for now. */
  provider: z.enum(['microsoft365']),
  /** Directory (tenant) id, a GUID, or a verified domain. */
  tenant_id: text,
  /** Application (client) id. */
  client_id: text,
  /** Client secret value. Use `${ENV_NAME}`, or `enc:v1:...` from `mailgate config encrypt-secret`, rather than writing it here. */
  client_secret: text,
  /** The day the client secret expires (Cisco guide: an Azure client secret lasts 24 months at most), "YYYY-MM-DD". From 30 days before: a warning in the log (at start and daily), in `aliases list` and the console, and the metric mailgate_oauth_client_secret_expiry_days. Default: not tracked. */
  client_secret_expires: day.optional(),
  /** `client_credentials` (app-only access) or `authorization_code` (a user signs in once with `mailgate oauth authorize ALIAS`). */
  flow: z.enum(['client_credentials', 'authorization_code']),
  /** Scopes to ask for. Default: `https://outlook.office365.com/.default` for client credentials; IMAP, POP and SMTP as the user plus `offline_access` for authorization code. */
  scopes: z.array(text).min(1, is('at least one scope')).optional(),
  /** Cloud endpoint host (default `login.microsoftonline.com`; e.g. `login.microsoftonline.us`). For sovereign clouds; leave unset for Microsoft 365. */
  authority_host: text.optional(),
  /** Full authority URL, overriding `https://AUTHORITY_HOST/TENANT_ID`. For testing or sovereign clouds; leave unset for Microsoft 365. */
  authority: z.url(is('an https URL')).optional(),
  /** Hosts trusted as authorities without asking Microsoft. For testing or sovereign clouds; leave unset for Microsoft 365. */
  known_authorities: z.array(text).optional(),
  /** OpenID configuration JSON, so no discovery request is made. For testing or sovereign clouds; leave unset for Microsoft 365. */
  authority_metadata: text.optional(),
  /** Instance discovery JSON. For testing or sovereign clouds; leave unset for Microsoft 365. */
  cloud_discovery_metadata: text.optional(),
  /** Extra CA certificate file (PEM) to trust for the token endpoint; relative to the config file. For testing or sovereign clouds; leave unset for Microsoft 365. */
  ca_file: text.optional(),
});

/** One `[[oauth_app]]`, as the rest of mailgate sees it. */
export type OAuthAppConfig = z.output<typeof oauthApp>;
