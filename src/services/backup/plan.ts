/**
 * The plan of `ess backup`: what will be stopped, dumped and copied, where it goes and how big it is likely to be.
 * `--dry-run` prints it and changes nothing (media and database sizes are read, nothing is written).
 */

import { EXCLUDED_TABLE_DATA } from '../../lib/deployment/components.js';
import type { Deployment } from '../../lib/deployment/model.js';
import type { WorkloadRef } from '../../lib/deployment/scaler.js';
import { MEDIA_CACHE_DIRS } from '../../lib/migrate/media.js';
import type { DumpCompression } from '../../lib/postgres/pod-tools.js';
import type { Consistency, DatabaseTarget } from './dump-phase.js';

/** The plan (also the `plan` field of the --json result). */
export interface BackupPlan {
  serverName: string;
  namespace: string;
  release: string;
  /** Where the archive goes (directory, s3://…, stdout) and its name. */
  destination: string;
  name: string;
  encrypted: boolean;
  /** Incremental: the parent archive, or why a full backup is made instead. */
  incremental?: { parent?: string; fallbackReason?: string };
  /** Workloads scaled to 0 while the snapshots are taken, with their current replicas. */
  stop: { kind: WorkloadRef['kind']; name: string; replicas: number }[];
  consistency: Consistency;
  postgres: {
    tools: 'pod' | 'local';
    where: string;
    serverVersion: string;
    compression: DumpCompression;
    globals: boolean;
    databases: (DatabaseTarget & { excludeTableData: string[] })[];
  };
  media?: {
    pod: string;
    claimName: string;
    storePath: string;
    includeRemote: boolean;
    /** Top-level cache folders left out. */
    skipped: string[];
    /** From a listing, when the pod could be read without changes (dry-run). */
    fileCount?: number;
    bytes?: number;
  };
  config: { secrets: string[]; configMaps: string[]; helmValues: boolean };
  /** Upper estimate of the archive: database sizes (dumps are compressed, so usually far smaller) plus media. */
  estimatedBytes: number;
  spool: { dir: string; freeBytes?: number };
}

/** Workloads a consistent dump stops: Synapse and MAS (every StatefulSet/Deployment of those components). */
export function writerWorkloads(
  deployment: Deployment,
  components: readonly string[],
): (WorkloadRef & { replicas: number })[] {
  return deployment.workloads
    .filter((w) => components.includes(w.component))
    .map((w) => ({ kind: w.kind, namespace: w.namespace, name: w.name, component: w.component, replicas: w.replicas }));
}

/** Cache folders skipped by default. */
export function skippedMediaDirs(includeRemote: boolean): string[] {
  return includeRemote ? [] : [...MEDIA_CACHE_DIRS];
}

/** Tables left out of each database's dump, by component. */
export function excludedFor(component: DatabaseTarget['component']): string[] {
  return [...EXCLUDED_TABLE_DATA[component]];
}
