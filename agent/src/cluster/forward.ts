// A worker's API requests, passed to the agent primary over its private Unix socket: the primary holds
// the state store, so sessions, approvals, audit export and checkpoints are served from one place
// whichever worker the client's connection landed on. Tunnels stay in the worker that accepted them.
import http from 'node:http';
import type { ApiErrorBody } from '../../../shared/errors.js';
import type { Logger } from '../log.js';

export function forwardTo(socketPath: string, log: Logger): (req: http.IncomingMessage, res: http.ServerResponse) => void {
  return (req, res) => {
    const upstream = http.request({ socketPath, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', (err) => {
      log.error('agent primary unreachable; API request refused', { error: err.message });
      if (res.headersSent) return void res.destroy(err);
      const body: ApiErrorBody = { error: { code: 'AGENT_PRIMARY_UNAVAILABLE', message: 'the agent is restarting or stopping', hint: 'Retry shortly.' } };
      res.writeHead(503, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(body));
    });
    // A client that goes away mid-answer (an export it stopped reading) stops the primary's work too.
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  };
}
