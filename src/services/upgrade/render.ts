/** Text renderings of the `ess upgrade` results (the --json output is the result objects themselves). */
import type { RevisionSummary } from '../../lib/helm/inspect.js';
import { formatDuration } from '../../lib/output/log.js';
import { renderKeyValues, renderTable } from '../../lib/output/table.js';
import type { HistoryResult } from './history.js';
import type { RollbackCheck, RollbackPlan, RollbackResult } from './rollback.js';

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** Formats a time like `helm history` (Go's ANSIC layout, local time): `Fri May 16 09:22:36 2025`. */
export function formatHelmTime(iso: string | undefined): string {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const two = (n: number) => String(n).padStart(2, '0');
  const time = `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  return `${DAYS[d.getDay()]} ${MONTHS[d.getMonth()]} ${String(d.getDate()).padStart(2, ' ')} ${time} ${d.getFullYear()}`;
}

/** One line, at most `width` characters (helm history's --max-col-width is 60). */
function oneLine(text: string | undefined, width = 60): string {
  const flat = (text ?? '').replace(/\s+/g, ' ').trim();
  return flat.length > width ? `${flat.slice(0, width - 3)}...` : flat;
}

function statusText(r: RevisionSummary): string {
  return r.labelStatus !== r.status ? `${r.status} (label: ${r.labelStatus})` : r.status;
}

/** The `helm history` table. */
export function renderHistory(result: HistoryResult): string {
  return renderTable(result.revisions, [
    { header: 'REVISION', get: (r) => r.revision, align: 'right' },
    { header: 'UPDATED', get: (r) => formatHelmTime(r.updated) },
    { header: 'STATUS', get: statusText },
    { header: 'CHART', get: (r) => r.chart },
    { header: 'APP VERSION', get: (r) => r.appVersion },
    { header: 'DESCRIPTION', get: (r) => (r.decodeError ? `(unreadable: ${r.decodeError})` : oneLine(r.description)) },
  ]);
}

function checkLine(c: RollbackCheck, forced: string[]): string {
  const mark = c.ok ? 'ok  ' : forced.includes(c.detail) ? 'FORCED' : c.severity === 'info' ? 'note' : 'FAIL';
  return `  [${mark}] ${c.id}: ${c.detail}`;
}

/** The plan: what is stuck, the revision table explaining the choice, the checks and the action. */
export function renderPlan(plan: RollbackPlan): string {
  const age =
    plan.stuck.ageSeconds === undefined ? '' : `, unchanged for ${formatDuration(plan.stuck.ageSeconds * 1000)}`;
  const head = renderKeyValues([
    ['Release', `${plan.namespace}/${plan.release}`],
    ['Stuck revision', `${plan.stuck.revision} (${plan.stuck.status}, ${plan.stuck.chart ?? '?'}${age})`],
    [
      'Target',
      plan.target
        ? `${plan.target.revision} (${plan.target.chart ?? '?'}, Synapse ${plan.target.synapseVersion ?? '?'})`
        : undefined,
    ],
    [
      'Database',
      plan.database
        ? `schema ${plan.database.schemaVersion ?? '?'}, compat ${plan.database.compatVersion ?? '?'}${plan.database.pod ? ` (${plan.database.pod})` : ''}`
        : undefined,
    ],
    ['Auth marker', plan.liveMarker],
    ['Action', plan.action === 'helm-rollback' ? 'helm rollback' : 'mark the stuck revision failed (no helm rollback)'],
    ['Command', plan.command],
  ]);
  const table = renderTable(plan.candidates, [
    { header: 'REVISION', get: (r) => r.revision, align: 'right' },
    { header: 'UPDATED', get: (r) => formatHelmTime(r.updated) },
    { header: 'STATUS', get: statusText },
    { header: 'CHART', get: (r) => r.chart },
    { header: 'SYNAPSE', get: (r) => r.synapseVersion },
    { header: 'DESCRIPTION', get: (r) => oneLine(r.description, 40) },
    { header: 'CHOICE', get: (r) => r.verdict },
  ]);
  const checks = plan.checks.map((c) => checkLine(c, plan.forced)).join('\n');
  return `${head}\n\n${table}\n\nChecks:\n${checks}\n`;
}

/** The plan followed by what happened and what to do next. */
export function renderRollbackResult(result: RollbackResult): string {
  const outcome = result.dryRun
    ? 'Dry run: nothing was changed.'
    : result.after
      ? `Done. Newest revision now: ${result.after.revision} (${result.after.status}${result.after.description ? `, ${oneLine(result.after.description)}` : ''}).`
      : 'Done.';
  const next = result.next.length ? `\nNext:\n${result.next.map((n) => `  ${n}`).join('\n')}\n` : '';
  return `${renderPlan(result)}\n${outcome}\n${next}`;
}
