/**
 * A small in-memory KubeClient for unit tests of the scaler (the integration tests run against the sandbox).
 * Merge patches honour a metadata.resourceVersion precondition (409 on mismatch) and null deletes a key; a
 * "controller" step, run by the fake clock's sleep, moves pods towards spec.replicas and updates status. Faults make
 * chosen calls fail with an API status or a connection error.
 */

import { type Clock, interruption } from '../../src/lib/deployment/scaler.js';
import type { ExecResult, KubeClient, PatchType, PortForwardHandle } from '../../src/lib/kube/client.js';
import { KubeApiError, KubeConnectionError } from '../../src/lib/kube/client.js';
import type { Kind } from '../../src/lib/kube/resources.js';
import type { KubeObject } from '../../src/lib/kube/types.js';

type Obj = KubeObject & Record<string, unknown>;

export interface Fault {
  verb: 'get' | 'list' | 'patch' | 'create' | 'delete';
  name?: string;
  /** HTTP status, or 'connection' for a KubeConnectionError. */
  status: number | 'connection';
  times: number;
}

export interface CallRecord {
  verb: string;
  kind: string;
  name?: string;
  body?: unknown;
  at: number;
}

function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> =
    target && typeof target === 'object' && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [key, value] of Object.entries(patch as Record<string, unknown>)) {
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key], value);
  }
  return out;
}

export class FakeKube implements KubeClient {
  readonly contextName = 'fake';
  readonly server = 'http://fake';
  readonly objects = new Map<string, Obj>();
  readonly calls: CallRecord[] = [];
  readonly faults: Fault[] = [];
  /** Steps a pod needs to appear/disappear (1 = next controller step). */
  podDelaySteps = 1;
  /** Workloads whose pods never terminate (for timeouts). */
  stuckPods = new Set<string>();
  /** Workloads that never become ready. */
  neverReady = new Set<string>();
  private rv = 1;
  private pending = new Map<string, number>();

  constructor(readonly clock: FakeClock) {
    clock.onSleep = () => this.step();
  }

  /** Called after every successful create (e.g. to play an operator that makes workloads for a CR). */
  afterCreate: (kind: string, object: KubeObject) => void = () => {};

  /** Puts any object into the store as is. */
  add(kind: string, object: KubeObject): void {
    const o = { ...structuredClone(object), kind } as Obj;
    o.metadata.resourceVersion = String(this.rv++);
    this.objects.set(this.key(kind, object.metadata.namespace, object.metadata.name), o);
  }

  private key(kind: string, namespace: string | undefined, name: string): string {
    return `${kind}/${namespace ?? ''}/${name}`;
  }

  addWorkload(
    kind: 'StatefulSet' | 'Deployment',
    namespace: string,
    name: string,
    replicas: number,
    extra: { labels?: Record<string, string>; annotations?: Record<string, string> } = {},
  ): void {
    const object: Obj = {
      apiVersion: 'apps/v1',
      kind,
      metadata: {
        name,
        namespace,
        uid: `uid-${name}`,
        resourceVersion: String(this.rv++),
        labels: extra.labels,
        annotations: extra.annotations,
        generation: 1,
      } as KubeObject['metadata'],
      spec: { replicas, selector: { matchLabels: { app: name } }, template: { spec: { containers: [] } } },
      status: { replicas, readyReplicas: replicas, observedGeneration: 1 },
    };
    this.objects.set(this.key(kind, namespace, name), object);
    for (let i = 0; i < replicas; i++) this.addPod(namespace, `${name}-${i}`, name);
  }

  private addPod(namespace: string, name: string, app: string): void {
    this.objects.set(this.key('Pod', namespace, name), {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace, labels: { app }, resourceVersion: String(this.rv++) },
    });
  }

  workload(kind: string, namespace: string, name: string): Obj {
    const o = this.objects.get(this.key(kind, namespace, name));
    if (!o) throw new Error(`no ${kind} ${name}`);
    return o;
  }

  replicas(kind: string, namespace: string, name: string): number {
    return (this.workload(kind, namespace, name).spec as { replicas: number }).replicas;
  }

  annotations(kind: string, namespace: string, name: string): Record<string, string> {
    return this.workload(kind, namespace, name).metadata.annotations ?? {};
  }

  pods(namespace: string, app: string): Obj[] {
    return [...this.objects.values()].filter(
      (o) => o.kind === 'Pod' && o.metadata.namespace === namespace && o.metadata.labels?.app === app,
    );
  }

  /** One controller step: pods move one step towards spec.replicas, status follows. */
  step(): void {
    for (const o of [...this.objects.values()]) {
      if (o.kind !== 'StatefulSet' && o.kind !== 'Deployment') continue;
      const name = o.metadata.name;
      const ns = o.metadata.namespace as string;
      const want = (o.spec as { replicas: number }).replicas;
      const pods = this.pods(ns, name);
      const key = `${ns}/${name}`;
      const waited = (this.pending.get(key) ?? 0) + 1;
      if (pods.length !== want && waited < this.podDelaySteps) {
        this.pending.set(key, waited);
        continue;
      }
      this.pending.delete(key);
      if (pods.length > want && !this.stuckPods.has(name)) {
        for (const p of pods.slice(want)) this.objects.delete(this.key('Pod', ns, p.metadata.name));
      }
      if (pods.length < want) for (let i = pods.length; i < want; i++) this.addPod(ns, `${name}-${i}`, name);
      const count = this.pods(ns, name).length;
      const meta = o.metadata as KubeObject['metadata'] & { generation?: number };
      o.status = {
        replicas: count,
        readyReplicas: this.neverReady.has(name) ? 0 : Math.min(count, want),
        observedGeneration: meta.generation,
      };
    }
  }

  private fault(verb: Fault['verb'], name?: string): void {
    const f = this.faults.find((x) => x.verb === verb && (x.name === undefined || x.name === name) && x.times > 0);
    if (!f) return;
    f.times--;
    if (f.status === 'connection') throw new KubeConnectionError('connection refused', this.server);
    throw new KubeApiError(
      f.status,
      { kind: 'Status', message: `injected ${f.status}`, code: f.status },
      verb,
      name ?? '',
    );
  }

  async get<T extends KubeObject>(kind: Kind, namespace: string | undefined, name: string): Promise<T | undefined> {
    this.calls.push({ verb: 'get', kind, name, at: this.clock.now() });
    this.fault('get', name);
    const o = this.objects.get(this.key(kind, namespace, name));
    return o ? (structuredClone(o) as unknown as T) : undefined;
  }

  async list<T extends KubeObject>(kind: Kind, namespace: string | undefined, labelSelector?: string): Promise<T[]> {
    this.calls.push({ verb: 'list', kind, at: this.clock.now() });
    this.fault('list');
    const wanted = (labelSelector ?? '')
      .split(',')
      .filter(Boolean)
      .map((p) => p.split('='));
    return [...this.objects.values()]
      .filter((o) => o.kind === kind && (!namespace || o.metadata.namespace === namespace))
      .filter((o) => wanted.every(([k, v]) => o.metadata.labels?.[k] === v))
      .map((o) => structuredClone(o) as unknown as T);
  }

  async create<T extends KubeObject>(kind: Kind, namespace: string | undefined, body: T): Promise<T> {
    this.calls.push({ verb: 'create', kind, name: body.metadata.name, body, at: this.clock.now() });
    this.fault('create', body.metadata.name);
    const key = this.key(kind, namespace, body.metadata.name);
    if (this.objects.has(key)) throw new KubeApiError(409, undefined, 'POST', key);
    const o = { ...structuredClone(body), kind, metadata: { ...body.metadata, resourceVersion: String(this.rv++) } };
    this.objects.set(key, o as Obj);
    this.afterCreate(kind, o);
    return structuredClone(o) as T;
  }

  async replace<T extends KubeObject>(kind: Kind, namespace: string | undefined, body: T): Promise<T> {
    const key = this.key(kind, namespace, body.metadata.name);
    this.objects.set(key, structuredClone({ ...body, kind }) as unknown as Obj);
    return body;
  }

  async patch<T extends KubeObject>(
    kind: Kind,
    namespace: string | undefined,
    name: string,
    patch: unknown,
    _type?: PatchType,
  ): Promise<T> {
    this.calls.push({ verb: 'patch', kind, name, body: structuredClone(patch), at: this.clock.now() });
    this.fault('patch', name);
    const key = this.key(kind, namespace, name);
    const current = this.objects.get(key);
    if (!current) throw new KubeApiError(404, undefined, 'PATCH', key);
    const wantRv = (patch as { metadata?: { resourceVersion?: string } }).metadata?.resourceVersion;
    if (wantRv !== undefined && wantRv !== current.metadata.resourceVersion) {
      throw new KubeApiError(409, { kind: 'Status', reason: 'Conflict', code: 409 }, 'PATCH', key);
    }
    const next = mergePatch(current, patch) as Obj;
    const meta = next.metadata as KubeObject['metadata'] & { generation?: number };
    meta.resourceVersion = String(this.rv++);
    if (JSON.stringify(next.spec) !== JSON.stringify(current.spec)) meta.generation = (meta.generation ?? 0) + 1;
    this.objects.set(key, next);
    return structuredClone(next) as unknown as T;
  }

  async delete(kind: Kind, namespace: string | undefined, name: string): Promise<boolean> {
    this.calls.push({ verb: 'delete', kind, name, at: this.clock.now() });
    this.fault('delete', name);
    return this.objects.delete(this.key(kind, namespace, name));
  }

  async exec(): Promise<ExecResult> {
    throw new Error('exec is not faked');
  }

  async portForward(): Promise<PortForwardHandle> {
    throw new Error('portForward is not faked');
  }
}

/** A clock whose sleep advances time at once and lets the fake cluster take a step. */
export class FakeClock implements Clock {
  time = Date.UTC(2026, 0, 1);
  sleeps: number[] = [];
  onSleep: () => void = () => {};

  now(): number {
    return this.time;
  }

  async sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) throw interruption(signal);
    this.sleeps.push(ms);
    this.time += ms;
    this.onSleep();
    await Promise.resolve();
  }
}
