/**
 * A node --test reporter that prints, once the run ends, each test file's time (the sum of its
 * top-level tests, which a file runs one after the other) and its failures, slowest first: to
 * see which files a CI pass spends its time in. Node 20 reports files' tests flat, with no
 * per-file duration of its own. Use beside the usual reporter:
 *   --test-reporter=spec --test-reporter-destination=stdout
 *   --test-reporter=./dist/test/helpers/file-durations.js --test-reporter-destination=FILE
 */
import path from 'node:path';

interface TestEvent {
  type: string;
  data: { file?: string; nesting?: number; details?: { duration_ms?: number } };
}

export default async function* fileDurations(source: AsyncIterable<TestEvent>): AsyncGenerator<string> {
  const files = new Map<string, { ms: number; failed: number }>();
  for await (const event of source) {
    if ((event.type !== 'test:pass' && event.type !== 'test:fail') || event.data.nesting !== 0 || !event.data.file) continue;
    const file = files.get(event.data.file) ?? { ms: 0, failed: 0 };
    file.ms += event.data.details?.duration_ms ?? 0;
    if (event.type === 'test:fail') file.failed++;
    files.set(event.data.file, file);
  }
  const rows = [...files].sort((a, b) => b[1].ms - a[1].ms);
  for (const [file, { ms, failed }] of rows) yield `${(ms / 1000).toFixed(1).padStart(7)} s  ${path.basename(file)}${failed ? `  (${failed} failed)` : ''}\n`;
}
