/**
 * The one way to read a constant's value (`A_Const`) in a parse tree the gateway built.
 *
 * Decisions and masking plans are cached under the statement's literal-free skeleton (parse.ts), so a
 * rule whose result depends on a literal's value must say so: every value read goes through
 * `constantValue`, which counts the read on the parse it came from, and a counted parse is never cached
 * by skeleton. To make that hard to bypass, parseStatements() hides the value fields of every A_Const:
 * they are not own properties (walks, spreads and JSON.stringify do not see them), and reading `ival`,
 * `fval`, `sval`, `boolval` or `bsval` directly throws, which the rules turn into a refusal (fail closed)
 * and tests catch.
 *
 * A constant's type (int, float, string, …) is not a read: it is fixed by the literal's token kind,
 * which is part of the skeleton.
 */

export type Constant =
  | { type: 'int'; value: number }
  | { type: 'float'; value: string }
  | { type: 'string'; value: string }
  | { type: 'bool'; value: boolean }
  | { type: 'bits'; value: string }
  | { type: 'null' };

/** Reads of constant values counted on one parse. */
export interface ConstantReads {
  count: number;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

const SLOT = Symbol('constant');
const VALUE_FIELDS = ['ival', 'fval', 'sval', 'boolval', 'bsval'] as const;

export class ConstantReadError extends Error {
  constructor(field: string) {
    super(`a constant's ${field} was read without constantValue(): literal-dependent decisions would be cached`);
  }
}

interface Slot {
  constant: Constant;
  reads: ConstantReads;
}

/** The body of an A_Const as the rules see it: location (and isnull) only; the value behind the accessor. */
class HiddenConstant {
  declare [SLOT]: Slot;
}
for (const field of VALUE_FIELDS) {
  Object.defineProperty(HiddenConstant.prototype, field, {
    get(this: HiddenConstant) {
      this[SLOT].reads.count++; // whatever the caller makes of the error, this parse is literal-dependent
      throw new ConstantReadError(field);
    },
  });
}

/** The value of a raw A_Const body, as libpg-query's JSON has it (a zero ival arrives as `{ ival: {} }`). */
function decode(body: Obj): Constant {
  if (body.isnull === true) return { type: 'null' };
  const field = (k: string) => (isObj(body[k]) ? (body[k] as Obj)[k] : undefined);
  if (isObj(body.ival)) return { type: 'int', value: Number(field('ival') ?? 0) };
  if (isObj(body.fval)) return { type: 'float', value: String(field('fval') ?? '0') };
  if (isObj(body.sval)) return { type: 'string', value: String(field('sval') ?? '') };
  if (isObj(body.boolval)) return { type: 'bool', value: field('boolval') === true };
  if (isObj(body.bsval)) return { type: 'bits', value: String(field('bsval') ?? '') };
  return { type: 'null' };
}

/**
 * Replace an A_Const body by its hidden form, counting reads on `reads`. Returns the location it
 * carries (-1 when none; libpg-query leaves out a zero location).
 */
export function hideConstant(body: Obj, reads: ConstantReads): HiddenConstant {
  const hidden = new HiddenConstant();
  hidden[SLOT] = { constant: decode(body), reads };
  for (const k of Object.keys(body)) if (!(VALUE_FIELDS as readonly string[]).includes(k)) (hidden as unknown as Obj)[k] = body[k];
  return hidden;
}

/** The A_Const body of `node` (a wrapped `{ A_Const: … }` or the body itself), if it is one. */
function constantBody(node: unknown): Obj | undefined {
  if (node instanceof HiddenConstant) return node as unknown as Obj;
  if (!isObj(node)) return undefined;
  return isObj(node.A_Const) ? node.A_Const : undefined;
}

/** The type of a constant without reading its value (fixed by the skeleton); undefined if not a constant. */
export function constantType(node: unknown): Constant['type'] | undefined {
  const body = constantBody(node);
  if (!body) return undefined;
  return body instanceof HiddenConstant ? body[SLOT].constant.type : decode(body).type;
}

/** A constant's value. Counts as a read: the analysis that calls it is literal-dependent. */
export function constantValue(node: unknown): Constant | undefined {
  const body = constantBody(node);
  if (!body) return undefined;
  if (!(body instanceof HiddenConstant)) return decode(body); // a tree not built by parseStatements (no cache)
  const slot = body[SLOT];
  slot.reads.count++;
  return slot.constant;
}

/** `'text'`: the value when `node` is a string constant (a read), else undefined (not a read). */
export function stringConstant(node: unknown): string | undefined {
  if (constantType(node) !== 'string') return undefined;
  const c = constantValue(node);
  return c?.type === 'string' ? c.value : undefined;
}

/** An integer constant's value (a read), else undefined (not a read). */
export function intConstant(node: unknown): number | undefined {
  if (constantType(node) !== 'int') return undefined;
  const c = constantValue(node);
  return c?.type === 'int' ? c.value : undefined;
}
