/**
 * Policy engine: SQL text + per-connection options → Decision (allow | block | hold), decided on the
 * libpg-query parse tree (SECURITY-POLICY.md P2–P7). Pure: no sockets, no clock.
 *
 *   const engine = await loadPolicyEngine({ maskedColumns, strictPredicates });
 *   const state = engine.session();            // one per client connection
 *   const d = state.query('EXECUTE s(1)');     // judged by what `s` really is
 *   if (d.action === 'allow') { forward(); state.apply(d); }
 *
 * Modules: parse.ts (libpg-query + LRU), walk.ts (generic tree walk), functions.ts (name lists),
 * rules.ts (verdicts and reasons), predicates.ts (P7), engine.ts (combines, caches), session.ts
 * (prepared statements, cursors, portals).
 */
export { loadPolicyEngine, PolicyEngine } from './engine.js';
export type { Analysis, Decision, Effect, PolicyOptions, PredicateOracle, StatementFacts } from './engine.js';
export { PolicySession } from './session.js';
export type { NameTable, Portal as PolicyPortal } from './session.js';
export type { Action, Verdict } from './rules.js';
export { loadParser } from './parse.js';
