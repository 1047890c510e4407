/**
 * Step 1 of a restore: the Secrets and ConfigMaps saved in the archive (`kubernetes/secrets/*.yaml`,
 * `kubernetes/configmaps/*.yaml`), recreated with their exact bytes, labels (the init-secrets tool refuses to touch
 * a Secret without `app.kubernetes.io/managed-by=matrix-tools-init-secrets`), annotations and type.
 */
import { parse as parseYaml } from 'yaml';
import { configMapMember, PREFIXES, secretMember } from '../../lib/archive/layout.js';
import { PreconditionError } from '../../lib/errors.js';
import type { KubeClient } from '../../lib/kube/client.js';
import { KubeApiError } from '../../lib/kube/client.js';
import type { KubeObject } from '../../lib/kube/types.js';

/** A Secret or ConfigMap as it will be written to the target namespace. */
export interface RestorableObject {
  kind: 'Secret' | 'ConfigMap';
  name: string;
  /** The archive member it came from. */
  member: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  /** Secret type, e.g. Opaque. */
  type?: string;
  /** Secret `data` or ConfigMap `binaryData`: base64 exactly as stored (binary DER keys stay byte-exact). */
  data: Record<string, string>;
  /** ConfigMap `data` (text). */
  stringData: Record<string, string>;
  immutable?: boolean;
}

/** What applying one object did. */
export interface ObjectOutcome {
  kind: 'Secret' | 'ConfigMap';
  name: string;
  action: 'created' | 'replaced' | 'recreated';
  /** Keys restored (never values). */
  keys: string[];
}

/** Annotations that describe the source cluster's object and must not be copied. */
const DROPPED_ANNOTATIONS = new Set(['kubectl.kubernetes.io/last-applied-configuration']);
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function bad(member: string, problem: string): PreconditionError {
  return new PreconditionError(`The archive member ${member} is not a usable Kubernetes object: ${problem}.`, {
    code: 'ARCHIVE_CORRUPT',
    next: ['Use another backup; `ess backup verify` shows what is wrong with this one'],
  });
}

function stringMap(value: unknown, member: string, field: string): Record<string, string> {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw bad(member, `${field} is not a map`);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (typeof v !== 'string') throw bad(member, `${field}.${k} is not a string`);
    out[k] = v;
  }
  return out;
}

/** True for members holding a Kubernetes object to restore. */
export function isObjectMember(name: string): boolean {
  return name.startsWith(PREFIXES.secrets) || name.startsWith(PREFIXES.configMaps);
}

/**
 * Parses an object member. Accepts a Kubernetes object (`kubectl get -o yaml` shape: apiVersion, kind, metadata,
 * type, data, binaryData) or the flat form of collect-config's SavedObject (kind, name, labels, annotations, data,
 * stringData). Checks that the kind and name match the member name and that binary values are base64.
 */
export function parseObjectMember(member: string, bytes: Buffer): RestorableObject {
  let doc: unknown;
  try {
    doc = parseYaml(bytes.toString('utf8'));
  } catch (error) {
    throw bad(member, `not YAML (${(error as Error).message.split('\n')[0]})`);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw bad(member, 'not a mapping');
  const d = doc as Record<string, unknown>;
  const kind = d.kind;
  if (kind !== 'Secret' && kind !== 'ConfigMap') throw bad(member, `kind is ${JSON.stringify(kind)}`);
  const meta = d.metadata && typeof d.metadata === 'object' ? (d.metadata as Record<string, unknown>) : undefined;
  const name = meta ? meta.name : d.name;
  if (typeof name !== 'string' || name.length === 0) throw bad(member, 'it has no name');
  const expectedMember = kind === 'Secret' ? secretMember(name) : configMapMember(name);
  if (expectedMember !== member) throw bad(member, `it holds ${kind} ${name}, which belongs in ${expectedMember}`);
  const labels = stringMap(meta ? meta.labels : d.labels, member, 'labels');
  const annotations = stringMap(meta ? meta.annotations : d.annotations, member, 'annotations');
  for (const key of DROPPED_ANNOTATIONS) delete annotations[key];
  let data: Record<string, string>;
  let stringData: Record<string, string>;
  if (kind === 'Secret') {
    data = stringMap(d.data, member, 'data');
    stringData = {};
  } else if (meta) {
    data = stringMap(d.binaryData, member, 'binaryData');
    stringData = stringMap(d.data, member, 'data');
  } else {
    data = stringMap(d.data, member, 'data');
    stringData = stringMap(d.stringData, member, 'stringData');
  }
  for (const [key, value] of Object.entries(data)) {
    if (value.length % 4 !== 0 || !BASE64.test(value)) throw bad(member, `the value of ${key} is not base64`);
  }
  const type = typeof d.type === 'string' ? d.type : undefined;
  return {
    kind,
    name,
    member,
    labels,
    annotations,
    type: kind === 'Secret' ? (type ?? 'Opaque') : undefined,
    data,
    stringData,
    immutable: d.immutable === true ? true : undefined,
  };
}

/** The API body of an object for `namespace`. */
export function objectBody(object: RestorableObject, namespace: string): KubeObject & Record<string, unknown> {
  const metadata = { name: object.name, namespace, labels: object.labels, annotations: object.annotations };
  const common = { apiVersion: 'v1', kind: object.kind, metadata, ...(object.immutable ? { immutable: true } : {}) };
  if (object.kind === 'Secret') return { ...common, type: object.type, data: object.data };
  return { ...common, data: object.stringData, binaryData: object.data };
}

function isImmutableRefusal(error: unknown): boolean {
  return error instanceof KubeApiError && error.statusCode === 422 && /immutable/i.test(error.message);
}

/**
 * Creates or replaces each object in `namespace` (a replace keeps nothing of the live object but its
 * resourceVersion; an immutable live object is deleted and created again). Objects are written one by one; the
 * first API failure stops and is thrown.
 */
export async function applyObjects(
  kube: KubeClient,
  namespace: string,
  objects: readonly RestorableObject[],
): Promise<ObjectOutcome[]> {
  const outcomes: ObjectOutcome[] = [];
  for (const object of objects) {
    const body = objectBody(object, namespace);
    const keys = [...Object.keys(object.data), ...Object.keys(object.stringData)].sort();
    const live = await kube.get(object.kind, namespace, object.name);
    let action: ObjectOutcome['action'];
    if (!live) {
      await kube.create(object.kind, namespace, body);
      action = 'created';
    } else {
      try {
        await kube.replace(object.kind, namespace, {
          ...body,
          metadata: { ...body.metadata, resourceVersion: live.metadata.resourceVersion },
        });
        action = 'replaced';
      } catch (error) {
        if (!isImmutableRefusal(error)) throw error;
        await kube.delete(object.kind, namespace, object.name);
        await kube.create(object.kind, namespace, body);
        action = 'recreated';
      }
    }
    outcomes.push({ kind: object.kind, name: object.name, action, keys });
  }
  return outcomes;
}
