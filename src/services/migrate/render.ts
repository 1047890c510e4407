/** Human-readable summaries of the migrate results (stdout without --json). */
import { formatBytes, formatDuration } from '../../lib/output/log.js';
import { renderKeyValues, renderPostChecks } from '../../lib/output/table.js';
import type { ExportResult } from './export.js';
import type { ImportResult } from './import.js';

/** The summary of `ess migrate export`. */
export function renderExport(r: ExportResult): string {
  const lines = renderKeyValues([
    [r.dryRun ? 'Would write' : 'Bundle', r.bytes === undefined ? r.output : `${r.output} (${formatBytes(r.bytes)})`],
    ['Server name', r.serverName],
    [
      'Database',
      `${r.database.name}, ${formatBytes(r.database.bytes)} on disk, PostgreSQL ${r.database.postgresVersion}`,
    ],
    ['Dump', r.database.dumpBytes === undefined ? undefined : formatBytes(r.database.dumpBytes)],
    ['Schema', `${r.schema.version ?? '?'} (compat ${r.schema.compatVersion ?? '?'})`],
    ['Users', r.users],
    ['Signing key', r.identity.signingKeyId ? `ed25519:${r.identity.signingKeyId}` : 'not exported'],
    ['Secrets', r.identity.secrets.join(', ') || 'none'],
    [
      'Media',
      `${r.media.files} files, ${formatBytes(r.media.bytes)}${r.media.skippedCacheFiles ? ` (caches left out: ${r.media.skippedCacheFiles} files, ${formatBytes(r.media.skippedCacheBytes)})` : ''}`,
    ],
    ['Synapse stopped', r.synapseStopped === 'verified' ? 'verified' : 'not checked (--synapse-url)'],
    ['Took', formatDuration(r.durationMs)],
  ]);
  const next = r.dryRun
    ? 'Dry run: nothing was written.'
    : `Next: copy the bundle to a machine with kubectl access and run: ess migrate import ${r.output}`;
  return `${lines}\n\n${next}\n`;
}

/** The summary of `ess migrate import`: facts, plan (dry run) or post-checks, Helm values, follow-ups. */
export function renderImport(r: ImportResult): string {
  const head = renderKeyValues([
    ['Input', `${r.input.path} (${r.input.kind}, ${formatBytes(r.input.bytes)})`],
    [
      'Dump',
      `archive ${r.dump.archiveVersion}, pg_dump ${r.dump.pgDumpVersion ?? '?'}, ${r.dump.tables} tables, ${r.dump.users} users, ${r.dump.rooms ?? '?'} rooms`,
    ],
    ['Server name', `${r.serverName.dump ?? '(no users)'} → ${r.serverName.ess}`],
    ['Schema', r.schema.note],
    ['Target', `${r.target.namespace}/${r.target.release}: database ${r.target.database} in ${r.target.pod}`],
    [
      'Space',
      `${formatBytes(r.space.availableBytes + r.space.reclaimableBytes)} usable, ~${formatBytes(r.space.neededBytes)} needed`,
    ],
    [
      'Restore',
      `${{ parallel: `${r.space.jobs} parallel stream(s)`, staged: `staged on the volume, ${r.space.jobs} job(s)`, stream: 'one stream' }[r.space.method]}${r.restore ? `, took ${formatDuration(r.restore.durationMs)}` : ''}`,
    ],
    [
      'Media',
      r.mediaUpload
        ? `${r.mediaUpload.uploadedFiles} uploaded (${formatBytes(r.mediaUpload.uploadedBytes)}), ${r.mediaUpload.skippedFiles} already there`
        : r.media
          ? `${r.media.files} files, ${formatBytes(r.media.bytes)}`
          : 'none',
    ],
  ]);
  const parts = [head];
  if (r.dryRun)
    parts.push(`Plan (dry run: nothing was changed):\n${r.plan.map((s, i) => `  ${i + 1}. ${s}`).join('\n')}`);
  if (r.postChecks) {
    parts.push(renderPostChecks(r.postChecks));
  }
  if (r.identity?.valuesFragment) {
    parts.push(
      `${r.dryRun ? 'Will write' : 'Wrote'} the old identity to Secret ${r.identity.secret}. Add to your Helm values, then helm upgrade:\n\n${r.identity.valuesFragment}`,
    );
  } else if (r.identity) {
    parts.push(`${r.dryRun ? 'Will write' : 'Wrote'} ${r.identity.keys.join(', ')} to ${r.identity.secret}.`);
  }
  if (r.mas.followUp) parts.push(`Logins: ${r.mas.followUp}`);
  if (!r.dryRun) {
    const phases = r.phases.map((ph) => `${ph.name} ${formatDuration(ph.ms)}`).join(', ');
    parts.push(`Done in ${formatDuration(r.durationMs)} (${phases}).`);
  }
  return `${parts.join('\n\n')}\n`;
}
