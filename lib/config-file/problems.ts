/**
 * A configuration's problems, each naming the file, the line and the key, and the error that
 * carries them: apart from the TOML parser and zod, so that what only tells the error by its
 * class (the CLI's exit code) loads neither.
 */
/** One thing wrong with a TOML file, located as precisely as the file allows. */
export interface ConfigProblem {
  /** The file as the user named it. */
  file: string;
  /** 1-based line of the key, or of its table header when the key is missing; absent when unknown. */
  line?: number | undefined;
  /** Key path such as `alias[1].outgoing.port`; '' for problems with the whole file. */
  key: string;
  /** What the key should hold, e.g. `an integer from 1 to 65535`. */
  expected: string;
  /** What it holds, e.g. `"abc"`; `nothing` when the key is missing. */
  given: string;
  /** The sentence after the key, e.g. `expected an integer from 1 to 65535, got "abc"`. */
  message: string;
}

/** `FILE:LINE: KEY: MESSAGE`, leaving out the parts that are not known. */
export function formatProblem(p: ConfigProblem): string {
  return `${p.file}${p.line === undefined ? '' : `:${p.line}`}: ${p.key ? `${p.key}: ` : ''}${p.message}`;
}

/** The configuration is invalid; `message` has one `FILE:LINE: KEY: ...` line per problem. */
export class ConfigError extends Error {
  /** Stable code, as MailgateError has. */
  readonly code = 'CONFIG_INVALID';
  /** Each problem found, in file order. */
  readonly problems: ConfigProblem[];

  constructor(problems: ConfigProblem[]) {
    super(problems.map(formatProblem).join('\n'));
    this.name = 'ConfigError';
    this.problems = problems;
  }
}
