// Durations as people read them; apart from the ink screens so that plain-text commands need not load ink.

/** `3h 2m`, `14m 5s`, `42s`. */
export function formatDuration(totalSec: number): string {
  const s = Math.abs(Math.round(totalSec));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${sec}s`;
  return `${sec}s`;
}
