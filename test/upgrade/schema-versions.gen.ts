/**
 * Generator of src/lib/synapse/schema-versions.ts, run by hand when the CSV of Synapse releases changes:
 *
 *   npx tsx test/upgrade/schema-versions.gen.ts ../shared/fixtures/synapse-schema/synapse-schema-versions.csv \
 *     src/lib/synapse/schema-versions.ts
 *
 * It rewrites only the region between the GENERATED markers of that file (the lookup code around it is hand-written).
 *
 * The product never reads the CSV: the generated table is committed as project data. schema-versions.test.ts checks
 * that the committed table still matches the CSV when ../shared is present.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** One point where the schema facts change: every release from `since` on has them, until the next point. */
export interface ChangePoint {
  since: string;
  schema: number;
  compat: number | null;
}

function versionKey(v: string): number[] {
  return v.split('.').map((p) => Number.parseInt(p, 10));
}

function compare(a: string, b: string): number {
  const x = versionKey(a);
  const y = versionKey(b);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** Reduces the CSV (synapse_version,schema_version,schema_compat_version,tag_commit) to its change points. */
export function changePointsFromCsv(text: string): { points: ChangePoint[]; first: string; last: string } {
  const [header, ...lines] = text.trim().split('\n');
  if (!header.startsWith('synapse_version,schema_version,schema_compat_version')) throw new Error('unexpected CSV');
  const rows = lines
    .map((line) => line.split(','))
    .map(([v, s, c]) => ({ version: v, schema: Number(s), compat: c ? Number(c) : null }))
    .sort((a, b) => compare(a.version, b.version));
  const points: ChangePoint[] = [];
  for (const row of rows) {
    const prev = points.at(-1);
    if (prev && (row.schema < prev.schema || (row.compat ?? 0) < (prev.compat ?? 0))) {
      throw new Error(`schema facts are not monotonic at ${row.version}: the compact table would be wrong`);
    }
    if (!prev || prev.schema !== row.schema || prev.compat !== row.compat) {
      points.push({ since: row.version, schema: row.schema, compat: row.compat });
    }
  }
  return { points, first: rows[0].version, last: rows[rows.length - 1].version };
}

const BEGIN = '// BEGIN GENERATED (test/upgrade/schema-versions.gen.ts)';
const END = '// END GENERATED';

/** The generated region of src/lib/synapse/schema-versions.ts. */
export function renderTable(table: ReturnType<typeof changePointsFromCsv>): string {
  const rows = table.points.map((p) => `  ['${p.since}', ${p.schema}, ${p.compat ?? 'null'}],`).join('\n');
  return `${BEGIN}
/** The change points, oldest first. */
export const SYNAPSE_SCHEMA_CHANGES: readonly SchemaChange[] = [
${rows}
];

/** Oldest and newest Synapse release the table knows. */
export const SYNAPSE_SCHEMA_TABLE_RANGE = { first: '${table.first}', last: '${table.last}' } as const;
${END}`;
}

/** Replaces the generated region of the TS source with a table rendered from the CSV. */
export function regenerate(source: string, csv: string): string {
  const from = source.indexOf(BEGIN);
  const to = source.indexOf(END);
  if (from < 0 || to < from) throw new Error('generated region markers not found');
  return source.slice(0, from) + renderTable(changePointsFromCsv(csv)) + source.slice(to + END.length);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [csvFile, tsFile] = process.argv.slice(2);
  if (!csvFile || !tsFile) throw new Error('usage: schema-versions.gen.ts CSV src/lib/synapse/schema-versions.ts');
  writeFileSync(tsFile, regenerate(readFileSync(tsFile, 'utf8'), readFileSync(csvFile, 'utf8')));
}
