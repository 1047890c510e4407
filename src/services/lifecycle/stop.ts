import { COMPONENTS, type ComponentId, componentById, names, targetFlags } from '../../lib/deployment/components.js';
import { discoverDeployment } from '../../lib/deployment/discover.js';
import type { Deployment } from '../../lib/deployment/model.js';
import {
  type Clock,
  interruption,
  recordedReplicas,
  type StoppedWorkload,
  selectorString,
  stopWorkloads,
  systemClock,
  type WorkloadRef,
  waitForPodsGone,
} from '../../lib/deployment/scaler.js';
import { EssError, ExitCode, InterruptedError, PreconditionError } from '../../lib/errors.js';
import type { KubeClient } from '../../lib/kube/client.js';
import type { KubeObject, Workload } from '../../lib/kube/types.js';
import type { Reporter } from '../../lib/output/log.js';
import { acquireRunLock } from '../../lib/workloads/run-lock.js';
import { isKnownKind, type SavedCR, saveCRs, withoutServerFields } from '../../lib/workloads/saved-crs.js';
import {
  type ComponentSelection,
  type LifecyclePlan,
  type OperatorFacts,
  type PlannedCR,
  parseComponents,
  planStop,
  replicasValues,
  type ValuesSnippet,
} from './plan.js';

/** Options of `ess stop` (they mirror its flags). */
export interface StopOptions {
  namespace: string;
  release: string;
  /** Component names from the command line; empty means all. */
  components: string[];
  dryRun?: boolean;
  /** Only compute the Helm values snippet for a persistent stop; change nothing. */
  printValues?: boolean;
  /** Per phase: how long to wait for pods to terminate (default 5 minutes). */
  timeoutMs?: number;
  /** Break another run's lock. */
  forceUnlock?: boolean;
}

/** What stop and start need besides the Kubernetes client. */
export interface LifecycleDeps {
  reporter: Reporter;
  signal?: AbortSignal;
  clock?: Clock;
  /** Poll interval while waiting (default 500 ms). */
  pollMs?: number;
  /** Called with the plan before anything changes (never on --dry-run); throws to refuse. */
  confirm?: (plan: LifecyclePlan) => Promise<void>;
}

/** The result of `ess stop` (its --json output). */
export interface StopResult {
  action: 'stop';
  dryRun: boolean;
  /** False for --dry-run, --print-values and when there was nothing to stop. */
  changed: boolean;
  flavour: Deployment['flavour'];
  namespace: string;
  release: string;
  components: ComponentId[];
  plan: LifecyclePlan;
  /** What the scaler did to each workload it handled. */
  workloads: StoppedWorkload[];
  operator?: {
    deployment: string;
    namespace: string;
    replicasBefore: number;
    /** Deleted component CRs (Kind/name). */
    deletedCRs: string[];
    /** ConfigMap holding their JSON. */
    savedIn?: string;
  };
  values?: ValuesSnippet;
  durationMs: number;
  warnings: string[];
}

/**
 * `ess stop`: records each selected workload's replica count on the object and scales it to 0, Synapse and MAS
 * before Postgres, waiting for the pods to terminate. Operator flavour: stops the operator first, saves and deletes
 * the component CRs, and scales workloads no CR owns (e.g. Postgres). Everything is recorded on the cluster before it
 * is changed, so `ess start` can undo a run that crashed or was interrupted.
 */
export async function stopServices(kube: KubeClient, options: StopOptions, deps: LifecycleDeps): Promise<StopResult> {
  const clock = deps.clock ?? systemClock;
  const started = clock.now();
  const selection = parseComponents(options.components);
  const deployment = await discoverDeployment(kube, { namespace: options.namespace, release: options.release });
  const facts = deployment.operator ? await operatorFacts(kube, deployment, selection) : undefined;
  const plan = planStop(deployment, selection, facts);
  const result: StopResult = {
    action: 'stop',
    dryRun: options.dryRun === true,
    changed: false,
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
  if (options.printValues) {
    if (deployment.flavour === 'operator') {
      throw new PreconditionError(
        'The operator flavour is not configured through Helm values of the matrix-stack chart.',
        {
          code: 'NO_VALUES',
          next: ['Use `ess stop COMPONENT` (it stops the operator and deletes the component CR)'],
        },
      );
    }
    result.values = replicasValues(deployment, selection);
    return finish();
  }
  if (options.dryRun || plan.noop) return finish();

  await deps.confirm?.(plan);
  if (deps.signal?.aborted) throw interruption(deps.signal);
  const lock = await acquireRunLock(
    kube,
    { namespace: deployment.namespace, release: deployment.release, operation: 'stop', force: options.forceUnlock },
    deps.reporter,
  );
  try {
    result.changed = true;
    const scalerOptions = {
      by: 'ess stop',
      reason: `ess stop ${selection === 'all' ? 'all' : selection.join(' ')}`,
      hold: true,
      timeoutMs: options.timeoutMs,
      release: deployment.release,
      pollMs: deps.pollMs,
      signal: deps.signal,
      reporter: deps.reporter,
      clock,
    };
    if (plan.operator) result.operator = await stopOperatorCRs(kube, deployment, plan, scalerOptions);
    const direct: WorkloadRef[] = plan.workloads
      .filter((w) => w.action !== 'delete-cr')
      .map((w) => ({ kind: w.kind, namespace: w.namespace, name: w.name, component: w.component, phase: w.phase }));
    const handle = await stopWorkloads(kube, direct, scalerOptions);
    result.workloads = [...handle.workloads];
  } catch (error) {
    throw explainInterruptedStop(error, deployment);
  } finally {
    await lock.release().catch((error: unknown) => deps.reporter.warn(`Could not release the ess lock: ${error}`));
  }
  return finish();
}

/** An interrupted stop leaves recorded workloads behind: say how to finish or undo it. */
function explainInterruptedStop(error: unknown, deployment: Deployment): unknown {
  if (!(error instanceof InterruptedError)) return error;
  const target = targetFlags(
    deployment.namespace,
    deployment.flavour === 'matrix-stack' ? deployment.release : undefined,
  );
  return new EssError(`${error.message} Some workloads may already be at 0; their replica counts are recorded.`, {
    code: 'INTERRUPTED',
    exitCode: ExitCode.INTERRUPTED,
    next: [`Undo: ess start ${target}`, `Finish: run the same ess stop again`],
  });
}

/** The operator Deployment and the component CRs (which exist, what they own), for the plan. */
async function operatorFacts(
  kube: KubeClient,
  deployment: Deployment,
  selection: ComponentSelection,
): Promise<OperatorFacts> {
  const op = deployment.operator as NonNullable<Deployment['operator']>;
  const operator = await kube.get<Workload>('Deployment', op.namespace, op.deployment);
  if (!operator) {
    throw new PreconditionError(`Operator Deployment ${op.namespace}/${op.deployment} not found.`, {
      code: 'OPERATOR_NOT_FOUND',
      next: ['Check the operator: kubectl get deploy -A | grep operator'],
    });
  }
  const [statefulSets, deployments] = await Promise.all([
    kube.list<Workload>('StatefulSet', deployment.namespace),
    kube.list<Workload>('Deployment', deployment.namespace),
  ]);
  const workloads = [
    ...statefulSets.map((o) => ({ kind: 'StatefulSet', o })),
    ...deployments.map((o) => ({ kind: 'Deployment', o })),
  ];
  const crs: PlannedCR[] = [];
  for (const { kind, name, component } of componentCRs(deployment, selection)) {
    if (!isKnownKind(kind)) continue;
    const cr = await kube.get<KubeObject>(kind, deployment.namespace, name);
    const owned = cr
      ? workloads.filter(({ o }) => (o.metadata.ownerReferences ?? []).some((r) => r.uid === cr.metadata.uid))
      : [];
    crs.push({
      kind,
      name,
      component,
      exists: cr !== undefined,
      ownedWorkloads: owned.map(({ kind: k, o }) => `${k}/${o.metadata.name}`),
    });
  }
  return {
    operatorReplicas: operator.spec.replicas ?? 1,
    operatorRecorded: recordedReplicas(operator),
    crs,
  };
}

/** The dependent CRs (ElementDeployment .status.dependentCRs, "Kind/name") of the selected components. */
function componentCRs(deployment: Deployment, selection: ComponentSelection) {
  const out: { kind: string; name: string; component: ComponentId }[] = [];
  for (const key of deployment.operator?.dependentCRs ?? []) {
    const [kind, name] = key.split('/');
    const component = kindComponent(kind);
    if (!name || !component || (selection !== 'all' && !selection.includes(component))) continue;
    out.push({ kind, name, component });
  }
  return out;
}

function kindComponent(kind: string): ComponentId | undefined {
  return COMPONENTS.find((c) => c.operatorKinds.includes(kind))?.id;
}

/** Selectors of the workloads a CR owns, read before the CR (and with it the workloads) is deleted. */
async function ownedSelectors(kube: KubeClient, namespace: string, owned: string[]) {
  const out: { ref: WorkloadRef; selector?: string }[] = [];
  for (const key of owned) {
    const [kind, name] = key.split('/') as [WorkloadRef['kind'], string];
    const object = await kube.get<Workload>(kind, namespace, name);
    out.push({ ref: { kind, namespace, name }, selector: selectorString(object?.spec.selector?.matchLabels) });
  }
  return out;
}

/**
 * The runbook's operator stop: scale the operator to 0 (recorded like any workload), save every CR to delete in
 * the ConfigMap, then delete them (Synapse and MAS first) and wait for their workloads' pods to terminate.
 */
async function stopOperatorCRs(
  kube: KubeClient,
  deployment: Deployment,
  plan: LifecyclePlan,
  scalerOptions: Parameters<typeof stopWorkloads>[2],
): Promise<NonNullable<StopResult['operator']>> {
  const op = plan.operator as NonNullable<LifecyclePlan['operator']>;
  const { reporter } = scalerOptions;
  reporter?.info(`Stopping the operator ${op.namespace}/${op.deployment}`);
  await stopWorkloads(
    kube,
    [{ kind: 'Deployment', namespace: op.namespace, name: op.deployment, phase: 0 }],
    scalerOptions,
  );
  const crs = op.crs.filter((cr) => cr.exists && isKnownKind(cr.kind));
  const entries: SavedCR[] = [];
  for (const cr of crs) {
    if (!isKnownKind(cr.kind)) continue;
    const object = await kube.get<KubeObject>(cr.kind, deployment.namespace, cr.name);
    if (!object) continue;
    entries.push({
      kind: cr.kind,
      name: cr.name,
      component: cr.component,
      ownedWorkloads: cr.ownedWorkloads,
      savedAt: new Date().toISOString(),
      object: withoutServerFields(object),
    });
  }
  await saveCRs(kube, deployment.namespace, op.elementDeployment, entries);
  const deleted: string[] = [];
  const phase = (id: string) => componentById(id)?.stopPhase ?? 0;
  const byPhase = [...crs].sort((a, b) => phase(a.component) - phase(b.component));
  for (const cr of byPhase) {
    if (scalerOptions.signal?.aborted) throw interruption(scalerOptions.signal);
    const selectors = await ownedSelectors(kube, deployment.namespace, cr.ownedWorkloads);
    if (!isKnownKind(cr.kind)) continue;
    reporter?.info(
      `Deleting ${cr.kind}/${cr.name} (saved in ConfigMap ${names.savedOperatorCRs(op.elementDeployment)})`,
    );
    await kube.delete(cr.kind, deployment.namespace, cr.name);
    deleted.push(`${cr.kind}/${cr.name}`);
    await waitForPodsGone(kube, selectors, scalerOptions);
  }
  return {
    deployment: op.deployment,
    namespace: op.namespace,
    replicasBefore: op.replicas,
    deletedCRs: deleted,
    savedIn: entries.length ? names.savedOperatorCRs(op.elementDeployment) : undefined,
  };
}
