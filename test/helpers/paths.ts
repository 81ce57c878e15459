import { fileURLToPath } from 'node:url';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** The project root. Tests run compiled from dist/test/, sources and fixtures stay in place. */
export const projectRoot = fileURLToPath(new URL('../../../', import.meta.url));
/** Fixtures under test/fixtures/ in the source tree. */
export const fixture = (...parts: string[]) => path.join(projectRoot, 'test', 'fixtures', ...parts);
/** The shared corpora, read in place (../shared/corpora from the project root). */
export const corpus = (...parts: string[]) => path.join(projectRoot, '..', 'shared', 'corpora', ...parts);
/** The compiled CLI entry point. */
export const cliPath = path.join(projectRoot, 'dist', 'gateway', 'cli.js');

/** A fresh temporary directory, removed by the returned cleanup. */
export async function tempDir(prefix = 'mailgate-test-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}
