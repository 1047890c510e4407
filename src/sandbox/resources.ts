/**
 * The sandbox's resource table: every resource the simulated API server knows, as data in one place, plus the
 * server-side table printing (`kubectl get` columns) for them.
 */
import type { KubeObject, ResourceType } from './types.js';

const ALL_VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];
const NS_VERBS = ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'];

/** API group of the operator-flavour custom resources. */
export const ELEMENT_GROUP = 'matrix.element.io';
/** Version of the operator-flavour custom resources. */
export const ELEMENT_VERSION = 'v1alpha1';

function core(
  kind: string,
  plural: string,
  namespaced: boolean,
  extra: Partial<ResourceType> = {},
  verbs: string[] = ALL_VERBS,
): ResourceType {
  return {
    group: '',
    version: 'v1',
    kind,
    listKind: `${kind}List`,
    plural,
    singular: kind.toLowerCase(),
    namespaced,
    verbs,
    ...extra,
  };
}

function grouped(group: string, version: string, kind: string, plural: string, extra: Partial<ResourceType> = {}) {
  return { ...core(kind, plural, true, extra), group, version };
}

function element(kind: string): ResourceType {
  const plural = `${kind.toLowerCase()}s`;
  return grouped(ELEMENT_GROUP, ELEMENT_VERSION, kind, plural, { subresources: ['status'] });
}

/** Every resource the sandbox serves. */
export const RESOURCES: readonly ResourceType[] = [
  core('Namespace', 'namespaces', false, { shortNames: ['ns'], subresources: ['status', 'finalize'] }, NS_VERBS),
  core('Node', 'nodes', false, { shortNames: ['no'], subresources: ['status'] }),
  core('Pod', 'pods', true, {
    shortNames: ['po'],
    subresources: ['exec', 'attach', 'portforward', 'log', 'status'],
    categories: ['all'],
  }),
  core('Secret', 'secrets', true),
  core('ConfigMap', 'configmaps', true, { shortNames: ['cm'] }),
  core('Service', 'services', true, { shortNames: ['svc'], subresources: ['status'], categories: ['all'] }),
  core('ServiceAccount', 'serviceaccounts', true, { shortNames: ['sa'] }),
  core('PersistentVolumeClaim', 'persistentvolumeclaims', true, { shortNames: ['pvc'], subresources: ['status'] }),
  core('PersistentVolume', 'persistentvolumes', false, { shortNames: ['pv'], subresources: ['status'] }),
  core('Event', 'events', true, { shortNames: ['ev'] }),
  grouped('apps', 'v1', 'StatefulSet', 'statefulsets', {
    shortNames: ['sts'],
    subresources: ['scale', 'status'],
    categories: ['all'],
  }),
  grouped('apps', 'v1', 'Deployment', 'deployments', {
    shortNames: ['deploy'],
    subresources: ['scale', 'status'],
    categories: ['all'],
  }),
  grouped('apps', 'v1', 'ReplicaSet', 'replicasets', {
    shortNames: ['rs'],
    subresources: ['scale', 'status'],
    categories: ['all'],
  }),
  grouped('batch', 'v1', 'Job', 'jobs', { subresources: ['status'], categories: ['all'] }),
  grouped('coordination.k8s.io', 'v1', 'Lease', 'leases'),
  grouped('networking.k8s.io', 'v1', 'Ingress', 'ingresses', { shortNames: ['ing'], subresources: ['status'] }),
  {
    ...grouped('apiextensions.k8s.io', 'v1', 'CustomResourceDefinition', 'customresourcedefinitions', {
      shortNames: ['crd', 'crds'],
      subresources: ['status'],
    }),
    namespaced: false,
  },
  {
    ...grouped('authorization.k8s.io', 'v1', 'SelfSubjectAccessReview', 'selfsubjectaccessreviews'),
    namespaced: false,
    verbs: ['create'],
  },
  element('ElementDeployment'),
  element('Synapse'),
  element('ElementWeb'),
  element('MatrixAuthenticationService'),
  element('WellKnownDelegation'),
  element('SynapseUser'),
  element('SynapseAdminUI'),
  element('Hookshot'),
  element('Integrator'),
];

/** Kind and verbs each subresource has in discovery documents. */
export const SUBRESOURCE_INFO: Record<string, { kind: string; verbs: string[]; group?: string; version?: string }> = {
  exec: { kind: 'PodExecOptions', verbs: ['create', 'get'] },
  attach: { kind: 'PodAttachOptions', verbs: ['create', 'get'] },
  portforward: { kind: 'PodPortForwardOptions', verbs: ['create', 'get'] },
  log: { kind: 'Pod', verbs: ['get'] },
  status: { kind: '', verbs: ['get', 'patch', 'update'] },
  finalize: { kind: '', verbs: ['update'] },
  scale: { kind: 'Scale', verbs: ['get', 'patch', 'update'], group: 'autoscaling', version: 'v1' },
};

/** Resources whose metadata.generation the server maintains (workloads, ingresses, custom resources). */
export function tracksGeneration(r: ResourceType): boolean {
  return r.group !== '' && r.group !== 'coordination.k8s.io' && r.group !== 'authorization.k8s.io';
}

/** Resources that are not stored (a create just answers). */
export function isVirtual(r: ResourceType): boolean {
  return r.plural === 'selfsubjectaccessreviews';
}

/** True for the operator-flavour custom resources (and any other CRD-defined resource). */
export function isCustom(r: ResourceType): boolean {
  return r.group === ELEMENT_GROUP;
}

/** `apps/v1`, or `v1` for the core group. */
export function apiVersionOf(r: ResourceType): string {
  return r.group ? `${r.group}/${r.version}` : r.version;
}

/** `statefulsets.apps`, or `pods` for the core group: the form used in Status messages. */
export function qualifiedName(r: ResourceType): string {
  return r.group ? `${r.plural}.${r.group}` : r.plural;
}

/** The resource served at group/version/plural, if any. */
export function findResource(group: string, version: string, plural: string): ResourceType | undefined {
  return RESOURCES.find((r) => r.group === group && r.version === version && r.plural === plural);
}

/** The resource for a kind (optionally with apiVersion `group/version`); throws when unknown. */
export function resourceForKind(kind: string, apiVersion?: string): ResourceType {
  const found = RESOURCES.find((r) => r.kind === kind && (apiVersion === undefined || apiVersionOf(r) === apiVersion));
  if (!found) throw new Error(`sandbox: no resource for kind ${kind}${apiVersion ? ` (${apiVersion})` : ''}`);
  return found;
}

/** Group/versions served, core first. */
export function groupVersions(): { group: string; version: string }[] {
  const seen = new Map<string, { group: string; version: string }>();
  for (const r of RESOURCES) seen.set(`${r.group}/${r.version}`, { group: r.group, version: r.version });
  return [...seen.values()];
}

// ---------------------------------------------------------------------------------------------------------------
// Server-side printing (meta.k8s.io/v1 Table), following the columns of the real printers in
// k8s.io/kubernetes/pkg/printers/internalversion.

/** A column of a Table response. */
export interface TableColumn {
  name: string;
  type: string;
  format: string;
  description: string;
  priority: number;
}

type Cells = (obj: KubeObject, nowMs: number) => unknown[];

function col(name: string, type = 'string', priority = 0, format = ''): TableColumn {
  return { name, type, format, description: `${name} column`, priority };
}

const nameCol = col('Name', 'string', 0, 'name');
const ageCol = col('Age');

/** Kubernetes' duration.HumanDuration. */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < -1) return '<invalid>';
  if (seconds < 0) return '0s';
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) return seconds % 60 === 0 ? `${minutes}m` : `${minutes}m${seconds % 60}s`;
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 8) return minutes % 60 === 0 ? `${hours}h` : `${hours}h${minutes % 60}m`;
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8)
    return hours % 24 === 0 ? `${Math.floor(hours / 24)}d` : `${Math.floor(hours / 24)}d${hours % 24}h`;
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24)}d`;
  const years = Math.floor(hours / 24 / 365);
  if (hours < 24 * 365 * 8) return `${years}y${Math.floor(hours / 24) % 365}d`;
  return `${years}y`;
}

function age(obj: KubeObject, nowMs: number): string {
  const ts = obj.metadata.creationTimestamp;
  return ts ? humanDuration(nowMs - Date.parse(ts)) : '<unknown>';
}

function rec(v: unknown): Record<string, unknown> {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}
function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}
function num(v: unknown): number {
  return typeof v === 'number' ? v : 0;
}

function containers(obj: KubeObject, templated: boolean): Record<string, unknown>[] {
  const spec = templated ? rec(rec(rec(obj.spec).template).spec) : rec(obj.spec);
  return arr(spec.containers).map(rec);
}

function selectorString(sel: unknown): string {
  const s = rec(sel);
  const parts = Object.entries(rec(s.matchLabels)).map(([k, v]) => `${k}=${String(v)}`);
  for (const e of arr(s.matchExpressions).map(rec)) {
    const vals = arr(e.values).join(',');
    if (e.operator === 'In') parts.push(`${e.key} in (${vals})`);
    else if (e.operator === 'NotIn') parts.push(`${e.key} notin (${vals})`);
    else if (e.operator === 'Exists') parts.push(String(e.key));
    else if (e.operator === 'DoesNotExist') parts.push(`!${String(e.key)}`);
  }
  return parts.length ? parts.join(',') : '<none>';
}

function podStatus(obj: KubeObject): string {
  const status = rec(obj.status);
  if (obj.metadata.deletionTimestamp) return 'Terminating';
  if (typeof status.reason === 'string') return status.reason;
  let reason = typeof status.phase === 'string' ? status.phase : 'Pending';
  let running = false;
  for (const cs of arr(status.containerStatuses).map(rec).reverse()) {
    const state = rec(cs.state);
    const waiting = rec(state.waiting);
    const terminated = rec(state.terminated);
    if (typeof waiting.reason === 'string') reason = waiting.reason;
    else if (typeof terminated.reason === 'string') reason = terminated.reason;
    else if (Object.keys(terminated).length) reason = `ExitCode:${String(terminated.exitCode)}`;
    else if (state.running && cs.ready) running = true;
  }
  if (reason === 'Completed' && running) reason = 'Running';
  return reason;
}

function workloadWide(obj: KubeObject): unknown[] {
  const cs = containers(obj, true);
  return [cs.map((c) => c.name).join(','), cs.map((c) => c.image).join(','), selectorString(rec(obj.spec).selector)];
}

const PRINTERS: Record<string, { columns: TableColumn[]; cells: Cells }> = {
  pods: {
    columns: [
      nameCol,
      col('Ready'),
      col('Status'),
      col('Restarts', 'string'),
      ageCol,
      col('IP', 'string', 1),
      col('Node', 'string', 1),
      col('Nominated Node', 'string', 1),
      col('Readiness Gates', 'string', 1),
    ],
    cells: (o, now) => {
      const status = rec(o.status);
      const statuses = arr(status.containerStatuses).map(rec);
      const total = containers(o, false).length;
      const ready = statuses.filter((c) => c.ready === true).length;
      const restarts = statuses.reduce((n, c) => n + num(c.restartCount), 0);
      return [
        o.metadata.name,
        `${ready}/${total}`,
        podStatus(o),
        String(restarts),
        age(o, now),
        status.podIP ?? '<none>',
        rec(o.spec).nodeName ?? '<none>',
        '<none>',
        '<none>',
      ];
    },
  },
  statefulsets: {
    columns: [nameCol, col('Ready'), ageCol, col('Containers', 'string', 1), col('Images', 'string', 1)],
    cells: (o, now) => {
      const spec = rec(o.spec);
      const desired = typeof spec.replicas === 'number' ? spec.replicas : 1;
      return [
        o.metadata.name,
        `${num(rec(o.status).readyReplicas)}/${desired}`,
        age(o, now),
        ...workloadWide(o).slice(0, 2),
      ];
    },
  },
  deployments: {
    columns: [
      nameCol,
      col('Ready'),
      col('Up-to-date', 'integer'),
      col('Available', 'integer'),
      ageCol,
      col('Containers', 'string', 1),
      col('Images', 'string', 1),
      col('Selector', 'string', 1),
    ],
    cells: (o, now) => {
      const spec = rec(o.spec);
      const status = rec(o.status);
      const desired = typeof spec.replicas === 'number' ? spec.replicas : 1;
      return [
        o.metadata.name,
        `${num(status.readyReplicas)}/${desired}`,
        num(status.updatedReplicas),
        num(status.availableReplicas),
        age(o, now),
        ...workloadWide(o),
      ];
    },
  },
  replicasets: {
    columns: [
      nameCol,
      col('Desired', 'integer'),
      col('Current', 'integer'),
      col('Ready', 'integer'),
      ageCol,
      col('Containers', 'string', 1),
      col('Images', 'string', 1),
      col('Selector', 'string', 1),
    ],
    cells: (o, now) => {
      const status = rec(o.status);
      return [
        o.metadata.name,
        num(rec(o.spec).replicas),
        num(status.replicas),
        num(status.readyReplicas),
        age(o, now),
        ...workloadWide(o),
      ];
    },
  },
  jobs: {
    columns: [nameCol, col('Status'), col('Completions'), col('Duration'), ageCol],
    cells: (o, now) => {
      const spec = rec(o.spec);
      const status = rec(o.status);
      const conds = arr(status.conditions).map(rec);
      const complete = conds.some((c) => c.type === 'Complete' && c.status === 'True');
      const failed = conds.some((c) => c.type === 'Failed' && c.status === 'True');
      const start = typeof status.startTime === 'string' ? Date.parse(status.startTime) : undefined;
      const end = typeof status.completionTime === 'string' ? Date.parse(status.completionTime) : now;
      return [
        o.metadata.name,
        complete ? 'Complete' : failed ? 'Failed' : 'Running',
        `${num(status.succeeded)}/${typeof spec.completions === 'number' ? spec.completions : 1}`,
        start === undefined ? '' : humanDuration(end - start),
        age(o, now),
      ];
    },
  },
  secrets: {
    columns: [nameCol, col('Type'), col('Data', 'integer'), ageCol],
    cells: (o, now) => [
      o.metadata.name,
      o.type ?? 'Opaque',
      Object.keys(rec(o.data)).length + Object.keys(rec(o.stringData)).length,
      age(o, now),
    ],
  },
  configmaps: {
    columns: [nameCol, col('Data', 'integer'), ageCol],
    cells: (o, now) => [
      o.metadata.name,
      Object.keys(rec(o.data)).length + Object.keys(rec(o.binaryData)).length,
      age(o, now),
    ],
  },
  services: {
    columns: [
      nameCol,
      col('Type'),
      col('Cluster-IP'),
      col('External-IP'),
      col('Port(s)'),
      ageCol,
      col('Selector', 'string', 1),
    ],
    cells: (o, now) => {
      const spec = rec(o.spec);
      const ports = arr(spec.ports)
        .map(rec)
        .map((p) => `${String(p.port)}${p.nodePort ? `:${String(p.nodePort)}` : ''}/${String(p.protocol ?? 'TCP')}`);
      const selector = Object.entries(rec(spec.selector)).map(([k, v]) => `${k}=${String(v)}`);
      return [
        o.metadata.name,
        spec.type ?? 'ClusterIP',
        spec.clusterIP ?? '<none>',
        '<none>',
        ports.length ? ports.join(',') : '<none>',
        age(o, now),
        selector.length ? selector.join(',') : '<none>',
      ];
    },
  },
  serviceaccounts: {
    columns: [nameCol, col('Secrets', 'integer'), ageCol],
    cells: (o, now) => [o.metadata.name, arr(o.secrets).length, age(o, now)],
  },
  persistentvolumeclaims: {
    columns: [
      nameCol,
      col('Status'),
      col('Volume'),
      col('Capacity'),
      col('Access Modes'),
      col('StorageClass'),
      ageCol,
      col('VolumeMode', 'string', 1),
    ],
    cells: (o, now) => {
      const spec = rec(o.spec);
      const status = rec(o.status);
      return [
        o.metadata.name,
        status.phase ?? 'Pending',
        spec.volumeName ?? '',
        rec(status.capacity).storage ?? '',
        accessModes(status.accessModes ?? spec.accessModes),
        spec.storageClassName ?? '<unset>',
        age(o, now),
        spec.volumeMode ?? 'Filesystem',
      ];
    },
  },
  persistentvolumes: {
    columns: [
      nameCol,
      col('Capacity'),
      col('Access Modes'),
      col('Reclaim Policy'),
      col('Status'),
      col('Claim'),
      col('StorageClass'),
      col('Reason'),
      ageCol,
    ],
    cells: (o, now) => {
      const spec = rec(o.spec);
      const claim = rec(spec.claimRef);
      const status = rec(o.status);
      return [
        o.metadata.name,
        rec(spec.capacity).storage ?? '',
        accessModes(spec.accessModes),
        spec.persistentVolumeReclaimPolicy ?? 'Retain',
        status.phase ?? 'Available',
        claim.name ? `${String(claim.namespace)}/${String(claim.name)}` : '',
        spec.storageClassName ?? '',
        status.reason ?? '',
        age(o, now),
      ];
    },
  },
  namespaces: {
    columns: [nameCol, col('Status'), ageCol],
    cells: (o, now) => [o.metadata.name, rec(o.status).phase ?? 'Active', age(o, now)],
  },
  nodes: {
    columns: [nameCol, col('Status'), col('Roles'), ageCol, col('Version')],
    cells: (o, now) => [
      o.metadata.name,
      'Ready',
      '<none>',
      age(o, now),
      rec(rec(o.status).nodeInfo).kubeletVersion ?? '',
    ],
  },
  ingresses: {
    columns: [nameCol, col('Class'), col('Hosts'), col('Address'), col('Ports'), ageCol],
    cells: (o, now) => {
      const spec = rec(o.spec);
      const hosts = arr(spec.rules)
        .map(rec)
        .map((r) => r.host)
        .filter((h) => typeof h === 'string');
      return [
        o.metadata.name,
        spec.ingressClassName ?? '<none>',
        hosts.length ? hosts.join(',') : '*',
        '',
        arr(spec.tls).length ? '80, 443' : '80',
        age(o, now),
      ];
    },
  },
  leases: {
    columns: [nameCol, col('Holder'), ageCol],
    cells: (o, now) => [o.metadata.name, rec(o.spec).holderIdentity ?? '', age(o, now)],
  },
  events: {
    columns: [col('Last Seen'), col('Type'), col('Reason'), col('Object'), col('Message')],
    cells: (o, now) => {
      const io = rec(o.involvedObject);
      const last = typeof o.lastTimestamp === 'string' ? Date.parse(o.lastTimestamp) : undefined;
      return [
        last === undefined ? '<unknown>' : humanDuration(now - last),
        o.type ?? '',
        o.reason ?? '',
        `${String(io.kind ?? '').toLowerCase()}/${String(io.name ?? '')}`,
        o.message ?? '',
      ];
    },
  },
  customresourcedefinitions: {
    columns: [nameCol, col('Created At', 'date')],
    cells: (o) => [o.metadata.name, o.metadata.creationTimestamp ?? ''],
  },
};

function accessModes(v: unknown): string {
  const short: Record<string, string> = {
    ReadWriteOnce: 'RWO',
    ReadOnlyMany: 'ROX',
    ReadWriteMany: 'RWX',
    ReadWriteOncePod: 'RWOP',
  };
  return arr(v)
    .map((m) => short[String(m)] ?? String(m))
    .join(',');
}

const DEFAULT_PRINTER = { columns: [nameCol, ageCol], cells: ((o, now) => [o.metadata.name, age(o, now)]) as Cells };

/** Table columns and a row function for a resource, as the real server prints it. */
export function printerFor(r: ResourceType): { columns: TableColumn[]; cells: Cells } {
  return PRINTERS[r.plural] ?? DEFAULT_PRINTER;
}

/** A CustomResourceDefinition object for a custom resource of the table (schema: preserve unknown fields). */
export function crdFor(r: ResourceType, creationTimestamp?: string): KubeObject {
  const name = `${r.plural}.${r.group}`;
  const names = { plural: r.plural, singular: r.singular, kind: r.kind, listKind: r.listKind };
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name, ...(creationTimestamp ? { creationTimestamp } : {}) },
    spec: {
      group: r.group,
      names: r.shortNames ? { ...names, shortNames: r.shortNames } : names,
      scope: r.namespaced ? 'Namespaced' : 'Cluster',
      versions: [
        {
          name: r.version,
          served: true,
          storage: true,
          schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } },
          subresources: (r.subresources ?? []).includes('status') ? { status: {} } : {},
        },
      ],
    },
    status: {
      acceptedNames: names,
      storedVersions: [r.version],
      conditions: [
        { type: 'NamesAccepted', status: 'True', reason: 'NoConflicts', message: 'no conflicts found' },
        {
          type: 'Established',
          status: 'True',
          reason: 'InitialNamesAccepted',
          message: 'the initial names have been accepted',
        },
      ],
    },
  };
}
