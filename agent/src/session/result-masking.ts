// How one result is masked: its lineage plan, checked against the RowDescription the server sent.
//
// The pipeline (pipeline.ts) knows which request a result belongs to; this module turns that request's
// plan, fields and formats into a RowMasker (DataRow, text and binary) or a CopyMasker (CopyData, text,
// csv, binary). Plans come from masking/lineage.ts; bytes are rewritten by masking/rewrite.ts. Every
// doubt masks: rows nobody owns, a plan that is 'unknown' or disagrees with the RowDescription.
import type { RowField } from '../pgwire/backend.js';
import { crossCheck, maskAll, type ColumnMask, type Lineage, type LineagePlan } from '../masking/lineage.js';
import { RowMasker, copyMasker, type CopyMasker } from '../masking/rewrite.js';
import type { MaskerOptions } from '../masking/strategies.js';

export const UNKNOWN_PLAN: LineagePlan = { kind: 'unknown', reason: 'no plan for this result', readsMasked: true };
/** The plan of every result on a connection that masks nothing. */
export const NO_PLAN: LineagePlan = { kind: 'none', readsMasked: false };

/** Maskers kept per plan: a session sends the same few shapes again and again. */
const MAX_MASKERS_PER_PLAN = 8;

export class ResultMasker {
  private opts: MaskerOptions;
  /**
   * Row maskers built for a plan (plans are shared by every text of one skeleton), by the result's
   * RowDescription and formats. Dropped with the catalog they were checked against.
   */
  private built = new WeakMap<LineagePlan, Map<string, RowMasker>>();

  constructor(
    public lineage: Lineage,
    private readonly hashKey: Buffer,
    /** Called when a result names a table OID the catalog does not know: reload it. */
    private readonly onStale: () => void = () => {},
  ) {
    this.opts = { hashKey, extraTextOids: lineage.catalog.textTypeOids };
  }

  /** A reloaded catalog: statements judged from now on are planned on it. */
  useLineage(lineage: Lineage): void {
    this.lineage = lineage;
    this.opts = { hashKey: this.hashKey, extraTextOids: lineage.catalog.textTypeOids };
    this.built = new WeakMap();
  }

  /** The lineage of one statement's text (a Parse, one statement of a Query). */
  plan(sql: string): LineagePlan {
    return this.lineage.analyzeSql(sql);
  }

  /**
   * The masker for the DataRows of one result (`nf` fields): built once per result from the plan and
   * the RowDescription (`fields`; absent for an Execute without Describe) and the Bind's formats.
   */
  rows(plan: LineagePlan, nf: number, fields: RowField[] | undefined, bindFormats: readonly number[] | undefined): RowMasker {
    if (!fields) return this.blind(nf, planMasks(plan), bindFormats);
    const key = plan.kind === 'rows' ? fieldsKey(fields, bindFormats) : '';
    const kept = key ? this.built.get(plan)?.get(key) : undefined;
    if (kept) return kept;
    const checked = plan.kind === 'rows' ? crossCheck(plan, fields, this.lineage) : 'mismatch';
    if (checked === 'mismatch' && fields.some((f) => f.tableOid && !this.lineage.catalog.byOid.has(f.tableOid))) this.onStale();
    const masks = checked === 'mismatch' ? maskAll(fields.length) : checked;
    // A Describe of a portal already reports the Bind's formats; a simple Query's are all text.
    const formats = fields.map((f, k) => formatOf(bindFormats, k, f.format));
    const masker = new RowMasker(masks, formats, fields.map((f) => f.typeOid), this.opts);
    if (key && checked !== 'mismatch') {
      // A mismatch is not kept: its reload (onStale) and full masking are decided afresh each time.
      let byFields = this.built.get(plan);
      if (!byFields) this.built.set(plan, (byFields = new Map()));
      if (byFields.size >= MAX_MASKERS_PER_PLAN) byFields.clear();
      byFields.set(key, masker);
    }
    return masker;
  }

  /** Without types: masked fields become NULL (decodable in any format); an unknown shape masks all. */
  private blind(nf: number, masks?: ColumnMask[], formats?: readonly number[]): RowMasker {
    const m = masks && masks.length === nf ? masks : maskAll(nf);
    return new RowMasker(m, Array.from({ length: nf }, (_, k) => formatOf(formats, k, 0)), new Array(nf).fill(0), this.opts);
  }

  /** The masker for a COPY … TO STDOUT result (overall format from CopyOutResponse). */
  copy(plan: LineagePlan, overallFormat: number): CopyMasker {
    const cols = plan.kind === 'rows' && !plan.columns.some((c) => c.spread) ? plan.columns : undefined;
    const masks = cols ? cols.map((c) => c.mask) : maskAll(1600);
    const typeOids = cols ? cols.map((c) => c.typeOid ?? 0) : new Array(1600).fill(0);
    const copy = plan.kind === 'rows' ? plan.copy : undefined;
    const format = overallFormat === 1 ? 'binary' : (copy?.format ?? 'text');
    return copyMasker(masks, typeOids, { ...copy, format }, this.opts);
  }
}

/** Masks for a plan without a RowDescription; undefined = unknown width (mask every field). */
function planMasks(plan: LineagePlan): ColumnMask[] | undefined {
  if (plan.kind !== 'rows' || plan.columns.some((c) => c.spread)) return undefined;
  return plan.columns.map((c) => c.mask);
}

/** What a RowMasker is built from besides the plan: each field's origin, type and format. */
function fieldsKey(fields: readonly RowField[], bindFormats: readonly number[] | undefined): string {
  let key = bindFormats ? bindFormats.join(',') : '';
  for (const f of fields) key += `|${f.tableOid}.${f.columnAttr}.${f.typeOid}.${f.format}`;
  return key;
}

function formatOf(formats: readonly number[] | undefined, k: number, fallback: number): 0 | 1 {
  if (!formats || formats.length === 0) return (fallback === 1 ? 1 : 0);
  return (formats.length === 1 ? formats[0] : (formats[k] ?? 0)) === 1 ? 1 : 0;
}
