// The start-up lint (issue 17, rough edge 2): text columns beside masked columns that are left in clear.
import { describe, expect, it } from 'vitest';
import { buildCatalog, unmaskedTextColumns } from '../../../agent/src/masking/catalog.js';

const TEXT = 25;
const VARCHAR = 1043;
const INT = 23;
const DATE = 1082;
const rel = (oid: number, name: string, kind: string, columns: [string, number, number][]) => ({ oid, schema: 'public', name, kind, rowtype: oid + 1, columns: JSON.stringify(columns), parents: '[]' });
const catalog = buildCatalog(
  [
    rel(1, 'patients', 'r', [['id', 1, INT], ['full_name', 2, TEXT], ['ssn', 3, TEXT], ['date_of_birth', 4, DATE], ['diagnosis', 5, VARCHAR]]),
    rel(3, 'visits', 'r', [['id', 1, INT], ['notes', 2, TEXT], ['department', 3, TEXT], ['patient_ssn', 4, TEXT]]),
    rel(5, 'prescriptions', 'r', [['drug', 1, TEXT]]),
    rel(7, 'patients_v', 'v', [['full_name', 1, TEXT], ['ssn', 2, TEXT]]),
  ],
  [],
  { path: '["public"]', text_types: JSON.stringify([TEXT, VARCHAR]) },
);

describe('unmaskedTextColumns', () => {
  it.each([
    {
      desc: 'text columns of a table with a masked column, in catalog order; other types and tables without masking are not named',
      masked: ['public.patients.ssn', 'public.patients.date_of_birth'],
      clear: [],
      want: ['public.patients.full_name', 'public.patients.diagnosis'],
    },
    { desc: 'a column listed under unmasked is silenced, the others still named', masked: ['public.patients.ssn'], clear: ['public.patients.full_name'], want: ['public.patients.diagnosis'] },
    { desc: 'the demo: notes masked, department reviewed', masked: ['public.visits.patient_ssn', 'public.visits.notes'], clear: ['public.visits.department'], want: [] },
    { desc: 'notes left in clear beside a masked column', masked: ['public.visits.patient_ssn'], clear: ['public.visits.department'], want: ['public.visits.notes'] },
    { desc: 'views are not linted (their columns come from tables)', masked: ['public.patients_v.ssn'], clear: [], want: [] },
    { desc: 'a masked table the catalog does not know is skipped', masked: ['public.gone.ssn'], clear: [], want: [] },
  ])('$desc', ({ masked, clear, want }) => {
    expect(unmaskedTextColumns(catalog, masked, clear)).toEqual(want);
  });
});
