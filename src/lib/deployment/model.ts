import type { ComponentId } from './components.js';

/** One StatefulSet or Deployment of the deployment. */
export interface WorkloadInfo {
  kind: 'StatefulSet' | 'Deployment';
  name: string;
  namespace: string;
  component: ComponentId | 'unknown';
  /** Value of app.kubernetes.io/name, e.g. synapse-main, synapse-event-persister. */
  role?: string;
  replicas: number;
  readyReplicas: number;
  /** Replica count ess recorded when it stopped the workload (annotation), if any. */
  rememberedReplicas?: number;
  image?: string;
  version?: string;
  selector: Record<string, string>;
}

export interface DatabaseInfo {
  /** Which component uses it. */
  component: 'synapse' | 'mas' | 'other';
  name: string;
  owner?: string;
  host?: string;
  port?: number;
}

export type PostgresInfo =
  | {
      mode: 'bundled';
      statefulSet: string;
      pod: string;
      container: string;
      superuser: string;
      dataClaim?: string;
      databases: DatabaseInfo[];
    }
  | { mode: 'external'; databases: DatabaseInfo[] };

export interface MediaInfo {
  claimName: string;
  /** The StatefulSet whose pod mounts the media PVC (main, or media-repo). */
  statefulSet: string;
  pod: string;
  container: string;
  mountPath: string;
  storePath: string;
  capacity?: string;
}

export interface HelmInfo {
  revision: number;
  status: string;
  chartVersion?: string;
  updated?: string;
}

/** Everything discovery found out about one ESS deployment. */
export interface Deployment {
  flavour: 'matrix-stack' | 'operator';
  namespace: string;
  release: string;
  serverName?: string;
  chartVersion?: string;
  synapseVersion?: string;
  helm?: HelmInfo;
  workloads: WorkloadInfo[];
  postgres?: PostgresInfo;
  generatedSecret?: string;
  markersConfigMap?: string;
  media?: MediaInfo;
  /** Operator flavour only. */
  operator?: { namespace: string; deployment: string; elementDeployment: string; dependentCRs: string[] };
  warnings: string[];
}
