import type { KubeClient } from '../kube/client.js';
import { KubeApiError } from '../kube/client.js';
import type { KubeObject, Workload } from '../kube/types.js';
import type { ComponentId } from './components.js';
import type { Deployment, WorkloadInfo } from './model.js';
import { toWorkloadInfo } from './workload-info.js';

/** Where the older operator-based ESS keeps its operator (ESS Pro "Starting and Stopping ESS Services"). */
export const OPERATOR = {
  namespace: 'operator-onprem',
  deployment: 'element-operator-controller-manager',
  defaultElementDeployment: 'first-element-deployment',
} as const;

/** Operator-made workload names → component, by substring (the operator's naming varies across versions). */
const OPERATOR_WORKLOAD_PATTERNS: { pattern: RegExp; component: ComponentId }[] = [
  { pattern: /postgres/, component: 'postgres' },
  { pattern: /synapse/, component: 'synapse' },
  { pattern: /matrix-authentication|(^|-)mas(-|$)/, component: 'mas' },
  { pattern: /element-web/, component: 'element-web' },
  { pattern: /haproxy/, component: 'haproxy' },
];

interface ElementDeploymentObject extends KubeObject {
  status?: { dependentCRs?: Record<string, unknown> };
}

/**
 * Detects the operator flavour: an ElementDeployment in the namespace. Returns undefined when the CRD or object is
 * absent, so matrix-stack discovery can report its own error.
 */
export async function discoverOperator(kube: KubeClient, namespace: string): Promise<Deployment | undefined> {
  let eds: ElementDeploymentObject[];
  try {
    eds = await kube.list<ElementDeploymentObject>('ElementDeployment', namespace);
  } catch (error) {
    if (error instanceof KubeApiError && (error.statusCode === 404 || error.statusCode === 403)) return undefined;
    throw error;
  }
  const ed = eds.find((e) => e.metadata.name === OPERATOR.defaultElementDeployment) ?? eds[0];
  if (!ed) return undefined;

  const [statefulSets, deployments] = await Promise.all([
    kube.list<Workload>('StatefulSet', namespace),
    kube.list<Workload>('Deployment', namespace),
  ]);
  const classify = (info: WorkloadInfo): WorkloadInfo => ({
    ...info,
    component: OPERATOR_WORKLOAD_PATTERNS.find((p) => p.pattern.test(info.name))?.component ?? 'unknown',
  });
  const workloads = [
    ...statefulSets.map((o) => classify(toWorkloadInfo('StatefulSet', o))),
    ...deployments.map((o) => classify(toWorkloadInfo('Deployment', o))),
  ];
  const pgSts = statefulSets.find((s) => /postgres/.test(s.metadata.name));
  const pgEnv = pgSts?.spec.template.spec.containers.find((c) => c.name === 'postgres')?.env ?? [];
  const envValue = (name: string) => pgEnv.find((e) => e.name === name)?.value;
  const dependentCRs = Object.keys(ed.status?.dependentCRs ?? {});
  const warnings: string[] = [];
  const operatorDeployment = await kube
    .get<Workload>('Deployment', OPERATOR.namespace, OPERATOR.deployment)
    .catch(() => undefined);
  if (!operatorDeployment) warnings.push(`Operator Deployment ${OPERATOR.namespace}/${OPERATOR.deployment} not found.`);

  return {
    flavour: 'operator',
    namespace,
    release: ed.metadata.name,
    workloads,
    postgres: pgSts
      ? {
          mode: 'bundled',
          statefulSet: pgSts.metadata.name,
          pod: `${pgSts.metadata.name}-0`,
          container: 'postgres',
          superuser: envValue('POSTGRES_USER') ?? 'postgres',
          databases: [
            { component: 'synapse', name: envValue('POSTGRES_DB') ?? 'synapse', owner: envValue('POSTGRES_USER') },
          ],
        }
      : undefined,
    operator: {
      namespace: OPERATOR.namespace,
      deployment: OPERATOR.deployment,
      elementDeployment: ed.metadata.name,
      dependentCRs,
    },
    warnings,
  };
}
