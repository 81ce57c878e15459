/**
 * Ages as an admin writes them (`90d`, `12h`, `2w`): in `mailgate.toml` (`[retention]`,
 * `auto_reply_interval`) and on the command line (`--since 7d`). Read in one place, so every
 * key and option takes the same units.
 */

const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 } as const;
const AGE_RE = /^(\d+)([smhdw])$/;
/**
 * A thousand years: the longest age taken. `now - age` must stay a valid Date (JavaScript's
 * range is about 275 000 years each side of 1970), or a check such as "not answered within
 * auto_reply_interval" would compare with an invalid time and always pass.
 */
const MAX_AGE_MS = 1000 * 365.25 * 86_400_000;

/** The milliseconds an age such as `90d`, `12h` or `2w` stands for (`0s` is 0), or undefined when TEXT is none or longer than a thousand years. */
export function ageMs(text: string): number | undefined {
  const m = AGE_RE.exec(text);
  if (!m) return undefined;
  const ms = Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
  return ms <= MAX_AGE_MS ? ms : undefined;
}
