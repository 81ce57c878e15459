/**
 * The `[delivery_exceptions]` section of a policy file, and how a partition section and a
 * department section combine into the rules one department's messages are checked against.
 */
import { z } from 'zod';
import { predefinedPhrases, type DeliveryExceptionPhrase } from './phrases.js';
import { compilePhrase, structuralSignals, type CompiledPhrase, type DeliveryExceptionRules } from './rules.js';

const is = (phrase: string) => ({ error: phrase });
const failure = z.enum(['permanent', 'temporary']);
const NAME = 'a non-empty name';
const PHRASE = 'a non-empty phrase without "@" (Cisco guide: the "at" character must not be included in the phrase)';

/** One phrase IT adds (Cisco guide, "Configuring Delivery Exceptions"). */
const phraseEntrySchema = z.strictObject({
  /** The name it is listed and removed by; must differ from the predefined names. */
  name: z.string(is(NAME)).trim().min(1, is(NAME)),
  /** What it is for, for the next admin. */
  description: z.string().optional(),
  /** `address`: looked for in the sender address before `@`; `subject`: anywhere in the subject. */
  type: z.enum(['address', 'subject']),
  /** The text looked for, case-insensitively. */
  phrase: z.string(is(PHRASE)).refine((p) => p.trim() !== '' && !p.includes('@'), is(PHRASE)),
  /** `permanent` or `temporary` bounce. */
  failure,
});

const predefinedNames = new Set(predefinedPhrases.map((p) => p.name));
const REMOVABLE = 'the name of a predefined phrase or of a phrase in this file';

/** `[delivery_exceptions]`: every key optional; an empty or missing section means the guide's behaviour. */
export const deliveryExceptionsSectionSchema = z
  .strictObject({
    /** Check messages for delivery exceptions at all. */
    enabled: z.boolean().default(true),
    /** Use the guide's 16 address and 111 subject phrases (see policy/delivery-exceptions/phrases.ts). */
    use_predefined: z.boolean().default(true),
    /** Names of phrases to delete, predefined ones included. In the partition file this applies to every department. */
    remove: z.array(z.string()).default([]),
    /** Phrases to add: `[[delivery_exceptions.phrase]]` tables. */
    phrase: z.array(phraseEntrySchema).default([]),
    /**
     * `alone`: a phrase match tags the message by itself (Cisco guide). `with_structural_signal`:
     * it tags only when the message also looks machine-generated (a DSN, Auto-Submitted...).
     */
    phrase_matches: z.enum(['alone', 'with_structural_signal']).default('alone'),
    /**
     * Structural signs of machine mail that are looked for; each one found tags the message by
     * itself. `precedence` is `Precedence: auto_reply` only (bulk, list and junk mark list
     * posts); `delivery_status` also covers a report forwarded in an attached message.
     */
    structural_signals: z.array(z.enum(structuralSignals)).default([...structuralSignals]),
    /** Failure type when a structural signal decides: no report status, no words of a bounce and no phrase tell (auto-replies). */
    signal_failure: failure.default('temporary'),
  })
  .superRefine((section, ctx) => {
    const own = new Map<string, number>();
    section.phrase.forEach((p, i) => {
      if (predefinedNames.has(p.name)) {
        ctx.addIssue({
          code: 'custom',
          path: ['phrase', i, 'name'],
          message: 'a name not used by a predefined phrase (to change one, remove it and add yours under another name)',
        });
      } else if (own.has(p.name)) {
        ctx.addIssue({
          code: 'custom',
          path: ['phrase', i, 'name'],
          message: `a name not used by another phrase in this file (phrase[${own.get(p.name)}] has it)`,
        });
      } else own.set(p.name, i);
    });
    section.remove.forEach((name, i) => {
      if (predefinedNames.has(name) || own.has(name)) return;
      const lower = name.toLowerCase();
      const near = [...predefinedNames, ...own.keys()].filter((n) => n.toLowerCase() === lower);
      const hint = near.length ? ` (did you mean ${near.map((n) => JSON.stringify(n)).join(' or ')}? names are case-sensitive)` : '';
      ctx.addIssue({ code: 'custom', path: ['remove', i], message: `${REMOVABLE}${hint}` });
    });
  });

/** A validated `[delivery_exceptions]` section, defaults applied. */
export type DeliveryExceptionsSection = z.output<typeof deliveryExceptionsSectionSchema>;

const defaults = (): DeliveryExceptionsSection => deliveryExceptionsSectionSchema.parse({});

/**
 * The rules for one department, or undefined when the checks are off. See
 * deliveryExceptionsStage for how the two files combine.
 */
export function deliveryExceptionRules(
  partition: DeliveryExceptionsSection | undefined,
  department: DeliveryExceptionsSection | undefined,
): DeliveryExceptionRules | undefined {
  const p = partition ?? defaults();
  const d = department ?? defaults();
  if (!p.enabled || !d.enabled) return undefined;

  const removedEverywhere = new Set(p.remove);
  const removedHere = new Set(d.remove);
  const phrases: CompiledPhrase[] = [];
  const add = (list: readonly DeliveryExceptionPhrase[], origin: CompiledPhrase['origin']) => {
    for (const phrase of list) {
      if (removedEverywhere.has(phrase.name)) continue;
      // A department cannot take away what the partition added for everyone.
      if (removedHere.has(phrase.name) && origin !== 'partition') continue;
      phrases.push(compilePhrase(phrase, origin));
    }
  };
  if (p.use_predefined && d.use_predefined) add(predefinedPhrases, 'predefined');
  add(p.phrase, 'partition');
  add(d.phrase, 'department');

  const departmentSignals = new Set(d.structural_signals);
  return Object.freeze({
    addressPhrases: Object.freeze(phrases.filter((x) => x.type === 'address')),
    subjectPhrases: Object.freeze(phrases.filter((x) => x.type === 'subject')),
    phraseMatches: p.phrase_matches === 'with_structural_signal' || d.phrase_matches === 'with_structural_signal' ? 'with_structural_signal' : 'alone',
    signals: new Set(p.structural_signals.filter((s) => departmentSignals.has(s))),
    signalFailure: d.signal_failure !== defaults().signal_failure ? d.signal_failure : p.signal_failure,
  });
}
