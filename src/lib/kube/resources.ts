/**
 * The Kubernetes resources ess reads or changes: kind → API path parts. One table, so every call site names a kind
 * and never spells out an API path.
 */
export interface ResourceRef {
  apiVersion: string;
  plural: string;
  namespaced: boolean;
}

export const RESOURCES = {
  Namespace: { apiVersion: 'v1', plural: 'namespaces', namespaced: false },
  Pod: { apiVersion: 'v1', plural: 'pods', namespaced: true },
  Secret: { apiVersion: 'v1', plural: 'secrets', namespaced: true },
  ConfigMap: { apiVersion: 'v1', plural: 'configmaps', namespaced: true },
  Service: { apiVersion: 'v1', plural: 'services', namespaced: true },
  PersistentVolumeClaim: { apiVersion: 'v1', plural: 'persistentvolumeclaims', namespaced: true },
  PersistentVolume: { apiVersion: 'v1', plural: 'persistentvolumes', namespaced: false },
  StatefulSet: { apiVersion: 'apps/v1', plural: 'statefulsets', namespaced: true },
  Deployment: { apiVersion: 'apps/v1', plural: 'deployments', namespaced: true },
  Job: { apiVersion: 'batch/v1', plural: 'jobs', namespaced: true },
  Lease: { apiVersion: 'coordination.k8s.io/v1', plural: 'leases', namespaced: true },
  ElementDeployment: { apiVersion: 'matrix.element.io/v1alpha1', plural: 'elementdeployments', namespaced: true },
  // Operator-flavour component CRs (keys of ElementDeployment .status.dependentCRs). Group and plurals follow the
  // ElementDeployment; the ESS docs call the group UNCERTAIN (discover with `kubectl api-resources | grep -i element`).
  Synapse: { apiVersion: 'matrix.element.io/v1alpha1', plural: 'synapses', namespaced: true },
  MatrixAuthenticationService: {
    apiVersion: 'matrix.element.io/v1alpha1',
    plural: 'matrixauthenticationservices',
    namespaced: true,
  },
  ElementWeb: { apiVersion: 'matrix.element.io/v1alpha1', plural: 'elementwebs', namespaced: true },
  Hookshot: { apiVersion: 'matrix.element.io/v1alpha1', plural: 'hookshots', namespaced: true },
  SynapseAdminUI: { apiVersion: 'matrix.element.io/v1alpha1', plural: 'synapseadminuis', namespaced: true },
} as const satisfies Record<string, ResourceRef>;

export type Kind = keyof typeof RESOURCES;

/** Builds the REST path of a collection or object. */
export function resourcePath(ref: ResourceRef, namespace?: string, name?: string, subresource?: string): string {
  const base = ref.apiVersion.includes('/') ? `/apis/${ref.apiVersion}` : `/api/${ref.apiVersion}`;
  let path = base;
  if (ref.namespaced && namespace) path += `/namespaces/${encodeURIComponent(namespace)}`;
  path += `/${ref.plural}`;
  if (name) path += `/${encodeURIComponent(name)}`;
  if (subresource) path += `/${subresource}`;
  return path;
}
