// `hoopctl demo`: the product end to end on this machine, nothing to configure. Ctrl-C stops it all.
import type { Command } from 'commander';
import type { Output } from '../output.js';
import { startDemoStack, DEMO_CONNECTION } from '../demo/stack.js';
import { psqlLine } from '../services/local-listener.js';
import { createLogger } from '../../../agent/src/log.js';
import { untilSignal } from '../signals.js';
import { UserError } from '../errors.js';

/** A fixed default so the psql line in the README works as printed. */
const DEFAULT_DEMO_PORT = 55432;

export function registerDemo(program: Command, run: (fn: (out: Output) => Promise<void>) => Promise<void>): void {
  program
    .command('demo')
    .description('run the whole product locally: PostgreSQL with fake PHI, an OIDC issuer, hoop-agent and a tunnel')
    .option('-p, --port <port>', 'local port for psql (default 55432, or a free one if taken)', (v) => Number(v))
    .option('--quiet', 'do not print the agent log')
    .addHelpText(
      'after',
      `
Starts everything in this process and prints the psql line to paste. Every statement you run shows up
in the agent log below it. Ctrl-C stops all of it and removes the temporary database.`,
    )
    .action((opts: { port?: number; quiet?: boolean }) => run((out) => demo(opts, out)));
}

async function demo(opts: { port?: number; quiet?: boolean }, out: Output): Promise<void> {
  const agentLog = opts.quiet
    ? undefined
    : createLogger({ pretty: !out.json, write: (l) => process.stderr.write(`agent  ${l}\n`) });
  const t0 = performance.now();
  const stack = await startDemoStack({ port: opts.port ?? DEFAULT_DEMO_PORT, agentLog, progress: (s) => out.info(`demo: ${s}…`) }).catch((err) => {
    // The default port is a convenience; if it is taken, any free port will do.
    if (opts.port === undefined && err instanceof UserError && err.code === 'PORT_IN_USE') {
      return startDemoStack({ port: 0, agentLog, progress: (s) => out.info(`demo: ${s}…`) });
    }
    throw err;
  });
  const line = psqlLine(stack.listener, DEMO_CONNECTION);
  out.event({ type: 'ready', port: stack.listener.port, psql: line, agent: stack.agent.url, issuer: stack.issuer.issuer });
  if (!out.json) {
    out.info(`demo: ready in ${((performance.now() - t0) / 1000).toFixed(1)}s. In another terminal run:\n`);
    process.stdout.write(`  ${line}\n\n`);
    out.info('Try: SELECT full_name, ssn, email FROM patients LIMIT 5;   then Ctrl-C here to stop everything.');
  }
  await untilSignal();
  out.info('demo: stopping…');
  await stack.stop();
  out.event({ type: 'stopped' });
}
