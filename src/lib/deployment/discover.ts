import { parse as parseYaml } from 'yaml';
import { PreconditionError } from '../errors.js';
import { listReleaseNames, listReleaseRecords } from '../helm/release.js';
import type { KubeClient } from '../kube/client.js';
import { KubeApiError } from '../kube/client.js';
import type { ConfigMap, KubeObject, PersistentVolumeClaim, Secret, Workload } from '../kube/types.js';
import {
  componentForLabel,
  LABELS,
  MAS_CONFIG_KEY,
  MEDIA_MOUNT_PATH,
  MEDIA_STORE_PATH,
  names,
  OPERATOR_FLAVOUR_NAMESPACE,
  PART_OF_MATRIX_STACK,
  SYNAPSE_CONFIG_KEY,
} from './components.js';
import type { DatabaseInfo, Deployment, MediaInfo, PostgresInfo, WorkloadInfo } from './model.js';
import { discoverOperator } from './operator.js';
import { toWorkloadInfo } from './workload-info.js';

export interface DiscoverOptions {
  namespace: string;
  release: string;
}

function targetHints(options: DiscoverOptions): string[] {
  return [
    `Check the namespace: kubectl get namespaces (then pass -n/--namespace; the operator-based ESS installs into ${OPERATOR_FLAVOUR_NAMESPACE}: -n ${OPERATOR_FLAVOUR_NAMESPACE})`,
    `Check the release: helm list -A (then pass --release), or ess status -n ${options.namespace} --release NAME`,
    'Check the cluster: kubectl config current-context (then pass --context)',
  ];
}

function belongsToRelease(object: KubeObject, release: string): boolean {
  const labels = object.metadata.labels ?? {};
  return labels[LABELS.partOf] === PART_OF_MATRIX_STACK && (labels[LABELS.instance] ?? '').startsWith(`${release}-`);
}

/** Parses a YAML document from a ConfigMap key, tolerating templates Synapse would render later. */
function configYaml(cm: ConfigMap | undefined, key: string): Record<string, unknown> | undefined {
  const text = cm?.data?.[key];
  if (!text) return undefined;
  try {
    const parsed = parseYaml(text) as unknown;
    return parsed && typeof parsed === 'object' ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function asRecord(value: unknown): Record<string, unknown> | undefined {
  return value && typeof value === 'object' ? (value as Record<string, unknown>) : undefined;
}

function databaseFromSynapse(config: Record<string, unknown> | undefined): DatabaseInfo | undefined {
  const args = asRecord(asRecord(config?.database)?.args);
  if (!args) return undefined;
  return {
    component: 'synapse',
    name: String(args.dbname ?? args.database ?? 'synapse'),
    owner: args.user ? String(args.user) : undefined,
    host: args.host ? String(args.host) : undefined,
    port: args.port ? Number(args.port) : undefined,
  };
}

function databaseFromMas(config: Record<string, unknown> | undefined): DatabaseInfo | undefined {
  const db = asRecord(config?.database);
  if (!db) return undefined;
  return {
    component: 'mas',
    name: String(db.database ?? 'matrixauthenticationservice'),
    owner: db.username ? String(db.username) : undefined,
    host: db.host ? String(db.host) : undefined,
    port: db.port ? Number(db.port) : undefined,
  };
}

function isBundledHost(host: string | undefined, release: string, namespace: string): boolean {
  if (!host) return true;
  const h = host.replace(/\.$/, '');
  return h === names.postgresStatefulSet(release) || h.startsWith(`${names.postgresStatefulSet(release)}.${namespace}`);
}

function findMedia(workloads: Workload[], claims: PersistentVolumeClaim[]): MediaInfo | undefined {
  for (const sts of workloads) {
    const spec = sts.spec.template.spec;
    for (const volume of spec.volumes ?? []) {
      const claimName = volume.persistentVolumeClaim?.claimName;
      if (!claimName) continue;
      const container = spec.containers.find((c) =>
        (c.volumeMounts ?? []).some((m) => m.name === volume.name && m.mountPath === MEDIA_MOUNT_PATH),
      );
      if (!container) continue;
      const pvc = claims.find((c) => c.metadata.name === claimName);
      return {
        claimName,
        statefulSet: sts.metadata.name,
        pod: `${sts.metadata.name}-0`,
        container: container.name,
        mountPath: MEDIA_MOUNT_PATH,
        storePath: MEDIA_STORE_PATH,
        capacity: pvc?.status?.capacity?.storage ?? pvc?.spec.resources?.requests?.storage,
      };
    }
  }
  return undefined;
}

async function ensureNamespace(kube: KubeClient, options: DiscoverOptions): Promise<void> {
  try {
    const ns = await kube.get('Namespace', undefined, options.namespace);
    if (!ns) {
      throw new PreconditionError(`Namespace "${options.namespace}" does not exist in context "${kube.contextName}".`, {
        code: 'NAMESPACE_NOT_FOUND',
        next: targetHints(options),
      });
    }
  } catch (error) {
    // Namespaced RBAC (e.g. a CronJob's ServiceAccount) may not allow reading Namespace objects: carry on.
    if (error instanceof KubeApiError && error.statusCode === 403) return;
    throw error;
  }
}

/**
 * Finds the ESS deployment of `release` in `namespace` and describes it. Throws a PreconditionError (exit 4) that
 * says what was looked for when there is none.
 */
export async function discoverDeployment(kube: KubeClient, options: DiscoverOptions): Promise<Deployment> {
  const { namespace, release } = options;
  await ensureNamespace(kube, options);
  const [statefulSets, deployments] = await Promise.all([
    kube.list<Workload>('StatefulSet', namespace, `${LABELS.partOf}=${PART_OF_MATRIX_STACK}`),
    kube.list<Workload>('Deployment', namespace, `${LABELS.partOf}=${PART_OF_MATRIX_STACK}`),
  ]);
  const ownStatefulSets = statefulSets.filter((o) => belongsToRelease(o, release));
  const ownDeployments = deployments.filter((o) => belongsToRelease(o, release));

  if (ownStatefulSets.length === 0 && ownDeployments.length === 0) {
    const operator = await discoverOperator(kube, namespace);
    if (operator) return operator;
    const releases = await listReleaseNames(kube, namespace).catch(() => [] as string[]);
    const instances = [...statefulSets, ...deployments]
      .map((o) => (o.metadata.labels?.[LABELS.instance] ?? '').split('-')[0])
      .filter(Boolean);
    const candidates = [...new Set([...releases, ...instances])].filter((r) => r !== release);
    throw new PreconditionError(
      `No ESS deployment of release "${release}" found in namespace "${namespace}" (context "${kube.contextName}"): ` +
        `looked for StatefulSets/Deployments labelled ${LABELS.partOf}=${PART_OF_MATRIX_STACK} with ` +
        `${LABELS.instance}=${release}-*, and for an operator ElementDeployment.`,
      {
        code: 'DEPLOYMENT_NOT_FOUND',
        next: [
          ...(candidates.length
            ? [`Releases found in "${namespace}": ${candidates.join(', ')} (pass --release NAME)`]
            : []),
          ...targetHints(options),
        ],
      },
    );
  }

  const warnings: string[] = [];
  const workloads: WorkloadInfo[] = [
    ...ownStatefulSets.map((o) => toWorkloadInfo('StatefulSet', o)),
    ...ownDeployments.map((o) => toWorkloadInfo('Deployment', o)),
  ].sort((a, b) => a.component.localeCompare(b.component) || a.name.localeCompare(b.name));

  const chartLabel = [...ownStatefulSets, ...ownDeployments]
    .map((o) => o.metadata.labels?.[LABELS.chart])
    .find((l) => l?.startsWith('matrix-stack-'));
  const chartVersion = chartLabel?.slice('matrix-stack-'.length);

  const [synapseCm, masCm, claims, generated, legacyGenerated, markers, records] = await Promise.all([
    kube.get<ConfigMap>('ConfigMap', namespace, names.synapseConfigMap(release)),
    kube.get<ConfigMap>('ConfigMap', namespace, names.masConfigMap(release)),
    kube.list<PersistentVolumeClaim>('PersistentVolumeClaim', namespace),
    kube.get<Secret>('Secret', namespace, names.generatedSecret(release)),
    kube.get<Secret>('Secret', namespace, names.legacyGeneratedSecret(release)),
    kube.get<ConfigMap>('ConfigMap', namespace, names.markersConfigMap(release)),
    listReleaseRecords(kube, namespace, release).catch((error: unknown) => {
      warnings.push(`Could not read Helm release records: ${(error as Error).message}`);
      return [];
    }),
  ]);

  const synapseConfig = configYaml(synapseCm, SYNAPSE_CONFIG_KEY);
  const masConfig = configYaml(masCm, MAS_CONFIG_KEY);
  let serverName = typeof synapseConfig?.server_name === 'string' ? synapseConfig.server_name : undefined;
  if (!serverName) {
    const homeserver = asRecord(masConfig?.matrix)?.homeserver;
    if (typeof homeserver === 'string') serverName = homeserver;
  }
  if (!serverName) warnings.push(`Server name not found in ConfigMap ${names.synapseConfigMap(release)}.`);

  const databases = [databaseFromSynapse(synapseConfig), databaseFromMas(masConfig)].filter(
    (d): d is DatabaseInfo => d !== undefined,
  );
  const postgresSts = ownStatefulSets.find(
    (o) => componentForLabel(o.metadata.labels?.[LABELS.component])?.id === 'postgres',
  );
  let postgres: PostgresInfo | undefined;
  const bundledDbs = databases.filter((d) => isBundledHost(d.host, release, namespace));
  if (postgresSts && bundledDbs.length > 0) {
    const dataVolume = postgresSts.spec.template.spec.volumes?.find((v) => v.persistentVolumeClaim);
    postgres = {
      mode: 'bundled',
      statefulSet: postgresSts.metadata.name,
      pod: `${postgresSts.metadata.name}-0`,
      container: 'postgres',
      superuser: 'postgres',
      dataClaim: dataVolume?.persistentVolumeClaim?.claimName,
      databases: bundledDbs,
    };
    const external = databases.filter((d) => !bundledDbs.includes(d));
    if (external.length) {
      warnings.push(
        `External databases are not covered by the bundled Postgres: ${external.map((d) => d.name).join(', ')}`,
      );
    }
  } else if (databases.length > 0) {
    postgres = { mode: 'external', databases };
  }

  const synapseStatefulSets = ownStatefulSets.filter(
    (o) => componentForLabel(o.metadata.labels?.[LABELS.component])?.id === 'synapse',
  );
  const media = findMedia(synapseStatefulSets, claims);

  const latest = records.at(-1);
  const synapseMain = workloads.find((w) => w.name === names.synapseMainStatefulSet(release));
  return {
    flavour: 'matrix-stack',
    namespace,
    release,
    serverName,
    chartVersion,
    synapseVersion: synapseMain?.version ?? synapseMain?.image?.split(':').pop(),
    helm: latest
      ? {
          revision: latest.revision,
          status: latest.labelStatus,
          updated: (latest.modifiedAt ?? latest.createdAt)?.toISOString(),
        }
      : undefined,
    workloads,
    postgres,
    generatedSecret: generated ? generated.metadata.name : legacyGenerated ? legacyGenerated.metadata.name : undefined,
    markersConfigMap: markers?.metadata.name,
    media,
    warnings,
  };
}
