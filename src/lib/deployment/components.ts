/**
 * What an ESS deployment is made of, as data: component ids, the workloads that belong to each (by label), and the
 * order in which they stop and start. Adding a component means adding a row here.
 */

/** Labels and annotations ess reads or writes. */
export const LABELS = {
  component: 'app.kubernetes.io/component',
  instance: 'app.kubernetes.io/instance',
  name: 'app.kubernetes.io/name',
  partOf: 'app.kubernetes.io/part-of',
  managedBy: 'app.kubernetes.io/managed-by',
  version: 'app.kubernetes.io/version',
  chart: 'helm.sh/chart',
  synapseInstance: 'k8s.element.io/synapse-instance',
} as const;

export const ANNOTATIONS = {
  /** Replica count recorded before ess scales a workload to 0; `ess start` reads it back. */
  replicasBeforeStop: 'ess.element.io/replicas-before-stop',
  /**
   * Why and when ess stopped the workload (JSON: {by, reason, at, hold, holder}). `hold: true` (set by `ess stop`)
   * means "keep it stopped until `ess start`": other operations (backup…) leave such a workload at 0.
   */
  stoppedBy: 'ess.element.io/stopped-by',
} as const;

/** Where the operator-based (older) ESS installs its workloads (its installer's default). */
export const OPERATOR_FLAVOUR_NAMESPACE = 'element-onprem';

/** The defaults of the global -n/--namespace and --release flags. */
export const DEFAULT_NAMESPACE = 'ess';
export const DEFAULT_RELEASE = 'ess';

/**
 * The flags that point a suggested ess command at a deployment, for next steps: `-n NS`, plus `--release R` unless
 * R is the default (a hint without it would find no deployment).
 */
export function targetFlags(namespace: string, release?: string): string {
  return `-n ${namespace}${release && release !== DEFAULT_RELEASE ? ` --release ${release}` : ''}`;
}

export const PART_OF_MATRIX_STACK = 'matrix-stack';
/** app.kubernetes.io/managed-by of the objects ess itself creates (e.g. the saved operator CRs). */
export const ESS_MANAGED_BY = 'ess';
export const INIT_SECRETS_MANAGED_BY = 'matrix-tools-init-secrets';
export const MARKERS_MANAGED_BY = 'matrix-tools-deployment-markers';

export type ComponentId =
  | 'synapse'
  | 'mas'
  | 'postgres'
  | 'element-web'
  | 'element-admin'
  | 'haproxy'
  | 'matrix-rtc'
  | 'redis'
  | 'hookshot';

export interface ComponentDef {
  id: ComponentId;
  title: string;
  /** Values of app.kubernetes.io/component that belong to this component. */
  componentLabels: string[];
  kinds: ('StatefulSet' | 'Deployment')[];
  /** Lower stops first and starts last. Synapse and MAS must stop before Postgres. */
  stopPhase: number;
  /**
   * Helm values holding each workload's replica count (for a stop that survives `helm upgrade`), matched on the
   * workload's app.kubernetes.io/name; `$1` in `path` is replaced by the first capture group. First match wins.
   */
  replicasValues: { name: RegExp; path: string }[];
  /** Operator flavour: kinds of the per-component custom resources (keys of ElementDeployment dependentCRs). */
  operatorKinds: string[];
}

/** The matrix-stack components, in stop order. */
export const COMPONENTS: ComponentDef[] = [
  {
    id: 'synapse',
    title: 'Synapse',
    componentLabels: ['matrix-server'],
    kinds: ['StatefulSet'],
    stopPhase: 1,
    replicasValues: [
      { name: /^synapse-main$/, path: 'synapse.replicas' },
      { name: /^synapse-(.+)$/, path: 'synapse.workers.$1.replicas' },
    ],
    operatorKinds: ['Synapse'],
  },
  {
    id: 'mas',
    title: 'Matrix Authentication Service',
    componentLabels: ['matrix-authentication'],
    kinds: ['Deployment'],
    stopPhase: 1,
    replicasValues: [{ name: /./, path: 'matrixAuthenticationService.replicas' }],
    operatorKinds: ['MatrixAuthenticationService'],
  },
  {
    id: 'hookshot',
    title: 'Hookshot',
    componentLabels: ['matrix-integrations'],
    kinds: ['StatefulSet'],
    stopPhase: 1,
    replicasValues: [{ name: /./, path: 'hookshot.replicas' }],
    operatorKinds: ['Hookshot'],
  },
  {
    id: 'element-web',
    title: 'Element Web',
    componentLabels: ['matrix-client'],
    kinds: ['Deployment'],
    stopPhase: 2,
    replicasValues: [{ name: /./, path: 'elementWeb.replicas' }],
    operatorKinds: ['ElementWeb'],
  },
  {
    id: 'element-admin',
    title: 'Element Admin',
    componentLabels: ['matrix-admin-client'],
    kinds: ['Deployment'],
    stopPhase: 2,
    replicasValues: [{ name: /./, path: 'elementAdmin.replicas' }],
    operatorKinds: ['SynapseAdminUI'],
  },
  {
    id: 'matrix-rtc',
    title: 'Matrix RTC',
    componentLabels: ['matrix-rtc-voip-server', 'matrix-rtc-authorisation-service'],
    kinds: ['Deployment'],
    stopPhase: 2,
    replicasValues: [
      { name: /sfu/, path: 'matrixRTC.sfu.replicas' },
      { name: /./, path: 'matrixRTC.replicas' },
    ],
    operatorKinds: [],
  },
  {
    id: 'haproxy',
    title: 'HAProxy',
    componentLabels: ['matrix-stack-ingress'],
    kinds: ['Deployment'],
    stopPhase: 3,
    replicasValues: [{ name: /./, path: 'haproxy.replicas' }],
    operatorKinds: [],
  },
  {
    id: 'redis',
    title: 'Redis',
    componentLabels: ['matrix-pubsub-small-cache'],
    kinds: ['Deployment'],
    stopPhase: 3,
    replicasValues: [{ name: /./, path: 'redis.replicas' }],
    operatorKinds: [],
  },
  {
    id: 'postgres',
    title: 'PostgreSQL',
    componentLabels: ['matrix-stack-db'],
    kinds: ['StatefulSet'],
    stopPhase: 4,
    replicasValues: [{ name: /./, path: 'postgres.replicas' }],
    operatorKinds: [],
  },
];

/** Components that must be stopped for a consistent database dump or restore. */
export const DATABASE_WRITERS: ComponentId[] = ['synapse', 'mas'];

export function componentById(id: string): ComponentDef | undefined {
  return COMPONENTS.find((c) => c.id === id);
}

/** Which component a workload's component label belongs to. */
export function componentForLabel(label: string | undefined): ComponentDef | undefined {
  return label ? COMPONENTS.find((c) => c.componentLabels.includes(label)) : undefined;
}

/**
 * The Helm values path holding a workload's replica count, e.g. `synapse.workers.event-persister.replicas` for
 * the StatefulSet whose app.kubernetes.io/name is `synapse-event-persister`; undefined when the table has no row.
 */
export function replicasValuesPath(component: ComponentId, role: string | undefined): string | undefined {
  for (const row of componentById(component)?.replicasValues ?? []) {
    const match = row.name.exec(role ?? '');
    if (match) return row.path.replace('$1', match[1] ?? '');
  }
  return undefined;
}

/** Object names the chart derives from the release name. */
export const names = {
  synapseConfigMap: (release: string) => `${release}-synapse`,
  masConfigMap: (release: string) => `${release}-matrix-authentication-service`,
  generatedSecret: (release: string) => `${release}-generated`,
  /** Charts ≤ 0.5.0 called the generated Secret `<release>-init-secrets`. */
  legacyGeneratedSecret: (release: string) => `${release}-init-secrets`,
  markersConfigMap: (release: string) => `${release}-markers`,
  postgresStatefulSet: (release: string) => `${release}-postgres`,
  synapseMainStatefulSet: (release: string) => `${release}-synapse-main`,
  /** Operator flavour: ConfigMap where `ess stop` keeps the JSON of the component CRs it deleted. */
  savedOperatorCRs: (elementDeployment: string) => `${elementDeployment}-ess-saved-crs`,
  /** The coordination.k8s.io Lease ess holds while it changes a deployment (backup, restore, import…). */
  essLock: (release: string) => `${release}-ess-lock`,
  helmReleaseSecret: (release: string, revision: number) => `sh.helm.release.v1.${release}.v${revision}`,
  /** Hook Jobs of one release (for "is an upgrade still running"). */
  hookJobs: (release: string) => [
    `${release}-init-secrets`,
    `${release}-deployment-markers-pre`,
    `${release}-deployment-markers-post`,
    `${release}-synapse-check-config`,
    /** The check-config Job's name in charts before 25.6.0. */
    `${release}-synapse-check-config-hook`,
  ],
} as const;

/** Public OCI reference of the matrix-stack chart (ESS Pro customers use their own registry). */
export const MATRIX_STACK_CHART_REF = 'oci://ghcr.io/element-hq/ess-helm/matrix-stack';

export const SYNAPSE_CONFIG_KEY = '04-homeserver-overrides.yaml';
export const MAS_CONFIG_KEY = 'mas-config-overrides.yaml';
export const MEDIA_MOUNT_PATH = '/media';
export const MEDIA_STORE_PATH = '/media/media_store';
export const SYNAPSE_UID = 10091;

/** TCP port of the bundled PostgreSQL (Service `<R>-postgres`, pod `<R>-postgres-0`). */
export const POSTGRES_PORT = 5432;

/** Components with their own database role in the bundled Postgres. */
export type DatabaseComponent = 'synapse' | 'mas';

/**
 * Where the chart keeps each database role's password, in its order of precedence (ess-deployment.md §4.4):
 * `postgres` = Secret `<R>-postgres` (inline `postgres.essPasswords.*` values), `generated` = the generated Secret
 * (`<R>-generated`, or `<R>-init-secrets` on charts ≤ 0.5.0).
 */
export const DATABASE_PASSWORD_SOURCES: Record<DatabaseComponent, { secret: 'postgres' | 'generated'; key: string }[]> =
  {
    synapse: [
      { secret: 'postgres', key: 'ESS_PASSWORD_SYNAPSE' },
      { secret: 'generated', key: 'POSTGRES_SYNAPSE_PASSWORD' },
    ],
    mas: [
      { secret: 'postgres', key: 'ESS_PASSWORD_MATRIXAUTHENTICATIONSERVICE' },
      { secret: 'generated', key: 'POSTGRES_MATRIX_AUTHENTICATION_SERVICE_PASSWORD' },
    ],
  };

/** Secret `<R>-postgres`: inline Postgres passwords from the chart values. */
export const postgresSecretName = (release: string) => `${release}-postgres`;

/**
 * Tables whose rows a backup leaves out (the schema is kept) and a restore must leave empty, by database component
 * (`schema.table`). Synapse's one-time keys must never be restored: clients would reuse keys already claimed.
 */
export const EXCLUDED_TABLE_DATA: Record<'synapse' | 'mas' | 'other', string[]> = {
  synapse: ['public.e2e_one_time_keys_json'],
  mas: [],
  other: [],
};
