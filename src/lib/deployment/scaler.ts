/**
 * Crash-safe scaling of StatefulSets and Deployments to 0 and back, shared by `ess stop`/`ess start`, backup,
 * restore and migrate import.
 *
 * The replica count lives on the object, never only in memory: before a workload is scaled to 0 its count is
 * written to the annotation `ess.element.io/replicas-before-stop` (plus `ess.element.io/stopped-by`), and only then
 * is `spec.replicas` set to 0. Every workload of a run is recorded before the first one is scaled, so a process
 * killed at any point leaves enough on the cluster for `ess start` (or {@link restoreWorkloads}) to put everything
 * back. Restoring sets the count and removes both annotations in one merge patch, so it is atomic per workload.
 */
import { hostname } from 'node:os';
import { EssError, InterruptedError } from '../errors.js';
import type { KubeClient } from '../kube/client.js';
import { isConflict, KubeApiError, KubeConnectionError } from '../kube/client.js';
import type { Pod, Workload } from '../kube/types.js';
import { formatDuration, type Reporter, silentReporter } from '../output/log.js';
import { ANNOTATIONS, componentById, targetFlags } from './components.js';

/** A time source and sleeper; injected so tests can run retries and timeouts without waiting. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Resolves after `ms`; rejects with an {@link InterruptedError} when `signal` aborts first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(interruption(signal));
        return;
      }
      const onAbort = () => {
        clearTimeout(timer);
        reject(interruption(signal as AbortSignal));
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

/** The error a run stops with when its AbortSignal fires (SIGINT/SIGTERM in the CLI). */
export function interruption(signal: AbortSignal): InterruptedError {
  const reason: unknown = signal.reason;
  if (reason instanceof InterruptedError) return reason;
  return new InterruptedError(reason instanceof Error && reason.message ? reason.message : 'a signal');
}

/** One workload to scale. {@link WorkloadInfo} from discovery fits. */
export interface WorkloadRef {
  kind: 'StatefulSet' | 'Deployment';
  namespace: string;
  name: string;
  /** Component id from the component table; gives the default phase. */
  component?: string;
  /** Lower stops first and starts last (default: the component's stopPhase, else 1). */
  phase?: number;
}

/** Content of the `ess.element.io/stopped-by` annotation. */
export interface StopMark {
  /** The operation, e.g. 'ess stop' or 'ess backup'. */
  by: string;
  reason: string;
  /** ISO time the mark was written. */
  at: string;
  /** True for `ess stop`: keep the workload at 0 until `ess start` (other operations leave it stopped). */
  hold: boolean;
  /** host:pid of the ess process. */
  holder: string;
}

export interface RetryOptions {
  /** Total attempts per API call (default 8). */
  attempts?: number;
  /** First backoff delay (default 250 ms); doubles up to `maxDelayMs`. */
  initialDelayMs?: number;
  maxDelayMs?: number;
}

export interface ScalerOptions {
  /** Who stops the workloads, e.g. 'ess stop' or 'ess backup' (recorded in the stopped-by annotation). */
  by: string;
  /** Free text for the annotation, e.g. 'backup to s3://…'. */
  reason?: string;
  /** Mark the stop as held (only `ess stop` does): operations such as backup then leave the workload at 0. */
  hold?: boolean;
  /** Per phase: how long to wait for pods to terminate or become ready (default 5 minutes). */
  timeoutMs?: number;
  /** Release of the deployment, so that next steps (`ess start -n … --release …`) point at it. */
  release?: string;
  /** Poll interval while waiting (default 500 ms). */
  pollMs?: number;
  /** Aborts stopping and waiting (not the restore of {@link withWorkloadsStopped}, which always runs). */
  signal?: AbortSignal;
  reporter?: Reporter;
  clock?: Clock;
  retry?: RetryOptions;
}

/**
 * What stopping did to one workload:
 * - `stopped`: the count was recorded and the workload scaled to 0;
 * - `adopted`: an earlier ess run (e.g. a crashed backup) had recorded the count; it was kept, the workload is at 0;
 * - `held`: `ess stop` had stopped it; left alone and not brought back by this run;
 * - `already-zero`: it was at 0 without a record (e.g. `replicas: 0` in values); left alone;
 * - `missing`: the object does not exist.
 */
export type StopOutcome = 'stopped' | 'adopted' | 'held' | 'already-zero' | 'missing';

export interface StoppedWorkload extends WorkloadRef {
  phase: number;
  outcome: StopOutcome;
  /** spec.replicas when ess looked at it. */
  replicasBefore: number;
  /** The recorded count ess will restore (stopped/adopted/held). */
  recordedReplicas?: number;
}

export interface RestoredWorkload extends WorkloadRef {
  phase: number;
  replicasBefore: number;
  /** spec.replicas after the restore. */
  replicas: number;
  /**
   * recorded: from the annotation; default: no record, `defaultReplicas` used; unchanged/missing: nothing done;
   * stale-record: it was running again, so its record was dropped and its count kept.
   */
  source: 'recorded' | 'default' | 'unchanged' | 'missing' | 'stale-record';
  /** Ready at the end (always true when not waiting or when replicas is 0). */
  ready: boolean;
}

export interface RestoreReport {
  workloads: RestoredWorkload[];
  /** Workloads that did not become ready within the timeout (only when `throwOnTimeout` is false). */
  notReady: string[];
  warnings: string[];
  /** From the first workload at 0 to everything back (ready, when waiting); undefined if nothing was stopped. */
  downtimeMs?: number;
}

export interface RestoreOptions {
  /** Wait for readiness phase by phase (default true). */
  wait?: boolean;
  timeoutMs?: number;
  /** Throw a {@link ScaleTimeoutError} when readiness times out (default true); else list them in `notReady`. */
  throwOnTimeout?: boolean;
}

export interface RestoreWorkloadsOptions extends Omit<ScalerOptions, 'by' | 'reason' | 'hold'>, RestoreOptions {
  /** Replicas for a workload at 0 that has no recorded count (`ess start synapse`); undefined leaves it at 0. */
  defaultReplicas?: number;
  /** Epoch ms the downtime started (for the report). */
  stoppedAt?: number;
}

/** A stop in progress or done; `restore()` puts back what this run stopped. */
export interface StopHandle {
  readonly workloads: readonly StoppedWorkload[];
  /** Epoch ms when the first workload was scaled to 0 (undefined when none was). */
  readonly firstStoppedAt: number | undefined;
  /**
   * Puts every workload this run stopped or adopted back to the count recorded on the object and clears the
   * annotations; idempotent (a workload without the annotation is left alone), retries connection loss and 5xx,
   * ignores the abort signal. Phases start in reverse order.
   */
  restore(options?: RestoreOptions): Promise<RestoreReport>;
}

/** Waiting for pods to terminate or become ready took longer than the timeout. */
export class ScaleTimeoutError extends EssError {
  constructor(
    readonly waitingFor: 'terminate' | 'become ready',
    readonly pending: string[],
    timeoutMs: number,
    namespace: string,
    release?: string,
  ) {
    super(`Timed out after ${formatDuration(timeoutMs)} waiting for ${pending.join(', ')} to ${waitingFor}.`, {
      code: 'SCALE_TIMEOUT',
      next: [
        `Look at the pods: kubectl get pods -n ${namespace}; kubectl describe pod -n ${namespace} POD`,
        waitingFor === 'terminate'
          ? `The replica counts are recorded: run \`ess start ${targetFlags(namespace, release)}\` to bring everything back`
          : 'The replica counts are restored; the pods may still become ready (check `ess status`)',
      ],
    });
    this.name = 'ScaleTimeoutError';
  }
}

/** Scaling a workload back up failed even after retries: it may still be at 0. */
export class RestoreFailedError extends EssError {
  constructor(
    readonly failed: { name: string; error: unknown }[],
    namespace: string,
    cause?: unknown,
    release?: string,
  ) {
    super(
      `Could not scale ${failed.map((f) => f.name).join(', ')} back up: ${failed
        .map((f) => (f.error as Error)?.message ?? String(f.error))
        .join('; ')}`,
      {
        code: 'RESTORE_FAILED',
        next: [
          `The replica counts are still recorded on the objects: run \`ess start ${targetFlags(namespace, release)}\` once the API server is reachable`,
        ],
        cause,
      },
    );
    this.name = 'RestoreFailedError';
  }
}

const DEFAULT_TIMEOUT_MS = 5 * 60_000;
const DEFAULT_POLL_MS = 500;
const CONFLICT_ATTEMPTS = 6;

type WorkloadObject = Workload & {
  metadata: Workload['metadata'] & { generation?: number };
  status?: NonNullable<Workload['status']> & { observedGeneration?: number };
};

/** The replica count recorded on an object, or undefined (absent or not a number). */
export function recordedReplicas(object: { metadata: { annotations?: Record<string, string> } }): number | undefined {
  const value = object.metadata.annotations?.[ANNOTATIONS.replicasBeforeStop];
  return value !== undefined && /^\d+$/.test(value.trim()) ? Number(value.trim()) : undefined;
}

/** The parsed stopped-by annotation, or undefined. */
export function readStopMark(object: { metadata: { annotations?: Record<string, string> } }): StopMark | undefined {
  const value = object.metadata.annotations?.[ANNOTATIONS.stoppedBy];
  if (!value) return undefined;
  try {
    const parsed = JSON.parse(value) as Partial<StopMark>;
    if (!parsed || typeof parsed !== 'object') return undefined;
    return {
      by: String(parsed.by ?? ''),
      reason: String(parsed.reason ?? ''),
      at: String(parsed.at ?? ''),
      hold: parsed.hold === true,
      holder: String(parsed.holder ?? ''),
    };
  } catch {
    return undefined;
  }
}

/** True for errors worth retrying: connection loss, 5xx and 429. */
export function isRetryable(error: unknown): boolean {
  return (
    error instanceof KubeConnectionError ||
    (error instanceof KubeApiError && (error.statusCode >= 500 || error.statusCode === 429))
  );
}

/**
 * Runs `fn`, retrying {@link isRetryable} errors with exponential backoff. `signal` aborts the waiting between
 * attempts (with an {@link InterruptedError}); other errors are thrown at once.
 */
export async function withRetry<T>(
  what: string,
  fn: () => Promise<T>,
  options: { retry?: RetryOptions; clock?: Clock; reporter?: Reporter; signal?: AbortSignal } = {},
): Promise<T> {
  const attempts = Math.max(1, options.retry?.attempts ?? 8);
  const clock = options.clock ?? systemClock;
  let delay = options.retry?.initialDelayMs ?? 250;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (attempt >= attempts || !isRetryable(error)) throw error;
      options.reporter?.warn(
        `${what} failed (${(error as Error).message}); retrying in ${formatDuration(delay)} (attempt ${attempt + 1}/${attempts})`,
      );
      await clock.sleep(delay, options.signal);
      delay = Math.min(delay * 2, options.retry?.maxDelayMs ?? 8_000);
    }
  }
}

function phaseOf(ref: WorkloadRef): number {
  return ref.phase ?? componentById(ref.component ?? '')?.stopPhase ?? 1;
}

/** Just the reference fields (callers may pass richer objects such as WorkloadInfo). */
function refOf(ref: WorkloadRef): WorkloadRef & { phase: number } {
  const out: WorkloadRef & { phase: number } = {
    kind: ref.kind,
    namespace: ref.namespace,
    name: ref.name,
    phase: phaseOf(ref),
  };
  if (ref.component !== undefined) out.component = ref.component;
  return out;
}

function label(ref: WorkloadRef): string {
  return `${ref.kind === 'StatefulSet' ? 'statefulset' : 'deployment'}/${ref.name}`;
}

/** A label selector string (`a=b,c=d`) from matchLabels; undefined when there are none. */
export function selectorString(matchLabels: Record<string, string> | undefined): string | undefined {
  const entries = Object.entries(matchLabels ?? {});
  return entries.length ? entries.map(([k, v]) => `${k}=${v}`).join(',') : undefined;
}

/** Groups by phase, ascending. */
function byPhase<T extends { phase: number }>(items: T[]): T[][] {
  const phases = [...new Set(items.map((i) => i.phase))].sort((a, b) => a - b);
  return phases.map((p) => items.filter((i) => i.phase === p));
}

/** Runs all, then throws the first failure (so one failure never stops the others half-way). */
async function settleAll<T>(tasks: Promise<T>[]): Promise<T[]> {
  const results = await Promise.allSettled(tasks);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}

interface Context {
  kube: KubeClient;
  reporter: Reporter;
  clock: Clock;
  retry?: RetryOptions;
  pollMs: number;
  timeoutMs: number;
  release?: string;
}

function contextOf(kube: KubeClient, options: Omit<ScalerOptions, 'by'>): Context {
  return {
    kube,
    reporter: options.reporter ?? silentReporter,
    clock: options.clock ?? systemClock,
    retry: options.retry,
    pollMs: options.pollMs ?? DEFAULT_POLL_MS,
    timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    release: options.release,
  };
}

/**
 * Polls until no pod matches any workload's selector (or, without a selector, status.replicas is 0). Throws
 * {@link ScaleTimeoutError} after `timeoutMs`, {@link InterruptedError} when `signal` aborts.
 */
async function waitPodsGone(
  ctx: Context,
  items: { ref: WorkloadRef; selector?: string }[],
  signal: AbortSignal | undefined,
): Promise<void> {
  if (items.length === 0) return;
  const deadline = ctx.clock.now() + ctx.timeoutMs;
  let pending = items;
  ctx.reporter.info(`Waiting for the pods of ${items.map((i) => label(i.ref)).join(', ')} to terminate`);
  for (;;) {
    const still: typeof items = [];
    for (const item of pending) {
      const { ref, selector } = item;
      const remaining = selector
        ? (await withRetry(`list pods of ${label(ref)}`, () => ctx.kube.list<Pod>('Pod', ref.namespace, selector), ctx))
            .length
        : ((
            await withRetry(
              `get ${label(ref)}`,
              () => ctx.kube.get<WorkloadObject>(ref.kind, ref.namespace, ref.name),
              ctx,
            )
          )?.status?.replicas ?? 0);
      if (remaining > 0) still.push(item);
    }
    if (still.length === 0) return;
    ctx.reporter.debug(`still terminating: ${still.map((i) => label(i.ref)).join(', ')}`);
    pending = still;
    if (ctx.clock.now() >= deadline) {
      throw new ScaleTimeoutError(
        'terminate',
        still.map((i) => `pods of ${label(i.ref)}`),
        ctx.timeoutMs,
        still[0].ref.namespace,
        ctx.release,
      );
    }
    await ctx.clock.sleep(ctx.pollMs, signal);
  }
}

/** True when the workload has `want` ready replicas and its controller saw the latest spec. */
function isReady(object: WorkloadObject | undefined, want: number): boolean {
  if (!object) return false;
  if (want === 0) return true;
  const status = object.status ?? {};
  const observed = status.observedGeneration ?? 0;
  return (status.readyReplicas ?? 0) >= want && observed >= (object.metadata.generation ?? 0);
}

/** Polls until every workload is ready; returns the names still not ready at the deadline. */
async function waitReady(
  ctx: Context,
  items: { ref: WorkloadRef; replicas?: number }[],
  signal: AbortSignal | undefined,
  timeoutMs: number,
): Promise<string[]> {
  const deadline = ctx.clock.now() + timeoutMs;
  let pending = items.filter((i) => (i.replicas ?? 1) > 0);
  if (pending.length) ctx.reporter.info(`Waiting for ${pending.map((i) => label(i.ref)).join(', ')} to become ready`);
  for (;;) {
    const still: typeof pending = [];
    for (const item of pending) {
      const object = await withRetry(
        `get ${label(item.ref)}`,
        () => ctx.kube.get<WorkloadObject>(item.ref.kind, item.ref.namespace, item.ref.name),
        { ...ctx, signal },
      );
      if (!isReady(object, item.replicas ?? object?.spec.replicas ?? 1)) still.push(item);
    }
    if (still.length === 0) return [];
    ctx.reporter.debug(`not ready yet: ${still.map((i) => label(i.ref)).join(', ')}`);
    pending = still;
    if (ctx.clock.now() >= deadline) return still.map((i) => label(i.ref));
    await ctx.clock.sleep(ctx.pollMs, signal);
  }
}

/** A replica record on a workload that runs again: it is replaced (stop) or dropped (start), never applied. */
export function staleRecordWarning(ref: WorkloadRef, recorded: number, running: number): string {
  return (
    `${label(ref)}: runs with ${running} replica${running === 1 ? '' : 's'}, so its recorded count ${recorded} is stale ` +
    '(helm upgrade or kubectl scale since ess stopped it) and is not used'
  );
}

function stopMark(options: ScalerOptions, clock: Clock): string {
  const mark: StopMark = {
    by: options.by,
    reason: options.reason ?? '',
    at: new Date(clock.now()).toISOString(),
    hold: options.hold === true,
    holder: `${hostname()}:${process.pid}`,
  };
  return JSON.stringify(mark);
}

/**
 * Records the replica count of one workload (never overwriting an existing record) and decides its outcome. Uses
 * the object's resourceVersion as a precondition, re-reading on conflict.
 */
async function recordOne(
  ctx: Context,
  ref: WorkloadRef,
  options: ScalerOptions,
): Promise<StoppedWorkload & { selector?: string }> {
  const plain = refOf(ref);
  for (let attempt = 1; ; attempt++) {
    const object = await withRetry(
      `get ${label(ref)}`,
      () => ctx.kube.get<WorkloadObject>(ref.kind, ref.namespace, ref.name),
      { ...ctx, signal: options.signal },
    );
    if (!object) return { ...plain, outcome: 'missing', replicasBefore: 0 };
    const replicas = object.spec.replicas ?? 1;
    const selector = selectorString(object.spec.selector?.matchLabels);
    const recorded = recordedReplicas(object);
    const mark = readStopMark(object);
    const base = { ...plain, replicasBefore: replicas, selector };
    let annotations: Record<string, string>;
    let outcome: StopOutcome;
    if (recorded !== undefined && (replicas === 0 || replicas === recorded)) {
      if (mark?.hold && replicas === 0 && !options.hold) {
        return { ...base, outcome: 'held', recordedReplicas: recorded };
      }
      // A record from an earlier run (a crashed backup, an earlier `ess stop`) holds the real count: keep it.
      annotations = { [ANNOTATIONS.stoppedBy]: stopMark(options, ctx.clock) };
      outcome = 'adopted';
      ctx.reporter.info(`${label(ref)}: keeping the replica count ${recorded} recorded by an earlier ess run`);
    } else if (recorded !== undefined) {
      // Running again since that record was made (helm upgrade resets replicas, or kubectl scale): the live count
      // is the truth, and going back to the old record later would scale a running workload.
      ctx.reporter.warn(staleRecordWarning(ref, recorded, replicas));
      annotations = {
        [ANNOTATIONS.replicasBeforeStop]: String(replicas),
        [ANNOTATIONS.stoppedBy]: stopMark(options, ctx.clock),
      };
      outcome = 'stopped';
    } else if (replicas === 0) {
      return { ...base, outcome: 'already-zero' };
    } else {
      const raw = object.metadata.annotations?.[ANNOTATIONS.replicasBeforeStop];
      if (raw !== undefined) ctx.reporter.warn(`${label(ref)}: ignoring the malformed record "${raw}"`);
      annotations = {
        [ANNOTATIONS.replicasBeforeStop]: String(replicas),
        [ANNOTATIONS.stoppedBy]: stopMark(options, ctx.clock),
      };
      outcome = 'stopped';
    }
    try {
      await withRetry(
        `record the replica count of ${label(ref)}`,
        () =>
          ctx.kube.patch(ref.kind, ref.namespace, ref.name, {
            metadata: { resourceVersion: object.metadata.resourceVersion, annotations },
          }),
        { ...ctx, signal: options.signal },
      );
    } catch (error) {
      if (isConflict(error) && attempt < CONFLICT_ATTEMPTS) continue;
      throw error;
    }
    return { ...base, outcome, recordedReplicas: outcome === 'adopted' ? (recorded ?? replicas) : replicas };
  }
}

/**
 * Puts one workload back: the recorded count (annotation), else `defaultReplicas` if it is at 0. Sets replicas and
 * removes the annotations in one patch guarded by resourceVersion, so a retried request cannot apply twice.
 */
async function restoreOne(
  ctx: Context,
  ref: WorkloadRef,
  defaultReplicas: number | undefined,
  signal: AbortSignal | undefined,
  warnings: string[],
): Promise<RestoredWorkload> {
  const plain = refOf(ref);
  for (let attempt = 1; ; attempt++) {
    const object = await withRetry(
      `get ${label(ref)}`,
      () => ctx.kube.get<WorkloadObject>(ref.kind, ref.namespace, ref.name),
      { ...ctx, signal, retry: ctx.retry ?? { attempts: 12 } },
    );
    if (!object) return { ...plain, replicasBefore: 0, replicas: 0, source: 'missing', ready: true };
    const current = object.spec.replicas ?? 1;
    const annotations = object.metadata.annotations ?? {};
    const hasRecord = ANNOTATIONS.replicasBeforeStop in annotations;
    const recorded = recordedReplicas(object);
    let target: number;
    let source: RestoredWorkload['source'];
    if (recorded !== undefined && current > 0 && current !== recorded) {
      // Started by something else since (helm upgrade, kubectl scale): keep what runs, drop the stale record.
      target = current;
      source = 'stale-record';
    } else if (recorded !== undefined) {
      target = recorded;
      source = 'recorded';
    } else if (hasRecord || (current === 0 && defaultReplicas !== undefined)) {
      target = defaultReplicas ?? 1;
      source = 'default';
    } else {
      return { ...plain, replicasBefore: current, replicas: current, source: 'unchanged', ready: true };
    }
    const patch = {
      metadata: {
        resourceVersion: object.metadata.resourceVersion,
        annotations: { [ANNOTATIONS.replicasBeforeStop]: null, [ANNOTATIONS.stoppedBy]: null },
      },
      spec: { replicas: target },
    };
    try {
      await withRetry(
        `scale ${label(ref)} to ${target}`,
        () => ctx.kube.patch(ref.kind, ref.namespace, ref.name, patch),
        { ...ctx, signal, retry: ctx.retry ?? { attempts: 12 } },
      );
    } catch (error) {
      if (isConflict(error) && attempt < CONFLICT_ATTEMPTS) continue;
      throw error;
    }
    if (source === 'stale-record') {
      warnings.push(staleRecordWarning(ref, recorded ?? 0, current));
      return { ...plain, replicasBefore: current, replicas: current, source, ready: true };
    }
    if (source === 'default') {
      const why = hasRecord
        ? `its record "${annotations[ANNOTATIONS.replicasBeforeStop]}" is not a number`
        : 'no count was recorded';
      const warning = `${label(ref)}: ${why}; started with ${target} replica${target === 1 ? '' : 's'}`;
      warnings.push(warning);
    } else {
      ctx.reporter.info(`${label(ref)}: scaled to ${target}`);
    }
    return { ...plain, replicasBefore: current, replicas: target, source, ready: false };
  }
}

/**
 * Brings workloads back from the counts recorded on them (the core of `ess start`), phases in reverse order, each
 * phase waiting for readiness before the next starts. A workload without a record is left alone unless it is at 0
 * and `defaultReplicas` is set. A failure on one workload does not stop the others: every workload is attempted,
 * then a {@link RestoreFailedError} (patch failed after retries) or {@link ScaleTimeoutError} (not ready in time)
 * is thrown.
 */
export async function restoreWorkloads(
  kube: KubeClient,
  workloads: readonly WorkloadRef[],
  options: RestoreWorkloadsOptions = {},
): Promise<RestoreReport> {
  const ctx = contextOf(kube, options);
  const wait = options.wait ?? true;
  const warnings: string[] = [];
  const failed: { name: string; error: unknown }[] = [];
  const notReady: string[] = [];
  const results: RestoredWorkload[] = [];
  const phases = byPhase(workloads.map(refOf)).reverse();
  let interrupted: unknown;
  for (const phase of phases) {
    const restored = await Promise.all(
      phase.map((ref) =>
        restoreOne(ctx, ref, options.defaultReplicas, options.signal, warnings).catch((error: unknown) => {
          if (error instanceof InterruptedError) interrupted ??= error;
          else failed.push({ name: label(ref), error });
          return undefined;
        }),
      ),
    );
    const done = restored.filter((r): r is RestoredWorkload => r !== undefined);
    results.push(...done);
    if (interrupted) break;
    if (!wait) {
      for (const r of done) r.ready = r.replicas === 0;
      continue;
    }
    const scaled = done.filter((r) => r.source === 'recorded' || r.source === 'default');
    try {
      const late = await waitReady(
        ctx,
        scaled.map((r) => ({ ref: r, replicas: r.replicas })),
        options.signal,
        options.timeoutMs ?? ctx.timeoutMs,
      );
      notReady.push(...late);
      for (const r of scaled) r.ready = !late.includes(label(r));
    } catch (error) {
      if (error instanceof InterruptedError) {
        interrupted = error;
        break;
      }
      failed.push({ name: phase.map(label).join(', '), error });
    }
  }
  if (interrupted) throw interrupted;
  if (failed.length) throw new RestoreFailedError(failed, workloads[0]?.namespace ?? '', undefined, ctx.release);
  const downtimeMs =
    options.stoppedAt !== undefined && notReady.length === 0 ? ctx.clock.now() - options.stoppedAt : undefined;
  if (notReady.length && (options.throwOnTimeout ?? true)) {
    throw new ScaleTimeoutError(
      'become ready',
      notReady,
      options.timeoutMs ?? ctx.timeoutMs,
      workloads[0]?.namespace ?? '',
      ctx.release,
    );
  }
  return { workloads: results, notReady, warnings, downtimeMs };
}

/**
 * Waits until no pod matches any item's selector (items without a selector: until the object is gone or reports
 * 0 replicas). Throws {@link ScaleTimeoutError} after `timeoutMs`, {@link InterruptedError} on abort.
 */
export function waitForPodsGone(
  kube: KubeClient,
  items: { ref: WorkloadRef; selector?: string }[],
  options: Omit<ScalerOptions, 'by'>,
): Promise<void> {
  return waitPodsGone(contextOf(kube, options), items, options.signal);
}

/**
 * Waits until every workload exists with `replicas` (default: its spec.replicas) ready and its latest spec observed.
 * Returns the kind/name of those still not ready when `timeoutMs` ran out.
 */
export function waitForReady(
  kube: KubeClient,
  items: { ref: WorkloadRef; replicas?: number }[],
  options: Omit<ScalerOptions, 'by'>,
): Promise<string[]> {
  const ctx = contextOf(kube, options);
  return waitReady(ctx, items, options.signal, ctx.timeoutMs);
}

/** Stops workloads phase by phase and keeps what it needs to restore them. Use via {@link stopWorkloads}. */
export class WorkloadScaler implements StopHandle {
  private stopped: (StoppedWorkload & { selector?: string })[] = [];
  private firstZero: number | undefined;
  private readonly ctx: Context;

  constructor(
    private readonly kube: KubeClient,
    private readonly refs: readonly WorkloadRef[],
    private readonly options: ScalerOptions,
  ) {
    this.ctx = contextOf(kube, options);
  }

  get workloads(): readonly StoppedWorkload[] {
    return this.stopped.map(({ selector: _selector, ...w }) => w);
  }

  get firstStoppedAt(): number | undefined {
    return this.firstZero;
  }

  /**
   * Records every workload first (all phases), then scales phase by phase and waits for the pods to terminate
   * before the next phase. On any error the records stay on the objects; `restore()` (or `ess start`) undoes it.
   */
  async stop(): Promise<readonly StoppedWorkload[]> {
    const { signal } = this.options;
    if (signal?.aborted) throw interruption(signal);
    const ordered = [...this.refs].sort((a, b) => phaseOf(a) - phaseOf(b));
    for (const ref of ordered) {
      const recorded = await recordOne(this.ctx, ref, this.options);
      this.stopped.push(recorded);
    }
    for (const phase of byPhase(this.stopped)) {
      if (signal?.aborted) throw interruption(signal);
      const toScale = phase.filter((w) => w.outcome === 'stopped' || w.outcome === 'adopted');
      if (toScale.length) {
        this.ctx.reporter.info(`Scaling to 0: ${toScale.map(label).join(', ')}`);
      }
      await settleAll(
        toScale.map(async (w) => {
          await withRetry(
            `scale ${label(w)} to 0`,
            () => this.kube.patch(w.kind, w.namespace, w.name, { spec: { replicas: 0 } }),
            { ...this.ctx, signal },
          );
          this.firstZero ??= this.ctx.clock.now();
        }),
      );
      if (signal?.aborted) throw interruption(signal);
      await waitPodsGone(
        this.ctx,
        phase.filter((w) => w.outcome !== 'missing').map((w) => ({ ref: w, selector: w.selector })),
        signal,
      );
    }
    return this.workloads;
  }

  restore(options: RestoreOptions = {}): Promise<RestoreReport> {
    const managed = this.stopped.filter((w) => w.outcome === 'stopped' || w.outcome === 'adopted');
    return restoreWorkloads(this.kube, managed, {
      ...this.options,
      signal: undefined,
      ...options,
      stoppedAt: this.firstZero,
    });
  }
}

/**
 * Records and scales `workloads` to 0 (see {@link WorkloadScaler.stop}) and returns the handle. If stopping fails
 * half-way the error is thrown and the records stay on the objects: call {@link restoreWorkloads} or let the user
 * run `ess start`. Prefer {@link withWorkloadsStopped}, which always restores.
 */
export async function stopWorkloads(
  kube: KubeClient,
  workloads: readonly WorkloadRef[],
  options: ScalerOptions,
): Promise<StopHandle> {
  const scaler = new WorkloadScaler(kube, workloads, options);
  await scaler.stop();
  return scaler;
}

export interface WithStoppedResult<T> {
  result: T;
  stopped: readonly StoppedWorkload[];
  restored: RestoreReport;
}

/**
 * Stops `workloads`, runs `fn`, and ALWAYS restores them afterwards: on success, on error, and when
 * `options.signal` aborts (SIGINT/SIGTERM; then an {@link InterruptedError} is thrown after the restore). The
 * restore waits for readiness; a readiness timeout does not fail the run but is listed in `restored.notReady`
 * (and reported as a warning). If the restore itself fails, a {@link RestoreFailedError} carrying `fn`'s error as
 * cause is thrown, telling the user to run `ess start`.
 *
 * @example
 * const { result } = await withWorkloadsStopped(kube, writers, { by: 'ess backup', signal }, () => dumpDatabases());
 */
export async function withWorkloadsStopped<T>(
  kube: KubeClient,
  workloads: readonly WorkloadRef[],
  options: ScalerOptions,
  fn: (handle: StopHandle) => Promise<T>,
): Promise<WithStoppedResult<T>> {
  const scaler = new WorkloadScaler(kube, workloads, options);
  const reporter = options.reporter ?? silentReporter;
  let outcome: { ok: true; value: T } | { ok: false; error: unknown };
  try {
    await scaler.stop();
    if (options.signal?.aborted) throw interruption(options.signal);
    outcome = { ok: true, value: await fn(scaler) };
  } catch (error) {
    outcome = { ok: false, error };
  }
  let restored: RestoreReport;
  try {
    restored = await scaler.restore({ throwOnTimeout: false });
  } catch (restoreError) {
    if (outcome.ok) throw restoreError;
    const failed =
      restoreError instanceof RestoreFailedError ? restoreError.failed : [{ name: 'workloads', error: restoreError }];
    const wrapped = new RestoreFailedError(failed, workloads[0]?.namespace ?? '', outcome.error, options.release);
    wrapped.message = `${(outcome.error as Error)?.message ?? String(outcome.error)}\nAlso: ${wrapped.message}`;
    throw wrapped;
  }
  for (const warning of restored.warnings) reporter.warn(warning);
  for (const name of restored.notReady) reporter.warn(`${name} was scaled back but is not ready yet`);
  if (restored.downtimeMs !== undefined) reporter.info(`Downtime: ${formatDuration(restored.downtimeMs)}`);
  if (!outcome.ok) throw outcome.error;
  if (options.signal?.aborted) throw interruption(options.signal);
  return { result: outcome.value, stopped: scaler.workloads, restored };
}
