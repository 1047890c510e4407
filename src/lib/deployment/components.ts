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
  /** Why and when ess stopped the workload (JSON: {by, reason, at}). */
  stoppedBy: 'ess.element.io/stopped-by',
} as const;

export const PART_OF_MATRIX_STACK = 'matrix-stack';
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
}

/** The matrix-stack components, in stop order. */
export const COMPONENTS: ComponentDef[] = [
  { id: 'synapse', title: 'Synapse', componentLabels: ['matrix-server'], kinds: ['StatefulSet'], stopPhase: 1 },
  {
    id: 'mas',
    title: 'Matrix Authentication Service',
    componentLabels: ['matrix-authentication'],
    kinds: ['Deployment'],
    stopPhase: 1,
  },
  { id: 'hookshot', title: 'Hookshot', componentLabels: ['matrix-integrations'], kinds: ['StatefulSet'], stopPhase: 1 },
  { id: 'element-web', title: 'Element Web', componentLabels: ['matrix-client'], kinds: ['Deployment'], stopPhase: 2 },
  {
    id: 'element-admin',
    title: 'Element Admin',
    componentLabels: ['matrix-admin-client'],
    kinds: ['Deployment'],
    stopPhase: 2,
  },
  {
    id: 'matrix-rtc',
    title: 'Matrix RTC',
    componentLabels: ['matrix-rtc-voip-server', 'matrix-rtc-authorisation-service'],
    kinds: ['Deployment'],
    stopPhase: 2,
  },
  { id: 'haproxy', title: 'HAProxy', componentLabels: ['matrix-stack-ingress'], kinds: ['Deployment'], stopPhase: 3 },
  { id: 'redis', title: 'Redis', componentLabels: ['matrix-pubsub-small-cache'], kinds: ['Deployment'], stopPhase: 3 },
  { id: 'postgres', title: 'PostgreSQL', componentLabels: ['matrix-stack-db'], kinds: ['StatefulSet'], stopPhase: 4 },
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
  /** The coordination.k8s.io Lease ess holds while it changes a deployment (backup, restore, import…). */
  essLock: (release: string) => `${release}-ess-lock`,
  helmReleaseSecret: (release: string, revision: number) => `sh.helm.release.v1.${release}.v${revision}`,
  /** Hook Jobs of one release (for "is an upgrade still running"). */
  hookJobs: (release: string) => [
    `${release}-init-secrets`,
    `${release}-deployment-markers-pre`,
    `${release}-deployment-markers-post`,
    `${release}-synapse-check-config`,
  ],
} as const;

export const SYNAPSE_CONFIG_KEY = '04-homeserver-overrides.yaml';
export const MAS_CONFIG_KEY = 'mas-config-overrides.yaml';
export const MEDIA_MOUNT_PATH = '/media';
export const MEDIA_STORE_PATH = '/media/media_store';
export const SYNAPSE_UID = 10091;
