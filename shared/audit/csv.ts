// One CSV cell, guarded: an analyst opening an audit export or an evidence bundle's data/*.csv in a
// spreadsheet must not execute SQL text (or any value) as a formula.
import { canonicalJson } from './chain.js';

export function csvCell(v: unknown): string {
  if (v === undefined || v === null) return '';
  let s = typeof v === 'string' ? v : typeof v === 'object' ? canonicalJson(v) : String(v);
  if (/^[=+\-@\t\r]/.test(s)) s = "'" + s;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export const csvRow = (cells: readonly unknown[]): string => cells.map(csvCell).join(',') + '\r\n';
