import type { ComponentId } from '../../lib/deployment/components.js';
import { names } from '../../lib/deployment/components.js';
import { discoverDeployment } from '../../lib/deployment/discover.js';
import type { Deployment } from '../../lib/deployment/model.js';
import {
  interruption,
  type RestoredWorkload,
  type RestoreReport,
  recordedReplicas,
  restoreWorkloads,
  ScaleTimeoutError,
  systemClock,
  type WorkloadRef,
  waitForReady,
} from '../../lib/deployment/scaler.js';
import { EssError, ExitCode, InterruptedError, PreconditionError } from '../../lib/errors.js';
import type { KubeClient } from '../../lib/kube/client.js';
import type { KubeObject, Workload } from '../../lib/kube/types.js';
import { acquireRunLock } from '../../lib/workloads/run-lock.js';
import { forgetSavedCRs, isKnownKind, readSavedCRs, type SavedCR } from '../../lib/workloads/saved-crs.js';
import { type LifecyclePlan, parseComponents, planStart } from './plan.js';
import type { LifecycleDeps } from './stop.js';

/** Options of `ess start` (they mirror its flags). */
export interface StartOptions {
  namespace: string;
  release: string;
  /** Component names; empty = resume everything ess stopped. */
  components: string[];
  dryRun?: boolean;
  /** Per phase: how long to wait for readiness (default 5 minutes). */
  timeoutMs?: number;
  /** Operator flavour: how long to wait for the updater to recreate a CR before ess recreates it (default 30 s). */
  crWaitMs?: number;
  forceUnlock?: boolean;
}

/** The result of `ess start` (its --json output). */
export interface StartResult {
  action: 'start';
  dryRun: boolean;
  changed: boolean;
  /** True when no component was named: everything ess had stopped was resumed. */
  resumed: boolean;
  flavour: Deployment['flavour'];
  namespace: string;
  release: string;
  components: ComponentId[];
  plan: LifecyclePlan;
  workloads: RestoredWorkload[];
  operator?: {
    deployment: string;
    namespace: string;
    replicas: number;
    /** How each saved CR came back: recreated by the operator's updater, or by ess from the saved copy. */
    crs: { kind: string; name: string; restoredBy: 'updater' | 'ess' | 'existing' }[];
  };
  durationMs: number;
  warnings: string[];
}

/**
 * `ess start`: brings workloads back to the replica counts recorded by `ess stop` (or by a crashed backup), in
 * reverse stop order (Postgres first), waiting for readiness. Without components it resumes exactly what ess
 * stopped; with components, a workload at 0 without a record gets 1 replica and a warning. Operator flavour: scales
 * the operator back, makes sure every CR `ess stop` deleted exists again, and waits for its workloads.
 */
export async function startServices(
  kube: KubeClient,
  options: StartOptions,
  deps: LifecycleDeps,
): Promise<StartResult> {
  const clock = deps.clock ?? systemClock;
  const started = clock.now();
  const selection = options.components.length ? parseComponents(options.components) : undefined;
  const deployment = await discoverDeployment(kube, { namespace: options.namespace, release: options.release });
  const op = deployment.operator;
  let saved: SavedCR[] = [];
  let facts: Parameters<typeof planStart>[2];
  if (op) {
    const operator = await kube.get<Workload>('Deployment', op.namespace, op.deployment);
    if (!operator) {
      throw new PreconditionError(`Operator Deployment ${op.namespace}/${op.deployment} not found.`, {
        code: 'OPERATOR_NOT_FOUND',
        next: ['Check the operator: kubectl get deploy -A | grep operator'],
      });
    }
    saved = await readSavedCRs(kube, deployment.namespace, op.elementDeployment);
    const crs = [];
    for (const s of saved) {
      const exists = isKnownKind(s.kind) && (await kube.get(s.kind, deployment.namespace, s.name)) !== undefined;
      crs.push({
        kind: s.kind,
        name: s.name,
        component: s.component as ComponentId,
        exists,
        ownedWorkloads: s.ownedWorkloads,
      });
    }
    facts = { operatorReplicas: operator.spec.replicas ?? 1, operatorRecorded: recordedReplicas(operator), crs };
  }
  const plan = planStart(deployment, selection, facts);
  const result: StartResult = {
    action: 'start',
    dryRun: options.dryRun === true,
    changed: false,
    resumed: selection === undefined,
    flavour: deployment.flavour,
    namespace: deployment.namespace,
    release: deployment.release,
    components: plan.components,
    plan,
    workloads: [],
    durationMs: 0,
    warnings: [...deployment.warnings, ...plan.warnings],
  };
  const finish = () => ({ ...result, durationMs: clock.now() - started });
  if (options.dryRun || plan.noop) return finish();
  if (deps.signal?.aborted) throw interruption(deps.signal);

  const lock = await acquireRunLock(
    kube,
    { namespace: deployment.namespace, release: deployment.release, operation: 'start', force: options.forceUnlock },
    deps.reporter,
  );
  const common = {
    timeoutMs: options.timeoutMs,
    release: deployment.release,
    pollMs: deps.pollMs,
    signal: deps.signal,
    reporter: deps.reporter,
    clock,
  };
  try {
    result.changed = true;
    const refs: WorkloadRef[] = plan.workloads
      .filter((w) => w.action === 'start')
      .map((w) => ({ kind: w.kind, namespace: w.namespace, name: w.name, component: w.component, phase: w.phase }));
    const report = await restoreWorkloads(kube, refs, { ...common, defaultReplicas: selection ? 1 : undefined });
    collect(result, report);
    if (plan.operator) {
      const o = plan.operator;
      const opReport = await restoreWorkloads(
        kube,
        [{ kind: 'Deployment', namespace: o.namespace, name: o.deployment, phase: 0 }],
        { ...common, defaultReplicas: o.target },
      );
      result.warnings.push(...opReport.warnings);
      result.operator = {
        deployment: o.deployment,
        namespace: o.namespace,
        replicas: opReport.workloads[0]?.replicas ?? o.target,
        crs: await bringBackCRs(
          kube,
          deployment,
          saved,
          o.crs.filter((c) => c.exists).map((c) => `${c.kind}/${c.name}`),
          {
            ...common,
            crWaitMs: options.crWaitMs,
          },
        ),
      };
    }
  } catch (error) {
    if (!(error instanceof InterruptedError)) throw error;
    throw new EssError(`${error.message} Some workloads may still be at 0; their replica counts are still recorded.`, {
      code: 'INTERRUPTED',
      exitCode: ExitCode.INTERRUPTED,
      next: ['Finish: run the same ess start again'],
    });
  } finally {
    await lock.release().catch((error: unknown) => deps.reporter.warn(`Could not release the ess lock: ${error}`));
  }
  return finish();
}

function collect(result: StartResult, report: RestoreReport): void {
  result.workloads.push(...report.workloads);
  result.warnings.push(...report.warnings);
}

/**
 * With the operator running again, waits for the updater to recreate each saved CR, recreates it from the saved
 * copy if it does not come back in time, waits for the workloads it owned, then forgets the saved copies.
 */
async function bringBackCRs(
  kube: KubeClient,
  deployment: Deployment,
  saved: SavedCR[],
  /** Kind/name of the saved CRs that already existed before the operator was started. */
  existedBefore: string[],
  options: Omit<Parameters<typeof waitForReady>[2], 'timeoutMs'> & { timeoutMs?: number; crWaitMs?: number },
): Promise<NonNullable<StartResult['operator']>['crs']> {
  const op = deployment.operator as NonNullable<Deployment['operator']>;
  const clock = options.clock ?? systemClock;
  const namespace = deployment.namespace;
  const out: NonNullable<StartResult['operator']>['crs'] = [];
  const exists = async (s: SavedCR) => isKnownKind(s.kind) && (await kube.get(s.kind, namespace, s.name)) !== undefined;
  const pending: SavedCR[] = [];
  for (const s of saved) {
    if (existedBefore.includes(`${s.kind}/${s.name}`)) out.push({ kind: s.kind, name: s.name, restoredBy: 'existing' });
    else pending.push(s);
  }
  const deadline = clock.now() + (options.crWaitMs ?? 30_000);
  while (pending.length) {
    for (const s of [...pending]) {
      if (await exists(s)) {
        out.push({ kind: s.kind, name: s.name, restoredBy: 'updater' });
        pending.splice(pending.indexOf(s), 1);
      }
    }
    if (pending.length === 0 || clock.now() >= deadline) break;
    await clock.sleep(options.pollMs ?? 500, options.signal);
  }
  for (const s of pending) {
    if (!isKnownKind(s.kind)) continue;
    options.reporter?.warn(`The updater did not recreate ${s.kind}/${s.name}; recreating it from the saved copy.`);
    const ed = await kube.get<KubeObject>('ElementDeployment', namespace, op.elementDeployment);
    const object = structuredClone(s.object);
    for (const ref of object.metadata.ownerReferences ?? []) {
      if (ref.kind === 'ElementDeployment' && ed?.metadata.uid) ref.uid = ed.metadata.uid;
    }
    await kube.create(s.kind, namespace, object);
    out.push({ kind: s.kind, name: s.name, restoredBy: 'ess' });
  }
  const owned = saved.flatMap((s) =>
    s.ownedWorkloads.map((key) => {
      const [kind, name] = key.split('/') as [WorkloadRef['kind'], string];
      return { ref: { kind, namespace, name } };
    }),
  );
  const notReady = await waitForReady(kube, owned, options);
  if (notReady.length) {
    throw new ScaleTimeoutError('become ready', notReady, options.timeoutMs ?? 300_000, namespace);
  }
  await forgetSavedCRs(kube, namespace, op.elementDeployment, saved);
  options.reporter?.info(
    `Operator-managed workloads are back; removed ConfigMap entries of ${names.savedOperatorCRs(op.elementDeployment)}`,
  );
  return out;
}
