/** Human-readable text of `ess restore`: the plan (--dry-run) or the summary with the post-checks. */
import { formatBytes, formatDuration } from '../../lib/output/log.js';
import { renderKeyValues, renderPostChecks } from '../../lib/output/table.js';
import type { RestoreResult } from './restore.js';

export function renderRestore(r: RestoreResult): string {
  const a = r.archive;
  const parts = [
    renderKeyValues([
      [
        'Backup',
        `${a.name} (${formatBytes(a.bytes)}${a.encrypted ? ', encrypted' : ''}), verified in ${formatDuration(a.verifyMs)}`,
      ],
      ['Made', `${a.createdAt} of ${a.serverName} (${a.namespace}/${a.release}, chart ${a.chartVersion ?? '?'})`],
      ['Target', `${r.target.namespace}/${r.target.release}${r.target.serverName ? ` (${r.target.serverName})` : ''}`],
      ['Parts', `${r.parts.join(', ')}${r.pending.length ? ` (pending: ${r.pending.join(', ')})` : ''}`],
      ...(a.parents.length ? [['Parents', a.parents.join(', ')] as [string, string]] : []),
    ]),
  ];
  if (r.dryRun) {
    parts.push(`Plan (dry run: nothing was changed):\n${r.plan.map((s, i) => `  ${i + 1}. ${s}`).join('\n')}`);
    return `${parts.join('\n\n')}\n`;
  }
  const done: [string, string | number | undefined][] = [];
  if (r.objects) done.push(['Objects', r.objects.map((o) => `${o.kind}/${o.name} ${o.action}`).join(', ')]);
  if (r.values) done.push(['Values', r.values.path]);
  for (const d of r.databases ?? []) {
    done.push([
      `Database ${d.name}`,
      `${formatBytes(d.dumpBytes)} dump, ${d.method === 'staged' ? `${d.jobs} job(s)` : 'streamed'}, ${formatDuration(d.durationMs)}`,
    ]);
  }
  if (r.media) done.push(['Media', `${r.media.files} file(s), ${formatBytes(r.media.bytes)} via ${r.media.pod}`]);
  if (r.downtimeMs !== undefined) done.push(['Downtime', formatDuration(r.downtimeMs)]);
  done.push(['Took', formatDuration(r.durationMs)]);
  parts.push(renderKeyValues(done));
  if (r.postChecks.length) {
    parts.push(renderPostChecks(r.postChecks));
  }
  if (r.next.length) parts.push(`Next:\n${r.next.map((n) => `  - ${n}`).join('\n')}`);
  return `${parts.join('\n\n')}\n`;
}
