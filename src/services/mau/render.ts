/** Text and CSV renderings of a {@link MauResult} (the JSON rendering is the result itself). */
import { renderTable } from '../../lib/output/table.js';
import type { MauMetric, MauResult, MauRow } from './report.js';

/** Short names of the metrics, for the table and the CSV. */
export const METRIC_TITLES: Record<MauMetric, string> = {
  ess: 'ESS runbook',
  'synapse-mau-table': 'Synapse MAU table',
  'synapse-phone-home': 'Synapse phone-home',
};

function window(row: MauRow): string {
  const day = (iso: string) =>
    iso
      .replace(/T00:00:00\.000Z$/, '')
      .replace('T', ' ')
      .replace(/\.\d{3}Z$/, 'Z');
  return `${day(row.from)} → ${day(row.to)}`;
}

/** The human-readable report: a table of figures, then what each metric means, then notes. */
export function renderMauText(result: MauResult): string {
  const table = renderTable(result.rows, [
    { header: 'PERIOD', get: (r) => r.period },
    { header: 'FIGURE', get: (r) => METRIC_TITLES[r.metric] },
    { header: 'USERS', get: (r) => r.users, align: 'right' },
    { header: 'SOURCE', get: (r) => r.source },
    { header: 'WINDOW (UTC, END EXCLUDED)', get: window },
    {
      header: 'DAYS WITH DATA',
      get: (r) => (r.coverage ? `${r.coverage.daysWithData}/${r.coverage.days}` : ''),
      align: 'right',
    },
  ]);
  const definitions = Object.entries(result.definitions).map(
    ([metric, text]) => `  ${METRIC_TITLES[metric as MauMetric]}: ${text}`,
  );
  const notes = result.notes.map((n) => `  - ${n}`);
  return [table, '', 'Definitions:', ...definitions, ...(notes.length ? ['', 'Notes:', ...notes] : []), ''].join('\n');
}

/** Columns of the CSV, in order. */
export const CSV_COLUMNS = [
  'period',
  'figure',
  'users',
  'source',
  'from_utc',
  'to_utc_excluded',
  'excludes',
  'days_with_data',
  'days',
  'partial',
  'definition',
] as const;

function csvField(value: string | number | boolean | undefined): string {
  const text = value === undefined ? '' : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** RFC 4180 CSV (CRLF line ends), one line per row, with a header line: for licence reports and spreadsheets. */
export function renderMauCsv(result: MauResult): string {
  const lines = [CSV_COLUMNS.join(',')];
  for (const r of result.rows) {
    const fields = [
      r.period,
      r.metric,
      r.users,
      r.source,
      r.from,
      r.to,
      r.excludes.join(';'),
      r.coverage?.daysWithData,
      r.coverage?.days,
      r.partial ? 'true' : 'false',
      result.definitions[r.metric],
    ];
    lines.push(fields.map(csvField).join(','));
  }
  return `${lines.join('\r\n')}\r\n`;
}
