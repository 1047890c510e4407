/**
 * `ess backup`: discover, lock, plan; scale Synapse and MAS down just long enough to export database snapshots;
 * dump every database from its snapshot while they run again; list and copy the media; collect the configuration;
 * write one archive (manifest first) to a directory, S3 or stdout, optionally age-encrypted; apply retention.
 * See docs/commands/backup.md and docs/backup-format.md.
 */
import { statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { fileSafeServerName } from '../../lib/archive/naming.js';
import { Spool, type SpooledFile } from '../../lib/archive/spool.js';
import { DATABASE_WRITERS } from '../../lib/deployment/components.js';
import { type Clock, interruption, type RetryOptions, systemClock } from '../../lib/deployment/scaler.js';
import { EssError, ExitCode } from '../../lib/errors.js';
import type { KubeClient } from '../../lib/kube/client.js';
import { startScavenger } from '../../lib/memory.js';
import { formatBytes, type Reporter } from '../../lib/output/log.js';
import { DEFAULT_LOCAL_DIR } from '../../lib/storage/local-dir.js';
import type { S3ChecksumMode } from '../../lib/storage/s3.js';
import { isPatchable } from '../../lib/storage/store.js';
import { acquireRunLock } from '../../lib/workloads/run-lock.js';
import { collectConfig } from './collect-config.js';
import {
  type Consistency,
  type CountedDatabase,
  type DatabaseTarget,
  type DumpPhaseResult,
  dumpDatabases,
} from './dump-phase.js';
import {
  estimateMedia,
  type MediaPlan,
  type MediaSource,
  openMediaSource,
  planMedia,
  postgresImage,
  removeLeftoverHelpers,
} from './media.js';
import { writeMetricsFile } from './metrics.js';
import { type BackupPlan, excludedFor, skippedMediaDirs, writerWorkloads } from './plan.js';
import { prepareBackup } from './prepare.js';
import { applyRetention, planRetention, type RetentionObject } from './retention.js';
import { configSummary, spoolConfig, writeBackupArchive, writeBackupArchiveEarly } from './write.js';

/** Options of `ess backup` (they mirror its flags). */
export interface BackupOptions {
  namespace: string;
  release: string;
  /** A directory (default ./ess-backups) or `-` for stdout. */
  output?: string;
  s3?: string;
  s3Endpoint?: string;
  s3Region?: string;
  s3ChecksumMode?: S3ChecksumMode;
  /** age recipients (`age1…`). */
  encryptTo?: string[];
  /** Encrypt with the passphrase in this file (also used to read an encrypted parent). */
  passphraseFile?: string;
  /** age identity files, to read an encrypted parent of an incremental backup. */
  identityFiles?: string[];
  incremental?: boolean;
  includeRemoteMedia?: boolean;
  keepLast?: number;
  keepWithinMs?: number;
  dryRun?: boolean;
  forceUnlock?: boolean;
  /** pg_dump compression level (default: gzip 1, or zstd 3 with pg_dump 16+). */
  compressionLevel?: number;
  /** Parent directory of the spool (default: the OS temp directory). */
  spoolDir?: string;
  metricsFile?: string;
  /** Per phase: how long to wait for pods to stop or become ready (default 5 minutes). */
  timeoutMs?: number;
  /** External PostgreSQL: dump with this host's tools over this URL instead of inside the Postgres pod. */
  databaseUrl?: string;
  /** Directory of the local PostgreSQL client tools (with databaseUrl). */
  pgBinDir?: string;
  /** Version of ess (for the manifest). */
  essVersion: string;
}

/** What `ess backup` needs besides its options. */
export interface BackupDeps {
  kube: KubeClient;
  reporter: Reporter;
  /** SIGINT/SIGTERM: stop, put the workloads back, leave no archive. */
  signal?: AbortSignal;
  clock?: Clock;
  pollMs?: number;
  /** API retries when scaling (default: the scaler's). */
  retry?: RetryOptions;
  /** Where `-o -` writes (default process.stdout). */
  stdout?: Writable;
  /** Whether that stdout is a terminal, which `-o -` refuses (default: its isTTY). */
  stdoutIsTerminal?: () => boolean;
  /** scrypt work factor for passphrase encryption (tests only). */
  scryptWorkFactor?: number;
}

/** One database in the result. */
export interface BackupDatabaseResult {
  name: string;
  component: DatabaseTarget['component'];
  sizeBytes: number;
  dumpBytes: number;
  tables: number;
  rows: number;
}

/** The result of `ess backup` (its --json output). */
export interface BackupResult {
  action: 'backup';
  dryRun: boolean;
  namespace: string;
  release: string;
  serverName: string;
  /** Archive name, its full location, and the destination it is in. */
  name: string;
  location: string;
  destination: string;
  encrypted: boolean;
  incremental: boolean;
  parent?: string;
  /** Bytes stored (the archive, after encryption). */
  bytes: number;
  createdAt: string;
  durationMs: number;
  /** Synapse and MAS at 0 until ready again; undefined when nothing was stopped or not ready in time. */
  downtimeMs?: number;
  consistency?: Consistency;
  databases: BackupDatabaseResult[];
  globals: boolean;
  media?: {
    source: MediaSource['via'];
    pod: string;
    fileCount: number;
    bytes: number;
    storedFileCount: number;
    storedBytes: number;
    skipped: string[];
  };
  config?: { secrets: string[]; configMaps: string[]; helmValues: boolean };
  /** Workloads stopped for the snapshots and what the scaler did. */
  workloads: { kind: string; name: string; replicas: number; outcome: string }[];
  stages: { stage: string; ms: number }[];
  retention?: { kept: string[]; deleted: string[]; failed: { name: string; error: string }[]; freedBytes: number };
  plan: BackupPlan;
  warnings: string[];
  /** True when something needs a look although the backup is complete (e.g. a workload not ready yet). */
  needsAttention: boolean;
}

class Stages {
  readonly list: { stage: string; ms: number }[] = [];
  constructor(private readonly clock: Clock) {}
  async run<T>(stage: string, fn: () => Promise<T>): Promise<T> {
    const start = this.clock.now();
    try {
      return await fn();
    } finally {
      this.list.push({ stage, ms: this.clock.now() - start });
    }
  }
}

/** Runs a backup (or, with dryRun, only plans it). See the module comment. */
export async function createBackup(options: BackupOptions, deps: BackupDeps): Promise<BackupResult> {
  const clock = deps.clock ?? systemClock;
  const started = clock.now();
  // The same label on success and failure, whatever stage a run fails in.
  const destination = options.s3 ?? (options.output === '-' ? 'stdout' : resolve(options.output ?? DEFAULT_LOCAL_DIR));
  try {
    const result = await runBackup(options, deps, clock, started);
    if (options.metricsFile && !options.dryRun) {
      await writeMetricsFile(
        options.metricsFile,
        { namespace: options.namespace, release: options.release, destination },
        {
          success: true,
          finishedAtMs: clock.now(),
          durationMs: result.durationMs,
          sizeBytes: result.bytes,
          downtimeMs: result.downtimeMs,
        },
      ).catch((error: unknown) => {
        result.warnings.push(`Could not write the metrics file ${options.metricsFile}: ${(error as Error).message}`);
        result.needsAttention = true;
      });
    }
    return result;
  } catch (error) {
    if (options.metricsFile && !options.dryRun && !(error instanceof EssError && error.exitCode === ExitCode.USAGE)) {
      await writeMetricsFile(
        options.metricsFile,
        { namespace: options.namespace, release: options.release, destination },
        { success: false, finishedAtMs: clock.now(), durationMs: clock.now() - started },
      ).catch((e: unknown) => deps.reporter.warn(`Could not write the metrics file: ${(e as Error).message}`));
    }
    if (deps.signal?.aborted && !(error instanceof EssError && error.code === 'RESTORE_FAILED')) {
      throw interruption(deps.signal);
    }
    throw error;
  }
}

async function runBackup(
  options: BackupOptions,
  deps: BackupDeps,
  clock: Clock,
  started: number,
): Promise<BackupResult> {
  const { kube, reporter } = deps;
  const stages = new Stages(clock);
  const createdAt = new Date(Math.floor(started / 1000) * 1000);
  const p = await stages.run('discover', () => prepareBackup(options, deps, createdAt));
  const warnings = [...p.warnings];
  const writers = writerWorkloads(p.deployment, DATABASE_WRITERS);
  const config = await collectConfig(kube, p.deployment);
  warnings.push(...config.warnings);
  const spoolParent = options.spoolDir;
  const plan: BackupPlan = {
    serverName: p.serverName,
    namespace: p.deployment.namespace,
    release: p.deployment.release,
    destination: p.sink.location,
    name: p.name,
    encrypted: p.encryption !== undefined,
    incremental: options.incremental ? { parent: p.parent?.name, fallbackReason: p.incrementalFallback } : undefined,
    stop: writers.map((w) => ({ kind: w.kind, name: w.name, replicas: w.replicas })),
    consistency: 'snapshot',
    postgres: {
      tools: p.tools.kind,
      where: p.tools.where,
      serverVersion: p.serverVersion,
      compression: p.compression,
      globals: p.globals,
      databases: p.databases.map((d) => ({ ...d, excludeTableData: excludedFor(d.component) })),
    },
    media: p.deployment.media
      ? {
          pod: p.deployment.media.pod,
          claimName: p.deployment.media.claimName,
          storePath: p.deployment.media.storePath,
          includeRemote: options.includeRemoteMedia === true,
          skipped: skippedMediaDirs(options.includeRemoteMedia === true),
        }
      : undefined,
    config: configSummary(config),
    estimatedBytes: p.databases.reduce((n, d) => n + d.sizeBytes, 0),
    spool: { dir: spoolParent ?? tmpdir() },
  };
  if (!p.deployment.media) warnings.push('No media PVC was found: the backup holds no media.');
  // The spool holds the compressed dumps (usually far smaller than the databases): warn before anything starts.
  plan.spool.freeBytes = await freeBytes(plan.spool.dir);
  if (plan.spool.freeBytes !== undefined && plan.spool.freeBytes < plan.estimatedBytes / 2) {
    const warning = `Only ${formatBytes(plan.spool.freeBytes)} free in the spool directory ${plan.spool.dir} for dumps of databases of ${formatBytes(plan.estimatedBytes)} (pass --spool-dir with more room).`;
    warnings.push(warning);
    if (!options.dryRun) reporter.warn(warning);
  }
  const base = {
    action: 'backup' as const,
    namespace: p.deployment.namespace,
    release: p.deployment.release,
    serverName: p.serverName,
    name: p.name,
    destination: p.sink.location,
    encrypted: p.encryption !== undefined,
    createdAt: createdAt.toISOString(),
    plan,
  };

  if (options.dryRun) {
    if (plan.media && p.deployment.media) {
      const estimate = await estimateMedia(kube, p.deployment.media, {
        namespace: p.deployment.namespace,
        includeRemote: options.includeRemoteMedia === true,
        signal: deps.signal,
      }).catch((error: unknown) => {
        warnings.push(`Media size unknown: ${(error as Error).message}`);
        return undefined;
      });
      if (estimate) {
        plan.media.fileCount = estimate.files;
        plan.media.bytes = estimate.bytes;
        plan.estimatedBytes += estimate.bytes;
      }
    }
    return {
      ...base,
      dryRun: true,
      location: p.sink.location,
      incremental: p.parent !== undefined,
      parent: p.parent?.name,
      bytes: 0,
      durationMs: clock.now() - started,
      databases: [],
      globals: p.globals,
      workloads: [],
      stages: stages.list,
      warnings,
      needsAttention: false,
    };
  }

  const lock = await stages.run('lock', () =>
    acquireRunLock(
      kube,
      {
        namespace: p.deployment.namespace,
        release: p.deployment.release,
        operation: 'backup',
        force: options.forceUnlock,
      },
      reporter,
    ),
  );
  let created: Spool | undefined;
  let mediaSource: MediaSource | undefined;
  const stopScavenger = startScavenger();
  try {
    const spool = await Spool.create({ parentDir: spoolParent });
    created = spool;
    const leftovers = await removeLeftoverHelpers(kube, p.deployment.namespace, p.deployment.release);
    if (leftovers.length) warnings.push(`Removed media helper pods left by an earlier run: ${leftovers.join(', ')}`);
    // Other stages stop as soon as one fails; the workloads are put back regardless.
    const failFast = new AbortController();
    const signal = deps.signal ? AbortSignal.any([deps.signal, failFast.signal]) : failFast.signal;
    let writersBack!: (error?: unknown) => void;
    const whenWritersBack = new Promise<void>((resolve, reject) => {
      writersBack = (error) => (error === undefined ? resolve() : reject(error));
    });
    whenWritersBack.catch(() => {});
    let countedAll!: (databases: CountedDatabase[]) => void;
    const counted = new Promise<CountedDatabase[]>((resolve) => {
      countedAll = resolve;
    });
    const dumpStart = clock.now();
    const dumping = dumpDatabases(
      {
        databases: p.databases,
        writers,
        compression: p.compression,
        globals: p.globals,
        timeoutMs: options.timeoutMs,
        release: options.release,
      },
      {
        kube,
        tools: p.tools,
        spool,
        reporter,
        signal,
        clock,
        pollMs: deps.pollMs,
        retry: deps.retry,
        onWritersBack: writersBack,
        onCounted: countedAll,
      },
    ).finally(() => stages.list.push({ stage: 'databases', ms: clock.now() - dumpStart }));
    dumping.catch((error: unknown) => failFast.abort(error));
    const mediaStart = clock.now();
    const listing = p.deployment.media
      ? whenWritersBack
          .then(async () => {
            if (signal.aborted) throw interruption(signal);
            const media = p.deployment.media!;
            mediaSource = await openMediaSource(kube, media, {
              namespace: p.deployment.namespace,
              release: p.deployment.release,
              helperImage: await postgresImage(kube, p.deployment),
              signal,
              reporter,
              clock,
              timeoutMs: options.timeoutMs,
              pollMs: deps.pollMs,
            });
            const mediaPlan = await planMedia(kube, mediaSource, spool, {
              includeRemote: options.includeRemoteMedia === true,
              parent: p.parent,
              signal,
            });
            reporter.info(
              `Media: ${mediaPlan.summary.fileCount} files (${formatBytes(mediaPlan.summary.bytes)}); storing ${mediaPlan.summary.storedFileCount} (${formatBytes(mediaPlan.summary.storedBytes)}).`,
            );
            if (mediaPlan.invalid.length) {
              warnings.push(
                `${mediaPlan.invalid.length} media file(s) with names Synapse never serves were left out, e.g. ${mediaPlan.invalid[0]}.`,
              );
            }
            return mediaPlan;
          })
          .finally(() => stages.list.push({ stage: 'media listing', ms: clock.now() - mediaStart }))
      : Promise.resolve(undefined);
    listing.catch((error: unknown) => failFast.abort(error));
    const configFiles = spoolConfig(spool, config, signal);
    configFiles.catch((error: unknown) => failFast.abort(error));
    let dumped: DumpPhaseResult;
    let mediaPlan: MediaPlan | undefined;
    let written: { location: string; bytes: number };
    const sink = p.sink;
    if (isPatchable(sink) && !p.encryption) {
      // A local file: the archive starts as soon as the media are listed and the rows counted, and the media copy
      // runs while the dumps stream into the spool (see writeBackupArchiveEarly).
      const whenCounted = Promise.race([counted, dumping.then((d): CountedDatabase[] => d.databases)]);
      const archiving = Promise.all([listing, whenCounted, configFiles]).then(([plan, databases, configMembers]) =>
        stages.run('write', () =>
          writeBackupArchiveEarly({
            p,
            options,
            deps,
            sink,
            counted: databases,
            dumped: dumping,
            signal,
            mediaPlan: plan,
            mediaSource,
            configMembers,
            config,
            createdAt,
            warnings,
          }),
        ),
      );
      archiving.catch((error: unknown) => failFast.abort(error));
      [dumped, mediaPlan, , written] = await settleFirstError([dumping, listing, configFiles, archiving]);
      // The manifest already has the dump phase's warnings (writeBackupArchiveEarly adds them).
      for (const warning of dumped.warnings) warnings.push(warning);
    } else {
      let configMembers: SpooledFile[];
      [dumped, mediaPlan, configMembers] = await settleFirstError([dumping, listing, configFiles]);
      for (const warning of dumped.warnings) warnings.push(warning);
      const done = dumped;
      written = await stages.run('write', () =>
        writeBackupArchive({
          p,
          options,
          deps,
          dumped: done,
          mediaPlan,
          mediaSource,
          configMembers,
          config,
          createdAt,
          warnings,
        }),
      );
    }
    await mediaSource?.close();
    reporter.info(`Backup written: ${written.location} (${formatBytes(written.bytes)}).`);

    let retention: BackupResult['retention'];
    if (p.store && (options.keepLast !== undefined || options.keepWithinMs !== undefined)) {
      retention = await stages.run('retention', async () => {
        const decided = await planRetention(p.store!, {
          keepLast: options.keepLast,
          keepWithinMs: options.keepWithinMs,
          now: new Date(clock.now()),
          servers: [fileSafeServerName(p.serverName)],
        });
        const outcome = await applyRetention(p.store!, decided, { reporter });
        for (const id of decided.missingParents)
          warnings.push(`Kept incremental backups refer to ${id}, which is missing.`);
        return {
          kept: decided.keep.map((o: RetentionObject) => o.name),
          deleted: outcome.deleted.map((o) => o.name),
          failed: outcome.failed,
          freedBytes: outcome.freedBytes,
        };
      });
      for (const f of retention.failed) warnings.push(`Retention could not delete ${f.name}: ${f.error}`);
    }
    const notReady = dumped.restored.notReady.length > 0;
    return {
      ...base,
      dryRun: false,
      location: written.location,
      incremental: p.parent !== undefined,
      parent: p.parent?.name,
      bytes: written.bytes,
      durationMs: clock.now() - started,
      downtimeMs: dumped.downtimeMs,
      consistency: dumped.consistency,
      databases: dumped.databases.map((d) => ({
        name: d.name,
        component: d.component,
        sizeBytes: d.sizeBytes,
        dumpBytes: d.file.size,
        tables: d.tables.length,
        rows: d.tables.reduce((n, t) => n + t.rows, 0),
      })),
      globals: dumped.globals !== undefined,
      media:
        mediaPlan && mediaSource
          ? {
              source: mediaSource.via,
              pod: mediaSource.target.pod,
              fileCount: mediaPlan.summary.fileCount,
              bytes: mediaPlan.summary.bytes,
              storedFileCount: mediaPlan.summary.storedFileCount,
              storedBytes: mediaPlan.summary.storedBytes,
              skipped: skippedMediaDirs(options.includeRemoteMedia === true),
            }
          : undefined,
      config: configSummary(config),
      workloads: dumped.stopped.map((w) => ({
        kind: w.kind,
        name: w.name,
        replicas: w.recordedReplicas ?? w.replicasBefore,
        outcome: w.outcome,
      })),
      stages: stages.list,
      retention,
      warnings,
      needsAttention: notReady || (retention?.failed.length ?? 0) > 0,
    };
  } finally {
    stopScavenger();
    await mediaSource?.close();
    await created?.cleanup();
    await lock
      .release()
      .catch((error: unknown) => reporter.warn(`Could not release the ess lock: ${(error as Error).message}`));
  }
}

/** Awaits every promise; if any failed, throws the first failure (by time) after all have settled. */
async function settleFirstError<T extends unknown[]>(promises: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  let first: { error: unknown } | undefined;
  const settled = await Promise.allSettled(
    promises.map((promise) =>
      promise.catch((error: unknown) => {
        first ??= { error };
        throw error;
      }),
    ),
  );
  if (first) throw first.error;
  return settled.map((s) => (s as PromiseFulfilledResult<unknown>).value) as T;
}

async function freeBytes(dir: string): Promise<number | undefined> {
  return statfs(dir).then(
    (s) => s.bavail * s.bsize,
    () => undefined,
  );
}
