import Table from 'cli-table3';

export interface Column<Row> {
  header: string;
  get: (row: Row) => string | number | undefined | null;
  align?: 'left' | 'right';
}

/**
 * Renders rows as a text table. Colours are never emitted (cli-table3 ignores NO_COLOR and non-TTY output otherwise).
 */
export function renderTable<Row>(rows: Row[], columns: Column<Row>[]): string {
  const table = new Table({
    head: columns.map((c) => c.header),
    style: { head: [], border: [], compact: true },
    colAligns: columns.map((c) => c.align ?? 'left'),
  });
  for (const row of rows) {
    table.push(columns.map((c) => String(c.get(row) ?? '')));
  }
  return table.toString();
}

/** Renders key/value pairs as an aligned block. */
export function renderKeyValues(pairs: [string, string | number | undefined][]): string {
  const width = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${`${k}:`.padEnd(width + 2)}${v ?? '-'}`).join('\n');
}

/** One check after a restore or an import: what was expected and what was found. */
export interface PostCheck {
  name: string;
  ok: boolean;
  expected?: string | number;
  actual?: string | number;
}

/** The post-check table of `ess restore` and `ess migrate import`. */
export function renderPostChecks(checks: PostCheck[]): string {
  return renderTable(checks, [
    { header: 'CHECK', get: (c) => c.name },
    { header: 'EXPECTED', get: (c) => c.expected },
    { header: 'FOUND', get: (c) => c.actual },
    { header: 'OK', get: (c) => (c.ok ? 'yes' : 'NO') },
  ]);
}
