// The real hoop-agent binary on the demo stack's PostgreSQL and issuer, with its own config file: for
// tests of what only the process does (signals, exit codes, worker processes).
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Child } from './child.js';
import { freePort } from '../../shared/net.js';
import { DEMO_CONNECTION, DEMO_DATABASE, DEMO_MASKING, type DemoStack } from '../../cli/src/demo/stack.js';

export interface AgentBinary {
  child: Child;
  url: string;
  dataDir: string;
}

/**
 * Starts `node --import tsx agent/src/main.ts` (not the tsx wrapper: signals go to the agent itself)
 * on a free port under `dir`, the demo connection masked as in the demo. `top` is extra top-level
 * YAML (e.g. `workers: 2`), `connection` extra YAML under the connection, both already indented.
 */
export async function startAgentBinary(stack: DemoStack, dir: string, opts: { top?: string; connection?: string } = {}): Promise<AgentBinary> {
  const port = await freePort();
  const dataDir = path.join(dir, `agent-${port}`);
  const masking = Object.entries(DEMO_MASKING)
    .map(([col, how]) => `      ${col}: ${JSON.stringify(how)}`)
    .join('\n');
  const file = path.join(dir, `agent-${port}.yaml`);
  await writeFile(
    file,
    `listen: 127.0.0.1:${port}
dataDir: ${dataDir}
${opts.top ?? ''}
identity:
  issuers:
    - issuer: ${stack.issuer.issuer}
      audience: ${stack.issuer.audience}
connections:
  ${DEMO_CONNECTION}:
    postgres: { host: ${stack.pg.host}, port: ${stack.pg.port}, database: ${DEMO_DATABASE}, user: gw_agent, passwordEnv: HOOP_E2E_DB_PASSWORD }
    access: [{ groups: [data-eng] }]
${opts.connection ?? ''}
    masking:
${masking}
`,
  );
  const child = new Child(process.execPath, ['--import', 'tsx', 'agent/src/main.ts', '--config', file], { ...process.env, HOOP_E2E_DB_PASSWORD: stack.agentDbPassword });
  await child.waitFor(() => child.stderr.includes('"agent listening"') || child.stderr.includes('INFO  agent listening'), 'agent listening', 90_000);
  return { child, url: `ws://127.0.0.1:${port}`, dataDir };
}

/** Every event the binary's embedded store wrote under `dataDir`, in file order. */
export async function readAuditEvents<T = { type: string }>(dataDir: string): Promise<T[]> {
  const auditDir = path.join(dataDir, 'audit');
  const files = (await readdir(auditDir)).filter((f) => f.startsWith('agent-') && f.endsWith('.jsonl')).sort();
  return (await Promise.all(files.map((f) => readFile(path.join(auditDir, f), 'utf8'))))
    .join('')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as T);
}
