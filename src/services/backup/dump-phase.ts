/**
 * Consistent database dumps with minimal downtime: scale Synapse and MAS to 0, export one snapshot per database
 * (psql sessions held open), scale them back up at once, then dump every database from its snapshot and count its
 * rows in the same snapshot while Synapse runs again. If exporting a snapshot fails, everything is dumped while the
 * writers are still stopped instead. Workloads are put back on every path (error, signal, lost connection).
 */
import { databaseMember, MEMBERS } from '../../lib/archive/layout.js';
import type { TableRows } from '../../lib/archive/manifest.js';
import type { Spool, SpooledFile } from '../../lib/archive/spool.js';
import { EXCLUDED_TABLE_DATA } from '../../lib/deployment/components.js';
import {
  type Clock,
  interruption,
  RestoreFailedError,
  type RestoreReport,
  type RetryOptions,
  type StoppedWorkload,
  type WorkloadRef,
  WorkloadScaler,
} from '../../lib/deployment/scaler.js';
import { EssError } from '../../lib/errors.js';
import type { KubeClient } from '../../lib/kube/client.js';
import type { Reporter } from '../../lib/output/log.js';
import { formatBytes, formatDuration } from '../../lib/output/log.js';
import type { DumpCompression } from '../../lib/postgres/pod-tools.js';
import {
  checkDumpComplete,
  exactRowCounts,
  exportSnapshot,
  type PgTools,
  pgDumpArgv,
  type SnapshotHolder,
  schemaVersions,
  spoolToolOutput,
} from './postgres.js';

/** One database to dump. */
export interface DatabaseTarget {
  name: string;
  component: 'synapse' | 'mas' | 'other';
  sizeBytes: number;
}

/** A dumped database: the spooled file and what was read from the same snapshot. */
export interface DumpedDatabase extends DatabaseTarget {
  member: string;
  file: SpooledFile;
  tables: TableRows[];
  excludedTableData: string[];
  schemaVersion?: number;
  schemaCompatVersion?: number;
  masMigration?: string;
}

/** A database once its rows were counted in the dump's snapshot: everything the manifest says of it but the dump. */
export type CountedDatabase = Omit<DumpedDatabase, 'file'>;

/** How consistency was obtained: exported snapshots (short downtime) or dumping while stopped (the fallback). */
export type Consistency = 'snapshot' | 'stopped';

export interface DumpPhaseOptions {
  databases: DatabaseTarget[];
  /** Synapse and MAS workloads to stop. */
  writers: WorkloadRef[];
  compression: DumpCompression;
  /** Capture roles with pg_dumpall --globals-only (false for managed external servers that refuse it). */
  globals: boolean;
  /** Per phase: how long to wait for pods to terminate / become ready. */
  timeoutMs?: number;
  /** Helm release, for next steps (`ess start -n … --release …`). */
  release?: string;
  /** Parallel tool runs (dumps and row counts); default 2. */
  concurrency?: number;
  /** Force dumping while stopped (no snapshots). */
  noSnapshots?: boolean;
}

export interface DumpPhaseDeps {
  kube: KubeClient;
  tools: PgTools;
  spool: Spool;
  reporter: Reporter;
  /** Aborts the run (SIGINT/SIGTERM or another stage failed). Workloads are still put back. */
  signal?: AbortSignal;
  clock?: Clock;
  pollMs?: number;
  retry?: RetryOptions;
  /** Called once the writers are back (restore done, ready or timed out) or could not be brought back. */
  onWritersBack?: (error?: unknown) => void;
  /** Called once every database's rows were counted (usually long before the largest dump ends). */
  onCounted?: (databases: CountedDatabase[]) => void;
}

export interface DumpPhaseResult {
  consistency: Consistency;
  databases: DumpedDatabase[];
  globals?: SpooledFile;
  stopped: StoppedWorkload[];
  restored: RestoreReport;
  /** When the writers were at 0 until they were ready again (undefined: nothing stopped, or not ready). */
  downtimeMs?: number;
  warnings: string[];
}

/**
 * Runs `tasks` with at most `limit` at a time. The first failure aborts `stop` (so running tasks end early), starts
 * nothing new, and is thrown once every running task has ended.
 */
async function runPool(tasks: (() => Promise<void>)[], limit: number, stop: AbortController): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async () => {
    while (!failure && next < tasks.length) {
      const task = tasks[next++]!;
      try {
        await task();
      } catch (error) {
        if (!failure) {
          failure = { error };
          stop.abort(error);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  if (failure) throw failure.error;
}

/** See the module comment. */
export async function dumpDatabases(options: DumpPhaseOptions, deps: DumpPhaseDeps): Promise<DumpPhaseResult> {
  const { reporter, tools, signal } = deps;
  const warnings: string[] = [];
  const scaler = new WorkloadScaler(deps.kube, options.writers, {
    by: 'ess backup',
    reason: 'consistent database dump',
    timeoutMs: options.timeoutMs,
    release: options.release,
    pollMs: deps.pollMs,
    signal,
    reporter,
    clock: deps.clock,
    retry: deps.retry,
  });
  let restoring: Promise<RestoreReport> | undefined;
  const restore = () => {
    restoring ??= scaler.restore({ throwOnTimeout: false, timeoutMs: options.timeoutMs }).then(
      (report) => {
        deps.onWritersBack?.();
        return report;
      },
      (error: unknown) => {
        deps.onWritersBack?.(error);
        throw error;
      },
    );
    restoring.catch(() => {});
    return restoring;
  };
  let holders: SnapshotHolder[] = [];
  let consistency: Consistency = 'stopped';
  let outcome:
    | { ok: true; value: { databases: DumpedDatabase[]; globals?: SpooledFile } }
    | { ok: false; error: unknown };
  try {
    if (options.writers.length > 0) await scaler.stop();
    if (signal?.aborted) throw interruption(signal);
    if (!options.noSnapshots) {
      try {
        for (const db of options.databases) holders.push(await exportSnapshot(tools, db.name, { signal }));
        consistency = 'snapshot';
        reporter.info(
          `Exported snapshots of ${holders.map((h) => h.database).join(', ')}; bringing Synapse and MAS back.`,
        );
      } catch (error) {
        if (signal?.aborted) throw error;
        reporter.info('Could not export database snapshots: dumping while Synapse and MAS stay stopped.');
        warnings.push(
          `Database snapshots could not be exported (${(error as Error).message.split('\n')[0]}); the databases were dumped while Synapse and MAS were stopped.`,
        );
        await closeHolders(holders, reporter);
        holders = [];
      }
    }
    if (consistency === 'snapshot') restore();
    const snapshots = new Map(holders.map((h) => [h.database, h.snapshot]));
    outcome = { ok: true, value: await dumpAll(options, deps, snapshots) };
  } catch (error) {
    outcome = { ok: false, error };
  }
  await closeHolders(holders, reporter);
  let restored: RestoreReport;
  try {
    restored = await restore();
  } catch (restoreError) {
    if (outcome.ok) throw restoreError;
    const failed =
      restoreError instanceof RestoreFailedError ? restoreError.failed : [{ name: 'workloads', error: restoreError }];
    const wrapped = new RestoreFailedError(failed, options.writers[0]?.namespace ?? '', outcome.error, options.release);
    wrapped.message = `${(outcome.error as Error)?.message ?? String(outcome.error)}\nAlso: ${wrapped.message}`;
    throw wrapped;
  }
  for (const warning of restored.warnings) warnings.push(warning);
  for (const name of restored.notReady) warnings.push(`${name} was scaled back up but is not ready yet.`);
  if (restored.downtimeMs !== undefined)
    reporter.info(`Synapse and MAS were down for ${formatDuration(restored.downtimeMs)}.`);
  if (!outcome.ok) throw outcome.error;
  return {
    consistency,
    ...outcome.value,
    stopped: [...scaler.workloads],
    restored,
    downtimeMs: restored.downtimeMs,
    warnings,
  };
}

async function closeHolders(holders: SnapshotHolder[], reporter: Reporter): Promise<void> {
  await Promise.all(
    holders.map((h) =>
      h
        .close()
        .catch((error: unknown) =>
          reporter.debug(`closing the snapshot session of ${h.database}: ${(error as Error).message}`),
        ),
    ),
  );
}

async function dumpAll(
  options: DumpPhaseOptions,
  deps: DumpPhaseDeps,
  snapshots: Map<string, string>,
): Promise<{ databases: DumpedDatabase[]; globals?: SpooledFile }> {
  const { tools, spool, reporter } = deps;
  const stop = new AbortController();
  const signal = deps.signal ? AbortSignal.any([deps.signal, stop.signal]) : stop.signal;
  const results = new Map<string, Partial<DumpedDatabase>>();
  let globals: SpooledFile | undefined;
  const ordered = [...options.databases].sort((a, b) => b.sizeBytes - a.sizeBytes);
  const dumpTasks = ordered.map((db) => async () => {
    const excluded = EXCLUDED_TABLE_DATA[db.component];
    const member = databaseMember(db.name);
    const stage = `dump ${db.name}`;
    reporter.info(`Dumping database ${db.name} (${formatBytes(db.sizeBytes)})…`);
    const argv = pgDumpArgv(tools, {
      database: db.name,
      member,
      snapshot: snapshots.get(db.name),
      excludeTableData: excluded,
      compression: options.compression,
    });
    const file = await spoolToolOutput(tools, spool, member, argv, {
      signal,
      onBytes: (n) => reporter.progress(stage, n),
    });
    reporter.progress(stage, file.size, file.size);
    const { tableData, checked } = await checkDumpComplete(file, db.name);
    if (!checked) reporter.debug(`${member}: archive version unknown to ess; relying on pg_dump's exit status`);
    const leaked = excluded.filter((t) => tableData.includes(t));
    if (leaked.length > 0) {
      throw new EssError(`The dump of ${db.name} holds data of ${leaked.join(', ')}, which must be left out.`, {
        code: 'DUMP_INCOMPLETE',
      });
    }
    Object.assign(results.get(db.name) ?? results.set(db.name, {}).get(db.name)!, {
      member,
      file,
      excludedTableData: excluded,
    });
  });
  let counted = 0;
  const countTasks = ordered.map((db) => async () => {
    const counts = await exactRowCounts(tools, db.name, snapshots.get(db.name), signal);
    const excluded = new Set(EXCLUDED_TABLE_DATA[db.component]);
    // The manifest describes the dump: tables left out hold no rows in it (and after a restore).
    const tables = counts.map((t) => (excluded.has(t.name) ? { ...t, rows: 0 } : t));
    const versions =
      db.component === 'other' ? {} : await schemaVersions(tools, db.name, new Set(counts.map((t) => t.name)), signal);
    Object.assign(results.get(db.name) ?? results.set(db.name, {}).get(db.name)!, { tables, ...versions });
    if (++counted === ordered.length) {
      deps.onCounted?.(
        ordered.map((d) => {
          const { file: _file, ...facts } = results.get(d.name) as Partial<DumpedDatabase>;
          const excludedTableData = EXCLUDED_TABLE_DATA[d.component];
          return { ...d, member: databaseMember(d.name), excludedTableData, ...facts } as CountedDatabase;
        }),
      );
    }
  });
  const globalsTask = async () => {
    if (!options.globals) return;
    const argv = ['pg_dumpall', ...tools.server(), '--globals-only'];
    globals = await spoolToolOutput(tools, spool, MEMBERS.postgresGlobals, argv, { signal });
  };
  // The largest dump first; counts and small dumps share the other slot.
  const tasks = [dumpTasks[0], ...dumpTasks.slice(1), globalsTask, ...countTasks].filter(
    (t): t is () => Promise<void> => t !== undefined,
  );
  await runPool(tasks, options.concurrency ?? 2, stop);
  if (deps.signal?.aborted) throw interruption(deps.signal);
  return {
    databases: ordered.map((db) => ({ ...db, ...(results.get(db.name) as DumpedDatabase) })),
    globals,
  };
}
