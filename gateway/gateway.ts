import type { Logger } from 'pino';
import type { Config } from './config/schema.js';
import type { Store } from '../storage/store.js';
import type { Stage } from '../policy/chain/stage.js';
import { startSmtpListener, type SmtpListener } from './smtp/listener.js';
import { Admin, controlSocketPath, type AdminApi } from './admin/api.js';
import { startAdminServer } from './admin/http-server.js';
import { resetSpoolDir } from '../ingest/spool.js';
import { PolicySet, policySources } from '../policy/policy-set.js';
import { watchPolicies } from '../policy/policy-watcher.js';
import { Metrics, startMetricsServer } from '../lib/metrics.js';
import { parseListenAddress } from '../lib/net.js';
import { startRetriever, type Retriever, type RetrieverHooks } from './fetch/retriever.js';
import { aliasTokenProviders, gatewaySecretKey } from './oauth/store.js';
import { watchClientSecrets } from './oauth/secret-expiry.js';
import { Dispatcher } from './dispatch/dispatcher.js';
import { followAdminNotices } from './admin/fleet.js';
import { watchSharedConfig } from './admin/shared-config.js';
import { startSubmissionListener, submissionEnabled } from './smtp/submission.js';
import { startWebServer, type WebServer } from './web/server.js';
import { GatewayEvents, reportingStore } from './events.js';
import { quarantineForwarding } from './quarantine-forward/forwarding.js';
import { Retention } from './retention/sweep.js';
import { withThreading } from '../policy/threading/stage.js';

/** Everything a gateway needs, passed in so tests can run several side by side. */
export interface GatewayDeps {
  config: Config;
  store: Store;
  logger: Logger;
  /**
   * The policy stages for the next message of a department. Default: built from the policy
   * files the config names, reloaded when they change.
   */
  stages?: (department?: string) => readonly Stage[];
  /** Fetch from the aliases' incoming mailboxes (default true); tests that do not want it pass false. */
  retriever?: boolean;
  /** Test seams of the retriever. */
  retrieverHooks?: RetrieverHooks;
}

/** A running gateway. */
export interface Gateway {
  readonly smtp: SmtpListener;
  /** The submission listener, when `[submission]` runs. */
  readonly submission?: SmtpListener;
  /** Works the outbound queue. */
  readonly dispatcher: Dispatcher;
  readonly metrics: Metrics;
  /** The retriever, unless disabled. */
  readonly retriever?: Retriever;
  /** The admin API the control socket serves. */
  readonly admin: AdminApi;
  /** What happens, live: messages stored, attachments quarantined or restored, queue and alias changes. */
  readonly events: GatewayEvents;
  /** The REST API's web server, when `[admin]` is enabled. */
  readonly web?: WebServer;
  /** The retention sweep (`[retention]`): a minute after start, then daily; `sweep()` runs one now. */
  readonly retention: Retention;
  /** Port of the metrics server, when `[metrics] listen` is set. */
  readonly metricsPort?: number;
  /** Stops listening, lets messages in progress finish, and closes the control socket. The store stays open for the caller to close. */
  stop(): Promise<void>;
}

export async function startGateway(deps: GatewayDeps): Promise<Gateway> {
  const { config, logger } = deps;
  // Every part gets the store through this: what they write is reported to whoever watches live.
  const events = new GatewayEvents();
  const store = reportingStore(deps.store, events);
  // Before anything listens: an OAuth alias without a usable secret key is a configuration error.
  const sendsWithOAuth = config.alias.some((a) => a.outgoing?.oauth2 !== undefined);
  const secretKey = deps.retriever === false && !sendsWithOAuth ? undefined : await gatewaySecretKey(config);
  const tokens = aliasTokenProviders(config, store, secretKey);
  // Node's process collectors (a GC observer, an event-loop monitor) run only where someone scrapes them.
  const metrics = new Metrics({ processMetrics: config.metrics.listen !== undefined });
  metrics.set('mailgate_node_info', { node: config.node.name }, 1);
  // An invalid policy file at start is a config error (there is no last good policy yet).
  let policy = deps.stages ? undefined : PolicySet.load(policySources(config));
  const watcher =
    policy &&
    watchPolicies(policy, logger, (next, result) => {
      metrics.inc('mailgate_policy_reloads_total', { result });
      if (next) policy = next;
    });
  // Reply threading runs after the policy's stages on every message (it reads, and going out adds the reference to the subject).
  const stages = withThreading(config.partition, deps.stages ?? ((department?: string) => policy!.stagesFor(department)));
  // Cisco guide: a client secret expires; warned about from 30 days before, at start and daily.
  const secrets = watchClientSecrets(config, logger, metrics);
  resetSpoolDir(store.dir);
  // The retriever starts last; the admin API reaches it through this getter once it runs.
  let retriever: Retriever | undefined;
  const dispatcher = new Dispatcher({ store, config, logger, stages, metrics, tokens, claimLeaseMs: config.queue.claim_ttl });
  // Inbound mail only (SMTP listener, retriever): what goes to the quarantine mailbox is queued with it.
  const commitHook = quarantineForwarding(config, logger, (entry) => dispatcher.queued(entry));
  const admin = new Admin({ config, store: async () => store, logger, stages, dispatcher, retriever: () => retriever, metrics, tokens });
  const control = await startAdminServer(admin, controlSocketPath(config.data_dir), logger);
  let smtp: SmtpListener | undefined;
  let submission: SmtpListener | undefined;
  let metricsServer: Awaited<ReturnType<typeof startMetricsServer>> | undefined;
  let web: WebServer | undefined;
  let listening = false;
  try {
    await dispatcher.start();
    smtp = await startSmtpListener(config, { store, logger, stages, dispatcher, commitHook }, metrics);
    if (submissionEnabled(config)) submission = await startSubmissionListener(config, { store, logger, stages, dispatcher }, metrics);
    else logger.info('submission listener off: no [[submission.user]] (set [submission] enabled = true to force it)');
    const at = config.metrics.listen ? parseListenAddress(config.metrics.listen) : undefined;
    if (at) metricsServer = await startMetricsServer(metrics, at.host, at.port);
    listening = true;
    // Ready once the store answers a read and the listeners are bound.
    const ready = async () => listening && (await store.listAliasStates().then(() => true));
    if (config.admin.enabled) web = await startWebServer({ config, admin, logger, ready, events, audit: (entry) => store.appendAudit(entry) });
  } catch (err) {
    secrets.stop();
    watcher?.close();
    await metricsServer?.close();
    await smtp?.close();
    await submission?.close();
    await dispatcher.stop();
    await control.close();
    throw err;
  }
  // After the SMTP listener, so a config problem there stops the start before any mailbox is touched.
  retriever =
    deps.retriever === false
      ? undefined
      : startRetriever({
          store,
          logger,
          stages,
          config,
          metrics,
          dispatcher,
          tokenProvider: tokens,
          commitHook,
          events,
          ...(deps.retrieverHooks ? { hooks: deps.retrieverHooks } : {}),
        });
  // Several nodes: an admin on another node reaches this one's retriever and dispatcher through
  // the store's notices, and a configuration that differs from the others' is logged.
  const stopNotices = followAdminNotices({ store, logger, retriever: () => retriever, dispatcher });
  const stopConfigWatch = await watchSharedConfig(store, config, logger);
  const retention = new Retention({ config: config.retention, store, logger, metrics });
  retention.start();
  const listener = smtp;
  const submitter = submission;
  return {
    smtp: listener,
    ...(submitter ? { submission: submitter } : {}),
    dispatcher,
    metrics,
    admin,
    events,
    retention,
    ...(metricsServer ? { metricsPort: metricsServer.port } : {}),
    ...(retriever ? { retriever } : {}),
    ...(web ? { web } : {}),
    async stop() {
      listening = false;
      // First the REST API: no admin operation starts while the rest stops.
      await web?.close();
      stopNotices();
      stopConfigWatch();
      // A sweep in progress stops between messages.
      await retention.stop();
      // Then: a fetch in progress finishes while the store and everything else are still up.
      await retriever?.stop();
      secrets.stop();
      watcher?.close();
      await metricsServer?.close();
      await listener.close();
      await submitter?.close();
      // After the listeners: a message they just queued is scheduled, then the dispatcher lets attempts in progress finish.
      await dispatcher.stop();
      await control.close();
    },
  };
}
