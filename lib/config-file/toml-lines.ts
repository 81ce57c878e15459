/**
 * Key path -> line. smol-toml reports no positions for keys, so scan the text: table headers,
 * array tables (counted, for the index), dotted keys and `key =` lines. Values are skipped with a
 * small scanner so that strings, comments and multi-line arrays cannot pass for keys.
 *
 * Not a second parser's AST: toml-eslint-parser was tried in its place and agrees line for
 * line, but it refuses files smol-toml accepts (an impossible date such as 2021-02-30, which
 * smol-toml reads as 2 March), and then every problem in the file would lose its line.
 */

type Segment = string | number;
/** A map key for a path; numbers stay distinct from strings. */
export const pathId = (path: readonly PropertyKey[]) => JSON.stringify(path.map((s) => (typeof s === 'number' ? s : String(s))));

/** `alias[1].outgoing.port`, quoting segments that are not bare keys. */
export function keyPath(path: readonly PropertyKey[]): string {
  return path
    .map((s, i) => {
      if (typeof s === 'number') return `[${s}]`;
      const name = /^[A-Za-z0-9_-]+$/.test(String(s)) ? String(s) : JSON.stringify(String(s));
      return i === 0 ? name : `.${name}`;
    })
    .join('');
}

/** Reads a dotted key (bare, "basic" or 'literal' segments) starting at `pos`. */
function readKey(line: string, pos: number): { keys: string[]; end: number } | undefined {
  const keys: string[] = [];
  let i = pos;
  const skipBlanks = () => {
    while (line[i] === ' ' || line[i] === '\t') i++;
  };
  for (;;) {
    skipBlanks();
    const quote = line[i];
    if (quote === '"' || quote === "'") {
      let j = i + 1;
      while (j < line.length && line[j] !== quote) j += quote === '"' && line[j] === '\\' ? 2 : 1;
      const raw = line.slice(i, j + 1);
      keys.push(quote === "'" ? raw.slice(1, -1) : tryJson(raw));
      i = j + 1;
    } else {
      const bare = /^[A-Za-z0-9_-]+/.exec(line.slice(i));
      if (!bare) return undefined;
      keys.push(bare[0]);
      i += bare[0].length;
    }
    skipBlanks();
    if (line[i] !== '.') return { keys, end: i };
    i++;
  }
}

const tryJson = (raw: string): string => {
  try {
    return String(JSON.parse(raw));
  } catch {
    return raw.slice(1, -1);
  }
};

/** Scanner state carried from line to line: open brackets and an open multi-line string. */
interface ValueState {
  depth: number;
  multiline: string | undefined;
}

/** Advances `state` over the value text of one line, from `from`. */
function scanValue(line: string, from: number, state: ValueState): void {
  let i = from;
  while (i < line.length) {
    if (state.multiline) {
      const end = line.indexOf(state.multiline, i);
      if (end < 0) return;
      i = end + 3;
      while (line[i] === state.multiline[0]) i++;
      state.multiline = undefined;
      continue;
    }
    const ch = line[i] ?? '';
    if (ch === '#') return;
    if (ch === '"' || ch === "'") {
      if (line.startsWith(ch.repeat(3), i)) {
        state.multiline = ch.repeat(3);
        i += 3;
        continue;
      }
      i++;
      while (i < line.length && line[i] !== ch) i += ch === '"' && line[i] === '\\' ? 2 : 1;
    } else if (ch === '[' || ch === '{') state.depth++;
    else if (ch === ']' || ch === '}') state.depth--;
    i++;
  }
}

/**
 * A function from a key path (as zod reports it: `['alias', 1, 'outgoing', 'port']`) to the 1-based
 * line that defines it; for a missing key, the line of the nearest enclosing table that exists.
 */
export function keyLocator(text: string): (path: readonly PropertyKey[]) => number | undefined {
  const lines = new Map<string, number>();
  const counts = new Map<string, number>();
  const note = (path: Segment[], line: number) => {
    if (!lines.has(pathId(path))) lines.set(pathId(path), line);
  };
  // Header names step into the latest element of an array of tables: [alias.outgoing] -> alias[n].outgoing
  const resolve = (keys: string[]): Segment[] => {
    const path: Segment[] = [];
    for (const k of keys) {
      path.push(k);
      const n = counts.get(pathId(path));
      if (n !== undefined) path.push(n - 1);
    }
    return path;
  };
  let table: Segment[] = [];
  const state: ValueState = { depth: 0, multiline: undefined };
  text.split(/\r?\n/).forEach((line, index) => {
    const n = index + 1;
    if (state.multiline || state.depth > 0) return scanValue(line, 0, state);
    const start = line.search(/\S/);
    if (start < 0 || line[start] === '#') return;
    if (line[start] === '[') {
      const isArray = line[start + 1] === '[';
      const key = readKey(line, start + (isArray ? 2 : 1));
      if (!key) return;
      if (isArray) {
        const array = [...resolve(key.keys.slice(0, -1)), key.keys[key.keys.length - 1] ?? ''];
        const count = (counts.get(pathId(array)) ?? 0) + 1;
        counts.set(pathId(array), count);
        table = [...array, count - 1];
      } else table = resolve(key.keys);
      for (let k = 1; k <= table.length; k++) note(table.slice(0, k), n);
      return;
    }
    const key = readKey(line, start);
    if (!key || line[key.end] !== '=') return;
    const path = [...table, ...key.keys];
    for (let k = table.length + 1; k <= path.length; k++) note(path.slice(0, k), n);
    scanValue(line, key.end + 1, state);
  });
  return (path) => {
    for (let k = path.length; k > 0; k--) {
      const line = lines.get(pathId(path.slice(0, k)));
      if (line !== undefined) return line;
    }
    return undefined;
  };
}
