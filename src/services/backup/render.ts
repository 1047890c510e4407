/** Human-readable text of `ess backup`: the plan (--dry-run) and the final summary. */
import { formatBytes, formatDuration } from '../../lib/output/log.js';
import { renderKeyValues, renderTable } from '../../lib/output/table.js';
import { describeCompression } from '../../lib/postgres/pod-tools.js';
import type { BackupResult } from './create.js';
import type { BackupPlan } from './plan.js';

/** The plan as `--dry-run` prints it. */
export function renderBackupPlan(plan: BackupPlan): string {
  const head = renderKeyValues([
    ['Server name', plan.serverName],
    ['Namespace / release', `${plan.namespace} / ${plan.release}`],
    ['Archive', `${plan.name}${plan.encrypted ? ' (age-encrypted)' : ''}`],
    ['Destination', plan.destination],
    [
      'Incremental',
      plan.incremental
        ? (plan.incremental.parent ?? `no: ${plan.incremental.fallbackReason ?? 'no parent'} (full backup)`)
        : undefined,
    ],
    ['Estimated size', `at most ${formatBytes(plan.estimatedBytes)} (dumps are compressed)`],
    [
      'Spool',
      `${plan.spool.dir}${plan.spool.freeBytes === undefined ? '' : ` (${formatBytes(plan.spool.freeBytes)} free)`}`,
    ],
  ]);
  const stop = plan.stop.length
    ? `Stopped only while database snapshots are exported (then scaled back):\n${renderTable(plan.stop, [
        { header: 'KIND', get: (w) => w.kind },
        { header: 'NAME', get: (w) => w.name },
        { header: 'REPLICAS', get: (w) => w.replicas, align: 'right' },
      ])}`
    : 'Nothing to stop (Synapse and MAS are not running).';
  const pg = plan.postgres;
  const databases = `Databases (pg_dump -Fc, ${describeCompression(pg.compression)}, PostgreSQL ${pg.serverVersion}, tools in ${pg.where}${
    pg.globals ? '; roles with pg_dumpall --globals-only' : ''
  }):\n${renderTable(pg.databases, [
    { header: 'DATABASE', get: (d) => d.name },
    { header: 'USED BY', get: (d) => d.component },
    { header: 'SIZE', get: (d) => formatBytes(d.sizeBytes), align: 'right' },
    { header: 'DATA LEFT OUT', get: (d) => d.excludeTableData.join(', ') || '-' },
  ])}`;
  const media = plan.media
    ? `Media: ${plan.media.storePath} on ${plan.media.pod} (PVC ${plan.media.claimName})${
        plan.media.fileCount === undefined
          ? ''
          : `: ${plan.media.fileCount} files, ${formatBytes(plan.media.bytes ?? 0)}`
      }${plan.media.skipped.length ? `; skipping ${plan.media.skipped.join(', ')}` : ''}`
    : 'Media: none found';
  const config = `Configuration: Secrets ${plan.config.secrets.join(', ') || '-'}; ConfigMaps ${
    plan.config.configMaps.join(', ') || '-'
  }; Helm values ${plan.config.helmValues ? 'yes' : 'no'}`;
  return `${head}\n\n${stop}\n\n${databases}\n\n${media}\n${config}\n`;
}

/** The final summary: sizes, durations, downtime, destination. */
export function renderBackupSummary(r: BackupResult): string {
  if (r.dryRun) return renderBackupPlan(r.plan);
  const rows: [string, string | undefined][] = [
    ['Backup', r.location],
    ['Size', `${formatBytes(r.bytes)}${r.encrypted ? ' (age-encrypted)' : ''}`],
    ['Type', r.incremental ? `incremental (parent ${r.parent})` : 'full'],
    ['Duration', formatDuration(r.durationMs)],
    [
      'Downtime',
      r.downtimeMs === undefined
        ? r.workloads.some((w) => w.outcome === 'stopped')
          ? 'unknown (not ready in time)'
          : 'none'
        : `${formatDuration(r.downtimeMs)} (Synapse and MAS at 0, ${r.consistency === 'snapshot' ? 'snapshot export only' : 'whole dump'})`,
    ],
    [
      'Media',
      r.media
        ? `${r.media.storedFileCount} of ${r.media.fileCount} files stored (${formatBytes(r.media.storedBytes)} of ${formatBytes(r.media.bytes)}) via ${r.media.source} ${r.media.pod}`
        : 'none',
    ],
    [
      'Configuration',
      r.config ? `${r.config.secrets.length} Secret(s), ${r.config.configMaps.length} ConfigMap(s)` : undefined,
    ],
    [
      'Retention',
      r.retention
        ? `kept ${r.retention.kept.length}, deleted ${r.retention.deleted.length} (${formatBytes(r.retention.freedBytes)})`
        : undefined,
    ],
  ];
  const databases = renderTable(r.databases, [
    { header: 'DATABASE', get: (d) => d.name },
    { header: 'SIZE', get: (d) => formatBytes(d.sizeBytes), align: 'right' },
    { header: 'DUMP', get: (d) => formatBytes(d.dumpBytes), align: 'right' },
    { header: 'TABLES', get: (d) => d.tables, align: 'right' },
    { header: 'ROWS', get: (d) => d.rows, align: 'right' },
  ]);
  const stages = r.stages.map((s) => `${s.stage} ${formatDuration(s.ms)}`).join(', ');
  return `${renderKeyValues(rows)}\n\n${databases}\n\nStages: ${stages}\n`;
}
