// `hoopctl connect NAME`: open the tunnel, listen on a local port, relay until interrupted.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { ExitCode, UserError } from '../errors.js';
import type { Output } from '../output.js';
import { TunnelClient, type TunnelState } from '../services/tunnel-client.js';
import { startLocalListener, psqlLine } from '../services/local-listener.js';
import { endedBy, untilSignal } from '../signals.js';
import { portFlag } from '../flags.js';
import { resolveToken } from '../services/credentials.js';
import { loadSettings } from '../services/settings.js';
import { statedReason } from '../services/reason.js';
import { TunnelViewModel, showTunnelScreen } from '../ui/tunnel-screen.js';

export interface ConnectOptions {
  port?: number;
  agent?: string;
  token?: string;
  reason?: string;
  ca?: string;
  insecure?: boolean;
}

export function registerConnect(program: Command, run: (fn: (out: Output) => Promise<void>) => Promise<void>): void {
  program
    .command('connect')
    .argument('<name>', 'connection name, as configured on the agent (e.g. prod-db)')
    .description('open a local port that psql, pg_dump or any Postgres driver can use without a password')
    .option('-p, --port <port>', 'local port to listen on (default: a free one)', portFlag())
    .option('--agent <url>', 'agent URL, e.g. wss://hoop.example.com:8443 (env HOOPCTL_AGENT)')
    .option('--token <token>', 'access token to present (env HOOPCTL_TOKEN; default: the login `hoopctl login` stored, renewed as needed)')
    .option('--ca <file>', 'PEM CA certificate of the agent, if it uses a private CA')
    .option('--reason <text>', 'why this session needs the data, e.g. "ticket OPS-123" (env HOOPCTL_REASON); recorded in the audit and shown to approvers')
    .option('--insecure', 'allow ws:// to a non-loopback agent (testing only: PHI would travel in clear)')
    .addHelpText(
      'after',
      `
Examples:
  $ hoopctl connect prod-db
  $ hoopctl connect prod-db --port 6543 &     # in CI: then run psql/pg_dump against port 6543
  $ hoopctl connect prod-db --json            # JSON Lines events on stdout (listening, approvals…)
  $ hoopctl connect prod-db --reason "OPS-123: fix visit dates"   # the purpose, recorded with every session

The port listens on 127.0.0.1 only. Connect with user "noop"; no password is needed: the agent holds
the database credential and checks every statement against its policy.`,
    )
    .action((name: string, opts: ConnectOptions) => run((out) => connect(name, opts, out)));
}

export async function connect(name: string, opts: ConnectOptions, out: Output): Promise<void> {
  const agent = opts.agent ?? process.env.HOOPCTL_AGENT ?? (await loadSettings()).agent;
  if (!agent) {
    throw new UserError('NO_AGENT', 'no agent URL', {
      hint: 'Pass --agent wss://host:port, set HOOPCTL_AGENT, or run `hoopctl login --agent URL` once.',
      exitCode: ExitCode.Usage,
    });
  }
  // Fails now (exit 3) when there is no usable login; later calls renew the token for reconnects.
  const getToken = () => resolveToken({ flagToken: opts.token, env: process.env, now: Date.now });
  await getToken();
  // On a terminal a live screen; otherwise plain lines on stderr, or JSON Lines on stdout with --json.
  const model = out.interactive ? new TunnelViewModel({ title: `hoopctl connect ${name}`, state: 'starting', notes: [] }) : undefined;
  const screen = model && showTunnelScreen(model);
  const client = new TunnelClient({
    agentUrl: agent,
    connection: name,
    getToken,
    reason: statedReason(opts.reason, process.env),
    allowInsecure: opts.insecure,
    ca: opts.ca ? readFileSync(opts.ca) : undefined,
    onState: (s) => reportState(s, out, model),
    onEvent: (e) => {
      out.event({ ...e });
      if (e.message) model ? model.note(e.message) : out.json || out.info(e.message);
    },
  });
  try {
    try {
      await client.start();
    } catch (err) {
      // Unreachable is worth waiting out (the agent may be restarting); anything else needs the user.
      if (!(err instanceof UserError) || err.code !== 'AGENT_UNREACHABLE') throw err;
      reportState({ state: 'disconnected', error: err, retryInMs: 0 }, out, model);
    }
    client.keepAlive();
    const listener = await startLocalListener(client, opts.port ?? 0);
    // Listening for the stop before saying we listen: a script may signal as soon as it reads the line.
    const stop = untilSignal();
    const psql = psqlLine(listener, name);
    out.event({ type: 'listening', host: listener.host, port: listener.port, connection: name, psql });
    if (model) model.update({ psql, detail: `listening on ${listener.host}:${listener.port}` });
    else if (!out.json) {
      out.info(`hoopctl: tunnel to ${name} is listening on ${listener.host}:${listener.port}`);
      out.result(null, () => psql);
    }
    const sig = await stop;
    await listener.close();
    await client.stop();
    out.event({ type: 'stopped', signal: sig });
    endedBy(sig); // Ctrl-C: 130, run directly or under npm alike (README, Exit codes)
  } finally {
    screen?.unmount();
  }
}

function reportState(s: TunnelState, out: Output, model?: TunnelViewModel): void {
  switch (s.state) {
    case 'connected':
      out.event({ type: 'tunnel', state: 'connected' });
      model?.update({ state: 'connected' });
      return;
    case 'disconnected': {
      out.event({ type: 'tunnel', state: 'disconnected', error: { code: s.error.code, message: s.error.message } });
      const line = `${s.error.message}; retrying${s.retryInMs ? ` in ${Math.round(s.retryInMs / 1000)}s` : ''}`;
      if (model) model.update({ state: 'reconnecting', detail: line });
      else if (!out.json) out.info(`hoopctl: ${line}`);
      return;
    }
    case 'connecting':
      return;
  }
}
