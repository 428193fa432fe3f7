// The demo's approver and reviewer, dave (group compliance): signed in through the demo's issuer with the
// device flow, his login stored as `hoopctl login` stores one (a 0600 file in a private config dir,
// with its refresh token), so every hoopctl command renews it by itself while the demo runs: nobody
// gets "token expired" 15 minutes in. A shell `source`s one file to act as him.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { DemoStack } from './stack.js';
import { saveLogin, toStoredLogin } from '../services/credentials.js';
import { TokenStore } from '../services/token-store.js';

export const DEMO_APPROVER = 'dave@clinic.example';

export interface DemoApprover {
  /** The file to `source`: points hoopctl at dave's private config. */
  envFile: string;
  /** hoopctl's config dir for dave (settings and credentials.json). */
  configDir: string;
  remove(): Promise<void>;
}

export async function signInApprover(stack: Pick<DemoStack, 'issuer' | 'agent'>): Promise<DemoApprover> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-demo-'));
  try {
    const configDir = path.join(dir, 'config');
    const env = { HOOPCTL_CONFIG_DIR: configDir, HOOPCTL_TOKEN_STORE: 'file', HOME: dir };
    const { issuer } = stack;
    const tokens = await issuer.mintDeviceFlowToken(DEMO_APPROVER);
    const login = toStoredLogin(tokens, { issuer: issuer.issuer, method: 'device', clientId: issuer.cliClientId }, Date.now());
    await saveLogin(login, { store: new TokenStore({ env }), env, settings: { issuer: issuer.issuer, clientId: issuer.cliClientId, agent: stack.agent.url } });
    const envFile = path.join(dir, 'approver.env');
    await writeFile(envFile, `export HOOPCTL_CONFIG_DIR=${configDir}\nexport HOOPCTL_TOKEN_STORE=file\nunset HOOPCTL_TOKEN HOOPCTL_AGENT\n`, { mode: 0o600 });
    return { envFile, configDir, remove: () => rm(dir, { recursive: true, force: true }) };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
