// Which backend messages belong to which statement, so each result is masked by its own lineage plan.
//
//   frontend (in forwarding order)            owners queue                backend (in the same order)
//   Query "a; b"                       ──►  stmt(a) stmt(b) barrier  ──►  [T D*] C  [T D*] C  Z
//   Parse/Bind (plans by name)
//   Describe P                         ──►  describe(portal)         ──►  T | n       (types, formats)
//   Execute P                          ──►  stmt(portal's plan)      ──►  D* C | s | I
//   Sync                               ──►  barrier                  ──►  Z
//   ErrorResponse: the server skips to the end of the Query or to Sync: owners up to the barrier go.
//
// Plans come from masking/lineage.ts; DataRows and CopyData are rewritten by masking/rewrite.ts. Every
// doubt masks: a DataRow nobody owns, a plan that is 'unknown' or disagrees with the RowDescription.
import type { RowField } from '../pgwire/backend.js';
import { parseRowDescription } from '../pgwire/backend.js';
import { Backend } from '../pgwire/codes.js';
import { crossCheck, maskAll, type ColumnMask, type Lineage, type LineagePlan } from '../masking/lineage.js';
import { RowMasker, copyMasker, maskCopyData, maskDataRows, type CopyMasker } from '../masking/rewrite.js';
import { maskErrorMessage, maskNotification } from '../masking/messages.js';
import type { MaskerOptions } from '../masking/strategies.js';

interface Portal {
  plan: LineagePlan;
  formats: readonly number[];
  fields?: RowField[];
}

type Owner =
  | { kind: 'stmt'; plan: LineagePlan; portal?: Portal; fields?: RowField[]; rows?: RowMasker; copy?: CopyMasker }
  | { kind: 'describe'; portal?: Portal }
  | { kind: 'barrier' };

const UNKNOWN: LineagePlan = { kind: 'unknown', reason: 'no plan for this result', readsMasked: true };

export class ResultMasking {
  private readonly statements = new Map<string, LineagePlan>();
  private readonly portals = new Map<string, Portal>();
  private readonly cursors = new Map<string, LineagePlan>();
  private readonly owners: Owner[] = [];
  private head = 0;
  private readonly opts: MaskerOptions;

  constructor(
    private readonly lineage: Lineage,
    hashKey: Buffer,
    /** Called when a result does not match the catalog (unknown table OID): reload it for later sessions. */
    private readonly onStale: () => void = () => {},
  ) {
    this.opts = { hashKey, extraTextOids: lineage.catalog.textTypeOids };
  }

  // ── frontend side: call in forwarding order ─────────────────────────────────────────────────────

  /** A simple Query whose statements (texts as the policy split them) were all allowed. Returns whether any reads a masked column. */
  query(statements: readonly string[]): boolean {
    let reads = false;
    for (const sql of statements) {
      const plan = this.resolve(this.lineage.analyzeSql(sql));
      reads ||= plan.readsMasked;
      this.owners.push({ kind: 'stmt', plan });
    }
    this.barrier();
    return reads;
  }

  /** Whether a statement that will not run (refused) reads masked columns: its literals are then not recorded. */
  sensitive(sql: string): boolean {
    return this.lineage.analyzeSql(sql).readsMasked;
  }

  parse(name: string, sql: string): void {
    this.statements.set(name, this.resolve(this.lineage.analyzeSql(sql)));
  }

  bind(portal: string, statement: string, resultFormats: readonly number[]): void {
    this.portals.set(portal, { plan: this.statements.get(statement) ?? UNKNOWN, formats: resultFormats });
  }

  describe(target: 'S' | 'P', name: string): void {
    this.owners.push({ kind: 'describe', portal: target === 'P' ? this.portals.get(name) : undefined });
  }

  /** A protocol Execute; returns whether what it runs reads a masked column. */
  execute(portal: string): boolean {
    const p = this.portals.get(portal);
    // A SQL cursor is a portal too (DECLARE c … then a protocol Execute of "c").
    const plan = p?.plan ?? this.cursors.get(portal) ?? UNKNOWN;
    // The portal's RowDescription (from a Describe) may still be on its way: read it when rows come.
    this.owners.push({ kind: 'stmt', plan, portal: p });
    return plan.readsMasked;
  }

  close(target: 'S' | 'P', name: string): void {
    if (target === 'S') this.statements.delete(name);
    else this.portals.delete(name);
  }

  /** A Sync, or a refused Query's sentinel: ends with one ReadyForQuery. */
  barrier(): void {
    this.owners.push({ kind: 'barrier' });
  }

  /** PREPARE / DECLARE record their inner plan; EXECUTE / FETCH use the recorded one. */
  private resolve(plan: LineagePlan): LineagePlan {
    switch (plan.kind) {
      case 'prepare':
        this.statements.set(plan.name, plan.plan);
        return { kind: 'none', readsMasked: plan.readsMasked };
      case 'execute':
        return this.statements.get(plan.name) ?? UNKNOWN;
      case 'fetch':
        return this.cursors.get(plan.cursor) ?? UNKNOWN;
      case 'rows':
        if (plan.cursor) {
          this.cursors.set(plan.cursor, plan);
          return { kind: 'none', readsMasked: plan.readsMasked };
        }
        return plan;
      default:
        return plan;
    }
  }

  // ── backend side ─────────────────────────────────────────────────────────────────────────────────

  /**
   * Rewrites one framed chunk. Returns the bytes to send: `buf[offsets[0], offsets[count])` itself when
   * nothing needed masking. Throws (MaskingError) when a result cannot be masked: the session refuses it.
   */
  process(buf: Buffer, types: Uint8Array, offsets: Uint32Array, count: number, replaced?: ReadonlyMap<number, Buffer>): Buffer {
    let parts: Buffer[] | undefined;
    let run = offsets[0];
    const replace = (from: number, to: number, bytes: Buffer) => {
      (parts ??= []).push(buf.subarray(run, offsets[from]), bytes);
      run = offsets[to];
    };
    for (let i = 0; i < count; i++) {
      const t = types[i];
      if (replaced?.get(i)?.length === 0) {
        replace(i, i + 1, replaced.get(i)!); // a reply to the agent's own statement: invisible here too
        continue;
      }
      switch (t) {
        case Backend.DataRow: {
          let j = i + 1;
          while (j < count && types[j] === Backend.DataRow) j++;
          const masker = this.rowMasker((buf[offsets[i] + 5] << 8) | buf[offsets[i] + 6]);
          if (masker.active) replace(i, j, maskDataRows(buf, types, offsets, i, j, masker));
          i = j - 1;
          break;
        }
        case Backend.RowDescription:
          this.onRowDescription(parseRowDescription(buf.subarray(offsets[i] + 5, offsets[i + 1])));
          break;
        case Backend.NoData:
          if (this.current()?.kind === 'describe') this.pop();
          break;
        case Backend.CommandComplete:
        case Backend.EmptyQueryResponse:
        case Backend.PortalSuspended: {
          const o = this.current();
          if (o?.kind === 'stmt') {
            o.copy?.end();
            this.pop();
          }
          break;
        }
        case Backend.CopyOutResponse: {
          const o = this.current();
          if (o?.kind === 'stmt') o.copy = this.copyMaskerFor(o, buf[offsets[i] + 5]);
          break;
        }
        case Backend.CopyData: {
          const o = this.current();
          if (o?.kind !== 'stmt' || !o.copy) break;
          let j = i + 1;
          while (j < count && types[j] === Backend.CopyData) j++;
          replace(i, j, maskCopyData(buf, types, offsets, i, j, o.copy));
          i = j - 1;
          break;
        }
        case Backend.ErrorResponse:
        case Backend.NoticeResponse: {
          // The session's own refusals (sentinels) carry no data; others may quote values.
          const own = replaced?.get(i);
          if (own) replace(i, i + 1, own);
          else if (this.readsMasked()) replace(i, i + 1, maskErrorMessage(buf, offsets[i], offsets[i + 1], true));
          // After an error the server skips to the end of the Query / to Sync: those owners are gone.
          if (t === Backend.ErrorResponse) while (this.current() && this.current()!.kind !== 'barrier') this.pop();
          break;
        }
        case Backend.NotificationResponse:
          // A payload cannot be traced to a statement (triggers, other sessions): never pass it in clear.
          replace(i, i + 1, maskNotification(buf, offsets[i], offsets[i + 1]));
          break;
        case Backend.ReadyForQuery:
          while (this.current() && this.current()!.kind !== 'barrier') this.pop();
          if (this.current()?.kind === 'barrier') this.pop();
          break;
      }
    }
    if (!parts) return buf.subarray(offsets[0], offsets[count]);
    parts.push(buf.subarray(run, offsets[count]));
    // A read of nothing but rows is one masked range: send it as is, without another copy.
    const filled = parts.filter((p) => p.length > 0);
    return filled.length === 1 ? filled[0] : Buffer.concat(filled);
  }

  private current(): Owner | undefined {
    return this.owners[this.head];
  }

  private pop(): void {
    this.head++;
    if (this.head > 64 && this.head * 2 > this.owners.length) {
      this.owners.splice(0, this.head);
      this.head = 0;
    }
  }

  private readsMasked(): boolean {
    const o = this.current();
    return o?.kind !== 'stmt' || o.plan.readsMasked;
  }

  private onRowDescription(fields: RowField[]): void {
    const o = this.current();
    if (o?.kind === 'describe') {
      if (o.portal) o.portal.fields = fields;
      this.pop();
    } else if (o?.kind === 'stmt') {
      o.fields = fields;
      o.rows = undefined;
    }
  }

  /** The masker for the DataRows now arriving (`nf` fields): built once per result from plan + RowDescription. */
  private rowMasker(nf: number): RowMasker {
    const o = this.current();
    if (o?.kind !== 'stmt') return this.blindMasker(nf); // rows nobody owns: mask them all
    if (o.rows) return o.rows;
    const fields = o.fields ?? o.portal?.fields;
    const bindFormats = o.portal?.formats;
    if (!fields) {
      // No RowDescription (Execute without Describe): formats from Bind, types unknown.
      return (o.rows = this.blindMasker(nf, this.planMasks(o.plan), bindFormats));
    }
    const checked = o.plan.kind === 'rows' ? crossCheck(o.plan, fields, this.lineage) : 'mismatch';
    if (checked === 'mismatch' && fields.some((f) => f.tableOid && !this.lineage.catalog.byOid.has(f.tableOid))) this.onStale();
    const masks = checked === 'mismatch' ? maskAll(fields.length) : checked;
    // A Describe of a portal already reports the Bind's formats; a simple Query's are all text.
    const formats = fields.map((f, k) => formatOf(bindFormats, k, f.format));
    return (o.rows = new RowMasker(masks, formats, fields.map((f) => f.typeOid), this.opts));
  }

  /** Masks for a plan without a RowDescription; undefined = unknown width (mask every field). */
  private planMasks(plan: LineagePlan): ColumnMask[] | undefined {
    if (plan.kind !== 'rows' || plan.columns.some((c) => c.spread)) return undefined;
    return plan.columns.map((c) => c.mask);
  }

  /** Without types: masked fields become NULL (decodable in any format); an unknown shape masks all. */
  private blindMasker(nf: number, masks?: ColumnMask[], formats?: readonly number[]): RowMasker {
    const m = masks && masks.length === nf ? masks : maskAll(nf);
    return new RowMasker(m, Array.from({ length: nf }, (_, k) => formatOf(formats, k, 0)), new Array(nf).fill(0), this.opts);
  }

  private copyMaskerFor(o: Extract<Owner, { kind: 'stmt' }>, overallFormat: number): CopyMasker {
    const plan = o.plan;
    const cols = plan.kind === 'rows' && !plan.columns.some((c) => c.spread) ? plan.columns : undefined;
    const masks = cols ? cols.map((c) => c.mask) : maskAll(1600);
    const typeOids = cols ? cols.map((c) => c.typeOid ?? 0) : new Array(1600).fill(0);
    const copy = plan.kind === 'rows' ? plan.copy : undefined;
    const format = overallFormat === 1 ? 'binary' : (copy?.format ?? 'text');
    return copyMasker(masks, typeOids, { ...copy, format }, this.opts);
  }
}

function formatOf(formats: readonly number[] | undefined, k: number, fallback: number): 0 | 1 {
  if (!formats || formats.length === 0) return (fallback === 1 ? 1 : 0);
  return (formats.length === 1 ? formats[0] : (formats[k] ?? 0)) === 1 ? 1 : 0;
}
