// The bundle's report.html (self-contained: no script from anywhere, no font, no image link; inline SVG;
// prints to PDF) and VERIFY.md. Figures come from verify.mjs's computation: the report embeds them as
// JSON and marks each shown number with data-figure, and verify.mjs checks both against events.jsonl.
import type { KeyRecord } from '../../../shared/api/audit.js';
import type { AgentSpan } from './evidence-build.js';

type Table = { columns: string[]; rows: unknown[][] };

export interface ReportInput {
  period: { from: string; to: string; connection?: string };
  figures: Record<string, unknown>;
  tables: Record<string, Table>;
  spans: AgentSpan[];
  signer: KeyRecord;
  source: string;
  versions: { cli: string };
  previous?: string;
  oldest?: string;
  builtAt: string;
  checkpoints: number;
}

const SIX_YEARS_MS = 6 * 365.25 * 86_400_000;

const esc = (v: unknown) =>
  String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/** A shown figure, marked so verify.mjs can hold it against its own count. */
const fig = (f: Record<string, unknown>, name: string) => `<b data-figure="${name}">${esc(f[name])}</b>`;

function table(t: Table, limit = 500): string {
  if (!t.rows.length) return '<p class="none">None in this period.</p>';
  const rows = t.rows.slice(0, limit).map((r) => `<tr>${r.map((c) => `<td>${esc(typeof c === 'object' && c !== null ? JSON.stringify(c) : c)}</td>`).join('')}</tr>`);
  const more = t.rows.length > limit ? `<p class="none">${t.rows.length - limit} more rows in the CSV file.</p>` : '';
  return `<table><thead><tr>${t.columns.map((c) => `<th>${esc(c)}</th>`).join('')}</tr></thead><tbody>${rows.join('')}</tbody></table>${more}`;
}

/** Statements per day, stacked by decision: an inline SVG, no script. */
function chart(days: Record<string, { allow: number; block: number; hold: number }>): string {
  const entries = Object.entries(days);
  if (!entries.length) return '';
  const max = Math.max(1, ...entries.map(([, d]) => d.allow + d.block + d.hold));
  const w = 24;
  const h = 120;
  const bars = entries
    .map(([day, d], i) => {
      let y = h;
      const seg = (n: number, color: string) => {
        const bh = (n / max) * (h - 10);
        y -= bh;
        return n ? `<rect x="${i * w + 40}" y="${y.toFixed(1)}" width="${w - 4}" height="${bh.toFixed(1)}" fill="${color}"><title>${esc(day)}: ${n}</title></rect>` : '';
      };
      return seg(d.allow, '#4a7') + seg(d.hold, '#d92') + seg(d.block, '#c33') + `<text x="${i * w + 40}" y="${h + 12}" font-size="8">${esc(day.slice(5))}</text>`;
    })
    .join('');
  return `<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="statements per day" width="${entries.length * w + 60}" height="${h + 20}"><text x="0" y="10" font-size="9">${max}</text><text x="0" y="${h}" font-size="9">0</text>${bars}</svg><p class="legend"><span style="color:#4a7">■</span> allowed <span style="color:#d92">■</span> held <span style="color:#c33">■</span> blocked</p>`;
}

export function renderReport(r: ReportInput): string {
  const f = r.figures;
  const oldestAge = r.oldest ? Date.parse(r.builtAt) - Date.parse(r.oldest) : 0;
  const retention = r.oldest
    ? `oldest record held: ${esc(r.oldest)} (${(oldestAge / (365.25 * 86_400_000)).toFixed(2)} years; target 6 years, ${oldestAge >= SIX_YEARS_MS ? 'met' : 'not yet reached: the trail is younger than the target, nothing was deleted'})`
    : 'oldest record: unknown';
  const agents = r.spans.map((s) => [s.agentId, s.firstSeq, s.lastSeq, s.events, s.lastSeq - s.firstSeq + 1 - s.events]);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hoopctl evidence ${esc(r.period.from)} – ${esc(r.period.to)}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<style>
body{font:13px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:20px}h2{font-size:16px;border-bottom:1px solid #ccc;margin-top:1.6em;break-after:avoid}
table{border-collapse:collapse;width:100%;font-size:11px;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 4px;text-align:left;vertical-align:top;word-break:break-word}
th{background:#f3f3f3}.none{color:#777}.ok{color:#274}.bad{color:#a22}.legend{font-size:11px}
.figs{display:flex;flex-wrap:wrap;gap:1em}.figs div{border:1px solid #ddd;padding:.4em .8em;border-radius:4px}
@media print{body{margin:0;max-width:none}section{break-inside:avoid-page}}
</style></head><body>
<h1>Audit evidence: ${esc(r.period.from)} to ${esc(r.period.to)}${r.period.connection ? ` · connection ${esc(r.period.connection)}` : ''}</h1>
<p>Every figure below is recomputed by <code>node verify.mjs</code> from <code>events.jsonl</code>, whose every event is under a checkpoint signed by the agent (VERIFY.md). HIPAA §164.312(b) audit controls, (c) integrity, (d) entity authentication; §164.308(a)(1)(ii)(D) activity review; §164.316(b)(2) retention.</p>
<script type="application/json" id="figures">${JSON.stringify(f).replace(/</g, '\\u003c')}</script>
<section id="A"><h2>A. Scope</h2>
<p>Period [${esc(r.period.from)}, ${esc(r.period.to)}); built ${esc(r.builtAt)} by hoopctl ${esc(r.versions.cli)} from ${esc(r.source)}.</p>
<p>Data flow: job or person → hoopctl (token from the identity provider) → WebSocket tunnel → hoop-agent (identity, policy, masking, approval, audit) → PostgreSQL. The audit chain and its checkpoints are written by the agent before a statement is forwarded.</p>
<p>Checkpoint signer: <code>${esc(r.signer.fingerprint)}</code> (verifier key <code>${esc(r.signer.vkey)}</code>). Compare it with the fingerprint the agent printed at start.</p>
<div class="figs"><div>events ${fig(f, 'events')}</div><div>sessions ${fig(f, 'sessions')}</div><div>statements ${fig(f, 'statements')}</div><div>identities ${fig(f, 'identities')}</div></div>
${chart(f.days as Record<string, { allow: number; block: number; hold: number }>)}</section>
<section id="B"><h2>B. Identities</h2>${table(r.tables.identities)}</section>
<section id="C"><h2>C. Grants and policy in force, and every change</h2><p>Policy versions in the period: ${fig(f, 'policyVersions')}.</p>${table(r.tables.policy)}</section>
<section id="D"><h2>D. Sessions</h2>${table(r.tables.sessions)}<p>Masked transcripts: recordings/.</p></section>
<section id="E"><h2>E. Writes and exports (held for approval)</h2><p>Holds ${fig(f, 'holds')}, approved ${fig(f, 'approved')}. <span class="${f.selfApprovals === 0 ? 'ok' : 'bad'}">Self-approvals: ${fig(f, 'selfApprovals')}</span> (checked: an approver who is the requester).</p>${table(r.tables.approvals)}</section>
<section id="F"><h2>F. Refusals</h2><p>Refusals ${fig(f, 'refusals')} (failed authentication, blocked by rule ${fig(f, 'blocked')}, denied or expired holds).</p>${table(r.tables.refusals)}</section>
<section id="G"><h2>G. Masking policy</h2><p>Masked columns covered: ${fig(f, 'maskedColumns')} across ${esc(f.policyVersions)} policy version(s); the columns are listed per version in section C.</p></section>
<section id="H"><h2>H. Integrity</h2>${table({ columns: ['agent', 'first seq', 'last seq', 'events', 'gaps'], rows: agents })}
<p>Checkpoints verified for ${esc(r.checkpoints)} agent chain(s): the period's first and last events are included in a signed checkpoint and the checkpoints are consistent (checkpoints/proofs.json).</p>
<p>Previous bundle: ${r.previous ? `manifest SHA-256 <code>${esc(r.previous)}</code>` : 'none named'}.</p><p>${retention}.</p></section>
<section id="I"><h2>I. Reviews attested</h2><p>Attestations in the period: ${fig(f, 'attestations')}.</p>${table(r.tables.attestations)}</section>
<section id="J"><h2>J. Exceptions to explain</h2><p>${fig(f, 'exceptions')} exception(s).</p>${table(r.tables.exceptions)}</section>
</body></html>
`;
}

export const VERIFY_MD = `# Verifying this bundle

Run, in this directory, with any Node.js 18 or later and nothing installed:

    node verify.mjs --fingerprint sha256:<the fingerprint the agent printed at start>

It exits 0 only when every check below holds, and prints one line per failure naming what and where.
Without \`--fingerprint\` (or \`--key FILE\`) the keys in \`checkpoints/keys.json\` are used, which only
shows the bundle is self-consistent: compare the fingerprint out of band. \`--previous DIR\` also checks
the link to the previous period's bundle. Whoever could change the bundle could change \`verify.mjs\`
too: run a copy you trust (\`hoopctl evidence verify DIR\` uses its own), or compare this file's
SHA-256 with a trusted one.

What it checks:

1. **Signature**: \`MANIFEST.sig\` is a signed note (C2SP signed-note, Ed25519) by the agent's key over
   the SHA-256 of \`MANIFEST.json\`.
2. **Files**: every file's SHA-256 equals the manifest's; none is missing, none added.
   Shell: \`jq -r '.files|to_entries[]|"\\(.value)  \\(.key)"' MANIFEST.json | sha256sum -c\`
3. **Chain**: \`events.jsonl\` recomputed: each event's hash is SHA-256 of its canonical JSON (keys
   sorted, no whitespace) without \`hash\`; each \`prev\` is the previous event's hash; sequence numbers
   have no gap; the first and last events are those the manifest records.
4. **Checkpoints**: each file in \`checkpoints/\` is a signed checkpoint (origin, tree size, RFC 6962
   root) by a known key within its validity window; consecutive checkpoints are consistent
   (RFC 6962 consistency proofs); the period's first and last events are included in the closing
   checkpoint (inclusion proofs, leaf = SHA-256(0x00 || event hash)). Since every event's hash commits to
   the one before it, the last event's inclusion puts every event of the period under the signature.
5. **Previous bundle** (\`--previous\`): its manifest hash is the one this manifest names; this period
   starts at the event after its last one (no events skipped, no overlap, no splice); this bundle's
   closing checkpoint is consistent with the previous one's.
6. **Figures**: the report's figures (\`report.html\`, \`MANIFEST.json\`) and every \`data/*.csv\` are
   recomputed from \`events.jsonl\` and must be equal.

Files: \`report.html\` (sections A–J), \`data/*.csv\` (cells starting with = + - @ are prefixed with ' so
no spreadsheet runs them), \`events.jsonl\` (the period's events exactly as chained), \`recordings/\`
(masked transcripts), \`checkpoints/\` (signed checkpoints, \`proofs.json\`, \`keys.json\`).
`;
