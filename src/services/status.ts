import { discoverDeployment } from '../lib/deployment/discover.js';
import type { Deployment, WorkloadInfo } from '../lib/deployment/model.js';
import type { KubeClient } from '../lib/kube/client.js';
import type { Reporter } from '../lib/output/log.js';
import { psqlInPod } from '../lib/postgres/in-pod.js';

export interface StatusOptions {
  namespace: string;
  release: string;
}

export interface DatabaseSize {
  name: string;
  bytes: number;
}

export interface StatusResult {
  serverName?: string;
  flavour: Deployment['flavour'];
  namespace: string;
  release: string;
  chartVersion?: string;
  helm?: Deployment['helm'];
  components: (WorkloadInfo & { state: 'running' | 'stopped' | 'degraded' | 'starting' })[];
  postgres?: {
    mode: 'bundled' | 'external';
    pod?: string;
    databases: { name: string; component: string; bytes?: number }[];
  };
  media?: { claimName: string; pod: string; capacity?: string };
  generatedSecret?: string;
  warnings: string[];
}

function workloadState(w: WorkloadInfo): StatusResult['components'][number]['state'] {
  if (w.replicas === 0) return 'stopped';
  if (w.readyReplicas >= w.replicas) return 'running';
  return w.readyReplicas === 0 ? 'starting' : 'degraded';
}

/** Collects everything `ess status` shows. Database sizes are best-effort: a stopped Postgres only adds a warning. */
export async function getStatus(kube: KubeClient, options: StatusOptions, reporter: Reporter): Promise<StatusResult> {
  const deployment = await discoverDeployment(kube, options);
  const warnings = [...deployment.warnings];
  let databases: NonNullable<StatusResult['postgres']>['databases'] = [];
  const pg = deployment.postgres;
  if (pg) {
    databases = pg.databases.map((d) => ({ name: d.name, component: d.component }));
    if (pg.mode === 'bundled') {
      const pgWorkload = deployment.workloads.find((w) => w.name === pg.statefulSet);
      if (pgWorkload && pgWorkload.readyReplicas > 0) {
        try {
          const rows = await psqlInPod(
            kube,
            { namespace: deployment.namespace, pod: pg.pod, container: pg.container, superuser: pg.superuser },
            'SELECT datname, pg_database_size(datname) FROM pg_database WHERE NOT datistemplate ORDER BY 1',
          );
          const sizes = new Map(rows.map(([name, bytes]) => [name, Number(bytes)]));
          databases = databases.map((d) => ({ ...d, bytes: sizes.get(d.name) }));
        } catch (error) {
          warnings.push(`Could not read database sizes from ${pg.pod}: ${(error as Error).message}`);
        }
      } else {
        warnings.push(`Postgres (${pg.statefulSet}) is not running: database sizes unknown.`);
      }
    }
  }
  reporter.debug(`discovered ${deployment.workloads.length} workloads`);
  return {
    serverName: deployment.serverName,
    flavour: deployment.flavour,
    namespace: deployment.namespace,
    release: deployment.release,
    chartVersion: deployment.chartVersion,
    helm: deployment.helm,
    components: deployment.workloads.map((w) => ({ ...w, state: workloadState(w) })),
    postgres: pg ? { mode: pg.mode, pod: pg.mode === 'bundled' ? pg.pod : undefined, databases } : undefined,
    media: deployment.media
      ? { claimName: deployment.media.claimName, pod: deployment.media.pod, capacity: deployment.media.capacity }
      : undefined,
    generatedSecret: deployment.generatedSecret,
    warnings,
  };
}
