import { startDemoStack } from '../cli/src/demo/stack.ts';
import { createLogger } from '../agent/src/log.ts';
import { run } from '../test/harness/stack.ts';
const s = await startDemoStack({ patients: 500, agentLog: createLogger({pretty:true, level:'debug'}) });
const r = await run('psql', [`host=127.0.0.1 port=${s.listener.port} user=noop dbname=demo-db`, '-X', '-c', 'select current_user, count(*) from patients', '-c', 'select 1/0', '-c', '\\dt'], {env: {...process.env, PGCONNECT_TIMEOUT:'5'}, timeoutMs: 20000});
console.log(r.stdout, r.stderr);
await s.stop();
