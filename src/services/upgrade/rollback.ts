/**
 * `ess upgrade rollback`: the "Stuck upgrade" runbook, with proofs. Find the stuck revision, prove nothing is still
 * working on it, choose the last good revision and check it can run on the live database and deployment markers,
 * then either `helm rollback` to it or (without helm) mark the stuck revision failed the way Flux does.
 */
import type { Writable } from 'node:stream';
import { MATRIX_STACK_CHART_REF, names } from '../../lib/deployment/components.js';
import { discoverDeployment } from '../../lib/deployment/discover.js';
import { EssError, ExitCode, ExternalToolError, InterruptedError, PreconditionError } from '../../lib/errors.js';
import {
  AUTH_MARKER_KEY,
  authMarkerOfRelease,
  type DecodedRevision,
  decodeRevision,
  markerAllows,
  operationCompleted,
  type RevisionSummary,
  synapseVersionOfRelease,
} from '../../lib/helm/inspect.js';
import { listReleaseRecords, PENDING_STATUSES, type ReleaseStatus } from '../../lib/helm/release.js';
import { setRecordStatus } from '../../lib/helm/release-edit.js';
import { type HelmRunner, rollbackArgv, shellQuote } from '../../lib/helm/runner.js';
import type { KubeClient } from '../../lib/kube/client.js';
import type { ConfigMap, Job, Lease } from '../../lib/kube/types.js';
import { acquireLock, activeHolder } from '../../lib/lock.js';
import { formatDuration, type Reporter } from '../../lib/output/log.js';
import { psqlInPod } from '../../lib/postgres/in-pod.js';
import { synapseSchemaFacts } from '../../lib/synapse/schema-versions.js';
import { releaseNotFound } from './history.js';

/** What to recover and how (from the command's flags). */
export interface RollbackOptions {
  namespace: string;
  release: string;
  /** Roll back to this revision instead of the newest good one. */
  revision?: number;
  /** A pending revision must be unchanged for this long before ess treats it as abandoned. */
  staleAfterMs: number;
  /** Go duration for `helm rollback --timeout`. */
  timeout: string;
  /** Turn refusals about the target (schema, markers, not a good revision) into warnings. */
  force: boolean;
  /** Mark the stuck revision failed even when helm is available. */
  markFailed: boolean;
  dryRun: boolean;
  /** Passed on to helm so that it acts on the same cluster as ess. */
  kubeconfig?: string;
  context?: string;
}

/** Side effects of the rollback service, injected. */
export interface RollbackDeps {
  reporter: Reporter;
  helm: HelmRunner;
  /** Receives helm's output as it runs (ess's stderr: it is progress, not a result). */
  helmOutput: Writable;
  /** Shows the plan and asks for confirmation; throws to cancel. Not called with --dry-run. */
  confirm: (plan: RollbackPlan) => Promise<void>;
  now?: () => Date;
  signal?: AbortSignal;
}

/**
 * How a failed check counts: `hard` blocks always; `refusal` blocks unless --force; `info` never blocks (target
 * checks when ess only marks the stuck revision failed and does not roll back).
 */
export type CheckSeverity = 'hard' | 'refusal' | 'info';

/** One proof or refusal: what was checked and what ess found. */
export interface RollbackCheck {
  id: 'hook-jobs' | 'age' | 'lock' | 'target' | 'schema' | 'marker';
  ok: boolean;
  severity: CheckSeverity;
  detail: string;
}

/** A row of the table explaining the choice of target. */
export interface CandidateRow extends RevisionSummary {
  synapseVersion?: string;
  /** Why this revision is or is not the target. */
  verdict: string;
}

/** Everything ess found out and intends to do; shown before confirmation. */
export interface RollbackPlan {
  namespace: string;
  release: string;
  /** The REVISION argument, when one was given. */
  requestedRevision?: number;
  stuck: RevisionSummary & { ageSeconds?: number };
  target?: RevisionSummary & { synapseVersion?: string; synapseSource?: string; schemaVersion?: number };
  /** Every revision, newest first, with the reason it was or was not chosen. */
  candidates: CandidateRow[];
  database?: { schemaVersion?: number; compatVersion?: number; pod?: string };
  /** Live value of the MATRIX_STACK_MSC3861 deployment marker. */
  liveMarker?: string;
  checks: RollbackCheck[];
  action: 'helm-rollback' | 'mark-failed';
  /** helm-rollback: the exact command ess runs. mark-failed: what ess changes. */
  command: string;
  /** Refusals ignored because of --force. */
  forced: string[];
}

/** `ess upgrade rollback` result (also its --json output). */
export interface RollbackResult extends RollbackPlan {
  dryRun: boolean;
  applied: boolean;
  /** The newest revision after acting. */
  after?: RevisionSummary;
  next: string[];
  warnings: string[];
}

/** A refused rollback; carries the plan so the command can show why. */
export class RollbackRefusedError extends PreconditionError {
  constructor(
    readonly plan: RollbackPlan,
    failed: RollbackCheck[],
    next: string[],
  ) {
    super(`Refusing to ${describeAction(plan)}:\n${failed.map((c) => `  - ${c.detail}`).join('\n')}`, {
      code: 'ROLLBACK_REFUSED',
      next,
      details: { plan },
    });
    this.name = 'RollbackRefusedError';
  }
}

const GOOD: ReleaseStatus[] = ['deployed', 'superseded'];
const DB_QUERY =
  'SELECT (SELECT version FROM schema_version LIMIT 1), (SELECT compat_version FROM schema_compat_version LIMIT 1)';

function describeAction(plan: RollbackPlan): string {
  if (plan.action === 'mark-failed')
    return `mark revision ${plan.stuck.revision} of ${plan.namespace}/${plan.release} failed`;
  const revision = plan.target?.revision ?? plan.requestedRevision;
  return revision === undefined
    ? `roll back ${plan.namespace}/${plan.release} (no revision to return to)`
    : `roll back ${plan.namespace}/${plan.release} to revision ${revision}`;
}

/** Whether a hook Job is still doing something (not Complete/Failed, with or waiting for pods). */
function jobRunning(job: Job): boolean {
  const status = job.status as (Job['status'] & { conditions?: { type: string; status: string }[] }) | undefined;
  const finished =
    Boolean(status?.completionTime) ||
    (status?.conditions ?? []).some((c) => (c.type === 'Complete' || c.type === 'Failed') && c.status === 'True');
  if (finished) return false;
  if ((job as Job & { spec?: { suspend?: boolean } }).spec?.suspend) return false;
  return (status?.active ?? 0) > 0 || !status?.succeeded;
}

async function checkHookJobs(kube: KubeClient, o: RollbackOptions): Promise<RollbackCheck> {
  const jobNames = names.hookJobs(o.release);
  const jobs = await Promise.all(jobNames.map((n) => kube.get<Job>('Job', o.namespace, n)));
  const running = jobs.filter((j): j is Job => j !== undefined && jobRunning(j)).map((j) => j.metadata.name);
  return running.length
    ? { id: 'hook-jobs', ok: false, severity: 'hard', detail: `Hook Job still running: ${running.join(', ')}.` }
    : { id: 'hook-jobs', ok: true, severity: 'hard', detail: `No hook Job running (${jobNames.join(', ')}).` };
}

function checkAge(stuck: DecodedRevision, o: RollbackOptions, now: Date): [RollbackCheck, number | undefined] {
  const r = stuck.record;
  const changed = r.modifiedAt ?? r.createdAt ?? (stuck.summary.updated ? new Date(stuck.summary.updated) : undefined);
  const ageMs = changed ? now.getTime() - changed.getTime() : undefined;
  const ageSeconds = ageMs === undefined ? undefined : Math.floor(ageMs / 1000);
  const limit = formatDuration(o.staleAfterMs);
  if (!PENDING_STATUSES.includes(stuck.summary.status as ReleaseStatus)) {
    return [
      { id: 'age', ok: true, severity: 'hard', detail: `Revision ${r.revision} is failed: final, age not needed.` },
      ageSeconds,
    ];
  }
  if (ageMs === undefined) {
    const detail = `Cannot tell when revision ${r.revision} last changed (no modifiedAt/createdAt label).`;
    return [{ id: 'age', ok: o.staleAfterMs === 0, severity: 'hard', detail }, ageSeconds];
  }
  const ok = ageMs >= o.staleAfterMs;
  const detail = ok
    ? `Revision ${r.revision} unchanged for ${formatDuration(ageMs)} (stale after ${limit}).${ageMs < RUNBOOK_UPGRADE_TIMEOUT_MS ? ` ${YOUNG_WARNING}` : ''}`
    : `Revision ${r.revision} changed ${formatDuration(ageMs)} ago, less than --stale-after ${limit}: helm may still be working.`;
  return [{ id: 'age', ok, severity: 'hard', detail }, ageSeconds];
}

/**
 * The runbook upgrades with `helm upgrade --wait --timeout 1h`. While helm waits for the workloads no hook Job runs,
 * so a pending revision younger than that may still belong to a live helm, whatever --stale-after says.
 */
const RUNBOOK_UPGRADE_TIMEOUT_MS = 60 * 60_000;

const YOUNG_WARNING =
  "It is younger than 1h: a `helm upgrade --wait --timeout 1h` (the runbook's command) may still be running, " +
  'and no hook Job runs while helm waits. Make sure no helm process is still working on this release.';

async function checkLock(kube: KubeClient, o: RollbackOptions, now: Date): Promise<RollbackCheck> {
  const name = names.essLock(o.release);
  const holder = activeHolder(await kube.get<Lease>('Lease', o.namespace, name), now);
  return holder
    ? {
        id: 'lock',
        ok: false,
        severity: 'hard',
        detail: `The ess lock ${name} is held by ${holder.holder}${holder.operation ? ` (${holder.operation})` : ''}.`,
      }
    : { id: 'lock', ok: true, severity: 'hard', detail: `The ess lock ${name} is free.` };
}

function isGood(rev: DecodedRevision): boolean {
  return GOOD.includes(rev.summary.status as ReleaseStatus) && operationCompleted(rev.summary.description);
}

/** Picks the target and explains every revision, newest first. */
function chooseTarget(
  revisions: DecodedRevision[],
  stuck: DecodedRevision,
  o: RollbackOptions,
  targetSeverity: CheckSeverity,
): { target?: DecodedRevision; rows: CandidateRow[]; check: RollbackCheck } {
  const older = revisions.filter((r) => r.summary.revision < stuck.summary.revision).reverse();
  let target: DecodedRevision | undefined;
  let check: RollbackCheck;
  if (o.revision !== undefined) {
    target = older.find((r) => r.summary.revision === o.revision);
    if (!target) {
      const why = o.revision >= stuck.summary.revision ? 'is not older than the stuck revision' : 'does not exist';
      check = { id: 'target', ok: false, severity: 'hard', detail: `Revision ${o.revision} ${why}.` };
    } else if (isGood(target)) {
      check = { id: 'target', ok: true, severity: targetSeverity, detail: `Revision ${o.revision}, as requested.` };
    } else {
      const description = (target.summary.description ?? '').replace(/\s+/g, ' ').trim();
      const detail = `Revision ${o.revision} is ${target.summary.status} ("${description}"), not a completed deploy.`;
      check = { id: 'target', ok: false, severity: targetSeverity, detail };
    }
  } else {
    target = older.find(isGood);
    check = target
      ? {
          id: 'target',
          ok: true,
          severity: targetSeverity,
          detail: `Revision ${target.summary.revision}: newest deployed/superseded revision whose operation completed.`,
        }
      : {
          id: 'target',
          ok: false,
          severity: targetSeverity === 'info' ? 'info' : 'hard',
          detail: `No older revision is deployed/superseded with a completed operation: nothing to roll back to.`,
        };
  }
  const rows = [stuck, ...older].map((rev): CandidateRow => {
    const s = rev.summary;
    let verdict: string;
    if (rev === stuck) verdict = `stuck (${s.status})`;
    else if (rev === target) verdict = 'TARGET';
    else if (target && s.revision < target.summary.revision) verdict = 'older than target';
    else if (s.decodeError) verdict = 'skipped: release not readable';
    else if (!GOOD.includes(s.status as ReleaseStatus)) verdict = `skipped: ${s.status}`;
    else if (!operationCompleted(s.description)) verdict = 'skipped: operation did not complete';
    else verdict = 'skipped: newer than the requested revision';
    const synapse = rev.release ? synapseVersionOfRelease(rev.release, o.release).version : undefined;
    return { ...s, synapseVersion: synapse, verdict };
  });
  return { target, rows, check };
}

async function readDatabaseSchema(
  kube: KubeClient,
  o: RollbackOptions,
): Promise<{ schemaVersion?: number; compatVersion?: number; pod?: string; error?: string }> {
  let deployment: Awaited<ReturnType<typeof discoverDeployment>>;
  try {
    deployment = await discoverDeployment(kube, { namespace: o.namespace, release: o.release });
  } catch (error) {
    return { error: `discovering the deployment failed: ${(error as Error).message}` };
  }
  const pg = deployment.postgres;
  if (pg?.mode !== 'bundled') {
    return { error: 'the Synapse database is not in the bundled Postgres, so ess cannot read its schema version' };
  }
  const db = pg.databases.find((d) => d.component === 'synapse')?.name ?? 'synapse';
  try {
    const rows = await psqlInPod(
      kube,
      { namespace: o.namespace, pod: pg.pod, container: pg.container, superuser: pg.superuser },
      DB_QUERY,
      db,
    );
    const [schema, compat] = rows[0] ?? [];
    return {
      schemaVersion: schema ? Number(schema) : undefined,
      compatVersion: compat ? Number(compat) : undefined,
      pod: pg.pod,
    };
  } catch (error) {
    return { pod: pg.pod, error: `reading the schema version in ${pg.pod} failed: ${(error as Error).message}` };
  }
}

function checkSchema(
  plan: RollbackPlan,
  db: { schemaVersion?: number; compatVersion?: number; error?: string },
  severity: CheckSeverity,
): RollbackCheck {
  const t = plan.target;
  const fail = (detail: string): RollbackCheck => ({ id: 'schema', ok: false, severity, detail });
  if (!t) return { id: 'schema', ok: true, severity: 'info', detail: 'No target: schema not checked.' };
  if (!t.synapseVersion) return fail(`Cannot tell which Synapse revision ${t.revision} runs.`);
  const facts = synapseSchemaFacts(t.synapseVersion);
  if (!facts) return fail(`Synapse ${t.synapseVersion} (revision ${t.revision}) is not in ess's schema table.`);
  if (db.error || db.compatVersion === undefined) {
    return fail(`Cannot read the live database's schema compat version: ${db.error ?? 'no row'}.`);
  }
  const what = `Synapse ${facts.version} (schema ${facts.exact ? '' : '≥ '}${facts.schemaVersion})`;
  if (facts.schemaVersion >= db.compatVersion) {
    return {
      id: 'schema',
      ok: true,
      severity,
      detail: `${what} can use the database (schema ${db.schemaVersion ?? '?'}, compat ${db.compatVersion}).`,
    };
  }
  return fail(
    `${what} is older than the database's compat version ${db.compatVersion}: it would refuse to start ` +
      `("database is too new for the server").`,
  );
}

function checkMarker(
  plan: RollbackPlan,
  target: DecodedRevision | undefined,
  o: RollbackOptions,
  severity: CheckSeverity,
): RollbackCheck {
  const requirement = target?.release ? authMarkerOfRelease(target.release, o.release) : undefined;
  if (!target || !requirement) {
    return { id: 'marker', ok: true, severity, detail: 'The target sets no auth-mode deployment marker.' };
  }
  const live = plan.liveMarker;
  const ok = markerAllows(requirement, live);
  const detail = ok
    ? `Auth-mode marker ${live ?? '(none)'} is compatible with revision ${target.summary.revision} (${requirement.value}).`
    : `Revision ${target.summary.revision} runs ${requirement.value} (accepts ${requirement.allowed.join(', ') || '-'}) ` +
      `but the deployment has moved on to ${live} (${AUTH_MARKER_KEY} in ${names.markersConfigMap(o.release)}): ` +
      `a rollback runs no hooks, so nothing would stop it.`;
  return { id: 'marker', ok, severity, detail };
}

function refusalHints(failed: RollbackCheck[], o: RollbackOptions, plan: RollbackPlan): string[] {
  const hints = new Set<string>();
  for (const c of failed) {
    if (c.id === 'hook-jobs') hints.add(`Wait for the hook Jobs to finish: kubectl -n ${o.namespace} get jobs`);
    if (c.id === 'age')
      hints.add('Wait until the revision is stale, or lower --stale-after if you are sure helm has exited');
    if (c.id === 'lock') hints.add('Wait for the other ess run to finish (the lock expires by itself if it crashed)');
    if (c.id === 'target') {
      hints.add(
        o.revision === undefined && !plan.target
          ? 'With no good revision to return to, mark the stuck one failed instead: add --mark-failed'
          : 'Pick another revision: ess upgrade history, then ess upgrade rollback REVISION',
      );
    }
    if (c.severity === 'refusal') hints.add('If you are sure, re-run with --force');
  }
  hints.add('See the plan: ess upgrade rollback --dry-run');
  return [...hints];
}

function upgradeHint(o: RollbackOptions, chartVersion: string | undefined): string {
  const version = chartVersion ? ` --version ${chartVersion}` : '';
  return `helm upgrade --install ${o.release} ${MATRIX_STACK_CHART_REF}${version} -n ${o.namespace} --values <your values files> --wait --timeout ${o.timeout}`;
}

/** helm rollback was interrupted (helm got the signal too): the release may be left pending-rollback. */
function interruptedRollback(o: RollbackOptions, signal: string, result: { exitCode: number }): EssError {
  const target = `-n ${o.namespace} --release ${o.release}`;
  return new EssError(
    `Interrupted by ${signal} while helm rollback was running; helm was sent SIGINT and exited (${result.exitCode}). ` +
      'The release may now be stuck in pending-rollback.',
    {
      exitCode: ExitCode.INTERRUPTED,
      code: 'INTERRUPTED',
      next: [
        `See where it stopped: ess upgrade history ${target}`,
        `If the newest revision is pending-rollback, once it is older than --stale-after: ess upgrade rollback ${target}`,
        `Or unblock helm without rolling back: ess upgrade rollback --mark-failed ${target}`,
      ],
    },
  );
}

/** Plans and (unless --dry-run) performs the recovery of a stuck Helm upgrade. */
export async function rollbackStuckUpgrade(
  kube: KubeClient,
  o: RollbackOptions,
  deps: RollbackDeps,
): Promise<RollbackResult> {
  const now = deps.now ?? (() => new Date());
  const records = await listReleaseRecords(kube, o.namespace, o.release);
  if (records.length === 0) return releaseNotFound(kube, o.namespace, o.release);
  const revisions = records.map(decodeRevision);
  const stuck = revisions[revisions.length - 1];
  const status = stuck.summary.status as ReleaseStatus;
  if (stuck.summary.decodeError) {
    throw new EssError(`Cannot decode the newest revision (${stuck.record.secretName}): ${stuck.summary.decodeError}`, {
      code: 'RELEASE_UNREADABLE',
    });
  }
  if (!PENDING_STATUSES.includes(status) && status !== 'failed') {
    throw new PreconditionError(
      `Revision ${stuck.summary.revision} of ${o.namespace}/${o.release} is ${status}: there is no stuck or failed upgrade to recover.`,
      {
        code: 'NOT_STUCK',
        next: [
          `See the history: ess upgrade history -n ${o.namespace} --release ${o.release}`,
          `To roll back a healthy release anyway, use helm: helm rollback ${o.release} REVISION -n ${o.namespace}`,
        ],
      },
    );
  }
  const helmPath = await deps.helm.available();
  const action: RollbackPlan['action'] = o.markFailed || !helmPath ? 'mark-failed' : 'helm-rollback';
  if (status === 'failed' && action === 'mark-failed') {
    throw new PreconditionError(
      `Revision ${stuck.summary.revision} is already failed, so nothing blocks helm; ` +
        (helmPath
          ? 'there is nothing to mark.'
          : 'rolling back to an older revision needs helm, which is not on PATH.'),
      {
        code: helmPath ? 'ALREADY_FAILED' : 'HELM_NOT_FOUND',
        next: [
          `Upgrade again: ${upgradeHint(o, stuck.summary.chartVersion)}`,
          ...(helmPath ? ['Or roll back with helm: re-run without --mark-failed'] : ['Or install helm and re-run']),
        ],
      },
    );
  }
  deps.reporter.info(
    `Revision ${stuck.summary.revision} is ${status}${helmPath ? '' : ' (helm not on PATH: ess will mark it failed)'}.`,
  );

  const targetSeverity: CheckSeverity = action === 'helm-rollback' ? 'refusal' : 'info';
  const { target, rows, check: targetCheck } = chooseTarget(revisions, stuck, o, targetSeverity);
  const [ageCheck, ageSeconds] = checkAge(stuck, o, now());
  const [jobsCheck, lockCheck, markers] = await Promise.all([
    checkHookJobs(kube, o),
    checkLock(kube, o, now()),
    kube.get<ConfigMap>('ConfigMap', o.namespace, names.markersConfigMap(o.release)),
  ]);
  const targetSynapse = target?.release ? synapseVersionOfRelease(target.release, o.release) : undefined;
  const helmArgv = target ? rollbackArgv({ ...o, revision: target.summary.revision }) : undefined;
  const plan: RollbackPlan = {
    namespace: o.namespace,
    release: o.release,
    requestedRevision: o.revision,
    stuck: { ...stuck.summary, ageSeconds },
    target: target && {
      ...target.summary,
      synapseVersion: targetSynapse?.version,
      synapseSource: targetSynapse?.source,
      schemaVersion: targetSynapse?.version ? synapseSchemaFacts(targetSynapse.version)?.schemaVersion : undefined,
    },
    candidates: rows,
    liveMarker: markers?.data?.[AUTH_MARKER_KEY],
    checks: [],
    action,
    command:
      action === 'helm-rollback' && helmArgv
        ? shellQuote(['helm', ...helmArgv])
        : `set status "failed" (label and release body) on Secret ${stuck.record.secretName}`,
    forced: [],
  };
  const db = target ? await readDatabaseSchema(kube, o) : {};
  plan.database = target
    ? { schemaVersion: db.schemaVersion, compatVersion: db.compatVersion, pod: db.pod }
    : undefined;
  plan.checks = [
    jobsCheck,
    ageCheck,
    lockCheck,
    targetCheck,
    checkSchema(plan, db, targetSeverity),
    checkMarker(plan, target, o, targetSeverity),
  ];

  const failed = plan.checks.filter((c) => !c.ok && c.severity !== 'info');
  const blocking = failed.filter((c) => c.severity === 'hard' || !o.force);
  if (blocking.length) throw new RollbackRefusedError(plan, blocking, refusalHints(blocking, o, plan));
  const warnings: string[] = [];
  if (
    ageCheck.ok &&
    ageSeconds !== undefined &&
    ageSeconds * 1000 < RUNBOOK_UPGRADE_TIMEOUT_MS &&
    PENDING_STATUSES.includes(status)
  ) {
    warnings.push(
      `Revision ${stuck.summary.revision} changed ${formatDuration(ageSeconds * 1000)} ago. ${YOUNG_WARNING}`,
    );
  }
  for (const c of failed) {
    plan.forced.push(c.detail);
    warnings.push(`--force: ignoring: ${c.detail}`);
  }
  const targetUsable = target && plan.checks.every((c) => c.ok || c.severity !== 'info');
  for (const c of plan.checks.filter((x) => !x.ok && x.severity === 'info')) warnings.push(c.detail);
  const rollbackHint =
    targetUsable && helmArgv ? `Or roll back instead: ${shellQuote(['helm', ...helmArgv])}` : undefined;
  const nextAfterMark = [
    `Upgrade again: ${upgradeHint(o, stuck.summary.chartVersion)}`,
    ...(rollbackHint ? [rollbackHint] : []),
  ];

  if (o.dryRun) {
    return {
      ...plan,
      dryRun: true,
      applied: false,
      next: [`Re-run without --dry-run to ${describeAction(plan)}`],
      warnings,
    };
  }
  await deps.confirm(plan);
  const lock = await acquireLock(kube, {
    namespace: o.namespace,
    release: o.release,
    operation: 'upgrade rollback',
    now,
  });
  let next: string[];
  try {
    if (action === 'helm-rollback' && helmArgv) {
      // A signal that came before helm starts stops here: helm never ran, the release is as it was.
      if (deps.signal?.aborted) throw new InterruptedError(String(deps.signal.reason?.message ?? 'signal'));
      deps.reporter.info(`Running: ${plan.command}`);
      const result = await deps.helm
        .run(helmArgv, { output: deps.helmOutput, signal: deps.signal })
        .catch((error: Error) => {
          throw new ExternalToolError('helm', 'not started', error.message, {
            next: ['Check the helm binary on PATH'],
          });
        });
      // Only an interrupted helm may have left the release pending-rollback; one that finished is a result.
      if (deps.signal?.aborted && result.exitCode !== 0) {
        throw interruptedRollback(o, String(deps.signal.reason?.message ?? 'signal'), result);
      }
      if (result.exitCode !== 0) {
        throw new ExternalToolError('helm', result.exitCode, result.stderrTail, {
          next: [
            `See what happened: ess upgrade history -n ${o.namespace} --release ${o.release}`,
            'Fix the cause shown above, then re-run ess upgrade rollback',
          ],
        });
      }
      next = [
        `Check the deployment: ess status -n ${o.namespace} --release ${o.release}`,
        `When the cause of the failed upgrade is fixed: ${upgradeHint(o, undefined)}`,
      ];
    } else {
      await setRecordStatus(kube, stuck.record, {
        namespace: o.namespace,
        status: 'failed',
        description: `Release unlocked from stale '${status}' state by ess`,
        now: now(),
      });
      deps.reporter.info(`Marked revision ${stuck.summary.revision} failed (${stuck.record.secretName}).`);
      next = nextAfterMark;
    }
  } finally {
    await lock.release();
  }
  const after = (await listReleaseRecords(kube, o.namespace, o.release)).at(-1);
  return {
    ...plan,
    dryRun: false,
    applied: true,
    after: after ? decodeRevision(after).summary : undefined,
    next,
    warnings,
  };
}
