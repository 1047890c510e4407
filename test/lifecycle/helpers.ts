/** Reading and nudging the sandbox's object store from lifecycle tests. */
import type { Sandbox } from '../../src/sandbox/index.js';
import type { ChangeEvent, KubeObject } from '../../src/sandbox/types.js';

export const RBS = 'ess.element.io/replicas-before-stop';
export const STOPPED_BY = 'ess.element.io/stopped-by';

export interface WorkloadState {
  kind: string;
  name: string;
  replicas: number;
  ready: number;
  annotations: Record<string, string>;
}

type Spec = { replicas?: number };
type Status = { readyReplicas?: number };

/** Every StatefulSet and Deployment of a namespace, by name. */
export function workloads(sandbox: Sandbox, namespace = sandbox.namespace): Map<string, WorkloadState> {
  const out = new Map<string, WorkloadState>();
  for (const kind of ['StatefulSet', 'Deployment']) {
    for (const o of sandbox.store.list(sandbox.store.resourceByKind(kind), namespace)) {
      out.set(o.metadata.name, {
        kind,
        name: o.metadata.name,
        replicas: (o.spec as Spec).replicas ?? 1,
        ready: (o.status as Status | undefined)?.readyReplicas ?? 0,
        annotations: o.metadata.annotations ?? {},
      });
    }
  }
  return out;
}

/** Pods of StatefulSets and Deployments (not the completed pods of the chart's hook Jobs). */
export function pods(sandbox: Sandbox, namespace = sandbox.namespace): KubeObject[] {
  return sandbox.store
    .list(sandbox.store.resourceByKind('Pod'), namespace)
    .filter((p) => !(p.metadata.ownerReferences ?? []).some((r) => r.kind === 'Job'));
}

/** Sets spec.replicas directly in the store (like `kubectl scale`). */
export function setReplicas(
  sandbox: Sandbox,
  kind: string,
  name: string,
  replicas: number,
  namespace = sandbox.namespace,
) {
  const resource = sandbox.store.resourceByKind(kind);
  const o = sandbox.store.get(resource, namespace, name);
  if (!o) throw new Error(`${kind} ${name} not found`);
  sandbox.store.update(resource, { ...o, spec: { ...(o.spec as object), replicas } });
}

/** Polls `check` every 50 ms until it returns true. */
export async function waitFor(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Everything running and ready, nothing terminating. */
export function allReady(sandbox: Sandbox, namespace = sandbox.namespace): boolean {
  return (
    [...workloads(sandbox, namespace).values()].every((w) => w.ready === w.replicas) &&
    pods(sandbox, namespace).every((p) => !p.metadata.deletionTimestamp)
  );
}

export interface Recorded {
  at: number;
  type: ChangeEvent['type'];
  kind: string;
  name: string;
  replicas?: number;
  ready?: number;
}

/** Records workload and pod changes of a namespace with timestamps, until the returned stop() is called. */
export function recordChanges(sandbox: Sandbox, namespace = sandbox.namespace) {
  const events: Recorded[] = [];
  const stop = sandbox.store.subscribe((e) => {
    if (e.object.metadata.namespace !== namespace) return;
    if (!['Pod', 'StatefulSet', 'Deployment'].includes(e.resource.kind)) return;
    events.push({
      at: performance.now(),
      type: e.type,
      kind: e.resource.kind,
      name: e.object.metadata.name,
      replicas: (e.object.spec as Spec | undefined)?.replicas,
      ready: (e.object.status as Status | undefined)?.readyReplicas,
    });
  });
  return { events, stop };
}
