/**
 * The sandbox's seeded install: Kubernetes objects ({@link seedObjects}), database contents and media files
 * ({@link seedData}), and where the rest of the sandbox must wire volumes ({@link seedLayout}).
 */
import type { KubeObject, SeedLayout, SeedOptions } from '../types.js';
import { helmReleaseSecrets, releaseHistory } from './helm.js';
import { bindVolume, enabledWorkers, nonChartObjects, renderChart, workerTypeName } from './objects.js';
import { ELEMENT_DEPLOYMENT, operatorObjects } from './operator.js';

export type { SeedLayout, SeedSummary } from '../types.js';
export { databasePasswords, generatedSecretData } from './common.js';
export { seedData } from './data.js';
export { decodeReleaseData, encodeRelease, releaseHistory } from './helm.js';
export { DEPENDENT_CRS, ELEMENT_API_VERSION, ELEMENT_DEPLOYMENT, OPERATOR_NAMESPACE } from './operator.js';

/**
 * Every Kubernetes object of the seeded install, namespaces first. Workloads carry no pods (the sandbox
 * controller creates them); the only seeded pods are the finished pods of the Helm hook Jobs. Objects carry
 * stable `metadata.uid`s that ownerReferences and PV claimRefs point at.
 */
export function seedObjects(opts: SeedOptions): KubeObject[] {
  if (opts.flavour === 'operator') return operatorObjects(opts);
  const history = releaseHistory(opts);
  const deployed = history.revisions.find((r) => r.status === 'deployed');
  if (!deployed) throw new Error('seed: release history has no deployed revision');
  const last = history.revisions[history.revisions.length - 1];
  // The cluster holds the objects of the deployed revision and the hooks of the latest attempt.
  const live = renderChart({
    opts,
    chartVersion: deployed.chartVersion,
    installedMs: history.firstDeployedMs,
    hooksMs: deployed.atMs,
  });
  const hooks =
    last === deployed
      ? live.hooks
      : renderChart({ opts, chartVersion: last.chartVersion, installedMs: history.firstDeployedMs, hooksMs: last.atMs })
          .hooks;
  const pvs: KubeObject[] = [];
  for (const o of live.objects) {
    if (o.kind === 'PersistentVolumeClaim') pvs.push(bindVolume(o, 10, history.firstDeployedMs + 30_000));
  }
  const base = nonChartObjects(opts, history.firstDeployedMs);
  const namespaces = base.filter((o) => o.kind === 'Namespace');
  const rest = base.filter((o) => o.kind !== 'Namespace');
  return [...namespaces, ...pvs, ...rest, ...live.objects, ...hooks, ...helmReleaseSecrets(opts, history)];
}

/** Names the sandbox needs to map volumes: the database PVC/pod and the media PVC/pod. */
export function seedLayout(
  opts: Pick<SeedOptions, 'namespace' | 'release' | 'flavour' | 'mediaWorker' | 'stuckRelease'>,
): SeedLayout {
  if (opts.flavour === 'operator') {
    return {
      namespace: opts.namespace,
      postgresClaim: 'synapse-postgres-data',
      postgresStatefulSet: 'synapse-postgres',
      postgresPod: 'synapse-postgres-0',
      postgresContainer: 'postgres',
      mediaClaim: `${ELEMENT_DEPLOYMENT}-synapse-media`,
      mediaPod: `${ELEMENT_DEPLOYMENT}-synapse-main-0`,
    };
  }
  const R = opts.release;
  const full = { ...opts, serverName: '', users: 0, mediaMb: 0, nowMs: 0 } as SeedOptions;
  const history = releaseHistory({ ...full, nowMs: Date.now() });
  const chart = history.revisions.find((r) => r.status === 'deployed')?.chartVersion ?? '';
  const mediaProcess = enabledWorkers(full).includes('media-repository') ? 'media-repository' : 'main';
  return {
    namespace: opts.namespace,
    postgresClaim: `${R}-postgres-data`,
    postgresStatefulSet: `${R}-postgres`,
    postgresPod: `${R}-postgres-0`,
    postgresContainer: 'postgres',
    mediaClaim: `${R}-synapse-media`,
    mediaPod: `${R}-synapse-${workerTypeName(mediaProcess, chart)}-0`,
  };
}
