/**
 * The sandbox's controllers, all asynchronous like the real ones: StatefulSet, Deployment and ReplicaSet
 * controllers creating and deleting pods, a kubelet that moves pods Pending → Running/Ready and removes
 * terminating pods after a stop delay, the garbage collector (ownerReferences), namespace termination, and the
 * operator flavour's updater and operator.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Faults } from './faults.js';
import { RESOURCES, resourceForKind } from './resources.js';
import { kubeTime, type MemoryStore, StatusError, stableStringify } from './store.js';
import type { ChangeEvent, KubeObject, ResourceType } from './types.js';

/** The operator-based ESS layout the operator/updater simulation acts on. */
export interface OperatorLayout {
  /** Namespace of the ElementDeployment and its component CRs, `element-onprem`. */
  namespace: string;
  /** Namespace of the operator Deployment, `operator-onprem`. */
  operatorNamespace: string;
  /** The operator Deployment, `element-operator-controller-manager`. */
  operatorDeployment: string;
  /** The ElementDeployment whose `.status.dependentCRs` lists the component CRs, `first-element-deployment`. */
  elementDeployment: string;
}

/** Options for {@link Controller}. */
export interface ControllerOptions {
  store: MemoryStore;
  faults: Faults;
  /** Time from pod creation to Running+Ready (plus faults.delayReadiness). */
  podStartDelayMs: number;
  /** Time from graceful deletion to the pod vanishing. */
  podStopDelayMs: number;
  /** Enables the operator/updater simulation. */
  operator?: OperatorLayout;
  log?: (line: string) => void;
}

const POD = resourceForKind('Pod', 'v1');
const NAMESPACE = resourceForKind('Namespace', 'v1');
const PVC = resourceForKind('PersistentVolumeClaim', 'v1');
const PV = resourceForKind('PersistentVolume', 'v1');
const STS = resourceForKind('StatefulSet', 'apps/v1');
const DEPLOY = resourceForKind('Deployment', 'apps/v1');
const RS = resourceForKind('ReplicaSet', 'apps/v1');
/** The single simulated node (the seed uses the same name for its finished Job pods). */
export const NODE_NAME = 'ess-sandbox-node';
const HOST_IP = '172.18.0.2';
const SAFE = 'bcdfghjklmnpqrstvwxz2456789';

type Obj = Record<string, unknown>;
const rec = (v: unknown): Obj => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

/** True when the pod is Running, Ready and not terminating. */
export function isPodReady(pod: KubeObject): boolean {
  const status = rec(pod.status);
  return (
    !pod.metadata.deletionTimestamp &&
    status.phase === 'Running' &&
    arr(status.conditions).some((c) => rec(c).type === 'Ready' && rec(c).status === 'True')
  );
}

/** True when the object has an ownerReference to `owner` (by uid). */
export function isOwnedBy(obj: KubeObject, owner: KubeObject): boolean {
  return (obj.metadata.ownerReferences ?? []).some((r) => r.uid === owner.metadata.uid);
}

function ownerRef(owner: KubeObject) {
  return {
    apiVersion: owner.apiVersion,
    kind: owner.kind,
    name: owner.metadata.name,
    uid: owner.metadata.uid as string,
    controller: true,
    blockOwnerDeletion: true,
  };
}

function desiredReplicas(o: KubeObject): number {
  const r = rec(o.spec).replicas;
  return typeof r === 'number' ? r : 1;
}

function hashOf(v: unknown, len: number): string {
  return createHash('sha256').update(stableStringify(v)).digest('hex').slice(0, len);
}

function randomSafe(n: number): string {
  const bytes = randomBytes(n);
  return [...bytes].map((b) => SAFE[b % SAFE.length]).join('');
}

/** Drops the fields the server owns, keeping what a template needs to recreate the object. */
function templateOf(o: KubeObject): KubeObject {
  const { status: _s, ...rest } = structuredClone(o);
  const m = rest.metadata;
  const metadata: KubeObject['metadata'] = { name: m.name };
  if (m.namespace) metadata.namespace = m.namespace;
  if (m.labels) metadata.labels = m.labels;
  if (m.annotations) metadata.annotations = m.annotations;
  if (m.ownerReferences) metadata.ownerReferences = m.ownerReferences;
  return { ...rest, metadata };
}

/** Runs every controller of the sandbox against a store. */
export class Controller {
  private readonly store: MemoryStore;
  private readonly faults: Faults;
  private readonly log: (line: string) => void;
  private readonly queue = new Map<string, () => void>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private flushScheduled: NodeJS.Immediate | undefined;
  private unsubscribe: (() => void) | undefined;
  private stopped = false;
  private ipCounter = 10;
  private crTemplates: { resource: ResourceType; object: KubeObject }[] = [];
  private ownedTemplates: { resource: ResourceType; object: KubeObject; ownerKind: string; ownerName: string }[] = [];

  constructor(private readonly opts: ControllerOptions) {
    this.store = opts.store;
    this.faults = opts.faults;
    this.log = opts.log ?? (() => {});
  }

  /** Subscribes to the store and reconciles everything once. */
  start(): void {
    if (this.unsubscribe) return;
    if (this.opts.operator) this.snapshotOperatorTemplates(this.opts.operator);
    this.unsubscribe = this.store.subscribe((e) => this.onEvent(e));
    for (const pod of this.store.list(POD, undefined)) this.kubelet(pod);
    for (const r of [STS, DEPLOY, RS]) {
      for (const o of this.store.list(r, undefined)) this.enqueueWorkload(r, o.metadata.namespace, o.metadata.name);
    }
    for (const ns of this.store.list(NAMESPACE, undefined)) {
      if (ns.metadata.deletionTimestamp) this.enqueueNamespace(ns.metadata.name);
    }
    this.enqueueOperator();
  }

  /** Stops reacting and cancels every pending timer. */
  stop(): void {
    this.stopped = true;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    if (this.flushScheduled) clearImmediate(this.flushScheduled);
    this.queue.clear();
  }

  /**
   * Resolves when every StatefulSet and Deployment has all its desired pods Running+Ready and no pod is
   * terminating; rejects after `timeoutMs`.
   */
  async waitUntilSettled(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const pending = this.unsettled();
      if (pending.length === 0) return;
      if (Date.now() > deadline)
        throw new Error(`sandbox: workloads not ready after ${timeoutMs} ms: ${pending.join(', ')}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  private unsettled(): string[] {
    const out: string[] = [];
    for (const r of [STS, DEPLOY]) {
      for (const o of this.store.list(r, undefined)) {
        const status = rec(o.status);
        const want = desiredReplicas(o);
        const ready = typeof status.readyReplicas === 'number' ? status.readyReplicas : 0;
        const have = typeof status.replicas === 'number' ? status.replicas : 0;
        if (ready !== want || have !== want || status.observedGeneration !== o.metadata.generation) {
          out.push(`${r.plural}/${o.metadata.namespace}/${o.metadata.name}`);
        }
      }
    }
    for (const p of this.store.list(POD, undefined)) {
      if (p.metadata.deletionTimestamp) out.push(`pods/${p.metadata.namespace}/${p.metadata.name} (terminating)`);
    }
    return out;
  }

  // --------------------------------------------------------------------------------------------------------
  // Event dispatch

  private onEvent(e: ChangeEvent): void {
    if (this.stopped) return;
    const o = e.object;
    const ns = o.metadata.namespace;
    if (e.resource === POD) {
      if (e.type === 'DELETED') {
        this.clearTimer(`pod:${o.metadata.uid}`);
        this.clearTimer(`pod:${o.metadata.uid}:stopping`);
      } else this.kubelet(o);
      this.enqueueOwner(o);
    } else if (e.resource === STS || e.resource === DEPLOY || e.resource === RS) {
      if (e.type !== 'DELETED') this.enqueueWorkload(e.resource, ns, o.metadata.name);
      this.enqueueOwner(o);
    } else if (e.resource === PVC) {
      if (e.type === 'ADDED')
        this.enqueue(`pvc:${ns}/${o.metadata.name}`, () => this.bindClaim(ns as string, o.metadata.name));
      if (e.type === 'DELETED') this.enqueue(`pv-release:${o.metadata.uid}`, () => this.releaseVolume(o));
    } else if (e.resource === PV && e.type !== 'DELETED' && o.metadata.deletionTimestamp) {
      this.enqueue(`pv:${o.metadata.name}`, () => this.protectVolume(o.metadata.name));
    } else if (e.resource === NAMESPACE && e.type === 'MODIFIED' && o.metadata.deletionTimestamp) {
      this.enqueueNamespace(o.metadata.name);
    }
    if (ns && (e.resource === POD || e.resource === PVC))
      this.enqueue(`pvc-protect:${ns}`, () => this.protectClaims(ns));
    if (e.type === 'DELETED') {
      const uid = o.metadata.uid;
      if (uid) this.enqueue(`gc:${uid}`, () => this.collectDependents(uid));
      if (ns) {
        const nsObj = this.store.get(NAMESPACE, undefined, ns);
        if (nsObj?.metadata.deletionTimestamp) this.enqueueNamespace(ns);
      }
    }
    if (this.opts.operator && this.concernsOperator(e)) this.enqueueOperator();
  }

  private enqueue(key: string, fn: () => void): void {
    this.queue.set(key, fn);
    if (!this.flushScheduled) this.flushScheduled = setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = undefined;
    const jobs = [...this.queue.values()];
    this.queue.clear();
    for (const job of jobs) {
      if (this.stopped) return;
      try {
        job();
      } catch (err) {
        // A conflict just means another writer won; the resulting event re-queues the work.
        if (!(err instanceof StatusError && err.code === 409)) {
          this.log(`controller: ${(err as Error).stack ?? String(err)}`);
        }
      }
    }
  }

  private enqueueWorkload(r: ResourceType, ns: string | undefined, name: string): void {
    this.enqueue(`${r.plural}:${ns}/${name}`, () => {
      const o = this.store.get(r, ns, name);
      if (!o) return;
      if (r === STS) this.reconcileStatefulSet(o);
      else if (r === DEPLOY) this.reconcileDeployment(o);
      else this.reconcileReplicaSet(o);
    });
  }

  private enqueueOwner(o: KubeObject): void {
    for (const ref of o.metadata.ownerReferences ?? []) {
      if (!ref.controller) continue;
      const r = [STS, DEPLOY, RS].find((x) => x.kind === ref.kind);
      if (r) this.enqueueWorkload(r, o.metadata.namespace, ref.name);
    }
  }

  private enqueueNamespace(name: string): void {
    this.enqueue(`ns:${name}`, () => this.finalizeNamespace(name));
  }

  private setTimer(key: string, ms: number, fn: () => void): void {
    this.clearTimer(key);
    const t = setTimeout(() => {
      this.timers.delete(key);
      if (this.stopped) return;
      try {
        fn();
      } catch (err) {
        if (!(err instanceof StatusError && (err.code === 409 || err.code === 404))) {
          this.log(`controller: ${(err as Error).stack ?? String(err)}`);
        }
      }
    }, ms);
    this.timers.set(key, t);
  }

  private clearTimer(key: string): void {
    const t = this.timers.get(key);
    if (t) clearTimeout(t);
    this.timers.delete(key);
  }

  // --------------------------------------------------------------------------------------------------------
  // Kubelet: pod phases

  private kubelet(pod: KubeObject): void {
    const uid = pod.metadata.uid as string;
    this.enqueue(`kubelet:${uid}`, () => {
      const cur = this.store.get(POD, pod.metadata.namespace, pod.metadata.name);
      if (cur && cur.metadata.uid === uid) this.kubeletSync(cur);
    });
  }

  private kubeletSync(pod: KubeObject): void {
    const uid = pod.metadata.uid as string;
    const key = `pod:${uid}`;
    if (pod.metadata.deletionTimestamp) {
      if (this.timers.has(`${key}:stopping`)) return;
      this.clearTimer(key);
      this.setTimer(`${key}:stopping`, this.opts.podStopDelayMs, () => {
        const cur = this.store.get(POD, pod.metadata.namespace, pod.metadata.name);
        if (cur && cur.metadata.uid === uid) this.store.delete(POD, pod.metadata.namespace, pod.metadata.name);
      });
      this.markTerminating(pod);
      return;
    }
    const status = rec(pod.status);
    if (status.phase === 'Running' || status.phase === 'Succeeded' || status.phase === 'Failed') return;
    if (this.timers.has(key)) return;
    const delay = this.opts.podStartDelayMs + this.faults.readinessDelay(pod.metadata.name);
    this.setTimer(key, delay, () => {
      const cur = this.store.get(POD, pod.metadata.namespace, pod.metadata.name);
      if (!cur || cur.metadata.uid !== uid || cur.metadata.deletionTimestamp) return;
      this.store.update(POD, this.runningPod(cur));
    });
  }

  private runningPod(pod: KubeObject): KubeObject {
    const now = kubeTime();
    const spec = rec(pod.spec);
    const ip = `10.42.0.${this.ipCounter++ % 250}`;
    const cond = (type: string) => ({ type, status: 'True', lastProbeTime: null, lastTransitionTime: now });
    const containerStatus = (c: Obj) => ({
      name: c.name,
      image: c.image,
      imageID: `${String(c.image)}@sha256:${hashOf(c.image, 64)}`,
      containerID: `containerd://${randomBytes(32).toString('hex')}`,
      ready: true,
      started: true,
      restartCount: 0,
      state: { running: { startedAt: now } },
      lastState: {},
    });
    const init = arr(spec.initContainers).map(rec);
    const status: Obj = {
      phase: 'Running',
      conditions: [
        cond('PodReadyToStartContainers'),
        cond('Initialized'),
        cond('Ready'),
        cond('ContainersReady'),
        cond('PodScheduled'),
      ],
      hostIP: HOST_IP,
      hostIPs: [{ ip: HOST_IP }],
      podIP: ip,
      podIPs: [{ ip }],
      startTime: now,
      containerStatuses: arr(spec.containers).map(rec).map(containerStatus),
      qosClass: rec(pod.status).qosClass ?? qosClass(spec),
    };
    if (init.length) {
      status.initContainerStatuses = init.map((c) => ({
        ...containerStatus(c),
        ready: true,
        started: false,
        state: { terminated: { exitCode: 0, reason: 'Completed', startedAt: now, finishedAt: now } },
      }));
    }
    return { ...pod, spec: { ...spec, nodeName: NODE_NAME }, status };
  }

  private markTerminating(pod: KubeObject): void {
    const status = rec(pod.status);
    if (status.phase !== 'Running') return;
    const conditions = arr(status.conditions).map((c) => {
      const x = rec(c);
      return x.type === 'Ready' || x.type === 'ContainersReady' ? { ...x, status: 'False' } : x;
    });
    const containerStatuses = arr(status.containerStatuses).map((c) => ({ ...rec(c), ready: false }));
    this.store.update(POD, { ...pod, status: { ...status, conditions, containerStatuses } });
  }

  /** Deletes a pod the way the API server does for a DELETE with the default grace period. */
  private deletePodGracefully(pod: KubeObject): void {
    if (pod.metadata.deletionTimestamp) return;
    if (!rec(pod.spec).nodeName) {
      this.store.delete(POD, pod.metadata.namespace, pod.metadata.name);
      return;
    }
    const grace = rec(pod.spec).terminationGracePeriodSeconds;
    const seconds = typeof grace === 'number' ? grace : 30;
    this.store.update(POD, {
      ...pod,
      metadata: {
        ...pod.metadata,
        deletionTimestamp: kubeTime(Date.now() + seconds * 1000),
        deletionGracePeriodSeconds: seconds,
      },
    });
  }

  // --------------------------------------------------------------------------------------------------------
  // Workload controllers

  private ownedPods(owner: KubeObject): KubeObject[] {
    return this.store.list(POD, owner.metadata.namespace).filter((p) => isOwnedBy(p, owner));
  }

  private newPod(owner: KubeObject, name: string, extraLabels: Record<string, string>, spec: Obj): KubeObject {
    const template = rec(rec(owner.spec).template);
    const tmeta = rec(template.metadata);
    const podSpec = { ...structuredClone(rec(template.spec)), ...spec };
    const metadata: KubeObject['metadata'] = {
      name,
      namespace: owner.metadata.namespace,
      labels: { ...(rec(tmeta.labels) as Record<string, string>), ...extraLabels },
      ownerReferences: [ownerRef(owner)],
    };
    if (tmeta.annotations) metadata.annotations = structuredClone(tmeta.annotations) as Record<string, string>;
    const defaults: Obj = {
      restartPolicy: 'Always',
      terminationGracePeriodSeconds: 30,
      dnsPolicy: 'ClusterFirst',
      serviceAccountName: 'default',
      schedulerName: 'default-scheduler',
      enableServiceLinks: true,
    };
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata,
      spec: { ...defaults, ...podSpec },
      status: { phase: 'Pending', qosClass: qosClass(podSpec) },
    };
  }

  private reconcileStatefulSet(sts: KubeObject): void {
    const ns = sts.metadata.namespace as string;
    const name = sts.metadata.name;
    const spec = rec(sts.spec);
    const desired = desiredReplicas(sts);
    const revision = `${name}-${hashOf(spec.template, 10)}`;
    const parallel = spec.podManagementPolicy === 'Parallel';
    const pods = this.ownedPods(sts);
    const byOrdinal = new Map<number, KubeObject>();
    for (const p of pods) {
      const m = new RegExp(`^${escapeRe(name)}-(\\d+)$`).exec(p.metadata.name);
      if (m) byOrdinal.set(Number(m[1]), p);
    }
    const anyTerminating = pods.some((p) => p.metadata.deletionTimestamp);

    // Scale up.
    for (let ord = 0; ord < desired; ord++) {
      const pod = byOrdinal.get(ord);
      if (!pod) {
        const podName = `${name}-${ord}`;
        if (this.store.get(POD, ns, podName)) {
          if (parallel) continue;
          break;
        }
        const created = this.store.create(POD, this.statefulPod(sts, podName, ord, revision));
        byOrdinal.set(ord, created);
        pods.push(created);
        if (!parallel) break;
        continue;
      }
      if (!parallel && !isPodReady(pod)) break;
    }
    // Scale down: Parallel deletes all condemned pods at once, OrderedReady the highest ordinal first.
    const condemned = [...byOrdinal.entries()]
      .filter(([ord, p]) => ord >= desired && !p.metadata.deletionTimestamp)
      .sort((a, b) => b[0] - a[0]);
    if (parallel) for (const [, p] of condemned) this.deletePodGracefully(p);
    else if (condemned.length && !anyTerminating) this.deletePodGracefully(condemned[0][1]);

    // Rolling update: replace one outdated pod at a time, highest ordinal first, when all others are ready.
    const strategy = rec(spec.updateStrategy).type ?? 'RollingUpdate';
    if (strategy === 'RollingUpdate' && !anyTerminating) {
      const live = [...byOrdinal.entries()].filter(([ord]) => ord < desired);
      if (live.length === desired && live.every(([, p]) => isPodReady(p))) {
        const outdated = live
          .filter(([, p]) => p.metadata.labels?.['controller-revision-hash'] !== revision)
          .sort((a, b) => b[0] - a[0]);
        if (outdated.length) this.deletePodGracefully(outdated[0][1]);
      }
    }

    const fresh = this.ownedPods(sts);
    const active = fresh.filter((p) => !p.metadata.deletionTimestamp);
    const updated = active.filter((p) => p.metadata.labels?.['controller-revision-hash'] === revision).length;
    const ready = fresh.filter(isPodReady).length;
    const prev = rec(sts.status);
    const currentRevision =
      updated === active.length || typeof prev.currentRevision !== 'string' ? revision : prev.currentRevision;
    const current = active.filter((p) => p.metadata.labels?.['controller-revision-hash'] === currentRevision).length;
    const status: Obj = {
      observedGeneration: sts.metadata.generation,
      replicas: fresh.length,
      readyReplicas: ready,
      currentReplicas: current,
      updatedReplicas: updated,
      currentRevision,
      updateRevision: revision,
      collisionCount: 0,
      availableReplicas: ready,
    };
    for (const k of ['readyReplicas', 'currentReplicas', 'updatedReplicas']) if (status[k] === 0) delete status[k];
    this.writeStatus(STS, sts, status);
  }

  private statefulPod(sts: KubeObject, podName: string, ord: number, revision: string): KubeObject {
    const spec = rec(sts.spec);
    const ns = sts.metadata.namespace as string;
    const claimVolumes: Obj[] = [];
    for (const t of arr(spec.volumeClaimTemplates).map(rec)) {
      const tname = String(rec(t.metadata).name);
      const claimName = `${tname}-${sts.metadata.name}-${ord}`;
      claimVolumes.push({ name: tname, persistentVolumeClaim: { claimName } });
      if (!this.store.get(PVC, ns, claimName)) {
        this.store.create(PVC, {
          apiVersion: 'v1',
          kind: 'PersistentVolumeClaim',
          metadata: {
            name: claimName,
            namespace: ns,
            labels: rec(rec(spec.selector).matchLabels) as Record<string, string>,
          },
          spec: structuredClone(rec(t.spec)),
        });
      }
    }
    const template = rec(rec(spec.template).spec);
    const volumes = [...arr(template.volumes), ...claimVolumes];
    const podSpec: Obj = { hostname: podName };
    if (typeof spec.serviceName === 'string' && spec.serviceName) podSpec.subdomain = spec.serviceName;
    if (volumes.length) podSpec.volumes = volumes;
    return this.newPod(
      sts,
      podName,
      {
        'controller-revision-hash': revision,
        'statefulset.kubernetes.io/pod-name': podName,
        'apps.kubernetes.io/pod-index': String(ord),
      },
      podSpec,
    );
  }

  private reconcileDeployment(deploy: KubeObject): void {
    const ns = deploy.metadata.namespace as string;
    const spec = rec(deploy.spec);
    const desired = desiredReplicas(deploy);
    const hash = hashOf(spec.template, 10);
    const owned = this.store.list(RS, ns).filter((rs) => isOwnedBy(rs, deploy));
    let newRs = owned.find((rs) => rs.metadata.labels?.['pod-template-hash'] === hash);
    const old = owned.filter((rs) => rs !== newRs);
    const recreate = rec(spec.strategy).type === 'Recreate';
    const revisions = owned.map((rs) => Number(rs.metadata.annotations?.['deployment.kubernetes.io/revision'] ?? 0));
    const oldPods = old.reduce((n, rs) => n + this.ownedPods(rs).length, 0);

    if (!newRs) {
      const template = structuredClone(rec(spec.template));
      const tmeta = rec(template.metadata);
      tmeta.labels = { ...rec(tmeta.labels), 'pod-template-hash': hash };
      template.metadata = tmeta;
      const selector = structuredClone(rec(spec.selector));
      selector.matchLabels = { ...rec(selector.matchLabels), 'pod-template-hash': hash };
      const revision = String(Math.max(0, ...revisions) + 1);
      newRs = this.store.create(RS, {
        apiVersion: 'apps/v1',
        kind: 'ReplicaSet',
        metadata: {
          name: `${deploy.metadata.name}-${hash}`,
          namespace: ns,
          labels: tmeta.labels as Record<string, string>,
          annotations: {
            'deployment.kubernetes.io/desired-replicas': String(desired),
            'deployment.kubernetes.io/max-replicas': String(desired + 1),
            'deployment.kubernetes.io/revision': revision,
          },
          ownerReferences: [ownerRef(deploy)],
        },
        spec: {
          replicas: recreate && oldPods > 0 ? 0 : desired,
          minReadySeconds: spec.minReadySeconds ?? 0,
          selector,
          template,
        },
      });
    } else {
      const want = recreate && oldPods > 0 ? 0 : desired;
      if (desiredReplicas(newRs) !== want) this.setReplicas(RS, newRs, want);
    }
    const newReady =
      typeof rec(newRs.status).readyReplicas === 'number' ? (rec(newRs.status).readyReplicas as number) : 0;
    for (const rs of old) {
      if ((recreate || newReady >= desired || desired === 0) && desiredReplicas(rs) !== 0) this.setReplicas(RS, rs, 0);
    }

    const all = this.store.list(RS, ns).filter((rs) => isOwnedBy(rs, deploy));
    const sum = (field: string) => all.reduce((n, rs) => n + (Number(rec(rs.status)[field]) || 0), 0);
    const freshNew = all.find((rs) => rs.metadata.uid === newRs?.metadata.uid);
    const replicas = sum('replicas');
    const ready = sum('readyReplicas');
    const available = sum('availableReplicas');
    const totalSpec = all.reduce((n, rs) => n + desiredReplicas(rs), 0);
    const updated = Number(rec(freshNew?.status).replicas) || 0;
    const now = kubeTime();
    const prev = rec(deploy.status);
    const prevCond = (type: string) =>
      arr(prev.conditions)
        .map(rec)
        .find((c) => c.type === type);
    const condition = (type: string, ok: boolean, reason: string, message: string) => {
      const before = prevCond(type);
      const status = ok ? 'True' : 'False';
      const changed = !before || before.status !== status;
      return {
        type,
        status,
        lastUpdateTime: changed || before?.reason !== reason ? now : before.lastUpdateTime,
        lastTransitionTime: changed ? now : before.lastTransitionTime,
        reason,
        message,
      };
    };
    const complete = updated === desired && replicas === desired && available === desired;
    const rsName = freshNew?.metadata.name ?? '';
    const status: Obj = {
      observedGeneration: deploy.metadata.generation,
      replicas,
      updatedReplicas: updated,
      readyReplicas: ready,
      availableReplicas: available,
      unavailableReplicas: Math.max(0, totalSpec - available),
      conditions: [
        available >= desired
          ? condition('Available', true, 'MinimumReplicasAvailable', 'Deployment has minimum availability.')
          : condition(
              'Available',
              false,
              'MinimumReplicasUnavailable',
              'Deployment does not have minimum availability.',
            ),
        complete
          ? condition(
              'Progressing',
              true,
              'NewReplicaSetAvailable',
              `ReplicaSet "${rsName}" has successfully progressed.`,
            )
          : condition('Progressing', true, 'ReplicaSetUpdated', `ReplicaSet "${rsName}" is progressing.`),
      ],
    };
    for (const k of ['replicas', 'updatedReplicas', 'readyReplicas', 'availableReplicas', 'unavailableReplicas']) {
      if (status[k] === 0) delete status[k];
    }
    const annotations = { ...(deploy.metadata.annotations ?? {}) };
    const revision = freshNew?.metadata.annotations?.['deployment.kubernetes.io/revision'];
    if (revision && annotations['deployment.kubernetes.io/revision'] !== revision) {
      annotations['deployment.kubernetes.io/revision'] = revision;
      deploy = this.store.update(DEPLOY, { ...deploy, metadata: { ...deploy.metadata, annotations } });
    }
    this.writeStatus(DEPLOY, deploy, status);
  }

  private reconcileReplicaSet(rs: KubeObject): void {
    const desired = desiredReplicas(rs);
    const pods = this.ownedPods(rs);
    const active = pods.filter((p) => !p.metadata.deletionTimestamp);
    const hash = rs.metadata.labels?.['pod-template-hash'];
    for (let i = active.length; i < desired; i++) {
      const name = `${rs.metadata.name}-${randomSafe(5)}`;
      const labels: Record<string, string> = hash ? { 'pod-template-hash': hash } : {};
      active.push(this.store.create(POD, this.newPod(rs, name, labels, {})));
    }
    if (active.length > desired) {
      // Like the real controller: not-ready pods go first, then the newest.
      const ranked = [...active].sort(
        (a, b) =>
          Number(isPodReady(a)) - Number(isPodReady(b)) ||
          String(b.metadata.creationTimestamp).localeCompare(String(a.metadata.creationTimestamp)),
      );
      for (const p of ranked.slice(0, active.length - desired)) this.deletePodGracefully(p);
    }
    const fresh = this.ownedPods(rs).filter((p) => !p.metadata.deletionTimestamp);
    const ready = fresh.filter(isPodReady).length;
    const status: Obj = {
      replicas: fresh.length,
      fullyLabeledReplicas: fresh.length,
      readyReplicas: ready,
      availableReplicas: ready,
      observedGeneration: rs.metadata.generation,
    };
    for (const k of ['fullyLabeledReplicas', 'readyReplicas', 'availableReplicas'])
      if (status[k] === 0) delete status[k];
    this.writeStatus(RS, rs, status);
  }

  private setReplicas(r: ResourceType, o: KubeObject, replicas: number): KubeObject {
    return this.store.update(r, { ...o, spec: { ...rec(o.spec), replicas } });
  }

  private writeStatus(r: ResourceType, o: KubeObject, status: Obj): void {
    const cur = this.store.get(r, o.metadata.namespace, o.metadata.name);
    if (!cur || cur.metadata.uid !== o.metadata.uid) return;
    if (stableStringify(cur.status) === stableStringify(status)) return;
    this.store.update(r, { ...cur, status });
  }

  // --------------------------------------------------------------------------------------------------------
  // Claims, garbage collection, namespaces

  private bindClaim(ns: string, name: string): void {
    const pvc = this.store.get(PVC, ns, name);
    if (!pvc || rec(pvc.status).phase) return;
    const spec = rec(pvc.spec);
    const storage = rec(rec(spec.resources).requests).storage ?? '1Gi';
    const volumeName = typeof spec.volumeName === 'string' ? spec.volumeName : `pvc-${pvc.metadata.uid}`;
    this.store.update(PVC, {
      ...pvc,
      spec: { storageClassName: 'standard', volumeMode: 'Filesystem', ...spec, volumeName },
      status: { phase: 'Bound', accessModes: spec.accessModes ?? ['ReadWriteOnce'], capacity: { storage } },
    });
  }

  /** pvc-protection: a terminating claim goes away once no pod uses it. */
  private protectClaims(ns: string): void {
    const terminating = this.store.list(PVC, ns).filter((c) => c.metadata.deletionTimestamp);
    if (!terminating.length) return;
    const used = new Set<string>();
    for (const p of this.store.list(POD, ns)) {
      const phase = rec(p.status).phase;
      if (phase === 'Succeeded' || phase === 'Failed') continue;
      for (const v of arr(rec(p.spec).volumes)) {
        const claim = rec(rec(v).persistentVolumeClaim).claimName;
        if (typeof claim === 'string') used.add(claim);
      }
    }
    for (const c of terminating) {
      if (used.has(c.metadata.name)) continue;
      this.removeFinalizer(PVC, c, 'kubernetes.io/pvc-protection');
    }
  }

  /** pv-protection: a terminating volume goes away once no claim is bound to it. */
  private protectVolume(name: string): void {
    const pv = this.store.get(PV, undefined, name);
    if (!pv?.metadata.deletionTimestamp) return;
    const claim = rec(rec(pv.spec).claimRef);
    const bound = typeof claim.name === 'string' && this.store.get(PVC, String(claim.namespace), claim.name);
    if (!bound || bound.metadata.uid !== claim.uid) this.removeFinalizer(PV, pv, 'kubernetes.io/pv-protection');
  }

  /** The volume of a deleted claim is deleted (reclaim policy Delete) or released (Retain). */
  private releaseVolume(claim: KubeObject): void {
    for (const pv of this.store.list(PV, undefined)) {
      const ref = rec(rec(pv.spec).claimRef);
      if (ref.uid !== claim.metadata.uid) continue;
      if (rec(pv.spec).persistentVolumeReclaimPolicy === 'Delete') this.store.delete(PV, undefined, pv.metadata.name);
      else this.store.update(PV, { ...pv, status: { ...rec(pv.status), phase: 'Released' } });
    }
  }

  private removeFinalizer(r: ResourceType, o: KubeObject, finalizer: string): void {
    const finalizers = arr(o.metadata.finalizers).filter((f) => f !== finalizer);
    this.store.update(r, { ...o, metadata: { ...o.metadata, finalizers } });
  }

  /** Background-propagation garbage collection: deletes everything owned by `uid`. */
  private collectDependents(uid: string): void {
    for (const r of this.store.resources()) {
      for (const o of this.store.list(r, undefined)) {
        if (!(o.metadata.ownerReferences ?? []).some((ref) => ref.uid === uid)) continue;
        // An object with another, still existing owner stays (the real GC only removes the dangling reference).
        const others = (o.metadata.ownerReferences ?? []).filter((ref) => ref.uid !== uid);
        if (others.some((ref) => this.ownerExists(o.metadata.namespace, ref.kind, ref.name, ref.uid))) {
          this.store.update(r, { ...o, metadata: { ...o.metadata, ownerReferences: others } });
          continue;
        }
        if (r === POD) this.deletePodGracefully(o);
        else this.store.delete(r, o.metadata.namespace, o.metadata.name);
      }
    }
  }

  private ownerExists(ns: string | undefined, kind: string, name: string, uid: string): boolean {
    const r = RESOURCES.find((x) => x.kind === kind);
    if (!r) return false;
    return this.store.get(r, r.namespaced ? ns : undefined, name)?.metadata.uid === uid;
  }

  private finalizeNamespace(name: string): void {
    const nsObj = this.store.get(NAMESPACE, undefined, name);
    if (!nsObj?.metadata.deletionTimestamp) return;
    let remaining = 0;
    for (const r of this.store.resources()) {
      if (!r.namespaced) continue;
      for (const o of this.store.list(r, name)) {
        remaining++;
        if (r === POD) this.deletePodGracefully(o);
        else this.store.delete(r, name, o.metadata.name);
      }
    }
    if (
      remaining === 0 ||
      this.store.resources().every((r) => !r.namespaced || this.store.list(r, name).length === 0)
    ) {
      this.store.delete(NAMESPACE, undefined, name);
    }
  }

  // --------------------------------------------------------------------------------------------------------
  // Operator flavour: the updater recreates component CRs, the operator recreates their workloads.

  private snapshotOperatorTemplates(layout: OperatorLayout): void {
    const edRes = resourceForKind('ElementDeployment');
    const ed = this.store.get(edRes, layout.namespace, layout.elementDeployment);
    if (!ed) {
      this.log(`operator: ElementDeployment ${layout.namespace}/${layout.elementDeployment} not found`);
      return;
    }
    const dependents = Object.keys(rec(rec(ed.status).dependentCRs));
    for (const key of dependents) {
      const [kind, name] = key.split('/');
      let r: ResourceType;
      try {
        r = resourceForKind(kind, ed.apiVersion);
      } catch {
        this.log(`operator: unknown dependent CR kind ${kind}`);
        continue;
      }
      const cr = this.store.get(r, layout.namespace, name);
      if (!cr) {
        this.log(`operator: dependent CR ${key} missing at start; the updater cannot recreate it`);
        continue;
      }
      this.crTemplates.push({ resource: r, object: templateOf(cr) });
      for (const or of this.store.resources()) {
        if (or === POD || or === RS) continue;
        for (const o of this.store.list(or, layout.namespace)) {
          if (isOwnedBy(o, cr))
            this.ownedTemplates.push({ resource: or, object: templateOf(o), ownerKind: kind, ownerName: name });
        }
      }
    }
  }

  private concernsOperator(e: ChangeEvent): boolean {
    const layout = this.opts.operator as OperatorLayout;
    const ns = e.object.metadata.namespace;
    if (e.resource === DEPLOY && ns === layout.operatorNamespace) return true;
    if (ns !== layout.namespace) return false;
    if (e.resource.kind === 'Pod' || e.resource === RS) return false;
    return (
      e.type === 'DELETED' ||
      e.resource === STS ||
      e.resource === DEPLOY ||
      this.crTemplates.some((t) => t.resource === e.resource)
    );
  }

  private enqueueOperator(): void {
    if (!this.opts.operator) return;
    this.enqueue('operator', () => this.reconcileOperator());
  }

  /** True while the operator Deployment has a ready pod. */
  operatorRunning(): boolean {
    const layout = this.opts.operator;
    if (!layout) return false;
    const op = this.store.get(DEPLOY, layout.operatorNamespace, layout.operatorDeployment);
    return Number(rec(op?.status).readyReplicas ?? 0) >= 1;
  }

  private reconcileOperator(): void {
    const layout = this.opts.operator;
    if (!layout || !this.operatorRunning()) return;
    const edRes = resourceForKind('ElementDeployment');
    const ed = this.store.get(edRes, layout.namespace, layout.elementDeployment);
    for (const t of this.crTemplates) {
      if (this.store.get(t.resource, layout.namespace, t.object.metadata.name)) continue;
      const fresh = withOwnerUids(t.object, (ref) =>
        ref.kind === 'ElementDeployment' && ref.name === ed?.metadata.name ? ed?.metadata.uid : undefined,
      );
      if (!fresh) continue;
      this.log(`operator: updater recreates ${t.resource.kind}/${t.object.metadata.name}`);
      this.store.create(t.resource, fresh);
    }
    for (const t of this.ownedTemplates) {
      const ownerRes = resourceForKind(t.ownerKind, edRes.group ? `${edRes.group}/${edRes.version}` : undefined);
      const owner = this.store.get(ownerRes, layout.namespace, t.ownerName);
      if (!owner) continue;
      const cur = this.store.get(t.resource, t.object.metadata.namespace, t.object.metadata.name);
      if (!cur) {
        const fresh = withOwnerUids(t.object, (ref) =>
          ref.kind === owner.kind && ref.name === owner.metadata.name ? owner.metadata.uid : undefined,
        );
        if (!fresh) continue;
        this.log(`operator: recreates ${t.resource.kind}/${t.object.metadata.name}`);
        this.store.create(t.resource, fresh);
        continue;
      }
      // The operator owns the replica count: direct scaling is reverted while it runs.
      if ((t.resource === STS || t.resource === DEPLOY) && isOwnedBy(cur, owner)) {
        const want = desiredReplicas(t.object);
        if (desiredReplicas(cur) !== want) this.setReplicas(t.resource, cur, want);
      }
    }
  }
}

/** A copy of a template with ownerReference uids resolved; undefined when an owner cannot be resolved. */
function withOwnerUids(
  template: KubeObject,
  resolve: (ref: { kind: string; name: string }) => string | undefined,
): KubeObject | undefined {
  const o = structuredClone(template);
  const refs = o.metadata.ownerReferences;
  if (refs) {
    for (const ref of refs) {
      const uid = resolve(ref);
      if (uid) ref.uid = uid;
    }
  }
  return o;
}

function qosClass(spec: Obj): string {
  const cs = arr(spec.containers).map(rec);
  const res = cs.map((c) => rec(c.resources));
  if (res.every((r) => !Object.keys(rec(r.limits)).length && !Object.keys(rec(r.requests)).length)) return 'BestEffort';
  const guaranteed = res.every((r) => {
    const l = rec(r.limits);
    const q = rec(r.requests);
    return (
      l.cpu && l.memory && (q.cpu === undefined || q.cpu === l.cpu) && (q.memory === undefined || q.memory === l.memory)
    );
  });
  return guaranteed ? 'Guaranteed' : 'Burstable';
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
