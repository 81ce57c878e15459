/**
 * Checks that span several tables of `mailgate.toml`. Each problem carries the path of the key to
 * blame, so the loader can point at its line, and a message phrased as what was expected.
 */

/** What the checks read; a structural slice of `Config`, so this file does not depend on the schema. */
interface Tables {
  department: { name: string }[];
  alias: {
    name: string;
    address: string;
    department?: string | undefined;
    status: string;
    default: boolean;
    redirection_addresses: string[];
    incoming?: { oauth2?: string | undefined } | undefined;
    outgoing?: { oauth2?: string | undefined } | undefined;
  }[];
  oauth_app: { name: string }[];
  submission: { user: { send_as: string[] }[] };
  relay: { name: string; aliases: string[] }[];
}

/** A broken invariant: the key to blame, the expectation, and the value found there. */
export interface InvariantIssue {
  path: (string | number)[];
  message: string;
  input: unknown;
}

const quote = (s: string) => JSON.stringify(s);

/** Reports `[[table]] name` values that repeat an earlier one. */
function duplicateNames(table: string, rows: { name: string }[]): InvariantIssue[] {
  const first = new Map<string, number>();
  const issues: InvariantIssue[] = [];
  rows.forEach((row, i) => {
    const j = first.get(row.name);
    if (j === undefined) first.set(row.name, i);
    else issues.push({ path: [table, i, 'name'], input: row.name, message: `a unique name (${table}[${j}] is also named ${quote(row.name)})` });
  });
  return issues;
}

/** All broken cross-table invariants of a config, in file order of the tables they concern. */
export function invariantIssues(c: Tables): InvariantIssue[] {
  const issues = [
    ...duplicateNames('department', c.department),
    ...duplicateNames('alias', c.alias),
    ...duplicateNames('oauth_app', c.oauth_app),
    ...duplicateNames('relay', c.relay),
  ];
  const aliasLabel = (i: number) => `alias[${i}] ${quote(c.alias[i]?.name ?? '')}`;

  // Addresses compare case-insensitively: mail servers treat local parts that way in practice.
  const owner = new Map<string, number>();
  c.alias.forEach((a, i) => {
    const key = a.address.toLowerCase();
    const j = owner.get(key);
    if (j === undefined) owner.set(key, i);
    else issues.push({ path: ['alias', i, 'address'], input: a.address, message: `an address no other alias uses (${aliasLabel(j)} has it)` });
  });
  // Redirecting to an alias's own address would feed the message back into mailgate.
  c.alias.forEach((a, i) => {
    a.redirection_addresses.forEach((r, k) => {
      const j = owner.get(r.toLowerCase());
      if (j !== undefined) {
        issues.push({ path: ['alias', i, 'redirection_addresses', k], input: r, message: `an address outside mailgate (${aliasLabel(j)} receives it)` });
      }
    });
  });

  const apps = [...new Set(c.oauth_app.map((a) => a.name))];
  c.alias.forEach((a, i) => {
    for (const side of ['incoming', 'outgoing'] as const) {
      const app = a[side]?.oauth2;
      if (app === undefined || apps.includes(app)) continue;
      const known = apps.length ? `one of the configured OAuth apps: ${apps.map(quote).join(', ')}` : 'the name of an [[oauth_app]] (none is configured)';
      issues.push({ path: ['alias', i, side, 'oauth2'], input: app, message: known });
    }
    // One alias, one token cache (one signed-in account): both sides use the same app.
    const inApp = a.incoming?.oauth2;
    const outApp = a.outgoing?.oauth2;
    if (inApp !== undefined && outApp !== undefined && inApp !== outApp) {
      issues.push({
        path: ['alias', i, 'outgoing', 'oauth2'],
        input: outApp,
        message: `the same OAuth app as incoming (${quote(inApp)}): an alias signs in once`,
      });
    }
  });

  const aliasNames = new Set(c.alias.map((a) => a.name));
  const aliasList = aliasNames.size ? `the name of an alias: ${[...aliasNames].map(quote).join(', ')}` : 'the name of an [[alias]] (none is configured)';
  c.submission.user.forEach((u, i) => {
    u.send_as.forEach((name, k) => {
      if (name !== '*' && !aliasNames.has(name)) issues.push({ path: ['submission', 'user', i, 'send_as', k], input: name, message: `"*" or ${aliasList}` });
    });
  });
  c.relay.forEach((r, i) => {
    r.aliases.forEach((name, k) => {
      if (!aliasNames.has(name)) issues.push({ path: ['relay', i, 'aliases', k], input: name, message: aliasList });
    });
  });

  const departments = [...new Set(c.department.map((d) => d.name))];
  const defaults = new Map<string | undefined, number>();
  c.alias.forEach((a, i) => {
    if (a.department !== undefined && !departments.includes(a.department)) {
      const known = departments.length
        ? `one of the configured departments: ${departments.map(quote).join(', ')}`
        : 'the name of a [[department]] (none is configured)';
      issues.push({ path: ['alias', i, 'department'], input: a.department, message: known });
    }
    if (!a.default) return;
    const where = a.department === undefined ? 'among aliases without a department' : `in department ${quote(a.department)}`;
    const j = defaults.get(a.department);
    if (j === undefined) defaults.set(a.department, i);
    else issues.push({ path: ['alias', i, 'default'], input: true, message: `at most one default alias ${where} (${aliasLabel(j)} is already the default)` });
    if (a.status !== 'active') {
      issues.push({ path: ['alias', i, 'status'], input: a.status, message: `"active" for the default alias ${where}` });
    }
  });
  return issues;
}
