#!/usr/bin/env -S node --max-semi-space-size=32
// hoop-agent --config hoop-agent.yaml
// The flag: under load, objects that live across a few scavenges of the default young generation
// (events and recording entries buffered for their batched writes) are promoted and die in old space,
// which grew ~5 MB/min between full GCs while heap snapshots showed a flat live set. A 32 MB semi-space
// lets them die young: the soak's RSS slope is flat after the first minute (README, Measured).
import { parseArgs } from 'node:util';
import { ConfigError, loadConfigFile } from './config.js';
import { createLogger } from './log.js';
import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { startAgent } from './agent.js';
import { startCluster, WORKER_ENV } from './cluster/primary.js';
import { runWorker } from './cluster/worker.js';
import { BENCH_NO_AUDIT_ENV, withoutAudit } from './audit/bench-no-audit.js';

const USAGE = `usage: hoop-agent --config FILE [--log-format json|text]

Runs the hoopctl agent next to the database: it verifies tokens, holds the database credentials and
checks, masks and audits every statement. See README.md for the config format.

options:
  -c, --config FILE   the agent config (YAML), e.g. /etc/hoop/hoop-agent.yaml
  --log-format F      json (default: one JSON object per line on stderr, for log collectors) | text (for people)
  -h, --help          this text
environment:
  HOOP_LOG_LEVEL      debug | info | warn | error (default info); no level logs SQL, values or tokens
signals:
  SIGTERM, SIGINT     drain: refuse new tunnels, let running statements finish (shutdown.drainTimeout,
                      default 30s), cancel the rest, end every session, exit 0
  a second one        exit at once (143 for SIGTERM, 130 for SIGINT)
  HOOP_AGENT_BENCH_NO_AUDIT=1   benchmark only: statements are NOT audited (loopback listeners only)`;

async function run(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ options: { config: { type: 'string', short: 'c' }, 'log-format': { type: 'string', default: 'json' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (err) {
    process.stderr.write(`hoop-agent: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (!values.config) {
    process.stderr.write(`hoop-agent: --config is required\n${USAGE}\n`);
    return 2;
  }
  const format = values['log-format'];
  if (format !== 'json' && format !== 'text') {
    process.stderr.write(`hoop-agent: --log-format: expected json or text, got ${JSON.stringify(format)}\n${USAGE}\n`);
    return 2;
  }
  const log = createLogger({ pretty: format === 'text' });
  let config;
  try {
    config = await loadConfigFile(values.config);
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const p of err.problems) process.stderr.write(`hoop-agent: config: ${p}\n`);
      return 2;
    }
    throw err;
  }
  const [host] = config.listen.split(/:(?=\d+$)/);
  if (!config.tls && !LOOPBACK.includes(host)) {
    process.stderr.write(
      `hoop-agent: config: tls: listening on ${config.listen} without TLS would send PHI and tokens in clear; set tls.cert and tls.key, or listen on 127.0.0.1\n`,
    );
    return 2;
  }
  // The benchmark's audit-off arm: never in production (loopback only, and said loudly at start).
  const noAudit = process.env[BENCH_NO_AUDIT_ENV] === '1';
  if (noAudit && !LOOPBACK.includes(host)) {
    process.stderr.write(`hoop-agent: ${BENCH_NO_AUDIT_ENV}=1 is for the benchmark only and needs a loopback listen address\n`);
    return 2;
  }
  if (noAudit) log.warn(`${BENCH_NO_AUDIT_ENV}=1: AUDIT IS OFF, statements are not recorded (benchmark only)`);
  // A bad input must never take the agent down: log it and keep serving everyone else.
  process.on('uncaughtException', (err) => log.error('uncaught exception', { error: err.stack ?? String(err) }));
  process.on('unhandledRejection', (err) => log.error('unhandled rejection', { error: String((err as Error)?.stack ?? err) }));
  // A worker of a clustered agent (config workers): the primary started it and will tell it to drain.
  // It exits once drained: its channel to the primary would otherwise keep it alive.
  if (cluster.isWorker) return process.exit(await runWorker(config, createLogger({ pretty: format === 'text' }, { worker: Number(process.env[WORKER_ENV.index]) })));
  const wrapStore = noAudit ? withoutAudit : undefined;
  const workers = config.workers === 'auto' ? availableParallelism() : config.workers;
  const agent = workers > 1 ? await startCluster({ config, log, workers, wrapStore }) : await startAgent({ config, log, wrapStore });
  // The first SIGTERM or SIGINT drains (README, Stopping the agent); a second one exits at once.
  await new Promise<void>((resolve) => {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      if (++signals === 1) return resolve();
      log.warn('second signal: exiting without waiting for the drain', { signal });
      process.exit(signal === 'SIGINT' ? 130 : 143);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
  log.info('agent stopping');
  await agent.drain();
  // Everything the agent opened is closed; anything else still holding the event loop must not keep a
  // stopped agent alive (the audit is already flushed).
  setTimeout(() => {
    log.warn('a handle outlived the stop; exiting anyway');
    process.exit(0);
  }, 2000).unref();
  return 0;
}

const LOOPBACK = ['127.0.0.1', 'localhost', '::1', '[::1]'];

run().then(
  (code) => (process.exitCode = code),
  (err) => {
    process.stderr.write(`hoop-agent: ${(err as Error).message}\n`);
    process.exitCode = 1;
  },
);
