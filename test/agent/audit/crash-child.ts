// Child process for the SIGKILL test: appends from 20 concurrent loops and prints each seq once its
// append has resolved (i.e. once it is durable). The parent kills it mid-write.
import { JsonlStore } from '../../../agent/src/audit/jsonl-store.js';
import { makeStatementEvent } from '../../../agent/src/audit/events.js';

const store = await JsonlStore.open({ dataDir: process.argv[2], agentId: 'crashy', clock: () => Date.now(), segmentBytes: 256 << 10 });
const who = { sub: 'ci', issuer: 'https://idp.test' };
for (let w = 0; w < 20; w++) {
  void (async () => {
    for (let i = 0; ; i++) {
      const e = await store.append(makeStatementEvent({ sessionId: `w${w}`, who, connection: 'prod-db', sql: `select ${i}, '${'x'.repeat(i % 300)}'`, decision: 'allow' }));
      process.stdout.write(`${e.seq}\n`);
    }
  })();
}
