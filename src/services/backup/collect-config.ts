import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { INIT_SECRETS_MANAGED_BY, LABELS, names } from '../../lib/deployment/components.js';
import type { Deployment } from '../../lib/deployment/model.js';
import { decodeRecord, type HelmRelease, listReleaseRecords } from '../../lib/helm/release.js';
import type { KubeClient } from '../../lib/kube/client.js';
import type { ConfigMap, Secret } from '../../lib/kube/types.js';

/** A Secret or ConfigMap as stored in a backup: exact bytes (base64 as the API gives them), labels, type. */
export interface SavedObject {
  kind: 'Secret' | 'ConfigMap';
  name: string;
  type?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  /** Secret data / ConfigMap binaryData, base64 exactly as read (binary DER keys stay byte-exact). */
  data: Record<string, string>;
  /** ConfigMap string data. */
  stringData?: Record<string, string>;
}

export interface CollectedConfig {
  objects: SavedObject[];
  /** User-supplied Helm values of the deployed revision (helm get values), when readable. */
  values?: Record<string, unknown>;
  /** Chart name of the deployed revision (matrix-stack). */
  chartName?: string;
  chartVersion?: string;
  appVersion?: string;
  helmRevision?: number;
  warnings: string[];
}

/** Annotations that belong to the source cluster and must not be restored. */
const DROPPED_ANNOTATIONS = ['kubectl.kubernetes.io/last-applied-configuration'];

function save(kind: SavedObject['kind'], object: Secret | ConfigMap): SavedObject {
  const annotations = Object.fromEntries(
    Object.entries(object.metadata.annotations ?? {}).filter(([k]) => !DROPPED_ANNOTATIONS.includes(k)),
  );
  if (kind === 'Secret') {
    const secret = object as Secret;
    return {
      kind,
      name: secret.metadata.name,
      type: secret.type,
      labels: secret.metadata.labels ?? {},
      annotations,
      data: secret.data ?? {},
    };
  }
  const cm = object as ConfigMap;
  return {
    kind,
    name: cm.metadata.name,
    labels: cm.metadata.labels ?? {},
    annotations,
    data: cm.binaryData ?? {},
    stringData: cm.data ?? {},
  };
}

/** Names of Secrets referenced by `{secret: NAME, secretKey: KEY}` credentials anywhere in the chart values. */
export function referencedSecrets(values: unknown, release: string): string[] {
  const found = new Set<string>();
  const walk = (node: unknown) => {
    if (Array.isArray(node)) return node.forEach(walk);
    if (!node || typeof node !== 'object') return;
    const record = node as Record<string, unknown>;
    if (typeof record.secret === 'string' && typeof record.secretKey === 'string') {
      found.add(record.secret.replace(/\{\{\s*\$?\.Release\.Name\s*\}\}/g, release));
    }
    Object.values(record).forEach(walk);
  };
  walk(values);
  return [...found].sort();
}

/** The deployed (or newest) revision's release body, if any Helm record is readable. */
export async function deployedRelease(
  kube: KubeClient,
  namespace: string,
  release: string,
): Promise<HelmRelease | undefined> {
  const records = await listReleaseRecords(kube, namespace, release);
  const record = [...records].reverse().find((r) => r.labelStatus === 'deployed') ?? records.at(-1);
  return record ? decodeRecord(record) : undefined;
}

/**
 * Collects the configuration a restore needs: the generated Secret (and the legacy init-secrets ones), every
 * Secret the values reference, the markers ConfigMap, and the user-supplied Helm values with the chart version.
 */
export async function collectConfig(kube: KubeClient, deployment: Deployment): Promise<CollectedConfig> {
  const { namespace, release } = deployment;
  const warnings: string[] = [];
  const objects = new Map<string, SavedObject>();
  const initSecrets = await kube.list<Secret>('Secret', namespace, `${LABELS.managedBy}=${INIT_SECRETS_MANAGED_BY}`);
  for (const secret of initSecrets) objects.set(`Secret/${secret.metadata.name}`, save('Secret', secret));
  if (deployment.generatedSecret && !objects.has(`Secret/${deployment.generatedSecret}`)) {
    const secret = await kube.get<Secret>('Secret', namespace, deployment.generatedSecret);
    if (secret) objects.set(`Secret/${secret.metadata.name}`, save('Secret', secret));
  }

  let helm: HelmRelease | undefined;
  try {
    helm = await deployedRelease(kube, namespace, release);
  } catch (error) {
    warnings.push(`Helm release values not readable: ${(error as Error).message}`);
  }
  if (!helm) warnings.push('No Helm release record found: keep your values files, the backup cannot hold them.');
  for (const name of referencedSecrets(helm?.config, release)) {
    if (objects.has(`Secret/${name}`)) continue;
    const secret = await kube.get<Secret>('Secret', namespace, name);
    if (secret) objects.set(`Secret/${name}`, save('Secret', secret));
    else warnings.push(`Secret ${name} is referenced by the Helm values but does not exist.`);
  }
  const markers = await kube.get<ConfigMap>('ConfigMap', namespace, names.markersConfigMap(release));
  if (markers) objects.set(`ConfigMap/${markers.metadata.name}`, save('ConfigMap', markers));

  return {
    objects: [...objects.values()],
    values: helm?.config,
    chartName: helm?.chart?.metadata?.name,
    chartVersion: helm?.chart?.metadata?.version ?? deployment.chartVersion,
    appVersion: helm?.chart?.metadata?.appVersion,
    helmRevision: helm?.version,
    warnings,
  };
}

/**
 * The Kubernetes manifest of a saved object, as a backup stores it (`kubernetes/secrets/<name>.yaml`,
 * `kubernetes/configmaps/<name>.yaml`): applyable with `kubectl apply -f`, data as the exact base64 read.
 */
export function savedObjectManifest(object: SavedObject): Record<string, unknown> {
  const metadata: Record<string, unknown> = { name: object.name };
  if (Object.keys(object.labels).length > 0) metadata.labels = object.labels;
  if (Object.keys(object.annotations).length > 0) metadata.annotations = object.annotations;
  if (object.kind === 'Secret') {
    return {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata,
      ...(object.type ? { type: object.type } : {}),
      data: object.data,
    };
  }
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata,
    ...(object.stringData && Object.keys(object.stringData).length > 0 ? { data: object.stringData } : {}),
    ...(Object.keys(object.data).length > 0 ? { binaryData: object.data } : {}),
  };
}

/** YAML bytes of {@link savedObjectManifest}. */
export function encodeSavedObject(object: SavedObject): Buffer {
  return Buffer.from(stringifyYaml(savedObjectManifest(object), { lineWidth: 0 }));
}

/** Parses a member written by {@link encodeSavedObject} back into a SavedObject (for restore). */
export function decodeSavedObject(text: string): SavedObject {
  const doc = parseYaml(text) as {
    kind?: string;
    type?: string;
    metadata?: { name?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
    data?: Record<string, string>;
    binaryData?: Record<string, string>;
  };
  if ((doc?.kind !== 'Secret' && doc?.kind !== 'ConfigMap') || typeof doc.metadata?.name !== 'string') {
    throw new Error('not a Secret or ConfigMap manifest');
  }
  const base = {
    name: doc.metadata.name,
    labels: doc.metadata.labels ?? {},
    annotations: doc.metadata.annotations ?? {},
  };
  if (doc.kind === 'Secret') return { kind: 'Secret', ...base, type: doc.type, data: doc.data ?? {} };
  return { kind: 'ConfigMap', ...base, data: doc.binaryData ?? {}, stringData: doc.data ?? {} };
}
