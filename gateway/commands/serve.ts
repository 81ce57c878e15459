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
    // Before anything works under the name (the dispatcher frees this name's queue claims as its
    // previous run's): a second serve with the name is refused here (NODE_NAME_IN_USE).
    let nameTaken: ((err: Error) => void) | undefined;
    let takenMeanwhile: Error | undefined;
    await store
      .holdNodeName((err) => {
        takenMeanwhile = err;
        nameTaken?.(err);
      })
      .catch(async (err: unknown) => {
        await store.close();
        throw err;
      });
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
      // Another process took the name while the database connection holding it was lost: it
      // has freed this name's queue claims and will fetch its mailboxes, so this one stops
      // rather than send or fetch the same mail.
      nameTaken = (err) => {
        logger.error({ err, code: (err as { code?: string }).code }, `stopping: ${(err as { sentence?: string }).sentence ?? err.message}`);
        resolve();
      };
      if (takenMeanwhile) nameTaken(takenMeanwhile);
    });
    await gateway.stop();
    await store.close();
    logger.info('mailgate stopped');
    logger.flush();
    if (takenMeanwhile) process.exitCode = 1;
  });
}
