// `hoopctl demo`: the product end to end on this machine, nothing to configure. Ctrl-C stops it all.
import type { Command } from 'commander';
import type { Output } from '../output.js';
import { rmSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { DemoStack, DemoStackOptions } from '../demo/stack.js';
import { psqlLine } from '../services/local-listener.js';
import { createLogger } from '../../../agent/src/log.js';
import { untilSignal } from '../signals.js';
import { portFlag } from '../flags.js';
import { UserError } from '../errors.js';
import { TunnelViewModel, showTunnelScreen } from '../ui/tunnel-screen.js';

/** A fixed default so the psql line in the README works as printed. */
const DEFAULT_DEMO_PORT = 55432;

interface DemoOptions {
  port?: number;
  quiet?: boolean;
}

export function registerDemo(program: Command, run: (fn: (out: Output) => Promise<void>) => Promise<void>): void {
  program
    .command('demo')
    .description('run the whole product locally: PostgreSQL with fake PHI, an OIDC issuer, hoop-agent and a tunnel')
    .option('-p, --port <port>', 'local port for psql (default 55432, or a free one if taken)', portFlag())
    .option('--quiet', 'do not show the agent log')
    .addHelpText(
      'after',
      `
Starts everything in this process and prints the psql line to paste. Every statement you run shows up
with the agent's decision (allowed, blocked, needs approval). Ctrl-C stops all of it and removes the
temporary database. Try:
  SELECT full_name, diagnosis FROM patients LIMIT 5;     -- allowed
  UPDATE patients SET diagnosis = 'x' WHERE id = 1;      -- held: writes need an approver
  DROP TABLE visits;                                     -- blocked`,
    )
    .action((opts: DemoOptions) => run((out) => demo(opts, out)));
}

async function demo(opts: DemoOptions, out: Output): Promise<void> {
  // Loaded on demand: the embedded PostgreSQL and issuer are heavy and install exit hooks.
  const { startDemoStack, DEMO_CONNECTION } = await import('../demo/stack.js');
  const model = out.interactive ? new TunnelViewModel({ title: 'hoopctl demo', state: 'starting', notes: [] }) : undefined;
  const screen = model && showTunnelScreen(model);
  try {
    const statementLog = createLogger({
      level: 'info',
      write: (line) => {
        const rec = JSON.parse(line) as { msg: string; decision?: string; rule?: string; sql?: string; code?: string; reason?: string };
        if (rec.msg !== 'statement' && rec.msg !== 'session refused') return;
        const text = rec.msg === 'statement' ? `${rec.decision?.padEnd(5)} ${rec.rule}  ${oneLine(rec.sql ?? '')}` : `session ended ${rec.code}: ${rec.reason}`;
        if (model) model.note(text);
        else if (!out.json) process.stderr.write(`agent: ${text}\n`);
      },
    });
    const progress = (step: string) => (model ? model.update({ detail: step }) : out.info(`demo: ${step}…`));
    const stackOpts: DemoStackOptions = { port: opts.port ?? DEFAULT_DEMO_PORT, agentLog: opts.quiet ? undefined : statementLog, progress };
    const t0 = performance.now();
    const stack = await startDemoStack(stackOpts).catch((err) => {
      // The default port is a convenience; if it is taken, any free port will do.
      if (opts.port === undefined && err instanceof UserError && err.code === 'PORT_IN_USE') return startDemoStack({ ...stackOpts, port: 0 });
      throw err;
    });
    const line = psqlLine(stack.listener, DEMO_CONNECTION);
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    const approver = await approverEnv(stack);
    out.event({ type: 'ready', port: stack.listener.port, psql: line, agent: stack.agent.url, issuer: stack.issuer.issuer, approverEnv: approver.file });
    if (model) model.update({ state: 'connected', psql: line, detail: `ready in ${secs}s; the agent's decisions appear below`, more: approver.howTo });
    else if (!out.json) {
      out.info(`demo: ready in ${secs}s. In another terminal run:\n`);
      process.stdout.write(`  ${line}\n\n`);
      out.info('Try: SELECT full_name, diagnosis FROM patients LIMIT 5;   then Ctrl-C here to stop everything.');
      out.info(approver.howTo.join('\n'));
    }
    await untilSignal();
    model ? model.update({ state: 'starting', detail: 'stopping…' }) : out.info('demo: stopping…');
    await stack.stop();
    out.event({ type: 'stopped' });
  } finally {
    screen?.unmount();
  }
}

/**
 * The demo's approver and reviewer: dave (group compliance), signed in through the local issuer. His
 * agent URL and token go to a 0600 file so the commands to print stay short; removed at stop.
 */
async function approverEnv(stack: DemoStack): Promise<{ file: string; howTo: string[] }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-demo-'));
  // On exit, however it comes (the embedded PostgreSQL's exit hooks may end the process first).
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'approver.env');
  const { accessToken } = await stack.issuer.mintDeviceFlowToken('dave@clinic.example');
  await writeFile(file, `export HOOPCTL_AGENT=${stack.agent.url}\nexport HOOPCTL_TOKEN=${accessToken}\n`, { mode: 0o600 });
  return {
    file,
    howTo: [
      'Held statements wait for an approver. As dave (group compliance), in a third terminal:',
      `  source ${file}`,
      '  npm run -s hoopctl -- approvals              # approve (a) or deny (d) what is held',
      '  npm run -s hoopctl -- sessions               # who ran what; then: sessions replay ID',
      'Evidence of this session an auditor can check offline (dave is a reviewer too):',
      '  npm run -s hoopctl -- evidence build --from 1d --to now -o ./hoop-evidence',
      `  node ./hoop-evidence/verify.mjs --fingerprint ${stack.agent.checkpointer.signer.fingerprint}`,
      '  open ./hoop-evidence/report.html             # sections A–J; prints to PDF',
    ],
  };
}

function oneLine(sql: string): string {
  const s = sql.replace(/\s+/g, ' ').trim();
  return s.length > 100 ? s.slice(0, 97) + '...' : s;
}
