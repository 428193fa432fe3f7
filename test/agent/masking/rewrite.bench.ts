// Micro-benchmark: ms per MB for masking a 1,000,000-row result with two masked columns of five, the
// way the relay does it (BackendFramer per socket read → maskDataRows → one buffer per read).
// Run: npx tsx test/agent/masking/rewrite.bench.ts
import { BackendFramer, commandComplete, dataRow, READY_IDLE } from '../../../agent/src/pgwire/backend.js';
import type { ColumnMask } from '../../../agent/src/masking/lineage.js';
import { maskDataRows, RowMasker } from '../../../agent/src/masking/rewrite.js';
import { parseStrategy } from '../../../agent/src/masking/strategies.js';

const ROWS = 1_000_000;
const parts: Buffer[] = [];
for (let i = 0; i < ROWS; i++) {
  const s = String(i).padStart(9, '0');
  parts.push(dataRow([String(i), `Patient Name ${i}`, `${s.slice(0, 3)}-${s.slice(3, 5)}-${s.slice(5)}`, `patient.${i}@example.org`, 'Type 2 diabetes']));
}
parts.push(commandComplete(`SELECT ${ROWS}`), READY_IDLE);
const all = Buffer.concat(parts);
const mb = all.length / (1 << 20);
const clear: ColumnMask = { masked: false };
const m = (v: Parameters<typeof parseStrategy>[0]): ColumnMask => ({ masked: true, strategy: parseStrategy(v), sources: ['x'] });
const TEXT = [23, 25, 25, 25, 25];

function chunks(size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < all.length; i += size) out.push(all.subarray(i, i + size));
  return out;
}

function timeIt(name: string, fn: () => number, runs = 7): void {
  let best = Infinity;
  let check = 0;
  for (let run = 0; run < runs; run++) {
    const t = process.hrtime.bigint();
    check = fn();
    best = Math.min(best, Number(process.hrtime.bigint() - t) / 1e6);
  }
  console.log(`${name}: ${(best / mb).toFixed(3)} ms/MB (${best.toFixed(1)} ms for ${mb.toFixed(1)} MB, out ${check} bytes)`);
}

const plans: [string, ColumnMask[], number?][] = [
  ['framing only (no mask)', [clear, clear, clear, clear, clear]],
  ['redact ssn + redact email', [clear, clear, m('redact'), m('redact'), clear]],
  ['redact ssn + partial(4) email', [clear, clear, m('redact'), m({ partial: 4 }), clear]],
];
// HMAC costs ~6-10 µs per value in Node's crypto binding: opt in with BENCH_HASH=1
if (process.env.BENCH_HASH) plans.push(['redact ssn + hash email', [clear, clear, m('redact'), m('hash'), clear], 2]);
for (const size of [16 * 1024, 64 * 1024]) {
  const cs = chunks(size);
  for (const [name, plan, runs] of plans) {
    timeIt(`${name}, ${size / 1024} KiB reads`, () => {
      const f = new BackendFramer();
      const masker = new RowMasker(plan, [0], TEXT, { hashKey: Buffer.from('bench-key') });
      let bytes = 0;
      for (const c of cs) {
        const n = f.push(c);
        bytes += maskDataRows(f.buffer, f.types, f.offsets, 0, n, masker).length;
      }
      return bytes;
    }, runs);
  }
}
