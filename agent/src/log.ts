// Structured logs for operators: one JSON object per line on stderr (or, with `pretty`, the agent's
// `--log-format text`, a readable line). Never pass SQL text, parameter or result values, error texts
// that may quote them, tokens, passwords or cancel keys here, at any level: logs leave the audit
// store's protection (test/e2e/logs.test.ts runs a session full of PHI literals and reads every line).
export type Level = 'debug' | 'info' | 'warn' | 'error';
const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

export interface LoggerOptions {
  level?: Level;
  write?: (line: string) => void;
  pretty?: boolean;
}

export function createLogger(opts: LoggerOptions = {}, base: Record<string, unknown> = {}): Logger {
  const min = order[opts.level ?? ((process.env.HOOP_LOG_LEVEL as Level) || 'info')] ?? order.info;
  const write = opts.write ?? ((line: string) => void process.stderr.write(line + '\n'));
  const pretty = opts.pretty ?? false;
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (order[level] < min) return;
    const rec = { ts: new Date().toISOString(), level, msg, ...base, ...fields };
    if (!pretty) return write(JSON.stringify(rec));
    const extra = Object.entries({ ...base, ...fields })
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(' ');
    write(`${level.toUpperCase().padEnd(5)} ${msg}${extra ? '  ' + extra : ''}`);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (f) => createLogger(opts, { ...base, ...f }),
  };
}

export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child: () => silentLogger,
};
