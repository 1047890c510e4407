/**
 * Writing the archive of `ess backup`: the configuration members, the manifest (from the dumps, the media plan and
 * the deployment), then the spooled members and the media stream, to the destination in one pass.
 */
import { createReadStream } from 'node:fs';
import { configMapMember, MEMBERS, secretMember } from '../../lib/archive/layout.js';
import type { ManifestDatabase, ManifestInput } from '../../lib/archive/manifest.js';
import type { Spool, SpooledFile } from '../../lib/archive/spool.js';
import { writeArchive } from '../../lib/archive/transfer.js';
import { EssError } from '../../lib/errors.js';
import { type CollectedConfig, encodeSavedObject } from './collect-config.js';
import type { BackupDeps, BackupOptions, BackupResult } from './create.js';
import type { DumpPhaseResult } from './dump-phase.js';
import { copyMedia, type MediaPlan, type MediaSource } from './media.js';
import type { Prepared } from './prepare.js';

/** Names of the Secrets and ConfigMaps in the backup, and whether Helm values are. */
export function configSummary(config: CollectedConfig): NonNullable<BackupResult['config']> {
  return {
    secrets: config.objects.filter((o) => o.kind === 'Secret').map((o) => o.name),
    configMaps: config.objects.filter((o) => o.kind === 'ConfigMap').map((o) => o.name),
    helmValues: config.values !== undefined,
  };
}

/** A raw I/O error from writing the archive (e.g. ENOSPC) as an expected error naming the destination. */
function asStoreError(error: unknown, location: string, name: string): unknown {
  const code = (error as NodeJS.ErrnoException)?.code;
  if (error instanceof EssError || typeof code !== 'string' || !code.startsWith('E')) return error;
  return new EssError(`Writing the backup to ${location}/${name} failed: ${(error as Error).message}`, {
    code: 'STORE_WRITE_FAILED',
    cause: error,
    next:
      code === 'ENOSPC'
        ? [`Free space in ${location} or choose another destination (-o DIR or --s3)`]
        : ['Check the destination, then re-run ess backup'],
  });
}

/** Spools the Kubernetes objects and Helm facts as archive members (small; YAML/JSON). */
export async function spoolConfig(spool: Spool, config: CollectedConfig, signal: AbortSignal): Promise<SpooledFile[]> {
  const { stringify } = await import('yaml');
  const members: SpooledFile[] = [];
  const sorted = [...config.objects].sort((a, b) => a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name));
  for (const object of sorted.filter((o) => o.kind === 'Secret')) {
    members.push(await spool.add(secretMember(object.name), encodeSavedObject(object), { signal }));
  }
  for (const object of sorted.filter((o) => o.kind === 'ConfigMap')) {
    members.push(await spool.add(configMapMember(object.name), encodeSavedObject(object), { signal }));
  }
  if (config.values !== undefined) {
    members.push(
      await spool.add(MEMBERS.helmValues, Buffer.from(stringify(config.values, { lineWidth: 0 })), { signal }),
    );
  }
  if (config.chartVersion !== undefined || config.helmRevision !== undefined) {
    const release = {
      chart: config.chartName ?? 'matrix-stack',
      version: config.chartVersion,
      appVersion: config.appVersion,
      revision: config.helmRevision,
    };
    members.push(
      await spool.add(MEMBERS.helmRelease, Buffer.from(`${JSON.stringify(release, null, 2)}\n`), { signal }),
    );
  }
  return members;
}

export interface WriteInput {
  p: Prepared;
  options: BackupOptions;
  deps: BackupDeps;
  dumped: DumpPhaseResult;
  mediaPlan?: MediaPlan;
  mediaSource?: MediaSource;
  configMembers: SpooledFile[];
  config: CollectedConfig;
  createdAt: Date;
  warnings: string[];
}

export async function writeBackupArchive(input: WriteInput): Promise<{ location: string; bytes: number }> {
  const { p, options, deps, dumped, mediaPlan, mediaSource, configMembers, config, createdAt, warnings } = input;
  const synapse = dumped.databases.find((d) => d.component === 'synapse');
  const mas = dumped.databases.find((d) => d.component === 'mas');
  const masWorkload = p.deployment.workloads.find((w) => w.component === 'mas');
  const spooled: SpooledFile[] = [
    ...(mediaPlan ? [mediaPlan.index] : []),
    ...(dumped.globals ? [dumped.globals] : []),
    ...dumped.databases.map((d) => d.file),
    ...configMembers,
  ];
  const databases: ManifestDatabase[] = dumped.databases.map((d) => ({
    name: d.name,
    component: d.component,
    member: d.member,
    sizeBytes: d.sizeBytes,
    tables: d.tables,
    rowCounts: 'exact',
    ...(d.excludedTableData.length ? { excludedTableData: d.excludedTableData } : {}),
  }));
  const manifest: ManifestInput = {
    createdAt: createdAt.toISOString(),
    ess: { version: options.essVersion },
    deployment: {
      serverName: p.serverName,
      namespace: p.deployment.namespace,
      release: p.deployment.release,
      chartVersion: config.chartVersion ?? p.deployment.chartVersion,
      flavour: p.deployment.flavour,
    },
    postgres: {
      serverVersion: p.serverVersion,
      ...(dumped.globals ? { globals: MEMBERS.postgresGlobals } : {}),
      databases,
    },
    synapse: {
      version: p.deployment.synapseVersion,
      schemaVersion: synapse?.schemaVersion,
      schemaCompatVersion: synapse?.schemaCompatVersion,
    },
    mas: { version: masWorkload?.version, schemaVersion: mas?.masMigration },
    ...(mediaPlan && mediaSource
      ? {
          media: {
            storePath: mediaSource.storePath,
            index: MEMBERS.mediaIndex,
            fileCount: mediaPlan.summary.fileCount,
            bytes: mediaPlan.summary.bytes,
            storedFileCount: mediaPlan.summary.storedFileCount,
            storedBytes: mediaPlan.summary.storedBytes,
            incremental: mediaPlan.incremental,
            ...(mediaPlan.parent ? { parent: mediaPlan.parent } : {}),
            requires: mediaPlan.summary.requires,
          },
        }
      : {}),
    warnings: [...warnings],
  };
  const total = spooled.reduce((n, f) => n + f.size, 0) + (mediaPlan?.summary.storedBytes ?? 0);
  const members = spooled.length + (mediaPlan?.toStore.size ?? 0) + 2;
  let done = 0;
  const stage = `write ${p.name}`;
  const progress = (n: number) => {
    done += n;
    deps.reporter.progress(stage, done, total);
  };
  deps.reporter.info(`Writing ${p.name} to ${p.sink.location}…`);
  const result = await writeArchive(
    p.sink,
    {
      name: p.name,
      encryption: p.encryption,
      signal: deps.signal,
      sizeHint: total + members * 1536 + 4096,
      mtime: createdAt,
    },
    async (writer) => {
      await writer.writeManifest(manifest, spooled);
      for (const file of spooled) {
        // Smaller reads than addFile's 1 MiB: fewer bytes in flight between scavenges.
        await writer.addMember(
          { name: file.name, size: file.size, mode: file.mode },
          createReadStream(file.path, { highWaterMark: 256 * 1024 }),
        );
        progress(file.size);
      }
      if (mediaPlan && mediaSource) {
        let last = 0;
        await copyMedia(deps.kube, mediaSource, mediaPlan, writer, {
          signal: deps.signal,
          onBytes: (copied) => {
            progress(copied - last);
            last = copied;
          },
        });
      }
    },
  ).catch((error: unknown) => {
    throw asStoreError(error, p.sink.location, p.name);
  });
  if (done < total) deps.reporter.progress(stage, total, total);
  return { location: result.location, bytes: result.bytes };
}
