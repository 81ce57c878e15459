/** What every console page is rendered with. */
import type { Config } from '../../../config/schema.js';
import { may, type Caller } from '../../access.js';

export interface PageContext {
  caller: Caller;
  config: Config;
  /** This page's path and query: where an action on it comes back to. */
  here: string;
}

/** The caller may change things (restore, delete, retry, drop, activate, test). */
export const canOperate = (ctx: PageContext): boolean => may(ctx.caller.role, 'operate');
/** The caller may read message bytes and quarantined files. */
export const canReadContent = (ctx: PageContext): boolean => may(ctx.caller.role, 'read-content');
