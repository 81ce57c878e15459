/**
 * The storage interface's contract (test/helpers/store-contract.ts) against the LevelDB store,
 * each store in a temporary data directory of its own.
 */
import { after } from 'node:test';
import { tempDir } from './helpers/paths.js';
import { storeContract } from './helpers/store-contract.js';
import { openStore } from '../storage/open.js';

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups) await cleanup();
});

storeContract('LevelDB', {
  async open() {
    const { dir, cleanup } = await tempDir('mailgate-contract-');
    cleanups.push(cleanup);
    return openStore(dir);
  },
  reopen: (closed) => openStore(closed.dir),
});
