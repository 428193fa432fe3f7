// Issue 15's targets, each judged from the run's own figures: met, MISSED, or not measured.
export interface TargetCheck {
  workload: string;
  parts: Array<{ text: string; met: boolean | undefined }>;
}

export function renderTargets(checks: TargetCheck[]): string {
  const mark = (m: boolean | undefined) => (m === undefined ? '—' : m ? 'met' : 'MISSED');
  const rows = checks.flatMap((c) => c.parts.map((p, i) => [i === 0 ? c.workload : '', p.text, mark(p.met)]));
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i].length)));
  return ['targets (issue 15), from this run', ...rows.map((r) => '  ' + r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd())].join('\n');
}
