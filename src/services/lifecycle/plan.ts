/**
 * Pure planning for `ess stop` and `ess start`: which workloads (and, for the operator flavour, which component
 * CRs) change, in which order, and to what. No I/O here: the services gather the facts and execute the plan.
 */
import { stringify as toYaml } from 'yaml';
import {
  COMPONENTS,
  type ComponentId,
  componentById,
  DATABASE_WRITERS,
  replicasValuesPath,
} from '../../lib/deployment/components.js';
import type { Deployment, WorkloadInfo } from '../../lib/deployment/model.js';
import { EssError, ExitCode } from '../../lib/errors.js';
import { renderTable } from '../../lib/output/table.js';

/** The component names `ess stop`/`ess start` accept. */
export const COMPONENT_NAMES: readonly string[] = [...COMPONENTS.map((c) => c.id), 'all'];

/** `all`, or the components named on the command line. */
export type ComponentSelection = ComponentId[] | 'all';

/** Parses command-line component names; throws a usage error (exit 2) naming the valid ones. */
export function parseComponents(args: readonly string[]): ComponentSelection {
  const unknown = args.filter((a) => !COMPONENT_NAMES.includes(a));
  if (unknown.length) {
    throw new EssError(`Unknown component${unknown.length > 1 ? 's' : ''}: ${unknown.join(', ')}.`, {
      code: 'USAGE',
      exitCode: ExitCode.USAGE,
      next: [`Components: ${COMPONENT_NAMES.join(', ')}`],
    });
  }
  if (args.length === 0 || args.includes('all')) return 'all';
  return [...new Set(args)] as ComponentId[];
}

/** One workload in a plan. */
export interface PlannedWorkload {
  kind: 'StatefulSet' | 'Deployment';
  namespace: string;
  name: string;
  component: ComponentId | 'unknown';
  role?: string;
  /** Stop phase (lower stops first, starts last). */
  phase: number;
  /** spec.replicas now. */
  replicas: number;
  readyReplicas: number;
  /** Count recorded by an earlier ess run (annotation). */
  recordedReplicas?: number;
  /** stop: record and scale to 0; start: scale to `target`; delete-cr: removed with its CR; keep: nothing. */
  action: 'stop' | 'start' | 'delete-cr' | 'keep';
  /** spec.replicas after the run. */
  target: number;
  note?: string;
}

/** One operator-flavour component CR (a key of ElementDeployment .status.dependentCRs). */
export interface PlannedCR {
  kind: string;
  name: string;
  component: ComponentId;
  /** Whether the CR exists now. */
  exists: boolean;
  /** Workloads it owns (deleted with it, recreated by the operator), as kind/name. */
  ownedWorkloads: string[];
}

export interface OperatorPlan {
  namespace: string;
  deployment: string;
  elementDeployment: string;
  replicas: number;
  recordedReplicas?: number;
  target: number;
  crs: PlannedCR[];
}

export interface LifecyclePlan {
  action: 'stop' | 'start';
  flavour: Deployment['flavour'];
  namespace: string;
  release: string;
  components: ComponentId[];
  /** In execution order. */
  workloads: PlannedWorkload[];
  operator?: OperatorPlan;
  warnings: string[];
  /** True when the run would change nothing. */
  noop: boolean;
}

function phaseOf(component: ComponentId | 'unknown'): number {
  return componentById(component)?.stopPhase ?? 0;
}

function selectedIds(selection: ComponentSelection): ComponentId[] {
  return selection === 'all' ? COMPONENTS.map((c) => c.id) : selection;
}

function planned(w: WorkloadInfo, action: PlannedWorkload['action'], target: number, note?: string): PlannedWorkload {
  return {
    kind: w.kind,
    namespace: w.namespace,
    name: w.name,
    component: w.component,
    role: w.role,
    phase: phaseOf(w.component),
    replicas: w.replicas,
    readyReplicas: w.readyReplicas,
    recordedReplicas: w.rememberedReplicas,
    action,
    target,
    ...(note ? { note } : {}),
  };
}

function byStopOrder(a: PlannedWorkload, b: PlannedWorkload): number {
  return a.phase - b.phase || a.component.localeCompare(b.component) || a.name.localeCompare(b.name);
}

/** Workloads of the selected components, plus warnings for selected components that have none (except `quiet`). */
function selectWorkloads(
  deployment: Deployment,
  selection: ComponentSelection,
  quiet: ReadonlySet<ComponentId> = new Set(),
) {
  const ids = selectedIds(selection);
  const workloads = deployment.workloads.filter((w) => w.component !== 'unknown' && ids.includes(w.component));
  const warnings: string[] = [];
  if (selection !== 'all') {
    for (const id of ids) {
      if (!quiet.has(id) && !workloads.some((w) => w.component === id)) {
        warnings.push(`No workload of component "${id}" was found in ${deployment.namespace}.`);
      }
    }
  }
  const unknown = deployment.workloads.filter((w) => w.component === 'unknown');
  if (selection === 'all' && unknown.length && deployment.flavour === 'matrix-stack') {
    warnings.push(`Not managed by ess stop/start (unknown component): ${unknown.map((w) => w.name).join(', ')}.`);
  }
  return { ids, workloads, warnings };
}

/** Operator-flavour facts the service gathers for a plan. */
export interface OperatorFacts {
  /** spec.replicas of the operator Deployment and its recorded count. */
  operatorReplicas: number;
  operatorRecorded?: number;
  /** Component CRs: which exist now, and which workloads each owns (kind/name). */
  crs: PlannedCR[];
}

/** What `ess stop` will do. Matrix-stack: record and scale to 0, Synapse and MAS first, Postgres last. */
export function planStop(
  deployment: Deployment,
  selection: ComponentSelection,
  operator?: OperatorFacts,
): LifecyclePlan {
  const { ids, workloads, warnings } = selectWorkloads(deployment, selection);
  const crs = (operator?.crs ?? []).filter((cr) => ids.includes(cr.component) && cr.exists);
  const ownedByCr = new Map<string, string>();
  for (const cr of crs) for (const owned of cr.ownedWorkloads) ownedByCr.set(owned, `${cr.kind}/${cr.name}`);
  const rows = workloads.map((w) => {
    const cr = ownedByCr.get(`${w.kind}/${w.name}`);
    if (cr) return planned(w, 'delete-cr', 0, `deleted with ${cr}`);
    if (w.replicas === 0 && w.rememberedReplicas === undefined) return planned(w, 'keep', 0, 'already at 0');
    if (w.replicas === 0) return planned(w, 'keep', 0, `already stopped (records ${w.rememberedReplicas})`);
    if (w.rememberedReplicas !== undefined && w.rememberedReplicas !== w.replicas) {
      return planned(w, 'stop', 0, `stale record ${w.rememberedReplicas} replaced by ${w.replicas}`);
    }
    return planned(w, 'stop', 0);
  });
  rows.sort(byStopOrder);
  // The reverse of the warning in planStart: the database goes while its clients stay up.
  if (rows.some((r) => r.action === 'stop' && r.component === 'postgres')) {
    const clients = deployment.workloads.filter(
      (w) =>
        DATABASE_WRITERS.includes(w.component as ComponentId) &&
        w.replicas > 0 &&
        !rows.some((r) => r.name === w.name && r.kind === w.kind && r.action !== 'keep'),
    );
    if (clients.length) {
      warnings.push(
        `${clients.map((w) => w.name).join(', ')} keep running without their database and will fail requests ` +
          `until it is back; to stop them too: ess stop ${[...new Set(clients.map((w) => w.component))].join(' ')} postgres.`,
      );
    }
  }
  const op = deployment.operator;
  const operatorPlan: OperatorPlan | undefined =
    op && operator
      ? {
          namespace: op.namespace,
          deployment: op.deployment,
          elementDeployment: op.elementDeployment,
          replicas: operator.operatorReplicas,
          recordedReplicas: operator.operatorRecorded,
          target: 0,
          crs,
        }
      : undefined;
  if (deployment.flavour === 'matrix-stack' && rows.some((r) => r.action === 'stop')) {
    warnings.push(
      'A `helm upgrade` resets replica counts from your values and starts these workloads again. For a stop that ' +
        'survives upgrades, set their replicas to 0 in your values (see `ess stop --print-values`).',
    );
  }
  const noop =
    !rows.some((r) => r.action === 'stop' || r.action === 'delete-cr') && (operatorPlan?.replicas ?? 0) === 0;
  return {
    action: 'stop',
    flavour: deployment.flavour,
    namespace: deployment.namespace,
    release: deployment.release,
    components: ids,
    workloads: rows,
    operator: operatorPlan,
    warnings,
    noop,
  };
}

/**
 * What `ess start` will do. Without a selection it resumes exactly what ess stopped (every workload carrying a
 * recorded count, and for the operator flavour the operator and the saved CRs). With a selection, a workload at 0
 * without a record is started with 1 replica (and a warning). Phases run in reverse: Postgres first.
 */
export function planStart(
  deployment: Deployment,
  selection: ComponentSelection | undefined,
  operator?: OperatorFacts,
): LifecyclePlan {
  const resume = selection === undefined;
  // Operator flavour: a component whose CR ess deleted has no workloads until the CR is back; that is the point.
  const crDeleted = new Set((operator?.crs ?? []).filter((cr) => !cr.exists).map((cr) => cr.component));
  const { ids, workloads, warnings } = selectWorkloads(deployment, selection ?? 'all', crDeleted);
  const rows = workloads
    .filter((w) => !resume || w.rememberedReplicas !== undefined)
    .map((w) => {
      if (w.rememberedReplicas !== undefined && w.replicas > 0 && w.replicas !== w.rememberedReplicas) {
        warnings.push(
          `${w.kind}/${w.name} runs with ${w.replicas} replicas, so its recorded count ${w.rememberedReplicas} is stale ` +
            '(helm upgrade or kubectl scale since ess stopped it): the record is dropped, the replicas are kept.',
        );
        return planned(w, 'start', w.replicas, `running: stale record ${w.rememberedReplicas} dropped`);
      }
      if (w.rememberedReplicas !== undefined) return planned(w, 'start', w.rememberedReplicas);
      if (w.replicas === 0) return planned(w, 'start', 1, 'no recorded count: 1 replica');
      return planned(w, 'keep', w.replicas, 'running');
    });
  rows.sort((a, b) => -byStopOrder(a, b));
  for (const row of rows) {
    if (row.action === 'start' && row.recordedReplicas === undefined) {
      warnings.push(`${row.name} has no recorded replica count; it will be started with 1 replica.`);
    }
  }
  // Synapse and MAS cannot become ready while their database stays at 0.
  const writers = rows.some((r) => r.action === 'start' && DATABASE_WRITERS.includes(r.component as ComponentId));
  const databaseDown = deployment.workloads.filter(
    (w) =>
      w.component === 'postgres' &&
      w.replicas === 0 &&
      !rows.some((r) => r.name === w.name && r.kind === w.kind && r.action === 'start'),
  );
  if (writers) {
    for (const w of databaseDown) {
      warnings.push(
        `${w.name} (postgres) stays at 0: Synapse and MAS will not become ready without it (run \`ess start\` or add \`postgres\`).`,
      );
    }
  }
  const components = resume ? [...new Set(rows.map((r) => r.component as ComponentId))] : ids;
  const op = deployment.operator;
  let operatorPlan: OperatorPlan | undefined;
  if (op && operator) {
    const needed =
      operator.operatorRecorded !== undefined || operator.crs.length > 0 || operator.operatorReplicas === 0;
    operatorPlan = {
      namespace: op.namespace,
      deployment: op.deployment,
      elementDeployment: op.elementDeployment,
      replicas: operator.operatorReplicas,
      recordedReplicas: operator.operatorRecorded,
      target: needed
        ? (operator.operatorRecorded ?? Math.max(1, operator.operatorReplicas))
        : operator.operatorReplicas,
      crs: operator.crs,
    };
    const others = operator.crs.filter((cr) => !ids.includes(cr.component));
    if (!resume && others.length) {
      warnings.push(
        `Starting the operator also brings back ${others.map((c) => `${c.kind}/${c.name}`).join(', ')}: the updater recreates every deleted component CR.`,
      );
    }
  }
  const noop =
    !rows.some((r) => r.action === 'start') &&
    (!operatorPlan || (operatorPlan.target === operatorPlan.replicas && operatorPlan.crs.length === 0));
  return {
    action: 'start',
    flavour: deployment.flavour,
    namespace: deployment.namespace,
    release: deployment.release,
    components,
    workloads: rows,
    operator: operatorPlan,
    warnings,
    noop,
  };
}

/** The Helm values snippet that keeps the selected components at 0 across `helm upgrade`. */
export interface ValuesSnippet {
  /** Dotted paths set to 0, e.g. `synapse.workers.event-persister.replicas`. */
  paths: string[];
  values: Record<string, unknown>;
  yaml: string;
  /** Workloads without a known values path. */
  unmapped: string[];
}

/** Builds {@link ValuesSnippet} from the discovered workloads of the selected components. */
export function replicasValues(deployment: Deployment, selection: ComponentSelection): ValuesSnippet {
  const { workloads } = selectWorkloads(deployment, selection);
  const values: Record<string, unknown> = {};
  const paths: string[] = [];
  const unmapped: string[] = [];
  const mapped = workloads.map((w) => ({
    w,
    path: w.component === 'unknown' ? undefined : replicasValuesPath(w.component, w.role),
  }));
  const depth = (p: string | undefined) => p?.split('.').length ?? 0;
  mapped.sort(
    (a, b) =>
      phaseOf(a.w.component) - phaseOf(b.w.component) ||
      a.w.component.localeCompare(b.w.component) ||
      depth(a.path) - depth(b.path),
  );
  for (const { w, path } of mapped) {
    if (!path) {
      unmapped.push(w.name);
      continue;
    }
    if (paths.includes(path)) continue;
    paths.push(path);
    const keys = path.split('.');
    let node = values;
    for (const key of keys.slice(0, -1)) {
      node[key] ??= {};
      node = node[key] as Record<string, unknown>;
    }
    node[keys[keys.length - 1]] = 0;
  }
  return { paths, values, yaml: paths.length ? toYaml(values) : '', unmapped };
}

/** The plan as text (a table, plus the operator steps). */
export function renderPlan(plan: LifecyclePlan): string {
  const verb = plan.action === 'stop' ? 'Stop' : 'Start';
  const lines: string[] = [`${verb} plan for ${plan.flavour} "${plan.release}" in namespace ${plan.namespace}:`];
  if (plan.operator) {
    const o = plan.operator;
    lines.push(
      `  operator ${o.namespace}/${o.deployment}: ${o.replicas} -> ${o.target}` +
        (o.recordedReplicas !== undefined ? ` (recorded ${o.recordedReplicas})` : ''),
    );
    for (const cr of o.crs) {
      const what =
        plan.action === 'stop'
          ? 'save to ConfigMap, then delete'
          : cr.exists
            ? 'exists'
            : 'wait for the updater to recreate it (else recreate from the saved copy)';
      lines.push(
        `  ${cr.kind}/${cr.name}: ${what}${cr.ownedWorkloads.length ? ` [${cr.ownedWorkloads.join(', ')}]` : ''}`,
      );
    }
  }
  if (plan.workloads.length) {
    lines.push(
      renderTable(plan.workloads, [
        { header: 'ORDER', get: (w) => w.phase, align: 'right' },
        { header: 'COMPONENT', get: (w) => w.component },
        { header: 'KIND', get: (w) => w.kind },
        { header: 'NAME', get: (w) => w.name },
        { header: 'REPLICAS', get: (w) => `${w.replicas} -> ${w.target}`, align: 'right' },
        { header: 'ACTION', get: (w) => w.action },
        { header: 'NOTE', get: (w) => w.note },
      ]),
    );
  }
  if (plan.noop) lines.push('Nothing to do.');
  return `${lines.join('\n')}\n`;
}
