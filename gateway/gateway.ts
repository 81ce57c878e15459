import type { Logger } from 'pino';
import type { Config } from './config/schema.js';
import type { Store } from '../storage/store.js';
import type { Stage } from '../policy/stage.js';
import { startSmtpListener, type SmtpListener } from './smtp-listener.js';
import { startControlServer } from './control.js';

/** Everything a gateway needs, passed in so tests can run several side by side. */
export interface GatewayDeps {
  config: Config;
  store: Store;
  logger: Logger;
  /** The policy stages for the next message; defaults to none. */
  stages?: () => readonly Stage[];
}

/** A running gateway. */
export interface Gateway {
  readonly smtp: SmtpListener;
  /** Stops listening, lets messages in progress finish, and closes the control socket. The store stays open for the caller to close. */
  stop(): Promise<void>;
}

export async function startGateway(deps: GatewayDeps): Promise<Gateway> {
  const { config, store, logger } = deps;
  const stages = deps.stages ?? (() => []);
  const control = await startControlServer(store, config.data_dir, logger);
  let smtp: SmtpListener;
  try {
    smtp = await startSmtpListener(config, { store, logger, stages });
  } catch (err) {
    await control.close();
    throw err;
  }
  return {
    smtp,
    async stop() {
      await smtp.close();
      await control.close();
    },
  };
}
