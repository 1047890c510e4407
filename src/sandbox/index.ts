/**
 * Starts the whole sandbox: a real PostgreSQL server, the seeded Kubernetes objects, database rows and media,
 * the controllers, and the simulated Kubernetes API server; writes a kubeconfig pointing at it.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { type ApiRequestRecord, type ApiServer, startApiServer } from './api-server.js';
import { Controller, NODE_NAME, type OperatorLayout } from './controller.js';
import { handlePodUpgrade } from './exec.js';
import { Faults } from './faults.js';
import { startPostgres } from './postgres.js';
import { crdFor, isCustom, RESOURCES, resourceForKind } from './resources.js';
import { ELEMENT_DEPLOYMENT, OPERATOR_NAMESPACE, seedData, seedLayout, seedObjects } from './seed/index.js';
import { kubeTime, MemoryStore, StatusError } from './store.js';
import type {
  ExecProtocolMode,
  KubeObject,
  PostgresInfo,
  RuntimeContext,
  SandboxFaults,
  SandboxStore,
  SeedLayout,
  SeedOptions,
  SeedSummary,
} from './types.js';

export type { ApiRequestRecord } from './api-server.js';

/** Options for {@link startSandbox}; every seed option may be given too. */
export type SandboxOptions = Partial<SeedOptions> & {
  /** Where volumes, the PostgreSQL data directory and the kubeconfig live. Default: a fresh temp dir, removed on stop. */
  stateDir?: string;
  /** API server port on 127.0.0.1 (default: any free port). */
  port?: number;
  /** PostgreSQL port on 127.0.0.1 (default: any free port). */
  pgPort?: number;
  /** Exec subprotocols the API server accepts (default 'v5'; 'v4-only' also reports Kubernetes v1.29). */
  execProtocol?: ExecProtocolMode;
  /** Pending → Running+Ready delay of every pod (default 300 ms). */
  podStartDelayMs?: number;
  /** Delay between a pod's graceful deletion and its disappearance (default 300 ms). */
  podStopDelayMs?: number;
  /** How long startSandbox waits for the seeded workloads to become ready (default 60 s). */
  readyTimeoutMs?: number;
  /** Receives diagnostic lines (PostgreSQL, controller, API faults). */
  log?: (line: string) => void;
};

/** A running sandbox. */
export interface Sandbox {
  /** `<stateDir>/kubeconfig`: cluster, user and context `sandbox`, namespace set. */
  kubeconfigPath: string;
  /** `http://127.0.0.1:PORT`. */
  apiUrl: string;
  stateDir: string;
  /** The seeded namespace ('ess', or 'element-onprem' for the operator flavour). */
  namespace: string;
  release: string;
  flavour: SeedOptions['flavour'];
  postgres: PostgresInfo;
  store: SandboxStore;
  faults: SandboxFaults;
  seed: SeedSummary;
  /** Which PVCs/pods hold the database and the media. */
  layout: SeedLayout;
  /** The bearer token written into the kubeconfig (any token is accepted). */
  token: string;
  /** Every API request so far, newest last (for tests that assert on what a client did). */
  requests: ApiRequestRecord[];
  /** Context handed to the exec/port-forward runtime. */
  runtime: RuntimeContext;
  /** Host directory backing a PVC. */
  volumeDir(namespace: string, claimName: string): string;
  /** Stops the API server, controllers and PostgreSQL; removes a temporary stateDir. Idempotent. */
  stop(): Promise<void>;
}

const DEFAULT_READY_TIMEOUT_MS = 60_000;

/** Starts a sandbox and resolves once its API server answers and every seeded workload is ready. */
export async function startSandbox(options: SandboxOptions = {}): Promise<Sandbox> {
  const log = options.log ?? (() => {});
  const flavour = options.flavour ?? 'matrix-stack';
  const seedOpts: SeedOptions = {
    namespace: options.namespace ?? (flavour === 'operator' ? 'element-onprem' : 'ess'),
    release: options.release ?? 'ess',
    flavour,
    serverName: options.serverName ?? 'ess.localhost',
    users: options.users ?? 200,
    mediaMb: options.mediaMb ?? 5,
    nowMs: options.nowMs ?? Date.now(),
  };
  for (const k of ['synapseSchemaFile', 'stuckRelease', 'eventsPerUser', 'dbMb', 'mediaWorker'] as const) {
    if (options[k] !== undefined) (seedOpts as unknown as Record<string, unknown>)[k] = options[k];
  }
  const ownsStateDir = !options.stateDir;
  const stateDir = path.resolve(options.stateDir ?? (await mkdtemp(path.join(os.tmpdir(), 'ess-sandbox-'))));
  await mkdir(stateDir, { recursive: true });
  // PostgreSQL runs as the `postgres` OS user and must be able to traverse into the state directory.
  await chmod(stateDir, 0o755);

  const volumeDir = (namespace: string, claim: string) => ensureDir(path.join(stateDir, 'volumes', namespace, claim));
  const emptyDirPath = (namespace: string, pod: string, volume: string) =>
    ensureDir(path.join(stateDir, 'pods', namespace, pod, volume));

  const cleanups: (() => Promise<void> | void)[] = [];
  const runCleanups = async () => {
    for (const c of cleanups.splice(0).reverse()) {
      try {
        await c();
      } catch (err) {
        log(`sandbox: cleanup failed: ${(err as Error).message}`);
      }
    }
  };
  if (ownsStateDir) cleanups.push(() => rm(stateDir, { recursive: true, force: true }));

  const t0 = Date.now();
  const phase = (what: string) => log(`sandbox: ${what} after ${Date.now() - t0} ms`);
  try {
    const layout = seedLayout(seedOpts);
    const pg = await startPostgres({
      dataDir: path.join(volumeDir(seedOpts.namespace, layout.postgresClaim), 'pgdata'),
      port: options.pgPort,
      log,
    });
    cleanups.push(() => pg.stop());
    phase('PostgreSQL started');
    const postgres: PostgresInfo = {
      host: pg.host,
      port: pg.port,
      binDir: pg.binDir,
      superuser: pg.superuser,
      url: pg.url,
      version: pg.version,
    };

    const store = new MemoryStore(log);
    const faults = new Faults(store);
    loadObjects(store, seedOpts, seedObjects(seedOpts));
    phase('objects seeded');

    const seed = await seedData(postgres, seedOpts, { mediaDir: volumeDir(seedOpts.namespace, layout.mediaClaim) });
    phase('data seeded');

    const operator: OperatorLayout | undefined =
      flavour === 'operator'
        ? {
            namespace: seedOpts.namespace,
            operatorNamespace: OPERATOR_NAMESPACE,
            operatorDeployment: 'element-operator-controller-manager',
            elementDeployment: ELEMENT_DEPLOYMENT,
          }
        : undefined;
    const controller = new Controller({
      store,
      faults,
      podStartDelayMs: options.podStartDelayMs ?? 300,
      podStopDelayMs: options.podStopDelayMs ?? 300,
      operator,
      log,
    });
    controller.start();
    cleanups.push(() => controller.stop());
    await controller.waitUntilSettled(options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS);
    phase('workloads ready');

    const execProtocol = options.execProtocol ?? 'v5';
    const runtime: RuntimeContext = { stateDir, execProtocol, store, faults, postgres, volumeDir, emptyDirPath };
    const api: ApiServer = await startApiServer({
      store,
      faults,
      runtime,
      upgradeHandler: handlePodUpgrade,
      port: options.port,
      gitVersion: execProtocol === 'v4-only' ? 'v1.29.8' : 'v1.31.0',
      log,
    });
    cleanups.push(() => api.stop());

    const token = `sandbox-${randomBytes(16).toString('hex')}`;
    const kubeconfigPath = path.join(stateDir, 'kubeconfig');
    await writeFile(kubeconfigPath, kubeconfig(api.url, token, seedOpts.namespace), { mode: 0o600 });

    let stopping: Promise<void> | undefined;
    return {
      kubeconfigPath,
      apiUrl: api.url,
      stateDir,
      namespace: seedOpts.namespace,
      release: seedOpts.release,
      flavour,
      postgres,
      store,
      faults,
      seed,
      layout,
      token,
      requests: api.requests,
      runtime,
      volumeDir,
      stop(): Promise<void> {
        stopping ??= runCleanups();
        return stopping;
      },
    };
  } catch (err) {
    await runCleanups();
    throw err;
  }
}

function ensureDir(dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  return dir;
}

/** Loads the seeded objects plus the cluster basics every real cluster has. */
function loadObjects(store: MemoryStore, opts: SeedOptions, objects: KubeObject[]): void {
  const ns = resourceForKind('Namespace', 'v1');
  const created = kubeTime(opts.nowMs - 365 * 86_400_000);
  const put = (o: KubeObject) => {
    try {
      store.create(store.resourceByKind(o.kind, o.apiVersion), o);
    } catch (err) {
      if (!(err instanceof StatusError && err.body.reason === 'AlreadyExists')) throw err;
    }
  };
  const system = ['default', 'kube-system', 'kube-public', 'kube-node-lease'];
  const seededNs = objects.filter((o) => o.kind === 'Namespace');
  for (const o of seededNs) put(o);
  for (const name of system) {
    put({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name, creationTimestamp: created, labels: { 'kubernetes.io/metadata.name': name } },
      spec: { finalizers: ['kubernetes'] },
      status: { phase: 'Active' },
    });
  }
  for (const o of objects) if (o.kind !== 'Namespace') put(o);
  for (const n of store.list(ns, undefined)) {
    put({
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      metadata: { name: 'default', namespace: n.metadata.name, creationTimestamp: n.metadata.creationTimestamp },
    });
  }
  put({
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: NODE_NAME,
      creationTimestamp: created,
      labels: {
        'kubernetes.io/hostname': NODE_NAME,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        'node-role.kubernetes.io/control-plane': 'true',
      },
    },
    spec: { podCIDR: '10.42.0.0/24' },
    status: {
      addresses: [
        { type: 'InternalIP', address: '172.18.0.2' },
        { type: 'Hostname', address: NODE_NAME },
      ],
      conditions: [
        { type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status' },
      ],
      nodeInfo: {
        kubeletVersion: 'v1.31.0',
        operatingSystem: 'linux',
        architecture: 'amd64',
        containerRuntimeVersion: 'containerd://1.7.20',
      },
    },
  });
  if (opts.flavour === 'operator') {
    for (const r of RESOURCES) if (isCustom(r)) put(crdFor(r, created));
  }
  resolveOwnerUids(store);
}

/** Points ownerReferences whose uid matches no object at the owner of that kind and name, if there is one. */
function resolveOwnerUids(store: MemoryStore): void {
  for (const r of store.resources()) {
    for (const o of store.list(r, undefined)) {
      const refs = o.metadata.ownerReferences;
      if (!refs?.length) continue;
      let changed = false;
      for (const ref of refs) {
        const ownerRes = RESOURCES.find(
          (x) => x.kind === ref.kind && (x.group ? `${x.group}/${x.version}` : x.version) === ref.apiVersion,
        );
        if (!ownerRes) continue;
        const owner = store.get(ownerRes, ownerRes.namespaced ? o.metadata.namespace : undefined, ref.name);
        if (owner && owner.metadata.uid !== ref.uid) {
          ref.uid = owner.metadata.uid as string;
          changed = true;
        }
      }
      if (changed) store.update(r, o);
    }
  }
}

function kubeconfig(server: string, token: string, namespace: string): string {
  return YAML.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'sandbox', cluster: { server, 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'sandbox', user: { token } }],
    contexts: [{ name: 'sandbox', context: { cluster: 'sandbox', user: 'sandbox', namespace } }],
    'current-context': 'sandbox',
    preferences: {},
  });
}
