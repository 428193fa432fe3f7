// Micro-benchmark: ms per MB for framing a 1,000,000-row result the way the relay does (walk
// headers, look at each type, forward `complete` per read). Run: npx tsx test/agent/pgwire/backend-framer.bench.ts
import { Parser } from 'pg-protocol/dist/parser.js';
import { BackendFramer, commandComplete, dataRow, READY_IDLE } from '../../../agent/src/pgwire/backend.js';

const ROWS = 1_000_000;
const parts: Buffer[] = [];
for (let i = 0; i < ROWS; i++) parts.push(dataRow([String(i), `patient_${i}`, `p${i}@example.com`]));
parts.push(commandComplete(`SELECT ${ROWS}`), READY_IDLE);
const all = Buffer.concat(parts);
const mb = all.length / (1 << 20);

function chunks(size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < all.length; i += size) out.push(all.subarray(i, i + size));
  return out;
}

function timeIt(name: string, fn: () => number): void {
  let best = Infinity;
  let check = 0;
  for (let run = 0; run < 7; run++) {
    const t = process.hrtime.bigint();
    check = fn();
    best = Math.min(best, Number(process.hrtime.bigint() - t) / 1e6);
  }
  console.log(`${name}: ${(best / mb).toFixed(3)} ms/MB (${best.toFixed(1)} ms for ${mb.toFixed(1)} MB, check ${check})`);
}

for (const size of [16 * 1024, 64 * 1024]) {
  const cs = chunks(size);
  timeIt(`BackendFramer, ${size / 1024} KiB reads`, () => {
    const f = new BackendFramer();
    let rows = 0;
    let bytes = 0;
    for (const c of cs) {
      const n = f.push(c);
      const types = f.types;
      for (let i = 0; i < n; i++) if (types[i] === 0x44) rows++;
      bytes += f.complete.length; // forwarded as one buffer per read
    }
    return rows + (bytes === all.length ? 0 : -1e9);
  });
  timeIt(`pg-protocol Parser (decodes every message), ${size / 1024} KiB reads`, () => {
    const p = new Parser();
    let rows = 0;
    for (const c of cs) p.parse(c, (m) => { if (m.name === 'dataRow') rows++; });
    return rows;
  });
}
