/**
 * `--metrics-file`: Prometheus textfile-collector metrics about the last backup run, for cron monitoring (alert when
 * `ess_backup_last_success_timestamp_seconds` gets old or `ess_backup_last_run_success` is 0). Written atomically
 * (temporary file, then rename) so node_exporter never reads half a file.
 */
import { readFile, rename, unlink, writeFile } from 'node:fs/promises';

/** The labels every series carries. */
export interface MetricLabels {
  namespace: string;
  release: string;
  /** Destination (directory, s3://… or stdout). */
  destination: string;
}

/** Facts of one run. */
export interface BackupRunMetrics {
  success: boolean;
  /** End of the run, ms since the epoch. */
  finishedAtMs: number;
  durationMs: number;
  /** Archive size in bytes (success only). */
  sizeBytes?: number;
  /** Time Synapse and MAS were scaled down (success only). */
  downtimeMs?: number;
}

const LAST_SUCCESS = 'ess_backup_last_success_timestamp_seconds';

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function labelText(labels: MetricLabels): string {
  return `{namespace="${escapeLabel(labels.namespace)}",release="${escapeLabel(labels.release)}",destination="${escapeLabel(labels.destination)}"}`;
}

/** The textfile content. A failed run carries over the last success time found in `previous` (the old file). */
export function renderMetrics(labels: MetricLabels, run: BackupRunMetrics, previous?: string): string {
  const l = labelText(labels);
  const lines: string[] = [];
  const metric = (name: string, help: string, value: number) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name}${l} ${value}`);
  };
  const seconds = (ms: number) => Math.round(ms) / 1000;
  let lastSuccess: number | undefined = run.success ? seconds(run.finishedAtMs) : undefined;
  if (lastSuccess === undefined && previous) {
    const match = new RegExp(`^${LAST_SUCCESS}\\{[^}]*\\} (\\S+)$`, 'm').exec(previous);
    if (match && Number.isFinite(Number(match[1]))) lastSuccess = Number(match[1]);
  }
  metric('ess_backup_last_run_success', '1 if the last ess backup run succeeded, 0 if it failed.', run.success ? 1 : 0);
  metric(
    'ess_backup_last_run_timestamp_seconds',
    'When the last ess backup run ended (Unix time).',
    seconds(run.finishedAtMs),
  );
  if (lastSuccess !== undefined)
    metric(LAST_SUCCESS, 'When the last successful ess backup ended (Unix time).', lastSuccess);
  metric('ess_backup_last_run_duration_seconds', 'Wall time of the last ess backup run.', seconds(run.durationMs));
  if (run.success && run.sizeBytes !== undefined) {
    metric('ess_backup_last_size_bytes', 'Size of the archive written by the last successful run.', run.sizeBytes);
  }
  if (run.success && run.downtimeMs !== undefined) {
    metric(
      'ess_backup_last_downtime_seconds',
      'Time Synapse and MAS were scaled down in the last successful run.',
      seconds(run.downtimeMs),
    );
  }
  return `${lines.join('\n')}\n`;
}

/** Writes the metrics file atomically (same directory, then rename), keeping the last success time on failure. */
export async function writeMetricsFile(path: string, labels: MetricLabels, run: BackupRunMetrics): Promise<void> {
  const previous = run.success ? undefined : await readFile(path, 'utf8').catch(() => undefined);
  const temporary = `${path}.${process.pid}.tmp`;
  try {
    await writeFile(temporary, renderMetrics(labels, run, previous), { mode: 0o644 });
    await rename(temporary, path);
  } catch (error) {
    await unlink(temporary).catch(() => {});
    throw error;
  }
}
