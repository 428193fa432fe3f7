// One worker of a clustered agent (cluster/primary.ts): it accepts tunnels on the shared listening
// socket and runs their sessions; audit appends, approvals and revocation checks go to the primary.
// Signals are the primary's to act on: it tells every worker to drain. A worker whose primary is gone
// can no longer audit anything, so it ends its sessions at once and exits.
import { setTimeout as sleep } from 'node:timers/promises';
import type { ResolvedConfig } from '../config.js';
import type { Logger } from '../log.js';
import { startAgentWorker } from '../agent.js';
import type { Health } from '../audit/store.js';
import { StoreUnavailableError } from '../audit/store.js';
import { Channel, type IpcPort } from './channel.js';
import { RemoteRevocations, RemoteStore } from './remote.js';
import { WORKER_ENV } from './primary.js';

export async function runWorker(config: ResolvedConfig, log: Logger): Promise<number> {
  const ch = new Channel(process as unknown as IpcPort);
  const apiSocket = process.env[WORKER_ENV.api];
  if (!apiSocket) throw new Error(`${WORKER_ENV.api} is not set: a worker is started by the agent primary`);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => {});
  const hello = await ch.call<{ agentId: string; health: Health }>('hello');
  const agent = await startAgentWorker({
    config,
    log,
    store: new RemoteStore(ch, hello.agentId, hello.health),
    revocations: new RemoteRevocations(ch),
    apiSocket,
    cancelElsewhere: (pid, secret, owner) => ch.call<boolean>('cancel', pid, secret, owner),
  });
  ch.handle('cancelHere', (pid: number, secret: Uint8Array, owner: string) => agent.cancels.cancelHere(pid, Buffer.from(secret), owner));
  ch.notify('ready', { pid: process.pid });
  const drainMs = await new Promise<number>((resolve) => {
    ch.on('drain', (ms: number) => resolve(ms));
    process.once('disconnect', () => {
      log.error('agent primary gone: ending every session');
      ch.close(new StoreUnavailableError('the agent primary is gone'));
      resolve(0);
    });
  });
  await agent.drain(drainMs);
  // Let the last replies (session_end appends) leave before the channel closes with the process.
  await sleep(50);
  return 0;
}
