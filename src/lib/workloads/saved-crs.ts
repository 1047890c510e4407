/**
 * Operator flavour: before `ess stop` deletes a component CR (e.g. `Synapse/first-element-deployment`) it keeps a
 * copy of the CR's JSON in a ConfigMap next to the ElementDeployment, `<elementDeployment>-ess-saved-crs`, one key
 * per CR. `ess start` recreates a CR from that copy if the operator's updater has not done so, then forgets it.
 * A ConfigMap (1 MiB) rather than an annotation on the ElementDeployment (256 KiB for all annotations together):
 * CR specs can be large, and the updater may rewrite the ElementDeployment's metadata.
 */
import { ESS_MANAGED_BY, LABELS, names } from '../deployment/components.js';
import type { KubeClient } from '../kube/client.js';
import { isConflict } from '../kube/client.js';
import type { Kind } from '../kube/resources.js';
import { RESOURCES } from '../kube/resources.js';
import type { ConfigMap, KubeObject } from '../kube/types.js';

/** One deleted component CR, as kept in the ConfigMap. */
export interface SavedCR {
  kind: string;
  name: string;
  /** Component id the CR belongs to. */
  component: string;
  /** Workloads the CR owned when it was deleted (kind/name), to wait for after the operator recreates them. */
  ownedWorkloads: string[];
  /** ISO time of the save. */
  savedAt: string;
  /** The CR as it was, without server-set fields. */
  object: KubeObject;
}

/** ConfigMap data key of one CR: `Synapse.first-element-deployment.json`. */
export function savedCRKey(kind: string, name: string): string {
  return `${kind}.${name}.json`;
}

/** True when ess can read and write CRs of this kind (it is in the resource table). */
export function isKnownKind(kind: string): kind is Kind {
  return Object.hasOwn(RESOURCES, kind);
}

/** Drops the fields the API server owns, so the object can be created again. */
export function withoutServerFields<T extends KubeObject>(object: T): T {
  const { status: _status, ...rest } = structuredClone(object) as T & { status?: unknown };
  const meta = rest.metadata as T['metadata'] & Record<string, unknown>;
  for (const key of [
    'uid',
    'resourceVersion',
    'creationTimestamp',
    'deletionTimestamp',
    'generation',
    'managedFields',
  ]) {
    delete meta[key];
  }
  return rest as T;
}

/** Reads the saved CRs (empty when there is no ConfigMap). Entries that do not parse are skipped. */
export async function readSavedCRs(kube: KubeClient, namespace: string, elementDeployment: string): Promise<SavedCR[]> {
  const cm = await kube.get<ConfigMap>('ConfigMap', namespace, names.savedOperatorCRs(elementDeployment));
  const out: SavedCR[] = [];
  for (const value of Object.values(cm?.data ?? {})) {
    try {
      const parsed = JSON.parse(value) as SavedCR;
      if (parsed?.kind && parsed.name && parsed.object?.metadata) out.push(parsed);
    } catch {
      // A hand-edited or truncated entry: ignore it rather than block `ess start`.
    }
  }
  return out.sort((a, b) => a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name));
}

/**
 * Adds entries to the ConfigMap (creating it when absent). An entry already saved for the same CR is kept: it was
 * written before an earlier deletion and is the only copy left.
 */
export async function saveCRs(
  kube: KubeClient,
  namespace: string,
  elementDeployment: string,
  entries: SavedCR[],
): Promise<void> {
  const name = names.savedOperatorCRs(elementDeployment);
  for (let attempt = 1; ; attempt++) {
    const cm = await kube.get<ConfigMap>('ConfigMap', namespace, name);
    const data: Record<string, string> = {};
    for (const entry of entries) {
      const key = savedCRKey(entry.kind, entry.name);
      if (cm?.data?.[key] === undefined) data[key] = JSON.stringify(entry);
    }
    if (Object.keys(data).length === 0) return;
    try {
      if (cm) {
        await kube.patch('ConfigMap', namespace, name, {
          metadata: { resourceVersion: cm.metadata.resourceVersion },
          data,
        });
      } else {
        await kube.create<ConfigMap>('ConfigMap', namespace, {
          metadata: { name, namespace, labels: { [LABELS.managedBy]: ESS_MANAGED_BY } },
          data,
        });
      }
      return;
    } catch (error) {
      if (isConflict(error) && attempt < 5) continue;
      throw error;
    }
  }
}

/** Removes entries; deletes the ConfigMap when nothing is left. */
export async function forgetSavedCRs(
  kube: KubeClient,
  namespace: string,
  elementDeployment: string,
  entries: { kind: string; name: string }[],
): Promise<void> {
  const name = names.savedOperatorCRs(elementDeployment);
  const cm = await kube.get<ConfigMap>('ConfigMap', namespace, name);
  if (!cm) return;
  const keys = entries.map((e) => savedCRKey(e.kind, e.name));
  const left = Object.keys(cm.data ?? {}).filter((k) => !keys.includes(k));
  if (left.length === 0) {
    await kube.delete('ConfigMap', namespace, name);
    return;
  }
  await kube.patch('ConfigMap', namespace, name, { data: Object.fromEntries(keys.map((k) => [k, null])) });
}
