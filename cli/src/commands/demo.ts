// `hoopctl demo`: the product end to end on this machine, nothing to configure. Ctrl-C stops it all and
// removes everything it created.
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Output } from '../output.js';
import type { DemoStack } from '../demo/stack.js';
import type { EventInput } from '../../../agent/src/audit/events.js';
import type { StateStore } from '../../../agent/src/audit/store.js';
import { psqlLine } from '../services/local-listener.js';
import { endedBy, loadWithoutForeignSignalHandlers, untilSignal } from '../signals.js';
import { ExitCode, UserError } from '../errors.js';
import { portFlag } from '../flags.js';
import { TunnelViewModel, showTunnelScreen } from '../ui/tunnel-screen.js';

/** A fixed default so the psql line in the README works as printed (HOOPCTL_DEMO_PORT overrides it). */
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
    .option('--quiet', "do not show the agent's decisions")
    .addHelpText(
      'after',
      `
Starts everything in this process and prints the psql line to paste. Every statement you run shows up
with the agent's decision (allowed, blocked, held for approval); with --json each is a JSON Lines event
on stdout. Ctrl-C stops all of it and removes the temporary database and audit trail (exit 130). Try:
  SELECT full_name, diagnosis FROM patients LIMIT 5;     -- allowed
  UPDATE patients SET diagnosis = 'x' WHERE id = 1;      -- held: writes need an approver
  DROP TABLE visits;                                     -- blocked`,
    )
    .action((opts: DemoOptions) => run((out) => demo(opts, out)));
}

async function demo(opts: DemoOptions, out: Output): Promise<void> {
  // Before anything starts: a port given and taken is the user's to fix; the default one taken means a
  // free one (decided once, so nothing starts twice).
  const port = await demoPort(opts.port, out);
  // Loaded on demand: the embedded PostgreSQL and issuer are heavy, and the PostgreSQL package's exit
  // hooks would end the process on Ctrl-C before the stop below removed the temporary directories.
  const { startDemoStack, DEMO_CONNECTION, DEMO_POLICY_MASKING } = await loadWithoutForeignSignalHandlers(() => import('../demo/stack.js'));
  const { signInApprover, DEMO_APPROVER } = await import('../demo/approver.js');
  const model = out.interactive ? new TunnelViewModel({ title: 'hoopctl demo', state: 'starting', notes: [] }) : undefined;
  const screen = model && showTunnelScreen(model);
  const show = (ev: DemoEvent) => {
    out.event(ev);
    if (model) model.note(eventText(ev));
    else if (!out.json) process.stderr.write(`agent: ${eventText(ev)}\n`);
  };
  try {
    const progress = (step: string) => (model ? model.update({ detail: step }) : out.info(`demo: ${step}…`));
    const t0 = performance.now();
    const stack = await startDemoStack({ port, progress, masking: DEMO_POLICY_MASKING, agent: opts.quiet ? {} : { wrapStore: watchAudit(show) } });
    let approver: Awaited<ReturnType<typeof signInApprover>> | undefined;
    try {
      approver = await signInApprover(stack);
      const line = psqlLine(stack.listener, DEMO_CONNECTION);
      const secs = ((performance.now() - t0) / 1000).toFixed(1);
      const cmds = commandsFor(stack, approver.envFile);
      // Listening for the stop before saying we are ready: a script may signal as soon as it reads the line.
      const stop = untilSignal(() => out.info('demo: second signal; exiting without cleaning up'));
      out.event({ type: 'ready', port: stack.listener.port, psql: line, agent: stack.agent.url, issuer: stack.issuer.issuer, approverEnv: approver.envFile, auditDir: stack.dataDir, hoopctl: cmds.hoopctl, verify: cmds.verify });
      const howTo = [
        `Held statements wait for an approver. As ${DEMO_APPROVER} (group compliance), in a third terminal:`,
        ...cmds.howTo,
      ];
      if (model) model.update({ state: 'connected', psql: line, detail: `ready in ${secs}s; the agent's decisions appear below`, more: howTo });
      else if (!out.json) {
        out.info(`demo: ready in ${secs}s. In another terminal run:\n`);
        process.stdout.write(`  ${line}\n\n`);
        out.info('Try: SELECT full_name, diagnosis FROM patients LIMIT 5;   then Ctrl-C here to stop everything.');
        out.info(howTo.join('\n'));
      }
      const sig = await stop;
      model ? model.update({ state: 'starting', detail: 'stopping…' }) : out.info('demo: stopping…');
      // Writers first (tunnel, agent and its store), then their directories, then the database.
      await stack.stop();
      await approver.remove();
      out.event({ type: 'stopped', signal: sig });
      endedBy(sig);
    } finally {
      await approver?.remove();
      await stack.stop();
    }
  } finally {
    screen?.unmount();
  }
}

/** What the demo shows as it happens, taken from the audit events as the agent appends them. */
type DemoEvent =
  | { type: 'statement'; decision: string; rule: string; sql: string }
  | { type: 'approval_requested' | 'approval_withdrawn' | 'approval_expired'; approvalId: string; reason?: string }
  | { type: 'approval_decided'; approvalId: string; verdict: string; by: string };

function toDemoEvent(e: EventInput): DemoEvent | undefined {
  const d = e.data;
  switch (e.type) {
    case 'statement':
      return { type: 'statement', decision: String(d.decision), rule: String(d.rule), sql: String(d.sql ?? '') };
    case 'approval_requested':
    case 'approval_withdrawn':
    case 'approval_expired':
      return { type: e.type, approvalId: String(d.approvalId), ...(d.reason ? { reason: String(d.reason) } : {}) };
    case 'approval_decided':
      return { type: 'approval_decided', approvalId: String(d.approvalId), verdict: String(d.verdict), by: e.identity?.email ?? e.identity?.sub ?? '?' };
    default:
      return undefined;
  }
}

function eventText(ev: DemoEvent): string {
  switch (ev.type) {
    case 'statement':
      return `${ev.decision.padEnd(5)} ${ev.rule}  ${oneLine(ev.sql)}`;
    case 'approval_requested':
      return `held  waiting for approval ${ev.approvalId}`;
    case 'approval_decided':
      return `${ev.verdict === 'approve' ? 'approved' : 'denied'} ${ev.approvalId} by ${ev.by}`;
    default:
      return `${ev.type.slice('approval_'.length)} ${ev.approvalId}${ev.reason ? `: ${ev.reason}` : ''}`;
  }
}

/** The agent's store, telling `show` about each event once it is on the chain. */
function watchAudit(show: (ev: DemoEvent) => void): (store: StateStore) => StateStore {
  return (store) =>
    new Proxy(store, {
      get(target, key) {
        if (key === 'append') {
          return async (e: EventInput) => {
            const sealed = await target.append(e);
            const ev = toDemoEvent(e);
            if (ev) show(ev);
            return sealed;
          };
        }
        const v = Reflect.get(target, key, target) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
}

/**
 * The commands to print, with the built binary (`npm run -s hoopctl` costs 2 s a command under tsx):
 * the binary that runs now if built, else the repository's dist/cli/main.js (built first if missing).
 */
function commandsFor(stack: DemoStack, envFile: string): { hoopctl: string; verify: string; howTo: string[] } {
  const self = process.argv[1] ?? '';
  const built = self.endsWith('.js') ? self : path.resolve('dist/cli/main.js');
  const rel = path.relative(process.cwd(), built);
  const hoopctl = `node ${rel.startsWith('..') ? built : rel}`;
  const verify = `${hoopctl} audit verify ${stack.dataDir}`;
  return {
    hoopctl,
    verify,
    howTo: [
      ...(existsSync(built) ? [] : ['  npm run build                               # once: builds dist/cli/main.js']),
      `  source ${envFile}     # dave's login, renewed by itself while the demo runs`,
      `  ${hoopctl} approvals              # approve (a) or deny (d) what is held`,
      `  ${hoopctl} sessions               # who ran what; then: sessions show ID, sessions replay ID`,
      `The audit trail is in ${stack.dataDir} (removed at stop). Check its hash chain and signed checkpoints:`,
      `  ${verify}`,
      'Evidence of this session an auditor can check offline (dave is a reviewer too):',
      `  ${hoopctl} evidence build --from 1d --to now -o ./hoop-evidence`,
      `  node ./hoop-evidence/verify.mjs --fingerprint ${stack.agent.checkpointer.signer.fingerprint}`,
      '  open ./hoop-evidence/report.html             # sections A–J; prints to PDF',
    ],
  };
}

async function demoPort(requested: number | undefined, out: Output): Promise<number> {
  if (requested !== undefined) {
    if (requested !== 0 && !(await portFree(requested))) {
      throw new UserError('PORT_IN_USE', `port ${requested} on 127.0.0.1 is already in use`, { hint: 'Pick another with --port, or leave --port out to use a free one.', exitCode: ExitCode.Usage });
    }
    return requested;
  }
  const preferred = Number(process.env.HOOPCTL_DEMO_PORT) || DEFAULT_DEMO_PORT;
  if (await portFree(preferred)) return preferred;
  out.info(`demo: port ${preferred} is taken; using a free one`);
  return 0;
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

function oneLine(sql: string): string {
  const s = sql.replace(/\s+/g, ' ').trim();
  return s.length > 100 ? s.slice(0, 97) + '...' : s;
}
