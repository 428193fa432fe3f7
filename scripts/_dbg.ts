import { startDemoStack } from '../cli/src/demo/stack.ts';
import { createLogger } from '../agent/src/log.ts';
import pg from 'pg';
const t=performance.now();
const s = await startDemoStack({ patients: 500, agentLog: createLogger({pretty:true, level:'debug'}), progress: (x)=>console.error(x, (performance.now()-t).toFixed(0)) });
try {
  const c = new pg.Client({connectionString: s.tunnelUrl});
  await c.connect();
  console.log((await c.query('select current_user, count(*) from patients')).rows);
  await c.end();
} catch (e) { console.error('ERR', e); }
await s.stop();
