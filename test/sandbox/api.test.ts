/**
 * The sandbox API server through the real @kubernetes/client-node 1.4: discovery, CRUD, selectors, Status error
 * shapes, patches, the scale subresource, asynchronous pod lifecycles, watches, API faults, upgrade pre-checks
 * and the operator flavour's updater/operator.
 */
import http from 'node:http';
import {
  ApiException,
  ApisApi,
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  VersionApi,
  Watch,
} from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonPatch, mergePatch, strategicMerge } from '../../src/sandbox/api-server.js';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import { matchesLabelSelector, StatusError } from '../../src/sandbox/store.js';
import type { KubeObject } from '../../src/sandbox/types.js';

const DELAYS = { podStartDelayMs: 150, podStopDelayMs: 150 };

async function waitFor<T>(
  what: string,
  fn: () => T | undefined | false | Promise<T | undefined | false>,
  ms = 15_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function apiError(p: Promise<unknown>): Promise<{ code: number; body: Record<string, unknown> }> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ApiException) {
      return { code: err.code, body: JSON.parse(err.body as string) as Record<string, unknown> };
    }
    throw err;
  }
  throw new Error('expected the call to fail');
}

function kubeConfig(sb: Sandbox): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(sb.kubeconfigPath);
  return kc;
}

async function rawGet(
  sb: Sandbox,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${sb.apiUrl}${path}`, { headers: { Authorization: `Bearer ${sb.token}`, ...headers } });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/** Sends an exec-style upgrade request and returns the plain-HTTP answer (status + JSON body). */
function upgradeRequest(sb: Sandbox, path: string): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${sb.apiUrl}${path}`, {
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': Buffer.from('0123456789abcdef').toString('base64'),
        'Sec-WebSocket-Protocol': 'v5.channel.k8s.io',
      },
    });
    req.on('response', (res) => {
      let text = '';
      res.on('data', (d: Buffer) => {
        text += d.toString();
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> }));
    });
    req.on('upgrade', (_res, socket) => {
      socket.destroy();
      reject(new Error('unexpected upgrade'));
    });
    req.on('error', reject);
    req.end();
  });
}

function pods(sb: Sandbox, selector: string): KubeObject[] {
  return sb.store.list(sb.store.resourceByKind('Pod', 'v1'), sb.namespace, selector);
}

describe('patch and selector semantics', () => {
  it('merges lists by their strategic merge keys', () => {
    const pod = {
      spec: {
        containers: [
          { name: 'a', image: 'x:1', env: [{ name: 'A', value: '1' }], volumeMounts: [{ name: 'v', mountPath: '/m' }] },
          { name: 'b', image: 'y:1' },
        ],
        finalizers: ['f1'],
      },
    };
    const out = strategicMerge(pod, {
      spec: {
        containers: [
          { name: 'a', env: [{ name: 'B', value: '2' }], volumeMounts: [{ mountPath: '/m', readOnly: true }] },
          { name: 'b', $patch: 'delete' },
        ],
        finalizers: ['f2'],
      },
    });
    expect(out).toEqual({
      spec: {
        containers: [
          {
            name: 'a',
            image: 'x:1',
            env: [
              { name: 'A', value: '1' },
              { name: 'B', value: '2' },
            ],
            volumeMounts: [{ name: 'v', mountPath: '/m', readOnly: true }],
          },
        ],
        finalizers: ['f1', 'f2'],
      },
    });
    // A merge patch replaces lists and deletes keys set to null.
    expect(mergePatch({ a: [1, 2], b: { c: 1, d: 2 } }, { a: [3], b: { c: null } })).toEqual({ a: [3], b: { d: 2 } });
  });

  it('applies JSON patches and fails a failed test op with 422', () => {
    expect(
      jsonPatch({ a: { b: [1, 2] } }, [
        { op: 'add', path: '/a/b/-', value: 3 },
        { op: 'replace', path: '/a/b/0', value: 0 },
        { op: 'copy', from: '/a/b', path: '/c' },
        { op: 'move', from: '/c', path: '/d~1e' },
      ]),
    ).toEqual({ a: { b: [0, 2, 3] }, 'd/e': [0, 2, 3] });
    let err: unknown;
    try {
      jsonPatch({ a: 1 }, [{ op: 'test', path: '/a', value: 2 }]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StatusError);
    expect((err as StatusError).code).toBe(422);
  });

  it('evaluates set-based label selectors', () => {
    const labels = { app: 'synapse', tier: 'backend' };
    expect(matchesLabelSelector(labels, 'app in (synapse,mas),tier!=frontend,!gone')).toBe(true);
    expect(matchesLabelSelector(labels, 'app notin (synapse)')).toBe(false);
    expect(matchesLabelSelector(labels, 'missing!=x')).toBe(true);
    expect(matchesLabelSelector(labels, 'tier')).toBe(true);
    expect(matchesLabelSelector(labels, 'app==mas')).toBe(false);
    expect(() => matchesLabelSelector(labels, 'app=(bad')).toThrow(StatusError);
  });
});

describe('sandbox API server (matrix-stack flavour)', () => {
  let sb: Sandbox;
  let core: CoreV1Api;
  let apps: AppsV1Api;
  let coord: CoordinationV1Api;
  let kc: KubeConfig;
  const NS = 'ess';

  beforeAll(async () => {
    sb = await startSandbox({ users: 20, mediaMb: 1, ...DELAYS });
    kc = kubeConfig(sb);
    core = kc.makeApiClient(CoreV1Api);
    apps = kc.makeApiClient(AppsV1Api);
    coord = kc.makeApiClient(CoordinationV1Api);
  });
  afterAll(async () => {
    await sb?.stop();
  });

  it('serves discovery like a v1.31 API server', async () => {
    const version = await kc.makeApiClient(VersionApi).getCode();
    expect(version.gitVersion).toBe('v1.31.0');
    const groups = await kc.makeApiClient(ApisApi).getAPIVersions();
    const names = groups.groups.map((g) => g.name);
    expect(names).toEqual(expect.arrayContaining(['apps', 'batch', 'coordination.k8s.io', 'networking.k8s.io']));
    // No operator CRDs in this flavour, so its group is not served.
    expect(names).not.toContain('matrix.element.io');

    const v1 = await core.getAPIResources();
    const byName = new Map(v1.resources.map((r) => [r.name, r]));
    expect(byName.get('pods')?.shortNames).toEqual(['po']);
    expect(byName.get('pods/exec')?.kind).toBe('PodExecOptions');
    expect(byName.get('persistentvolumes')?.namespaced).toBe(false);
    const appsRes = await apps.getAPIResources();
    const scale = appsRes.resources.find((r) => r.name === 'statefulsets/scale');
    expect(scale).toMatchObject({ kind: 'Scale', group: 'autoscaling', version: 'v1' });
    expect(appsRes.resources.find((r) => r.name === 'statefulsets')?.shortNames).toEqual(['sts']);
  });

  it('gets and lists with label and field selectors', async () => {
    const secrets = await core.listNamespacedSecret({
      namespace: NS,
      labelSelector: 'app.kubernetes.io/managed-by=matrix-tools-init-secrets',
    });
    expect(secrets.items.map((s) => s.metadata?.name)).toEqual(['ess-generated']);
    expect(secrets.kind).toBe('SecretList');
    expect(Number(secrets.metadata?.resourceVersion)).toBeGreaterThan(0);

    const sts = await apps.listNamespacedStatefulSet({
      namespace: NS,
      labelSelector:
        'app.kubernetes.io/component in (matrix-server),app.kubernetes.io/name!=synapse-federation-sender,!nope',
    });
    const names = sts.items.map((s) => s.metadata?.name);
    expect(names).toContain('ess-synapse-main');
    expect(names).not.toContain('ess-postgres');
    expect(names).not.toContain('ess-synapse-fed-sender');

    const one = await apps.listNamespacedStatefulSet({ namespace: NS, fieldSelector: 'metadata.name=ess-postgres' });
    expect(one.items.map((s) => s.metadata?.name)).toEqual(['ess-postgres']);

    const allPods = await core.listPodForAllNamespaces({ labelSelector: 'app.kubernetes.io/instance=ess-postgres' });
    expect(allPods.items.map((p) => `${p.metadata?.namespace}/${p.metadata?.name}`)).toEqual(['ess/ess-postgres-0']);
    expect(allPods.items[0].status?.phase).toBe('Running');

    const nowhere = await core.listNamespacedSecret({ namespace: 'does-not-exist' });
    expect(nowhere.items).toEqual([]);

    const bad = await apiError(core.listNamespacedPod({ namespace: NS, fieldSelector: 'spec.bogus=1' }));
    expect(bad.code).toBe(400);
    expect(bad.body.message).toBe('field label not supported: spec.bogus');
  });

  it('pages lists with limit and continue', async () => {
    const first = await core.listNamespacedConfigMap({ namespace: NS, limit: 2 });
    expect(first.items).toHaveLength(2);
    expect(first.metadata?._continue).toBeTruthy();
    const rest = await core.listNamespacedConfigMap({ namespace: NS, _continue: first.metadata?._continue });
    const all = await core.listNamespacedConfigMap({ namespace: NS });
    expect([...first.items, ...rest.items].map((c) => c.metadata?.name)).toEqual(
      all.items.map((c) => c.metadata?.name),
    );
  });

  it('answers errors with real Status bodies', async () => {
    const nf = await apiError(apps.readNamespacedStatefulSet({ name: 'x', namespace: NS }));
    expect(nf.code).toBe(404);
    expect(nf.body).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: 'statefulsets.apps "x" not found',
      reason: 'NotFound',
      details: { name: 'x', group: 'apps', kind: 'statefulsets' },
      code: 404,
    });

    const exists = await apiError(
      core.createNamespacedSecret({ namespace: NS, body: { metadata: { name: 'ess-generated' }, data: {} } }),
    );
    expect(exists.code).toBe(409);
    expect(exists.body).toMatchObject({
      reason: 'AlreadyExists',
      message: 'secrets "ess-generated" already exists',
      details: { name: 'ess-generated', kind: 'secrets' },
    });

    const noNs = await apiError(
      core.createNamespacedConfigMap({ namespace: 'nope', body: { metadata: { name: 'a' } } }),
    );
    expect(noNs.code).toBe(404);
    expect(noNs.body).toMatchObject({ message: 'namespaces "nope" not found', reason: 'NotFound' });

    const invalid = await apiError(
      core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'Bad_Name' } } }),
    );
    expect(invalid.code).toBe(422);
    expect(invalid.body.reason).toBe('Invalid');
    expect(String(invalid.body.message)).toMatch(/^ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value/);

    const forbidden = await apiError(core.deleteNamespace({ name: 'default' }));
    expect(forbidden.code).toBe(403);
    expect(forbidden.body.message).toBe('namespaces "default" is forbidden: this namespace may not be deleted');
  });

  it('rejects a stale resourceVersion with 409 Conflict and bumps versions on writes', async () => {
    const created = await core.createNamespacedConfigMap({
      namespace: NS,
      body: { metadata: { name: 'conflict-me' }, data: { a: '1' } },
    });
    const rv1 = Number(created.metadata?.resourceVersion);
    const updated = await core.replaceNamespacedConfigMap({
      name: 'conflict-me',
      namespace: NS,
      body: { ...created, data: { a: '2' } },
    });
    expect(Number(updated.metadata?.resourceVersion)).toBeGreaterThan(rv1);
    expect(updated.metadata?.uid).toBe(created.metadata?.uid);
    const stale = await apiError(
      core.replaceNamespacedConfigMap({ name: 'conflict-me', namespace: NS, body: { ...created, data: { a: '3' } } }),
    );
    expect(stale.code).toBe(409);
    expect(stale.body).toMatchObject({
      reason: 'Conflict',
      message:
        'Operation cannot be fulfilled on configmaps "conflict-me": the object has been modified; please apply your changes to the latest version and try again',
    });
    expect((await core.readNamespacedConfigMap({ name: 'conflict-me', namespace: NS })).data).toEqual({ a: '2' });
    await core.deleteNamespacedConfigMap({ name: 'conflict-me', namespace: NS });
    expect((await apiError(core.readNamespacedConfigMap({ name: 'conflict-me', namespace: NS }))).code).toBe(404);
  });

  it('applies merge, strategic-merge and JSON patches', async () => {
    const before = await apps.readNamespacedStatefulSet({ name: 'ess-synapse-main', namespace: NS });
    const merged = await apps.patchNamespacedStatefulSet(
      { name: 'ess-synapse-main', namespace: NS, body: { metadata: { labels: { 'sandbox-test': 'merge' } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(merged.metadata?.labels?.['sandbox-test']).toBe('merge');
    expect(merged.metadata?.labels?.['app.kubernetes.io/component']).toBe('matrix-server');
    expect(merged.metadata?.generation).toBe(before.metadata?.generation);
    expect(Number(merged.metadata?.resourceVersion)).toBeGreaterThan(Number(before.metadata?.resourceVersion));

    const envBefore = before.spec?.template.spec?.containers.find((c) => c.name === 'synapse')?.env ?? [];
    const strategic = await apps.patchNamespacedStatefulSet(
      {
        name: 'ess-synapse-main',
        namespace: NS,
        body: {
          spec: {
            template: { spec: { containers: [{ name: 'synapse', env: [{ name: 'SANDBOX_TEST', value: '1' }] }] } },
          },
        },
      },
      setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
    );
    const synapse = strategic.spec?.template.spec?.containers.find((c) => c.name === 'synapse');
    expect(synapse?.image).toBe(before.spec?.template.spec?.containers.find((c) => c.name === 'synapse')?.image);
    expect(synapse?.env?.map((e) => e.name)).toEqual([...envBefore.map((e) => e.name), 'SANDBOX_TEST']);
    expect(strategic.metadata?.generation).toBe((before.metadata?.generation ?? 0) + 1);

    const jsonPatched = await apps.patchNamespacedStatefulSet({
      name: 'ess-synapse-main',
      namespace: NS,
      body: [
        { op: 'test', path: '/metadata/labels/sandbox-test', value: 'merge' },
        { op: 'remove', path: '/metadata/labels/sandbox-test' },
      ],
    });
    expect(jsonPatched.metadata?.labels?.['sandbox-test']).toBeUndefined();

    // The template change rolls the pod: it is replaced by one of the new revision.
    await waitFor('rolled synapse pod', () => {
      const p = sb.store.get(sb.store.resourceByKind('Pod', 'v1'), NS, 'ess-synapse-main-0');
      const env = (
        p?.spec as { containers: { name: string; env?: { name: string }[] }[] } | undefined
      )?.containers.find((c) => c.name === 'synapse')?.env;
      return (
        env?.some((e) => e.name === 'SANDBOX_TEST') &&
        (p?.status as { phase?: string } | undefined)?.phase === 'Running'
      );
    });
    await waitFor('sts settled', async () => {
      const s = await apps.readNamespacedStatefulSet({ name: 'ess-synapse-main', namespace: NS });
      return (
        s.status?.readyReplicas === 1 &&
        s.status.updatedReplicas === 1 &&
        s.status.currentRevision === s.status.updateRevision
      );
    });
  });

  it('scales StatefulSets through the scale subresource, asynchronously', async () => {
    const scale = await apps.readNamespacedStatefulSetScale({ name: 'ess-synapse-fed-sender', namespace: NS });
    expect(scale).toMatchObject({
      kind: 'Scale',
      apiVersion: 'autoscaling/v1',
      spec: { replicas: 1 },
      status: { replicas: 1 },
    });
    // The chart selects worker pods by the long worker type name.
    const sel = scale.status?.selector as string;
    expect(sel).toContain('app.kubernetes.io/instance=ess-synapse-federation-sender');

    const down = await apps.replaceNamespacedStatefulSetScale({
      name: 'ess-synapse-fed-sender',
      namespace: NS,
      body: { ...scale, spec: { replicas: 0 } },
    });
    expect(down.spec?.replicas).toBe(0);
    // Scaling down does not remove the pod synchronously: it is terminating first.
    const terminating = await waitFor('terminating pod', () => pods(sb, sel).find((p) => p.metadata.deletionTimestamp));
    expect(terminating.metadata.name).toBe('ess-synapse-fed-sender-0');
    await waitFor('pod gone', () => pods(sb, sel).length === 0);
    const stopped = await apps.readNamespacedStatefulSet({ name: 'ess-synapse-fed-sender', namespace: NS });
    expect(stopped.status?.replicas).toBe(0);
    expect(stopped.status?.readyReplicas).toBeUndefined();

    await apps.patchNamespacedStatefulSetScale(
      { name: 'ess-synapse-fed-sender', namespace: NS, body: { spec: { replicas: 1 } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    const pending = await waitFor('new pod', () => pods(sb, sel)[0]);
    expect((pending.status as { phase: string }).phase).toBe('Pending');
    await waitFor('sts ready', async () => {
      const s = await apps.readNamespacedStatefulSet({ name: 'ess-synapse-fed-sender', namespace: NS });
      return s.status?.readyReplicas === 1 && s.status.availableReplicas === 1;
    });
    const pod = await core.readNamespacedPod({ name: 'ess-synapse-fed-sender-0', namespace: NS });
    expect(pod.status?.phase).toBe('Running');
    expect(pod.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
    expect(pod.metadata?.ownerReferences?.[0]).toMatchObject({
      kind: 'StatefulSet',
      name: 'ess-synapse-fed-sender',
      controller: true,
    });

    const negative = await apiError(
      apps.replaceNamespacedStatefulSetScale({
        name: 'ess-synapse-fed-sender',
        namespace: NS,
        body: { spec: { replicas: -1 } },
      }),
    );
    expect(negative.code).toBe(422);
  });

  it('scales Deployments: ReplicaSet pods with hashed names come and go', async () => {
    const name = 'ess-matrix-authentication-service';
    await apps.patchNamespacedDeploymentScale(
      { name, namespace: NS, body: { spec: { replicas: 2 } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    const two = await waitFor('two MAS pods', () => {
      const p = pods(sb, `app.kubernetes.io/instance=${name}`).filter(
        (x) => (x.status as { phase: string }).phase === 'Running',
      );
      return p.length === 2 && p;
    });
    for (const p of two) expect(p.metadata.name).toMatch(new RegExp(`^${name}-[0-9a-f]{10}-[a-z0-9]{5}$`));
    await waitFor('deployment status', async () => {
      const d = await apps.readNamespacedDeployment({ name, namespace: NS });
      return d.status?.readyReplicas === 2 && d.status.updatedReplicas === 2 && d.status.availableReplicas === 2;
    });
    await apps.replaceNamespacedDeploymentScale({
      name,
      namespace: NS,
      body: { metadata: { name }, spec: { replicas: 0 } },
    });
    await waitFor('MAS pods gone', () => pods(sb, `app.kubernetes.io/instance=${name}`).length === 0);
    const d = await apps.readNamespacedDeployment({ name, namespace: NS });
    expect(d.status?.replicas).toBeUndefined();
    expect(d.status?.readyReplicas).toBeUndefined();
    await apps.patchNamespacedDeploymentScale(
      { name, namespace: NS, body: { spec: { replicas: 1 } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    await waitFor(
      'MAS back',
      async () => (await apps.readNamespacedDeployment({ name, namespace: NS })).status?.readyReplicas === 1,
    );
  });

  it('recreates a directly deleted pod, and streams the change over a watch', async () => {
    const before = await core.readNamespacedPod({ name: 'ess-synapse-main-0', namespace: NS });
    const events: { type: string; name: string; uid: string; deleting: boolean }[] = [];
    const watch = new Watch(kc);
    const ctrl = await watch.watch(
      `/api/v1/namespaces/${NS}/pods`,
      {
        labelSelector: 'app.kubernetes.io/instance=ess-synapse-main',
        resourceVersion: before.metadata?.resourceVersion,
      },
      (type, obj: KubeObject) => {
        events.push({
          type,
          name: obj.metadata.name,
          uid: obj.metadata.uid ?? '',
          deleting: !!obj.metadata.deletionTimestamp,
        });
      },
      () => {},
    );
    try {
      const deleted = await core.deleteNamespacedPod({ name: 'ess-synapse-main-0', namespace: NS });
      expect(deleted.metadata?.deletionTimestamp).toBeTruthy();
      const after = await waitFor('replacement pod', async () => {
        const p = await core.readNamespacedPod({ name: 'ess-synapse-main-0', namespace: NS }).catch(() => undefined);
        return p && p.metadata?.uid !== before.metadata?.uid && p.status?.phase === 'Running' && p;
      });
      expect(after.metadata?.name).toBe('ess-synapse-main-0');
      await waitFor('watch events', () => events.some((e) => e.type === 'MODIFIED' && e.uid === after.metadata?.uid));
      const oldUid = before.metadata?.uid;
      expect(events.find((e) => e.uid === oldUid && e.deleting)?.type).toBe('MODIFIED');
      expect(events.filter((e) => e.uid === oldUid).at(-1)?.type).toBe('DELETED');
      expect(events.find((e) => e.uid === after.metadata?.uid)?.type).toBe('ADDED');
    } finally {
      ctrl.abort();
    }
  });

  it('injects API faults with real Status bodies', async () => {
    sb.faults.addApiFault({ verb: 'list', resource: 'secrets', status: 500 });
    const failed = await apiError(core.listNamespacedSecret({ namespace: NS }));
    expect(failed.code).toBe(500);
    expect(failed.body).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'InternalError', code: 500 });
    expect((await core.listNamespacedSecret({ namespace: NS })).items.length).toBeGreaterThan(0);

    sb.faults.addApiFault({ verb: 'patch', resource: 'statefulsets', name: 'ess-postgres', status: 403, times: 2 });
    for (let i = 0; i < 2; i++) {
      const denied = await apiError(
        apps.patchNamespacedStatefulSetScale(
          { name: 'ess-postgres', namespace: NS, body: { spec: { replicas: 1 } } },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
        ),
      );
      expect(denied.code).toBe(403);
      expect(denied.body).toMatchObject({
        reason: 'Forbidden',
        details: { name: 'ess-postgres', group: 'apps', kind: 'statefulsets' },
      });
      expect(String(denied.body.message)).toMatch(
        /^statefulsets\.apps "ess-postgres" is forbidden: User ".*" cannot patch resource "statefulsets\/scale"/,
      );
    }
    const ok = await apps.patchNamespacedStatefulSetScale(
      { name: 'ess-postgres', namespace: NS, body: { spec: { replicas: 1 } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(ok.spec?.replicas).toBe(1);
  });

  it('serves coordination leases with optimistic concurrency', async () => {
    const lease = await coord.createNamespacedLease({
      namespace: NS,
      body: { metadata: { name: 'ess-ops-lock' }, spec: { holderIdentity: 'a', leaseDurationSeconds: 30 } },
    });
    const taken = await coord.replaceNamespacedLease({
      name: 'ess-ops-lock',
      namespace: NS,
      body: { ...lease, spec: { ...lease.spec, holderIdentity: 'b' } },
    });
    expect(taken.spec?.holderIdentity).toBe('b');
    const lost = await apiError(
      coord.replaceNamespacedLease({
        name: 'ess-ops-lock',
        namespace: NS,
        body: { ...lease, spec: { holderIdentity: 'c' } },
      }),
    );
    expect(lost.code).toBe(409);
    expect(lost.body.message).toMatch(/^Operation cannot be fulfilled on leases.coordination.k8s.io "ess-ops-lock"/);
    await coord.deleteNamespacedLease({ name: 'ess-ops-lock', namespace: NS });
  });

  it('prints Tables for server-side printing', async () => {
    const { status, json } = await rawGet(sb, `/apis/apps/v1/namespaces/${NS}/statefulsets`, {
      Accept: 'application/json;as=Table;v=v1;g=meta.k8s.io,application/json',
    });
    expect(status).toBe(200);
    expect(json.kind).toBe('Table');
    const cols = (json.columnDefinitions as { name: string }[]).map((c) => c.name);
    expect(cols.slice(0, 3)).toEqual(['Name', 'Ready', 'Age']);
    const rows = json.rows as { cells: unknown[] }[];
    expect(rows.find((r) => r.cells[0] === 'ess-postgres')?.cells[1]).toBe('1/1');
  });

  it('checks pods before handing exec upgrades to the runtime', async () => {
    const missing = await upgradeRequest(
      sb,
      `/api/v1/namespaces/${NS}/pods/nope/exec?command=true&container=x&stdout=true`,
    );
    expect(missing.status).toBe(404);
    expect(missing.body).toMatchObject({ reason: 'NotFound', message: 'pods "nope" not found' });

    const wrong = await upgradeRequest(
      sb,
      `/api/v1/namespaces/${NS}/pods/ess-postgres-0/exec?command=true&container=nope&stdout=true`,
    );
    expect(wrong.status).toBe(400);
    expect(wrong.body.message).toBe('container nope is not valid for pod ess-postgres-0');

    sb.faults.delayReadiness('sandbox-probe', 60_000);
    await core.createNamespacedPod({
      namespace: NS,
      body: {
        metadata: { name: 'sandbox-probe' },
        spec: { containers: [{ name: 'main', image: 'docker.io/library/busybox:1.36' }] },
      },
    });
    const pending = await upgradeRequest(
      sb,
      `/api/v1/namespaces/${NS}/pods/sandbox-probe/exec?command=true&container=main&stdout=true`,
    );
    expect(pending.status).toBe(400);
    expect(pending.body).toMatchObject({
      reason: 'BadRequest',
      message: 'pod sandbox-probe does not have a host assigned',
    });

    sb.faults.addApiFault({ resource: 'pods', subresource: 'exec', status: 503 });
    const unavailable = await upgradeRequest(
      sb,
      `/api/v1/namespaces/${NS}/pods/ess-postgres-0/exec?command=true&container=postgres&stdout=true`,
    );
    expect(unavailable.status).toBe(503);
    await core.deleteNamespacedPod({ name: 'sandbox-probe', namespace: NS });
    expect(pods(sb, '').some((p) => p.metadata.name === 'sandbox-probe')).toBe(false);
  });

  it('records requests and bearer tokens', () => {
    const mine = sb.requests.filter((r) => r.token === sb.token);
    expect(mine.length).toBeGreaterThan(10);
    expect(mine.some((r) => r.verb === 'patch' && r.resource === 'statefulsets' && r.subresource === 'scale')).toBe(
      true,
    );
  });
});

describe('sandbox API server (operator flavour)', () => {
  let sb: Sandbox;
  let apps: AppsV1Api;
  let custom: CustomObjectsApi;
  const NS = 'element-onprem';
  const CR = {
    group: 'matrix.element.io',
    version: 'v1alpha1',
    namespace: NS,
    plural: 'synapses',
    name: 'first-element-deployment',
  };
  const STS = 'first-element-deployment-synapse-main';

  const synapseSts = () => sb.store.get(sb.store.resourceByKind('StatefulSet', 'apps/v1'), NS, STS);
  const synapseCr = () => sb.store.get(sb.store.resourceByKind('Synapse'), NS, CR.name);
  const operatorPods = () =>
    sb.store.list(sb.store.resourceByKind('Pod', 'v1'), 'operator-onprem', 'control-plane=controller-manager');

  beforeAll(async () => {
    sb = await startSandbox({ flavour: 'operator', users: 20, mediaMb: 1, ...DELAYS });
    const kc = kubeConfig(sb);
    apps = kc.makeApiClient(AppsV1Api);
    custom = kc.makeApiClient(CustomObjectsApi);
  });
  afterAll(async () => {
    await sb?.stop();
  });

  it('serves the operator CRDs and CRs', async () => {
    const groups = await rawGet(sb, '/apis/matrix.element.io/v1alpha1');
    const names = (groups.json.resources as { name: string }[]).map((r) => r.name);
    expect(names).toEqual(expect.arrayContaining(['elementdeployments', 'synapses', 'synapseusers']));
    const ed = (await custom.getNamespacedCustomObject({ ...CR, plural: 'elementdeployments' })) as KubeObject;
    expect(Object.keys((ed.status as { dependentCRs: Record<string, string> }).dependentCRs)).toContain(
      'Synapse/first-element-deployment',
    );
    const cr = (await custom.getNamespacedCustomObject(CR)) as KubeObject;
    expect(synapseSts()?.metadata.ownerReferences?.[0].uid).toBe(cr.metadata.uid);
  });

  it('while the operator runs: a deleted CR comes back with its workloads, direct scaling is reverted', async () => {
    const oldCr = synapseCr();
    const oldSts = synapseSts();
    await custom.deleteNamespacedCustomObject(CR);
    const newSts = await waitFor('recreated sts', () => {
      const s = synapseSts();
      return s && s.metadata.uid !== oldSts?.metadata.uid && s;
    });
    const newCr = synapseCr();
    expect(newCr?.metadata.uid).not.toBe(oldCr?.metadata.uid);
    expect(newSts.metadata.ownerReferences?.[0].uid).toBe(newCr?.metadata.uid);
    await waitFor('synapse pod ready', () =>
      sb.store
        .list(sb.store.resourceByKind('Pod', 'v1'), NS, `app.kubernetes.io/instance=${STS}`)
        .some((p) => (p.status as { phase: string }).phase === 'Running' && !p.metadata.deletionTimestamp),
    );

    await apps.patchNamespacedStatefulSetScale(
      { name: STS, namespace: NS, body: { spec: { replicas: 0 } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    await waitFor(
      'operator reverts replicas',
      () => (synapseSts()?.spec as { replicas: number } | undefined)?.replicas === 1,
    );
  });

  it('with the operator stopped, deleting the CR removes Synapse until the operator is back', async () => {
    await apps.patchNamespacedDeploymentScale(
      { name: 'element-operator-controller-manager', namespace: 'operator-onprem', body: { spec: { replicas: 0 } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    await waitFor('operator stopped', () => operatorPods().length === 0);

    await custom.deleteNamespacedCustomObject(CR);
    await waitFor(
      'synapse workloads garbage-collected',
      () =>
        !synapseSts() &&
        sb.store.list(sb.store.resourceByKind('Pod', 'v1'), NS, `app.kubernetes.io/instance=${STS}`).length === 0,
    );
    await new Promise((r) => setTimeout(r, 500));
    expect(synapseCr()).toBeUndefined();
    expect(synapseSts()).toBeUndefined();
    // The installer-managed database has no owner and keeps running.
    const pg = sb.store.get(sb.store.resourceByKind('Pod', 'v1'), NS, 'synapse-postgres-0');
    expect((pg?.status as { phase: string } | undefined)?.phase).toBe('Running');

    await apps.patchNamespacedDeploymentScale(
      { name: 'element-operator-controller-manager', namespace: 'operator-onprem', body: { spec: { replicas: 1 } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    await waitFor(
      'synapse back',
      () =>
        synapseCr() &&
        sb.store
          .list(sb.store.resourceByKind('Pod', 'v1'), NS, `app.kubernetes.io/instance=${STS}`)
          .some((p) => (p.status as { phase: string }).phase === 'Running'),
    );
  });
});
