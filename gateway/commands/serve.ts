import { Command } from 'commander';
import { commandConfig } from './common.js';

export function serveCommand(): Command {
  return new Command('serve').description('run the gateway (SMTP listener and store) until SIGTERM or SIGINT').action(async (_opts: unknown, cmd: Command) => {
    const { config, file } = await commandConfig(cmd, { secrets: 'required' });
    // Loaded here, not at the top, as the gateway itself below: every other command would pay for them.
    const { createLogger } = await import('../../lib/logger.js');
    const { errors } = await import('../../lib/errors.js');
    const { openOwnStore } = await import('../admin/api.js');
    const { databaseName } = await import('../../storage/open.js');
    const logger = createLogger(config.log_level, { node: config.node.name });
    const storeWhere = config.storage ? { postgres: databaseName(config.storage.postgres) } : {};
    logger.info({ config: file ?? 'built-in defaults', data_dir: config.data_dir, ...storeWhere }, 'starting mailgate');
    const store = await openOwnStore(config, (cause) => errors.gatewayRunning(config.data_dir, cause), { logger });
    // Loaded here, not at the top: every other command would pay for the whole gateway.
    const { startGateway } = await import('../gateway.js');
    const gateway = await startGateway({ config, store, logger }).catch(async (err: unknown) => {
      await store.close();
      throw err;
    });
    logger.info(
      {
        smtp: gateway.smtp.addresses,
        ...(gateway.submission ? { submission: gateway.submission.addresses } : {}),
        ...(gateway.metricsPort ? { metrics: gateway.metricsPort } : {}),
        ...(gateway.web ? { api: gateway.web.url } : {}),
      },
      'mailgate ready',
    );
    // No [[admin.user]] yet: a link that signs in as admin for this run, so a new user gets in without editing a file (as Jupyter does).
    const link = gateway.web?.firstRunLink;
    if (link) {
      logger.warn({ link }, 'no [[admin.user]] configured: sign in with this link (valid until mailgate stops)');
      process.stdout.write(`Sign in to mailgate (valid until it stops): ${link}\n`);
    }

    await new Promise<void>((resolve) => {
      const stop = (signal: string) => {
        logger.info({ signal }, 'stopping: finishing messages in progress');
        resolve();
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
    await gateway.stop();
    await store.close();
    logger.info('mailgate stopped');
    logger.flush();
  });
}
