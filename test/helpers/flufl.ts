/**
 * Real bounces from many MTAs, installed from Debian: python3-flufl.bounce (GNU Mailman's bounce
 * detector) ships about 115 of them as test data. Read in place, never copied into the repo.
 */
import { existsSync, readdirSync } from 'node:fs';
import { ensureDebianPackages } from './debian.js';

const PACKAGE = 'python3-flufl.bounce';
/** Where the package puts its bounces. */
export const FLUFL_DATA = '/usr/lib/python3/dist-packages/flufl/bounce/tests/data';

const installed = () => existsSync(FLUFL_DATA) && readdirSync(FLUFL_DATA).some((f) => f.endsWith('.txt'));

/** Installs Debian's python3-flufl.bounce when its bounces are missing (test/helpers/debian.ts) and returns the folder that holds them. */
export async function ensureFluflBounces(): Promise<string> {
  await ensureDebianPackages({ what: `The real bounces of ${PACKAGE} (${FLUFL_DATA})`, packages: [PACKAGE], installed, installedTest: `[ -d ${FLUFL_DATA} ]` });
  return FLUFL_DATA;
}
