/**
 * Writing the archive of `ess backup`: the configuration members, the manifest (from the dumps, the media plan and
 * the deployment), then the spooled members and the media stream, to the destination in one pass.
 */
import { createReadStream } from 'node:fs';
import { configMapMember, MEMBERS, secretMember } from '../../lib/archive/layout.js';
import type { ManifestDatabase, ManifestInput } from '../../lib/archive/manifest.js';
import type { Spool, SpooledFile } from '../../lib/archive/spool.js';
import { writeArchive, writeArchiveLateManifest } from '../../lib/archive/transfer.js';
import { type ArchiveWriter, manifestSlotBytes } from '../../lib/archive/writer.js';
import { EssError } from '../../lib/errors.js';
import type { PatchableSink } from '../../lib/storage/store.js';
import { type CollectedConfig, encodeSavedObject } from './collect-config.js';
import type { BackupDeps, BackupOptions, BackupResult } from './create.js';
import type { CountedDatabase, DumpPhaseResult } from './dump-phase.js';
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

/** What the manifest is built from: the databases as counted (dumps not needed), media plan and configuration. */
interface ManifestFacts {
  p: Prepared;
  options: BackupOptions;
  databases: CountedDatabase[];
  globals: boolean;
  mediaPlan?: MediaPlan;
  mediaSource?: MediaSource;
  config: CollectedConfig;
  createdAt: Date;
  warnings: string[];
}

function manifestInput(f: ManifestFacts): ManifestInput {
  const { p, options, mediaPlan, mediaSource, config } = f;
  const synapse = f.databases.find((d) => d.component === 'synapse');
  const mas = f.databases.find((d) => d.component === 'mas');
  const masWorkload = p.deployment.workloads.find((w) => w.component === 'mas');
  const databases: ManifestDatabase[] = f.databases.map((d) => ({
    name: d.name,
    component: d.component,
    member: d.member,
    sizeBytes: d.sizeBytes,
    tables: d.tables,
    rowCounts: 'exact',
    ...(d.excludedTableData.length ? { excludedTableData: d.excludedTableData } : {}),
  }));
  return {
    createdAt: f.createdAt.toISOString(),
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
      ...(f.globals ? { globals: MEMBERS.postgresGlobals } : {}),
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
    warnings: [...f.warnings],
  };
}

/** Progress of the write stage on the reporter: bytes so far against an expected total that may grow. */
function writeProgress(deps: BackupDeps, stage: string, total: number) {
  let done = 0;
  return {
    add(n: number) {
      done += n;
      deps.reporter.progress(stage, done, Math.max(done, total));
    },
    grow(n: number) {
      total += n;
    },
    end() {
      if (done < total) deps.reporter.progress(stage, total, total);
    },
  };
}

/** Streams the media members from the pod into the archive, reporting bytes. */
async function writeMedia(
  writer: ArchiveWriter,
  deps: BackupDeps,
  mediaPlan: MediaPlan,
  mediaSource: MediaSource,
  progress: { add(n: number): void },
  signal: AbortSignal | undefined,
): Promise<void> {
  let last = 0;
  await copyMedia(deps.kube, mediaSource, mediaPlan, writer, {
    signal,
    onBytes: (copied) => {
      progress.add(copied - last);
      last = copied;
    },
  });
}

/** Adds spooled members, in smaller reads than addFile's 1 MiB (fewer bytes in flight between scavenges). */
async function writeSpooled(
  writer: ArchiveWriter,
  files: SpooledFile[],
  progress: { add(n: number): void },
): Promise<void> {
  for (const file of files) {
    await writer.addMember(
      { name: file.name, size: file.size, mode: file.mode },
      createReadStream(file.path, { highWaterMark: 256 * 1024 }),
      file.sha256,
    );
    progress.add(file.size);
  }
}

/**
 * Writes the archive once the dumps are done: manifest first (it lists the spooled members' digests), then the
 * spooled members, then the media streamed from the pod. For destinations that cannot patch what they stored (S3,
 * stdout) and for encrypted archives.
 */
export async function writeBackupArchive(input: WriteInput): Promise<{ location: string; bytes: number }> {
  const { p, deps, dumped, mediaPlan, mediaSource, configMembers } = input;
  const spooled: SpooledFile[] = [
    ...(mediaPlan ? [mediaPlan.index] : []),
    ...(dumped.globals ? [dumped.globals] : []),
    ...dumped.databases.map((d) => d.file),
    ...configMembers,
  ];
  const manifest = manifestInput({ ...input, databases: dumped.databases, globals: dumped.globals !== undefined });
  const total = spooled.reduce((n, f) => n + f.size, 0) + (mediaPlan?.summary.storedBytes ?? 0);
  const members = spooled.length + (mediaPlan?.toStore.size ?? 0) + 2;
  const progress = writeProgress(deps, `write ${p.name}`, total);
  deps.reporter.info(`Writing ${p.name} to ${p.sink.location}…`);
  const result = await writeArchive(
    p.sink,
    {
      name: p.name,
      encryption: p.encryption,
      signal: deps.signal,
      sizeHint: total + members * 1536 + 4096,
      mtime: input.createdAt,
    },
    async (writer) => {
      await writer.writeManifest(manifest, spooled);
      await writeSpooled(writer, spooled, progress);
      if (mediaPlan && mediaSource) await writeMedia(writer, deps, mediaPlan, mediaSource, progress, deps.signal);
    },
  ).catch((error: unknown) => {
    throw asStoreError(error, p.sink.location, p.name);
  });
  progress.end();
  return { location: result.location, bytes: result.bytes };
}

export interface EarlyWriteInput extends Omit<WriteInput, 'dumped'> {
  sink: PatchableSink;
  /** The databases as counted in the dumps' snapshots (known long before the largest dump ends). */
  counted: CountedDatabase[];
  /** The dump phase: the archive takes the dumps when it ends. */
  dumped: Promise<DumpPhaseResult>;
  /** Stops the write when another stage failed (the dumps), not only on SIGINT/SIGTERM. */
  signal: AbortSignal;
}

/**
 * Writes the archive while the dumps still run, for a destination that can patch what it stored (a local
 * directory, unencrypted): the manifest slot is reserved first, then the configuration, the media index and the
 * media streamed from the pod — at the same time as the dumps stream into the spool — then the dumps, the trailer,
 * and the manifest into its slot. The media copy no longer waits for the last dump. The manifest's warnings are
 * `input.warnings` (read when the dumps are done) and the dump phase's.
 */
export async function writeBackupArchiveEarly(input: EarlyWriteInput): Promise<{ location: string; bytes: number }> {
  const { p, deps, mediaPlan, mediaSource, configMembers, counted } = input;
  const dumpMembers = [...(p.globals ? [MEMBERS.postgresGlobals] : []), ...counted.map((d) => d.member)];
  const first = [...configMembers, ...(mediaPlan ? [mediaPlan.index] : [])];
  const draft = manifestInput({ ...input, databases: counted, globals: p.globals });
  const slotBytes = manifestSlotBytes(draft, [...first.map((f) => f.name), ...dumpMembers]);
  const estimate = p.databases.reduce((n, d) => n + d.sizeBytes, 0) / 2;
  const progress = writeProgress(
    deps,
    `write ${p.name}`,
    first.reduce((n, f) => n + f.size, 0) + (mediaPlan?.summary.storedBytes ?? 0) + estimate,
  );
  deps.reporter.info(`Writing ${p.name} to ${p.sink.location} (media while the databases are dumped)…`);
  const result = await writeArchiveLateManifest(
    input.sink,
    { name: p.name, signal: input.signal, mtime: input.createdAt, slotBytes },
    async (writer) => {
      await writeSpooled(writer, first, progress);
      if (mediaPlan && mediaSource) {
        await writeMedia(writer, deps, mediaPlan, mediaSource, progress, input.signal);
      }
      // A destination that fails meanwhile (disk full) fails the writer: stop waiting, so the dumps are stopped too.
      const dumped = await Promise.race([input.dumped, writer.failed]);
      const dumps = [...(dumped.globals ? [dumped.globals] : []), ...dumped.databases.map((d) => d.file)];
      progress.grow(dumps.reduce((n, f) => n + f.size, 0) - estimate);
      await writeSpooled(writer, dumps, progress);
      return manifestInput({
        ...input,
        databases: dumped.databases,
        globals: dumped.globals !== undefined,
        warnings: [...input.warnings, ...dumped.warnings],
      });
    },
  ).catch((error: unknown) => {
    throw asStoreError(error, p.sink.location, p.name);
  });
  progress.end();
  return { location: result.location, bytes: result.bytes };
}
