import type { Workload } from '../kube/types.js';
import { ANNOTATIONS, componentForLabel, LABELS } from './components.js';
import type { WorkloadInfo } from './model.js';

/** Converts a workload object into the summary ess works with. */
export function toWorkloadInfo(kind: 'StatefulSet' | 'Deployment', object: Workload): WorkloadInfo {
  const labels = object.metadata.labels ?? {};
  const remembered = object.metadata.annotations?.[ANNOTATIONS.replicasBeforeStop];
  const container = object.spec.template.spec.containers[0];
  return {
    kind,
    name: object.metadata.name,
    namespace: object.metadata.namespace ?? '',
    component: componentForLabel(labels[LABELS.component])?.id ?? 'unknown',
    role: labels[LABELS.name],
    replicas: object.spec.replicas ?? 1,
    readyReplicas: object.status?.readyReplicas ?? 0,
    rememberedReplicas: remembered !== undefined && /^\d+$/.test(remembered) ? Number(remembered) : undefined,
    image: container?.image,
    version: labels[LABELS.version],
    selector: object.spec.selector?.matchLabels ?? {},
  };
}
