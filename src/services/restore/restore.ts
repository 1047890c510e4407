/**
 * `ess restore <archive>`: puts a backup back into an ESS deployment.
 *
 * 1. Preflight (preflight.ts): a full verification pass over the archive and the parents its media needs, and every
 *    check on the target — nothing changes before it passes. Then the plan and typed confirmation (or --yes).
 * 2. Apply, in order: Secrets and ConfigMaps; the Helm values file; Synapse and MAS to 0 (replica counts recorded
 *    on the objects); databases and roles dropped and re-created; a second pass over the archive streams each dump
 *    onto the Postgres volume and starts `pg_restore --jobs N` on it while the next members (more dumps, media)
 *    keep streaming; e2e_one_time_keys_json emptied; role passwords set from the chart Secrets; media of parent
 *    archives; Synapse and MAS back up; post-checks (row counts against the manifest, Synapse ready).
 *
 * Failure policy: until a database has been dropped, any failure scales the workloads back and the deployment is
 * as before. Once a database is dropped and not completely restored, Synapse and MAS are LEFT STOPPED (their counts
 * stay recorded, `ess start` brings them back): starting them on a half-restored database would let them write
 * into it. A media failure after a complete database restore scales back up and asks for `--only media`.
 */
import { randomBytes } from 'node:crypto';
import { rename, writeFile } from 'node:fs/promises';
import { mediaPathOf } from '../../lib/archive/layout.js';
import type { ArchiveMember } from '../../lib/archive/reader.js';
import { Spool } from '../../lib/archive/spool.js';
import { readArchiveFrom } from '../../lib/archive/transfer.js';
import type { RestoreReport, StoppedWorkload } from '../../lib/deployment/scaler.js';
import { WorkloadScaler } from '../../lib/deployment/scaler.js';
import { EssError, ExitCode, InterruptedError, isEssError } from '../../lib/errors.js';
import type { ExecTarget, KubeClient } from '../../lib/kube/client.js';
import type { Workload } from '../../lib/kube/types.js';
import type { HeldLock } from '../../lib/lock.js';
import { startScavenger } from '../../lib/memory.js';
import { ONE_TIME_KEYS_TABLE } from '../../lib/migrate/dump-facts.js';
import { removeInPod, tarExtractor } from '../../lib/migrate/pod-ops.js';
import { confirmTyped } from '../../lib/output/confirm.js';
import { formatDuration, type Reporter } from '../../lib/output/log.js';
import type { PostCheck } from '../../lib/output/table.js';
import { psqlInPod } from '../../lib/postgres/in-pod.js';
import { shellJoin } from '../../lib/postgres/pod-tools.js';
import { acquireRunLock } from '../../lib/workloads/run-lock.js';
import { compareRowCounts, type RowComparison } from '../backup/verify-checks.js';
import { type ArchiveLocation, resolveArchiveLocation } from '../backup/verify-source.js';
import { type MediaSource, manifestDigest } from './archive.js';
import {
  countRows,
  createDatabaseSql,
  dropDatabases,
  dropRolesSql,
  globalsScript,
  passwordComponent,
  restoreFromFile,
  restoreFromStream,
  resyncRolePassword,
  runSqlScript,
  truncateOneTimeKeys,
} from './database.js';
import { writeIntoPod } from './into-pod.js';
import { type HelperPod, startHelperPod } from './media-pod.js';
import { applyObjects, type ObjectOutcome } from './objects.js';
import { PodTarSink } from './pod-tar.js';
import {
  type DatabasePlan,
  type PreparedRestore,
  prepareRestore,
  type RestoreOptions,
  type RestorePart,
} from './preflight.js';

export type { RestoreOptions, RestorePart } from './preflight.js';
export { RESTORE_PARTS } from './preflight.js';

/** Dependencies of {@link restoreBackup}. */
export interface RestoreDeps {
  /** The Kubernetes client (created after the local checks). */
  kube: () => Promise<KubeClient>;
  reporter: Reporter;
  confirm?: typeof confirmTyped;
  /** Resolves the archive argument to a store (tests pass a MemoryStore). */
  resolveLocation?: (archive: string, options: RestoreOptions) => ArchiveLocation;
  /** Base directory of a relative --values-out (default the working directory). */
  cwd?: string;
}

/** One restored database. */
export interface RestoredDatabase {
  name: string;
  from: string;
  method: 'staged' | 'stream';
  jobs: number;
  dumpBytes: number;
  durationMs: number;
  rows?: RowComparison;
}

/** The result of a restore (the --json output of `ess restore`). */
export interface RestoreResult {
  dryRun: boolean;
  archive: {
    name: string;
    location: string;
    encrypted: boolean;
    bytes: number;
    formatVersion: number;
    createdAt: string;
    serverName: string;
    namespace: string;
    release: string;
    chartVersion?: string;
    incremental: boolean;
    /** Other archives read for the media (incremental chain). */
    parents: string[];
    members: number;
    verifyMs: number;
  };
  target: { namespace: string; release: string; serverName?: string; namespaceCreated: boolean; deployment: boolean };
  parts: RestorePart[];
  /** Parts that could not run because the namespace has no ESS deployment yet. */
  pending: RestorePart[];
  plan: string[];
  objects?: ObjectOutcome[];
  values?: { path: string; helmCommand: string };
  databases?: RestoredDatabase[];
  media?: { files: number; bytes: number; via: 'media-pod' | 'helper-pod'; pod: string; archives: string[] };
  workloads?: { name: string; replicas: number; ready: boolean }[];
  /** Synapse/MAS at 0 until ready again. */
  downtimeMs?: number;
  postChecks: PostCheck[];
  /** What the user should do next (commands). */
  next: string[];
  warnings: string[];
  /** Warnings that need attention: exit code 3. */
  needsAttention: boolean;
  /** A post-check failed (row counts differ): exit code 1. */
  failed: boolean;
  durationMs: number;
}

/** Thrown from onMember to stop reading an archive once everything needed was read. */
class StopReading extends Error {}

/** After a change was made, an archive problem is no longer "nothing happened" (exit 4) but a failure (exit 1). */
function asFailure(error: unknown): unknown {
  if (error instanceof InterruptedError || !isEssError(error) || error.exitCode !== ExitCode.PRECONDITION) return error;
  return new EssError(error.message, { code: error.code, next: error.next, exitCode: ExitCode.FAILED, cause: error });
}

function describe(error: unknown): string {
  return (error as Error)?.message ?? String(error);
}

function newResult(p: PreparedRestore, options: RestoreOptions): RestoreResult {
  const m = p.archive.manifest;
  return {
    dryRun: options.dryRun,
    archive: {
      name: p.location.name,
      location: p.location.display,
      encrypted: p.archive.encrypted,
      bytes: p.archive.storedBytes,
      formatVersion: m.formatVersion,
      createdAt: m.createdAt,
      serverName: m.deployment.serverName,
      namespace: m.deployment.namespace,
      release: m.deployment.release,
      chartVersion: p.archive.helmRelease?.version ?? m.deployment.chartVersion,
      incremental: m.media?.incremental ?? false,
      parents: (p.media?.sources ?? []).filter((s) => !s.own).map((s) => s.archive),
      members: p.archive.memberCount,
      verifyMs: p.verifyMs,
    },
    target: {
      namespace: p.target.namespace,
      release: p.target.release,
      serverName: p.target.deployment?.serverName,
      namespaceCreated: false,
      deployment: p.target.deployment !== undefined,
    },
    parts: p.parts,
    pending: p.pending,
    plan: p.plan,
    postChecks: [],
    next: [],
    warnings: [...p.warnings],
    needsAttention: p.needsAttention,
    failed: false,
    durationMs: 0,
  };
}

/**
 * Runs a restore (or, with dryRun, the preflight and the plan). See the module comment for the steps and the
 * failure policy. Throws PreconditionError (exit 4) when refused before any change, EssError (exit 1) for
 * failures after, InterruptedError (130) on SIGINT/SIGTERM.
 */
export async function restoreBackup(options: RestoreOptions, deps: RestoreDeps): Promise<RestoreResult> {
  const started = Date.now();
  const { reporter } = deps;
  const location = (deps.resolveLocation ?? ((a, o) => resolveArchiveLocation(a, o.destination)))(
    options.archive,
    options,
  );
  const kube = await deps.kube();
  const spool = await Spool.create({ parentDir: options.spoolDir });
  // The verification pass and the restore stream the whole archive: collect dead chunks as they go.
  const stopScavenger = startScavenger();
  try {
    const p = await prepareRestore(options, { kube, reporter, location, spool, cwd: deps.cwd });
    const result = newResult(p, options);
    for (const w of p.warnings) reporter.warn(w);
    if (options.dryRun) {
      result.durationMs = Date.now() - started;
      return result;
    }
    options.signal?.throwIfAborted();
    let lock: HeldLock | undefined;
    const lockOptions = {
      namespace: options.namespace,
      release: options.release,
      operation: 'restore',
      force: options.forceUnlock,
    };
    try {
      // With an existing namespace, lock before asking so that nobody confirms a run that would collide.
      if (p.target.namespaceExists) lock = await acquireRunLock(kube, lockOptions, reporter);
      reporter.info(`Plan:\n${p.plan.map((line, i) => `  ${i + 1}. ${line}`).join('\n')}`);
      await (deps.confirm ?? confirmTyped)({
        expected: options.namespace,
        action: `restore ${location.name} into ${options.namespace}/${options.release} (${p.parts.join(', ')})${p.postgres ? `, ERASING database(s) ${p.postgres.databases.map((d) => d.target).join(', ')}` : ''}`,
        yes: options.yes,
      });
      if (!p.target.namespaceExists) {
        await kube.create('Namespace', undefined, {
          apiVersion: 'v1',
          kind: 'Namespace',
          metadata: { name: options.namespace },
        });
        result.target.namespaceCreated = true;
        reporter.info(`Created namespace ${options.namespace}.`);
        lock = await acquireRunLock(kube, lockOptions, reporter);
      }
      const stage = { dataStarted: false };
      try {
        await apply(p, result, options, kube, reporter, stage);
      } catch (error) {
        // Only an interruption before the data steps left the databases and media untouched.
        throw (stage.dataStarted ? undefined : interruptedAfterObjects(error, result, options)) ?? error;
      }
    } finally {
      await lock?.release().catch(() => undefined);
    }
    for (const w of result.warnings.slice(p.warnings.length)) reporter.warn(w);
    result.needsAttention ||= result.warnings.length > p.warnings.length || result.pending.length > 0;
    result.durationMs = Date.now() - started;
    return result;
  } catch (error) {
    // A signal aborts streams with plain errors; report it as the interruption it is.
    const expected = isEssError(error) && error.exitCode !== ExitCode.PRECONDITION;
    if (options.signal?.aborted && !expected) throw new InterruptedError(describe(options.signal.reason));
    throw error;
  } finally {
    stopScavenger();
    await spool.cleanup();
  }
}

/** Steps 1–9. */
async function apply(
  p: PreparedRestore,
  result: RestoreResult,
  options: RestoreOptions,
  kube: KubeClient,
  reporter: Reporter,
  stage: { dataStarted: boolean },
): Promise<void> {
  const { archive } = p;
  if (p.parts.includes('secrets')) {
    try {
      if (archive.objects.length > 0) {
        result.objects = await applyObjects(kube, options.namespace, archive.objects);
        reporter.info(
          `Restored ${result.objects.map((o) => `${o.kind} ${o.name} (${o.action})`).join(', ')} with their exact bytes.`,
        );
      }
      if (archive.values && p.valuesPath && p.helmCommand) {
        const temporary = `${p.valuesPath}.${randomBytes(4).toString('hex')}.tmp`;
        await writeFile(temporary, archive.values, { mode: 0o600, flag: 'wx' });
        await rename(temporary, p.valuesPath);
        result.values = { path: p.valuesPath, helmCommand: p.helmCommand };
        reporter.info(`Wrote the Helm values of the backup to ${p.valuesPath}.`);
      }
    } catch (error) {
      throw asFailure(error);
    }
  }
  if (!p.target.deployment) {
    if (p.pending.length > 0) {
      result.next.push(
        ...(p.helmCommand
          ? [`Install ESS with the restored values: ${p.helmCommand}`]
          : ['Install ESS (helm upgrade --install …)']),
        `Then restore the rest: ess restore ${shellJoin([options.archive])} -n ${options.namespace} --release ${options.release} --only ${p.pending.join(',')}`,
      );
      result.warnings.push(
        `Restored ${p.parts.includes('secrets') ? 'the Secrets and values' : 'nothing'}; ${p.pending.join(' and ')} wait for an ESS deployment in ${options.namespace}.`,
      );
    }
    return;
  }
  if (p.helmCommand && result.values) {
    result.next.push(`To run the backed-up configuration: ${p.helmCommand}`);
  }
  if (!p.postgres && !p.media) {
    if (result.objects?.length) {
      result.next.push(
        `Restart the pods that read these Secrets (e.g. ess stop synapse mas && ess start), or run the helm command above.`,
      );
    }
    return;
  }
  await applyData(p, result, options, kube, reporter, stage);
}

interface Progress {
  dbTouched: boolean;
  dbComplete: boolean;
  mediaError?: unknown;
}

/** Steps 3–9: data, with the failure policy of the module comment. */
async function applyData(
  p: PreparedRestore,
  result: RestoreResult,
  options: RestoreOptions,
  kube: KubeClient,
  reporter: Reporter,
  stage: { dataStarted: boolean },
): Promise<void> {
  const signal = options.signal;
  const progress: Progress = { dbTouched: false, dbComplete: p.postgres === undefined };
  const scaler = p.postgres
    ? new WorkloadScaler(kube, p.writers, {
        by: 'ess restore',
        reason: `restore of ${p.location.name}`,
        signal,
        reporter,
        timeoutMs: options.timeoutMs,
      })
    : undefined;
  let helper: HelperPod | undefined;
  let staging: string | undefined;
  let failure: unknown;
  try {
    if (scaler) {
      await scaler.stop();
      signal?.throwIfAborted();
    }
    let mediaTarget: ExecTarget | undefined;
    if (p.media) {
      if (p.media.via === 'helper-pod') {
        reporter.info('Starting a helper pod for the media volume…');
        helper = await startHelperPod(kube, {
          namespace: options.namespace,
          release: options.release,
          claimName: p.media.claimName,
          image: p.media.image as string,
          timeoutMs: options.timeoutMs,
          signal,
        });
        mediaTarget = helper.target;
      } else {
        mediaTarget = { namespace: options.namespace, pod: p.media.pod as string, container: p.media.container };
      }
    }
    // From here on the databases and the media volume are written.
    signal?.throwIfAborted();
    stage.dataStarted = true;
    if (p.postgres) {
      staging = `${p.postgres.mount}/ess-restore-${randomBytes(4).toString('hex')}`;
      progress.dbTouched = true;
      await recreateDatabases(p, kube, reporter, signal);
    }
    await restorePass(p, result, options, kube, reporter, mediaTarget, staging, progress);
    if (p.media && mediaTarget && progress.mediaError === undefined) {
      for (const source of p.media.sources.filter((s) => !s.own)) {
        try {
          await restoreMediaFrom(p, source, kube, mediaTarget, options, reporter, result);
        } catch (error) {
          if (error instanceof InterruptedError || signal?.aborted) throw error;
          progress.mediaError = error;
          break;
        }
      }
    }
  } catch (error) {
    failure = error;
  }
  if (helper)
    await helper
      .remove()
      .catch((e: unknown) => result.warnings.push(`Could not delete ${helper?.name}: ${describe(e)}`));
  if (staging && p.postgres) {
    await removeInPod(kube, pgTarget(p.postgres.pg), staging).catch((e: unknown) =>
      result.warnings.push(`Could not remove the staged dumps ${staging}: ${describe(e)}`),
    );
  }
  if (failure !== undefined && progress.dbTouched && !progress.dbComplete) {
    throw incompleteDatabase(failure, p, options, signal);
  }
  let report: RestoreReport | undefined;
  if (scaler) {
    try {
      report = await scaler.restore({ throwOnTimeout: false });
    } catch (error) {
      throw failure !== undefined ? asFailure(failure) : error;
    }
    result.downtimeMs = report.downtimeMs;
    result.workloads = report.workloads.map((w) => ({ name: w.name, replicas: w.replicas, ready: w.ready }));
    for (const w of report.warnings) result.warnings.push(w);
    for (const name of report.notReady) result.warnings.push(`${name} was scaled back up but is not ready yet.`);
  }
  if (failure !== undefined) throw asFailure(failure);
  await postChecks(p, result, kube, scaler ? scaler.workloads : [], report);
  if (progress.mediaError !== undefined) {
    throw new EssError(
      `The databases were restored and Synapse is back, but restoring the media failed: ${describe(progress.mediaError)}`,
      {
        code: 'MEDIA_INCOMPLETE',
        cause: progress.mediaError,
        next: [
          `Fix the cause, then restore the media again (Synapse keeps running): ess restore ${shellJoin([options.archive])} -n ${options.namespace} --release ${options.release} --only media`,
        ],
      },
    );
  }
}

/**
 * An interruption after the Secrets, ConfigMaps or values were replaced but before any database was dropped: says
 * what was already changed and that running the same restore again finishes it. Undefined for anything else (an
 * interruption after the drop is {@link incompleteDatabase}'s).
 */
function interruptedAfterObjects(error: unknown, result: RestoreResult, options: RestoreOptions): EssError | undefined {
  const expected = isEssError(error) && !(error instanceof InterruptedError);
  const interrupted = error instanceof InterruptedError || (options.signal?.aborted === true && !expected);
  const objects = result.objects ?? [];
  if (!interrupted || (objects.length === 0 && !result.values)) return undefined;
  const changed = [
    ...objects.map((o) => `${o.kind} ${o.name} (${o.action})`),
    ...(result.values ? [`the Helm values file ${result.values.path}`] : []),
  ];
  const again = `ess restore ${shellJoin([options.archive])} -n ${options.namespace} --release ${options.release} --yes${options.only ? ` --only ${options.only.join(',')}` : ''}`;
  return new EssError(
    `The restore was interrupted (${describe(options.signal?.reason ?? error)}) after it had replaced ${changed.join(', ')}. The databases and the media were not touched.`,
    {
      code: 'RESTORE_INTERRUPTED',
      exitCode: ExitCode.INTERRUPTED,
      cause: error,
      next: [
        `Run the same restore again to finish it (it replaces the same objects again): ${again}`,
        `Check that Synapse and MAS run: ess status -n ${options.namespace}`,
      ],
    },
  );
}

function incompleteDatabase(
  failure: unknown,
  p: PreparedRestore,
  options: RestoreOptions,
  signal?: AbortSignal,
): EssError {
  const interrupted = failure instanceof InterruptedError || signal?.aborted === true;
  const again = `ess restore ${shellJoin([options.archive])} -n ${options.namespace} --release ${options.release} --yes${options.only ? ` --only ${options.only.join(',')}` : ''}`;
  return new EssError(
    `The restore ${interrupted ? 'was interrupted' : 'failed'} after the databases were dropped: ${describe(failure)}\n` +
      `The database(s) ${p.postgres?.databases.map((d) => d.target).join(', ')} are INCOMPLETE. Synapse and MAS were left stopped (their replica counts are recorded on the objects) so that nothing writes into them.`,
    {
      code: interrupted ? 'RESTORE_INTERRUPTED' : 'RESTORE_INCOMPLETE',
      exitCode: interrupted ? ExitCode.INTERRUPTED : ExitCode.FAILED,
      cause: failure,
      next: [
        ...(isEssError(failure) ? failure.next : []),
        `Fix the cause and run the restore again (it starts from fresh databases): ${again}`,
        `Or bring Synapse and MAS back as they are: ess start -n ${options.namespace}`,
      ],
    },
  );
}

/** Step 4: drop the databases and roles, recreate the roles from the backup and the empty databases. */
async function recreateDatabases(
  p: PreparedRestore,
  kube: KubeClient,
  reporter: Reporter,
  signal?: AbortSignal,
): Promise<void> {
  const pgPlan = p.postgres!;
  const { pg } = pgPlan;
  const targets = pgPlan.databases.map((d) => d.target);
  reporter.info(`Dropping database(s) ${targets.join(', ')}…`);
  await dropDatabases(kube, pg, targets);
  if (p.archive.globals) {
    const script = globalsScript(p.archive.globals, pg.superuser);
    await psqlInPod(kube, pg, dropRolesSql(script.roles));
    reporter.info(`Restoring role(s) ${script.roles.join(', ')} from the backup…`);
    await runSqlScript(kube, pg, script.sql, 'postgres', signal);
  }
  for (const db of pgPlan.databases) await psqlInPod(kube, pg, createDatabaseSql(db.target, db.owner));
}

/**
 * The apply pass over the archive itself: dumps are staged and restored (pg_restore runs in the background while
 * the pass goes on), media members stream into the pod. Media failures are recorded, not thrown, so that the
 * databases still complete; archive damage and database failures throw.
 */
async function restorePass(
  p: PreparedRestore,
  result: RestoreResult,
  options: RestoreOptions,
  kube: KubeClient,
  reporter: Reporter,
  mediaTarget: ExecTarget | undefined,
  staging: string | undefined,
  progress: Progress,
): Promise<void> {
  const pgPlan = p.postgres;
  const own = p.media?.sources.find((s) => s.own);
  const byMember = new Map((pgPlan?.databases ?? []).map((d) => [d.member, d]));
  let dumpsLeft = byMember.size;
  const running: Promise<void>[] = [];
  const controller = new AbortController();
  const onAbort = () => controller.abort(options.signal?.reason);
  options.signal?.addEventListener('abort', onAbort, { once: true });
  const databases: RestoredDatabase[] = [];
  let jobError: unknown;
  let sink: PodTarSink | undefined;
  if (own && mediaTarget && p.media) {
    sink = await openSink(kube, mediaTarget, p.media.storePath, own, controller.signal, reporter);
  }
  const mediaDone = () => sink === undefined || progress.mediaError !== undefined;
  const onMember = async (member: ArchiveMember) => {
    const db = byMember.get(member.name);
    if (db && pgPlan && staging) {
      const restored: RestoredDatabase = {
        name: db.target,
        from: db.manifest.name,
        method: pgPlan.method,
        jobs: pgPlan.jobs,
        dumpBytes: db.dumpBytes,
        durationMs: 0,
      };
      databases.push(restored);
      const t0 = Date.now();
      if (pgPlan.method === 'stream') {
        reporter.info(`Restoring ${db.target} from the stream…`);
        await restoreFromStream(kube, pgPlan.pg, member.stream, member.size, {
          database: db.target,
          owner: db.forceOwner,
          signal: controller.signal,
          onBytes: (n) => reporter.progress(`Restoring ${db.target}`, n, member.size),
        });
        restored.durationMs = Date.now() - t0;
      } else {
        const file = `${staging}/${db.target}.dump`;
        await stageDump(kube, pgPlan.pg, file, member, controller.signal, reporter);
        reporter.info(`Restoring ${db.target} with pg_restore --jobs ${pgPlan.jobs}…`);
        const job = restoreFromFile(kube, pgPlan.pg, {
          database: db.target,
          jobs: pgPlan.jobs,
          file,
          owner: db.forceOwner,
          signal: controller.signal,
        }).then(async () => {
          restored.durationMs = Date.now() - t0;
          reporter.info(`Restored ${db.target} in ${formatDuration(restored.durationMs)}.`);
          await removeInPod(kube, pgTarget(pgPlan.pg), file).catch(() => undefined);
        });
        job.catch((error: unknown) => {
          // A job cut because something else failed first is not the cause.
          if (!controller.signal.aborted) jobError ??= error;
          controller.abort(error);
        });
        running.push(job);
      }
      dumpsLeft--;
    } else {
      const path = mediaPathOf(member.name);
      if (path !== undefined && sink && !mediaDone()) {
        try {
          await sink.addFile(path, member.size, member.mtime, member.stream);
        } catch (error) {
          if (member.stream.errored) throw member.stream.errored;
          progress.mediaError = error;
          reporter.warn(`Media restore stopped: ${describe(error)} (the databases carry on).`);
        }
      }
    }
    if (dumpsLeft === 0 && mediaDone()) throw new StopReading();
  };
  if (byMember.size === 0 && !sink) return finishDatabases(p, result, kube, reporter, databases, progress, options);
  try {
    try {
      await readArchiveFrom(p.location.store, p.location.name, {
        keys: p.keys,
        signal: controller.signal,
        onManifest: (m) => {
          if (manifestDigest(m) !== p.archive.manifestDigest) {
            throw new EssError(`${p.location.name} changed since it was verified.`, { code: 'ARCHIVE_CHANGED' });
          }
        },
        onMember,
      });
    } catch (error) {
      if (!(error instanceof StopReading)) throw error;
    }
    if (dumpsLeft > 0) throw new EssError(`${dumpsLeft} database dump(s) were not found in the archive.`);
    if (sink && progress.mediaError === undefined) {
      try {
        await sink.finish();
        recordMedia(result, p, own!, sink);
      } catch (error) {
        progress.mediaError = error;
      }
    }
    const settled = await Promise.allSettled(running);
    const failed = settled.find((s) => s.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  } catch (error) {
    controller.abort(error);
    sink?.abort(error as Error);
    await Promise.allSettled(running);
    if (options.signal?.aborted) throw new InterruptedError(describe(options.signal.reason));
    throw jobError ?? error;
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
  }
  await finishDatabases(p, result, kube, reporter, databases, progress, options);
}

/** Steps 6 and the password re-sync, once every pg_restore succeeded. */
async function finishDatabases(
  p: PreparedRestore,
  result: RestoreResult,
  kube: KubeClient,
  reporter: Reporter,
  databases: RestoredDatabase[],
  progress: Progress,
  options: RestoreOptions,
): Promise<void> {
  const pgPlan = p.postgres;
  if (!pgPlan) return;
  result.databases = databases;
  const synapse = pgPlan.databases.find((d) => d.manifest.component === 'synapse');
  if (synapse && (await truncateOneTimeKeys(kube, pgPlan.pg, synapse.target))) {
    reporter.info(`Emptied ${ONE_TIME_KEYS_TABLE} in ${synapse.target}.`);
  }
  await resyncPasswords(p, pgPlan.databases, kube, result, options.signal);
  progress.dbComplete = true;
}

function pgTarget(pg: { namespace: string; pod: string; container: string }): ExecTarget {
  return { namespace: pg.namespace, pod: pg.pod, container: pg.container };
}

async function stageDump(
  kube: KubeClient,
  pg: { namespace: string; pod: string; container: string },
  file: string,
  member: ArchiveMember,
  signal: AbortSignal,
  reporter: Reporter,
): Promise<void> {
  await writeIntoPod(kube, pgTarget(pg), file, member.stream, member.size, {
    signal,
    onBytes: (n) => reporter.progress(`Staging ${member.name}`, n, member.size),
  });
}

async function resyncPasswords(
  p: PreparedRestore,
  databases: DatabasePlan[],
  kube: KubeClient,
  result: RestoreResult,
  signal?: AbortSignal,
): Promise<void> {
  const pg = p.postgres!.pg;
  for (const db of databases) {
    const component = passwordComponent(db.manifest);
    if (!component) continue;
    const synced = await resyncRolePassword(kube, pg, { release: p.target.release, component, role: db.owner, signal });
    if (!synced) {
      result.warnings.push(
        `No chart Secret holds the password of role ${db.owner}: it keeps the password from the backup (the Postgres pod's sidecar sets it again from your Secret when it restarts).`,
      );
    }
  }
}

async function openSink(
  kube: KubeClient,
  target: ExecTarget,
  storePath: string,
  source: MediaSource,
  signal: AbortSignal,
  reporter: Reporter,
): Promise<PodTarSink> {
  const extractor = await tarExtractor(kube, target, storePath);
  const sink = new PodTarSink(kube, target, {
    extractor,
    storePath,
    totalBytes: source.tarBytes,
    dirs: source.dirs,
    signal,
    onBytes: (n) => reporter.progress(`Media from ${source.archive}`, n, source.tarBytes),
  });
  await sink.start();
  return sink;
}

function recordMedia(result: RestoreResult, p: PreparedRestore, source: MediaSource, sink: PodTarSink): void {
  const media = p.media!;
  result.media ??= {
    files: 0,
    bytes: 0,
    via: media.via,
    pod: media.via === 'media-pod' ? (media.pod as string) : 'helper pod',
    archives: [],
  };
  result.media.files += sink.files;
  result.media.bytes += sink.bytes;
  result.media.archives.push(source.archive);
}

/** The media a parent archive holds for this restore. */
async function restoreMediaFrom(
  p: PreparedRestore,
  source: MediaSource,
  kube: KubeClient,
  target: ExecTarget,
  options: RestoreOptions,
  reporter: Reporter,
  result: RestoreResult,
): Promise<void> {
  const controller = new AbortController();
  const onAbort = () => controller.abort(options.signal?.reason);
  options.signal?.addEventListener('abort', onAbort, { once: true });
  reporter.info(`Restoring ${source.files} media file(s) from ${source.archive}…`);
  const sink = await openSink(kube, target, p.media!.storePath, source, controller.signal, reporter);
  try {
    await readArchiveFrom(p.location.store, source.archive, {
      keys: p.keys,
      signal: controller.signal,
      onMember: async (member) => {
        const path = mediaPathOf(member.name);
        if (path !== undefined && source.paths?.has(path)) {
          await sink.addFile(path, member.size, member.mtime, member.stream);
        }
      },
    });
    await sink.finish();
    recordMedia(result, p, source, sink);
  } catch (error) {
    sink.abort(error as Error);
    throw options.signal?.aborted ? new InterruptedError(describe(options.signal.reason)) : error;
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
  }
}

/** Step 9: row counts of every restored table against the manifest, and Synapse readiness. */
async function postChecks(
  p: PreparedRestore,
  result: RestoreResult,
  kube: KubeClient,
  stopped: readonly StoppedWorkload[],
  report: RestoreReport | undefined,
): Promise<void> {
  if (p.postgres) {
    for (const db of p.postgres.databases) {
      const counts = await countRows(kube, p.postgres.pg, db.target);
      const rows = compareRowCounts(db.manifest, counts);
      const restored = result.databases?.find((d) => d.name === db.target);
      if (restored) restored.rows = rows;
      const problems = rows.mismatches.length + rows.missingTables.length;
      result.postChecks.push({
        name: `${db.target}: row counts`,
        ok: problems === 0,
        expected: rows.skipped ? 'not compared' : `${db.manifest.tables.length} tables as in the manifest`,
        actual: rows.skipped
          ? rows.skipped
          : problems === 0
            ? `${rows.compared} tables match`
            : [
                ...rows.mismatches.map((m) => `${m.table}: ${m.actual} (expected ${m.expected})`),
                ...rows.missingTables.map((t) => `${t}: missing`),
              ].join('; '),
      });
      if (problems > 0) result.failed = true;
      if (rows.skipped) result.warnings.push(`${db.target}: ${rows.skipped}; row counts were not compared.`);
      if (db.manifest.component === 'synapse') {
        const otk = counts.get(`public.${ONE_TIME_KEYS_TABLE}`) ?? 0;
        result.postChecks.push({ name: `${db.target}: one-time keys`, ok: otk === 0, expected: 0, actual: otk });
        if (otk !== 0) result.failed = true;
      }
    }
  }
  const synapse = p.writers.filter((w) => w.component === 'synapse');
  if (synapse.length > 0) {
    const live = await Promise.all(synapse.map((w) => kube.get<Workload>(w.kind, w.namespace, w.name)));
    const held = stopped.filter((s) => s.outcome === 'held' || s.outcome === 'already-zero').map((s) => s.name);
    const notReady = live
      .filter((w): w is Workload => w !== undefined)
      .filter((w) => !held.includes(w.metadata.name))
      .filter((w) => (w.status?.readyReplicas ?? 0) < (w.spec.replicas ?? 1))
      .map((w) => w.metadata.name);
    result.postChecks.push({
      name: 'Synapse ready',
      ok: notReady.length === 0,
      expected: 'all pods ready',
      actual: notReady.length === 0 ? 'ready' : `not ready: ${notReady.join(', ')}`,
    });
    if (notReady.length > 0 && !report?.notReady.length) {
      result.warnings.push(`Not ready yet: ${notReady.join(', ')} (check with ess status).`);
    }
  }
}
