/**
 * TOML file -> `${ENV}` expansion -> zod schema -> typed value, or a list of problems that each
 * name the file, the line and the key. Generic: used for `mailgate.toml` and for policy files.
 */
import { parse, TomlError } from 'smol-toml';
import { z } from 'zod';
import { keyLocator, keyPath } from './toml-lines.js';
import type { ConfigProblem } from './problems.js';

export { keyLocator, keyPath };
// Kept apart from the parser: the CLI tells a configuration error by its class before it loads any parser.
export { ConfigError, formatProblem, type ConfigProblem } from './problems.js';

/**
 * What loadToml gives back: the validated value, or every problem found. `unset` lists the
 * `${NAME}` references that `deferUnset` let through unset (empty without it).
 */
export type TomlResult<T> = { ok: true; value: T; unset: ConfigProblem[] } | { ok: false; problems: ConfigProblem[] };

export interface LoadTomlOptions {
  /** When given, `${NAME}` in string values is replaced from here after parsing; `$${` stays a literal `${`. */
  env?: Readonly<Record<string, string | undefined>>;
  /**
   * For a key whose variable may be unset for now (a secret the command does not use), the
   * value to hold instead of the one `written`; its problem goes to `unset`, unless that value
   * fails validation, when it is reported like any other. Undefined: the key may not wait.
   */
  deferUnset?: (path: readonly PropertyKey[], written: string) => string | undefined;
}

/** Parses `text` (read from `file`) as TOML and validates it against `schema`. */
export function loadToml<T>(text: string, file: string, schema: z.ZodType<T>, options: LoadTomlOptions = {}): TomlResult<T> {
  let data: unknown;
  try {
    data = parse(text);
  } catch (err) {
    if (!(err instanceof TomlError)) throw err;
    const reason = (err.message.split('\n')[0] ?? '').replace(/^Invalid TOML document: /, '');
    const source = text.split(/\r?\n/)[err.line - 1]?.trim() ?? '';
    const problem = { file, line: err.line, key: '', expected: 'valid TOML', given: JSON.stringify(source) };
    return { ok: false, problems: [{ ...problem, message: `invalid TOML: ${reason} (column ${err.column})` }] };
  }

  const locate = keyLocator(text);
  const problems: ConfigProblem[] = [];
  const unset: ConfigProblem[] = [];
  const problem = (path: readonly PropertyKey[], p: Omit<ConfigProblem, 'file' | 'line' | 'key'>): ConfigProblem => ({
    file,
    line: locate(path),
    key: keyPath(path),
    ...p,
  });
  const at = (path: readonly PropertyKey[], p: Omit<ConfigProblem, 'file' | 'line' | 'key'>) => problems.push(problem(path, p));
  const unsetAt = (path: readonly PropertyKey[], written: string, p: Omit<ConfigProblem, 'file' | 'line' | 'key'>) => {
    const standIn = options.deferUnset?.(path, written);
    (standIn === undefined ? problems : unset).push(problem(path, p));
    return standIn;
  };

  if (options.env) data = expandEnv(data, options.env, [], at, unsetAt);
  // A key whose variable is missing would only fail validation again, less clearly.
  const reported = new Set(problems.map((p) => p.key));

  const result = schema.safeParse(data, { error: expectedPhrase });
  if (result.success && problems.length === 0) return { ok: true, value: result.data, unset };
  for (const issue of result.error?.issues ?? []) {
    // A deferred variable whose text as written does not validate: the variable is the problem.
    const deferred = unset.findIndex((p) => p.key === keyPath(issue.path));
    if (deferred >= 0) {
      problems.push(...unset.splice(deferred, 1));
      reported.add(keyPath(issue.path));
      continue;
    }
    if (issue.code === 'unrecognized_keys') {
      const known = knownKeys(schema, issue.path);
      const expected = known.length ? `one of: ${known.join(', ')}` : 'no other keys';
      for (const k of issue.keys) at([...issue.path, k], { expected, given: k, message: `unknown key (expected ${expected})` });
    } else if (!reported.has(keyPath(issue.path))) {
      // What the file holds, not issue.input: zod gives refinements the enclosing table as input.
      const value = valueAt(data, issue.path);
      const given = describeGiven(value, issue.path);
      const message = value === undefined ? `missing (expected ${issue.message})` : `expected ${issue.message}, got ${given}`;
      at(issue.path, { expected: issue.message, given, message });
    }
  }
  // Stable sort: file order, problems without a line last.
  problems.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity));
  return { ok: false, problems };
}

/** The value at `path` in parsed TOML, or undefined when there is none. */
function valueAt(data: unknown, path: readonly PropertyKey[]): unknown {
  let v = data;
  for (const seg of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[seg];
  }
  return v;
}

const REFERENCE = /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{/g;

/** A copy of `value` with `${NAME}` references in strings replaced from `env`, reporting the ones that cannot be. */
function expandEnv(
  value: unknown,
  env: Readonly<Record<string, string | undefined>>,
  path: PropertyKey[],
  report: (path: PropertyKey[], p: Omit<ConfigProblem, 'file' | 'line' | 'key'>) => void,
  reportUnset: (path: PropertyKey[], written: string, p: Omit<ConfigProblem, 'file' | 'line' | 'key'>) => string | undefined,
): unknown {
  if (typeof value === 'string') {
    let standIn: string | undefined;
    const expanded = value.replace(REFERENCE, (match: string, name: string | undefined) => {
      if (match === '$${') return '${';
      if (name === undefined) {
        const expected = '"${NAME}" with NAME made of letters, digits and _ (write "$${" for a literal "${")';
        report(path, { expected, given: describeGiven(value, path), message: `expected ${expected}, got ${describeGiven(value, path)}` });
        return match;
      }
      const found = env[name];
      if (found !== undefined) return found;
      const expected = `environment variable ${name} to be set`;
      standIn ??= reportUnset(path, value, { expected, given: 'nothing', message: `expected ${expected}` });
      return match;
    });
    return standIn ?? expanded;
  }
  if (Array.isArray(value)) return value.map((v, i) => expandEnv(v, env, [...path, i], report, reportUnset));
  if (value !== null && typeof value === 'object' && !(value instanceof Date)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, expandEnv(v, env, [...path, k], report, reportUnset)]));
  }
  return value;
}

const TYPE_NAMES: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
  array: 'an array',
  object: 'a table',
  date: 'a date',
};

const show = (v: unknown) => (typeof v === 'string' ? JSON.stringify(v) : String(v));

/** `at least 3 characters`, `a number from 1`, `at most 10 items`... for zod's size checks. */
function bound(origin: string, limit: number | bigint, inclusive: boolean | undefined, least: boolean): string {
  const n = Number(limit);
  if (origin === 'string') return least && n === 1 ? 'a non-empty string' : `${least ? 'at least' : 'at most'} ${n} characters`;
  if (origin === 'array' || origin === 'set') return least && n === 1 ? 'a non-empty array' : `${least ? 'at least' : 'at most'} ${n} items`;
  return `a number ${least ? (inclusive ? '>=' : '>') : inclusive ? '<=' : '<'} ${n}`;
}

/**
 * Error map used for every parse: zod's default messages become expectations ("a string"), so an
 * issue's message always reads after "expected". A schema's own `{ error }` takes precedence.
 */
function expectedPhrase(issue: z.core.$ZodRawIssue): string {
  switch (issue.code) {
    case 'invalid_type':
      return TYPE_NAMES[issue.expected] ?? `a value of type ${issue.expected}`;
    case 'invalid_value':
      return issue.values.length === 1 ? show(issue.values[0]) : `one of ${issue.values.map(show).join(', ')}`;
    case 'too_small':
      return bound(issue.origin, issue.minimum, issue.inclusive, true);
    case 'too_big':
      return bound(issue.origin, issue.maximum, issue.inclusive, false);
    case 'invalid_format':
      return issue.format === 'regex' && issue.pattern ? `a string matching ${issue.pattern}` : `a valid ${issue.format}`;
    case 'not_multiple_of':
      return `a multiple of ${issue.divisor}`;
    default:
      return issue.message ?? 'a valid value';
  }
}

/** Key names whose string values are never echoed back in problems; a date about a secret (`client_secret_expires`) is no secret. */
const SECRET = /^(?!.*_expires$).*(pass(word)?|secret|token)/i;

/** How a value reads in a problem: `"abc"`, `70000`, `a table`; secrets are hidden. */
function describeGiven(value: unknown, path: readonly PropertyKey[]): string {
  if (value === undefined) return 'nothing';
  if (typeof value === 'string') {
    const last = [...path].reverse().find((s) => typeof s === 'string');
    if (typeof last === 'string' && SECRET.test(last)) return 'a hidden string';
    // A password written into a URL (`smtp://user:pass@host`) is still a password.
    const quoted = JSON.stringify(value.replace(/(\/\/[^/@:\s]*):[^/@\s]*@/g, '$1:(hidden)@'));
    return quoted.length > 60 ? `${quoted.slice(0, 56)}..."` : quoted;
  }
  if (value instanceof Date) return 'a date';
  if (Array.isArray(value)) return value.length ? `an array of ${value.length}` : 'an empty array';
  if (value !== null && typeof value === 'object') return 'a table';
  return String(value);
}

/** The parts of zod's schema definitions that lead from a schema to the table at a key path. */
interface Def {
  type: string;
  innerType?: z.ZodType;
  in?: z.ZodType;
  element?: z.ZodType;
  shape?: Record<string, z.ZodType>;
  getter?: () => z.ZodType;
}
const defOf = (s: z.ZodType) => s._zod.def as unknown as Def;

/** Steps through optional, default, prefault, transform pipes and lazy schemas to the table or array inside. */
function unwrap(schema: z.ZodType): z.ZodType {
  let s = schema;
  for (let depth = 0; depth < 32; depth++) {
    const d = defOf(s);
    const next = d.innerType ?? d.in ?? (d.type === 'lazy' ? d.getter?.() : undefined);
    if (!next) break;
    s = next;
  }
  return s;
}

/** The keys a table at `path` may hold, in schema order; [] when the path does not lead to a table. */
function knownKeys(schema: z.ZodType, path: readonly PropertyKey[]): string[] {
  let s = unwrap(schema);
  for (const seg of path) {
    const d = defOf(s);
    const next = typeof seg === 'number' ? d.element : d.shape?.[String(seg)];
    if (!next) return [];
    s = unwrap(next);
  }
  return Object.keys(defOf(s).shape ?? {});
}
