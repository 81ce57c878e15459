/**
 * How a CLI command reaches the admin API, loading no more than it needs: while the gateway
 * runs, its API through the control socket, for which the client (http-client.ts) is enough;
 * only when it is stopped, this process's own on the store (api.ts), and with it the store, the
 * policy stages and all they load. An admin scripting a command against a running gateway
 * pays for none of that at each start.
 */
import type { LoadedConfig } from '../config/load.js';
import type { AdminApi } from './api.js';
import { adminClient, controlSocketPath, gatewayAnswers } from './http-client.js';

/**
 * The admin API for a CLI command: the running gateway's, through its control socket, when it
 * answers there; otherwise this process's own on the stopped gateway's store
 * (stoppedGatewayAdmin; `create`: the store is made when there is none yet, as `serve` would).
 */
export async function openAdminApi(loaded: LoadedConfig, opts: { create?: boolean } = {}): Promise<AdminApi> {
  const socket = controlSocketPath(loaded.config.data_dir);
  if (await gatewayAnswers(socket)) return adminClient(socket);
  const { stoppedGatewayAdmin } = await import('./api.js');
  return stoppedGatewayAdmin(loaded, socket, opts);
}
