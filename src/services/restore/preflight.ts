/**
 * Everything a restore checks before it changes anything: the archive (a full verification pass, parents
 * included), the target namespace and deployment, the server name, the release, the Postgres tools and free space,
 * the media volume, and the Synapse schema. Produces the plan that is shown before confirmation.
 */

import { randomBytes } from 'node:crypto';
import { open, stat, unlink } from 'node:fs/promises';
import { resolve as resolvePath } from 'node:path';
import type { BackupManifest, ManifestDatabase } from '../../lib/archive/manifest.js';
import type { Spool } from '../../lib/archive/spool.js';
import type { ArchiveKeys } from '../../lib/archive/transfer.js';
import { readIdentityFile, readPassphraseFile } from '../../lib/crypto/keys.js';
import { type ComponentId, DATABASE_WRITERS, MATRIX_STACK_CHART_REF } from '../../lib/deployment/components.js';
import { discoverDeployment } from '../../lib/deployment/discover.js';
import type { Deployment, WorkloadInfo } from '../../lib/deployment/model.js';
import { isEssError, PreconditionError } from '../../lib/errors.js';
import type { KubeClient } from '../../lib/kube/client.js';
import type { Workload } from '../../lib/kube/types.js';
import { isMigrateBundle } from '../../lib/migrate/bundle.js';
import { diskSpace } from '../../lib/migrate/pod-ops.js';
import { formatBytes, type Reporter } from '../../lib/output/log.js';
import type { PodPostgres } from '../../lib/postgres/in-pod.js';
import { shellJoin, toolMajorVersion } from '../../lib/postgres/pod-tools.js';
import type { DestinationOptions } from '../../lib/storage/destination.js';
import { compareVersions, synapseSchemaFacts } from '../../lib/synapse/schema-versions.js';
import type { ArchiveLocation } from '../backup/verify-source.js';
import {
  type MediaSource,
  planMediaSources,
  readSpooledIndex,
  type VerifiedArchive,
  verifyArchive,
  verifyParents,
} from './archive.js';
import { databaseOwner, databaseSizes, existingRoles, globalsScript, type RestoreMethod } from './database.js';
import { mediaImage } from './media-pod.js';

/** What `--only` can select. `secrets` covers the Secrets, the markers ConfigMap and the Helm values file. */
export type RestorePart = 'secrets' | 'db' | 'media';
/** Every part, in the order a restore applies them. */
export const RESTORE_PARTS: readonly RestorePart[] = ['secrets', 'db', 'media'];

/** A restored database is at most this much larger than pg_database_size at backup time (headroom). */
const SPACE_MARGIN = 1.1;
const DEFAULT_PG_MOUNT = '/var/lib/postgres/data';

/** Options of a restore (they mirror the flags of `ess restore`). */
export interface RestoreOptions {
  /** A file path, a name in the destination, or s3://bucket/prefix/NAME. */
  archive: string;
  /** Where bare names are looked up (-o DIR / --s3 …); parents of incremental backups are looked up there too. */
  destination: DestinationOptions;
  identityFiles: string[];
  passphraseFile?: string;
  namespace: string;
  release: string;
  /** Parts to restore; undefined = every part the archive holds. */
  only?: RestorePart[];
  createNamespace: boolean;
  allowDifferentServerName: boolean;
  /** Where the restored Helm values go (default ./<release>-values.restored.yaml). */
  valuesOut?: string;
  /** pg_restore --jobs when the dump is staged on the Postgres volume. */
  jobs: number;
  /** Parent directory of the local spool (the media index); default the OS temp directory. */
  spoolDir?: string;
  dryRun: boolean;
  yes: boolean;
  forceUnlock: boolean;
  /** How long to wait for workloads to stop / become ready. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** One database to restore: where it comes from and where it goes. */
export interface DatabasePlan {
  manifest: ManifestDatabase;
  /** Member holding the dump, and its size. */
  member: string;
  dumpBytes: number;
  /** Database name in the target (the archive's, or the target's name for the same component). */
  target: string;
  owner: string;
  /** Owner of the restored objects when the roles dump is missing (pg_restore --no-owner --role). */
  forceOwner?: string;
}

/** Preflight facts about the Postgres side. */
export interface PostgresPlan {
  pg: PodPostgres;
  /** Mount path of the data volume in the Postgres container (dumps are staged below it). */
  mount: string;
  method: RestoreMethod;
  jobs: number;
  databases: DatabasePlan[];
  /** Roles the roles dump creates (dropped first where possible). */
  roles: string[];
  availableBytes: number;
  reclaimableBytes: number;
  neededBytes: number;
}

/** Preflight facts about the media side. */
export interface MediaPlan {
  via: 'media-pod' | 'helper-pod';
  claimName: string;
  /** The running pod that mounts the volume (media-pod), or the image of the helper. */
  pod?: string;
  container?: string;
  image?: string;
  storePath: string;
  sources: MediaSource[];
  files: number;
  bytes: number;
}

/** Where the restore goes. */
export interface TargetInfo {
  namespace: string;
  release: string;
  namespaceExists: boolean;
  deployment?: Deployment;
}

/** Everything the apply phase needs, decided by {@link prepareRestore}. */
export interface PreparedRestore {
  location: ArchiveLocation;
  keys: ArchiveKeys;
  archive: VerifiedArchive;
  target: TargetInfo;
  parts: RestorePart[];
  /** Parts that wait for a deployment (restore into a namespace without ESS yet). */
  pending: RestorePart[];
  postgres?: PostgresPlan;
  media?: MediaPlan;
  writers: WorkloadInfo[];
  valuesPath?: string;
  helmCommand?: string;
  plan: string[];
  warnings: string[];
  needsAttention: boolean;
  verifyMs: number;
}

/** Reads the decryption keys named by --identity / --passphrase-file. */
export async function loadKeys(
  options: Pick<RestoreOptions, 'identityFiles' | 'passphraseFile'>,
  reporter: Reporter,
): Promise<ArchiveKeys> {
  const identities: string[] = [];
  for (const file of options.identityFiles) identities.push(...(await readIdentityFile(file)));
  const passphrases: string[] = [];
  if (options.passphraseFile) {
    const read = await readPassphraseFile(options.passphraseFile);
    if (read.looselyProtected) reporter.warn(`${options.passphraseFile} is readable by other users (chmod 600 it).`);
    passphrases.push(read.passphrase);
  }
  return { identities, passphrases };
}

/** Finds the target: does the namespace exist, is there an ESS deployment of the release in it? */
export async function inspectTarget(kube: KubeClient, namespace: string, release: string): Promise<TargetInfo> {
  try {
    const deployment = await discoverDeployment(kube, { namespace, release });
    if (deployment.flavour === 'operator') {
      throw new PreconditionError(
        'ess restore supports ESS deployed with the matrix-stack Helm chart, not the operator.',
        {
          code: 'OPERATOR_UNSUPPORTED',
          next: ['Restore operator-based ESS with its own documented procedure'],
        },
      );
    }
    return { namespace, release, namespaceExists: true, deployment };
  } catch (error) {
    if (isEssError(error) && error.code === 'NAMESPACE_NOT_FOUND')
      return { namespace, release, namespaceExists: false };
    if (isEssError(error) && error.code === 'DEPLOYMENT_NOT_FOUND')
      return { namespace, release, namespaceExists: true };
    throw error;
  }
}

/** The parts to restore: `--only` as given (each must be in the archive), or every part the archive holds. */
export function selectParts(archive: VerifiedArchive, only: RestorePart[] | undefined): RestorePart[] {
  const available: Record<RestorePart, boolean> = {
    secrets: archive.objects.length > 0 || archive.values !== undefined,
    db: (archive.manifest.postgres?.databases.length ?? 0) > 0,
    media: archive.manifest.media !== undefined,
  };
  if (!only) return RESTORE_PARTS.filter((p) => available[p]);
  const missing = only.filter((p) => !available[p]);
  if (missing.length > 0) {
    throw new PreconditionError(`The backup holds no ${missing.join(', ')} to restore.`, {
      code: 'PART_NOT_IN_BACKUP',
      next: [`Restore what it holds: --only ${RESTORE_PARTS.filter((p) => available[p]).join(',') || '(nothing)'}`],
    });
  }
  return RESTORE_PARTS.filter((p) => only.includes(p));
}

/** Fails fast on a manifest that does not fit the target (before the rest of the archive is read). */
export function checkManifestAgainstTarget(
  manifest: BackupManifest,
  target: TargetInfo,
  options: Pick<RestoreOptions, 'allowDifferentServerName' | 'release'>,
  warnings: string[],
): void {
  if (manifest.deployment.release !== options.release) {
    throw new PreconditionError(
      `The backup is of Helm release "${manifest.deployment.release}"; the target release is "${options.release}". Object names (Secrets, databases' config) depend on the release name.`,
      {
        code: 'RELEASE_MISMATCH',
        next: [`Restore into release ${manifest.deployment.release}: --release ${manifest.deployment.release}`],
      },
    );
  }
  const ours = target.deployment?.serverName;
  const theirs = manifest.deployment.serverName;
  if (ours && ours !== theirs) {
    if (!options.allowDifferentServerName) {
      throw new PreconditionError(
        `The backup is of server ${theirs}; the deployment in ${target.namespace} serves ${ours}. Nothing was changed.`,
        {
          code: 'SERVER_NAME_MISMATCH',
          next: [
            'Check --namespace/--release/--context: is this the right deployment?',
            'To restore anyway (a copy for testing; Synapse will not accept users of another server name): --allow-different-server-name',
          ],
        },
      );
    }
    warnings.push(`Restoring a backup of ${theirs} into ${ours} (--allow-different-server-name).`);
  }
}

async function postgresMount(kube: KubeClient, deployment: Deployment): Promise<string> {
  const info = deployment.postgres;
  if (info?.mode !== 'bundled') return DEFAULT_PG_MOUNT;
  const sts = await kube.get<Workload>('StatefulSet', deployment.namespace, info.statefulSet);
  const spec = sts?.spec.template.spec;
  const volume = spec?.volumes?.find(
    (v) => v.persistentVolumeClaim && (!info.dataClaim || v.persistentVolumeClaim.claimName === info.dataClaim),
  );
  const mount = spec?.containers
    .find((c) => c.name === info.container)
    ?.volumeMounts?.find((m) => m.name === volume?.name && !m.subPath);
  return mount?.mountPath ?? DEFAULT_PG_MOUNT;
}

function majorOf(version: string | undefined): number | undefined {
  const match = /^(\d+)/.exec(version ?? '');
  return match ? Number(match[1]) : undefined;
}

function isReady(deployment: Deployment, name: string): boolean {
  const w = deployment.workloads.find((x) => x.name === name);
  return Boolean(w && w.replicas > 0 && w.readyReplicas >= w.replicas);
}

async function preparePostgres(
  kube: KubeClient,
  deployment: Deployment,
  archive: VerifiedArchive,
  jobs: number,
): Promise<PostgresPlan> {
  const info = deployment.postgres;
  if (info?.mode !== 'bundled') {
    throw new PreconditionError(
      'This ESS uses an external PostgreSQL; ess restores databases into the bundled Postgres only. Nothing was changed.',
      {
        code: 'EXTERNAL_DATABASE',
        next: [
          'Restore the dumps yourself: extract postgres/*.dump from the archive (see docs/backup-format.md) and pg_restore them',
          'Restore the rest with --only secrets,media',
        ],
      },
    );
  }
  if (!isReady(deployment, info.statefulSet)) {
    throw new PreconditionError(`Postgres (${info.statefulSet}) is not running; the restore needs it.`, {
      code: 'POSTGRES_NOT_RUNNING',
      next: [`Start it: ess start postgres -n ${deployment.namespace}`],
    });
  }
  const pg: PodPostgres = {
    namespace: deployment.namespace,
    pod: info.pod,
    container: info.container,
    superuser: info.superuser,
  };
  const manifest = archive.manifest;
  const toolMajor = await toolMajorVersion(kube, pg, 'pg_restore');
  const dumpMajor = majorOf(manifest.postgres?.serverVersion);
  if (dumpMajor !== undefined && dumpMajor > toolMajor) {
    throw new PreconditionError(
      `The dumps come from PostgreSQL ${manifest.postgres?.serverVersion}; the target's pg_restore is version ${toolMajor} and cannot read them. Nothing was changed.`,
      {
        code: 'POSTGRES_TOO_OLD',
        next: [`Upgrade the target's Postgres to ${dumpMajor} or later (chart value postgres.image), then retry`],
      },
    );
  }
  const memberSizes = new Map(manifest.members.map((m) => [m.name, m.size]));
  const roles = archive.globals ? globalsScript(archive.globals, pg.superuser).roles : [];
  const databases: DatabasePlan[] = [];
  for (const db of manifest.postgres?.databases ?? []) {
    const same = info.databases.find((d) => d.component === db.component && db.component !== 'other');
    const target = same?.name ?? db.name;
    const owner = same?.owner ?? (await databaseOwner(kube, pg, target)) ?? pg.superuser;
    databases.push({ manifest: db, member: db.member, dumpBytes: memberSizes.get(db.member) ?? 0, target, owner });
  }
  const owners = [...new Set(databases.map((d) => d.owner))];
  const present = await existingRoles(kube, pg, owners);
  const missing = owners.filter((o) => !present.has(o) && !roles.includes(o));
  if (missing.length > 0) {
    throw new PreconditionError(
      `The database owner role(s) ${missing.join(', ')} exist neither in the target nor in the backup's roles dump. Nothing was changed.`,
      { code: 'ROLES_MISSING', next: ['Install the chart first (its Postgres creates the roles), then retry'] },
    );
  }
  // Without the roles dump the dump's owners may not exist here: make everything the target owner's.
  if (!archive.globals) for (const d of databases) d.forceOwner = d.owner;
  const mount = await postgresMount(kube, deployment);
  const disk = await diskSpace(kube, { namespace: pg.namespace, pod: pg.pod, container: pg.container }, mount);
  const current = await databaseSizes(
    kube,
    pg,
    databases.map((d) => d.target),
  );
  const reclaimable = [...current.values()].reduce((a, b) => a + b, 0);
  const restored = Math.ceil(databases.reduce((n, d) => n + d.manifest.sizeBytes, 0) * SPACE_MARGIN);
  const staged = databases.reduce((n, d) => n + d.dumpBytes, 0);
  const usable = disk.availableBytes + reclaimable;
  let method: RestoreMethod = 'staged';
  if (usable < restored + staged) method = 'stream';
  const needed = method === 'staged' ? restored + staged : restored;
  if (usable < needed) {
    throw new PreconditionError(
      `Not enough space on the Postgres volume: ${formatBytes(usable)} usable (${formatBytes(disk.availableBytes)} free + ${formatBytes(reclaimable)} of the databases it replaces), about ${formatBytes(needed)} needed. Nothing was changed.`,
      { code: 'NO_SPACE', next: ['Grow the Postgres PVC (values: postgres.storage.size) and retry'] },
    );
  }
  return {
    pg,
    mount,
    method,
    jobs: method === 'staged' ? Math.max(1, jobs) : 1,
    databases,
    roles,
    availableBytes: disk.availableBytes,
    reclaimableBytes: reclaimable,
    neededBytes: needed,
  };
}

async function prepareMedia(
  kube: KubeClient,
  deployment: Deployment,
  sources: MediaSource[],
  stopsSynapse: boolean,
  warnings: string[],
): Promise<MediaPlan> {
  const media = deployment.media;
  if (!media) {
    throw new PreconditionError(
      'This ESS has no Synapse media volume to restore the media into. Nothing was changed.',
      {
        code: 'NO_MEDIA_VOLUME',
        next: ['Restore without media: --only secrets,db'],
      },
    );
  }
  const files = sources.reduce((n, s) => n + s.files, 0);
  const bytes = sources.reduce((n, s) => n + s.bytes, 0);
  const running = isReady(deployment, media.statefulSet);
  if (running) {
    const disk = await diskSpace(
      kube,
      { namespace: deployment.namespace, pod: media.pod, container: media.container },
      media.mountPath,
    );
    if (disk.availableBytes < bytes) {
      warnings.push(
        `The media volume has ${formatBytes(disk.availableBytes)} free; the backup's media is ${formatBytes(bytes)} (files already there are overwritten, so it may still fit).`,
      );
    }
  }
  const base = { claimName: media.claimName, storePath: media.storePath, sources, files, bytes };
  if (running && !stopsSynapse) return { ...base, via: 'media-pod', pod: media.pod, container: media.container };
  const image = await mediaImage(kube, deployment.namespace, media);
  if (!image) {
    throw new PreconditionError(`Cannot find the image of ${media.statefulSet} for the media helper pod.`, {
      code: 'NO_MEDIA_IMAGE',
      next: [`kubectl get sts -n ${deployment.namespace} ${media.statefulSet} -o yaml`],
    });
  }
  return { ...base, via: 'helper-pod', image };
}

/** Compares the target Synapse with the dump's schema: a warning when it is older, a note when it cannot tell. */
export function schemaCheck(
  manifest: BackupManifest,
  synapseVersion: string | undefined,
): { warning?: string; note?: string } {
  const dump = manifest.synapse?.schemaVersion;
  if (dump === undefined) return {};
  const facts = synapseVersion ? synapseSchemaFacts(synapseVersion) : undefined;
  if (!facts || (!facts.exact && facts.schemaVersion < dump)) {
    return {
      note: `Cannot tell whether Synapse ${synapseVersion ?? '(unknown version)'} supports the dump's database schema ${dump}; make sure it is at least ${manifest.synapse?.version ?? 'the version that made the backup'}.`,
    };
  }
  const compat = manifest.synapse?.schemaCompatVersion;
  const upgrade = manifest.synapse?.version ? ` to ${manifest.synapse.version} or later` : '';
  if (compat !== undefined && facts.schemaVersion < compat) {
    return {
      warning: `The target runs Synapse ${facts.version} (schema ${facts.schemaVersion}); the dump's schema ${dump} needs at least schema ${compat}: Synapse will REFUSE TO START until it is upgraded${upgrade}.`,
    };
  }
  if (facts.schemaVersion < dump) {
    return {
      warning: `The target runs Synapse ${facts.version} (schema ${facts.schemaVersion}), older than the dump's schema ${dump}: Synapse refuses to start on a schema newer than it supports; upgrade it${upgrade}.`,
    };
  }
  return {};
}

/** The `helm upgrade --install` command for the restored values. */
export function helmCommand(release: string, namespace: string, valuesPath: string, chartVersion?: string): string {
  return shellJoin([
    'helm',
    'upgrade',
    '--install',
    release,
    MATRIX_STACK_CHART_REF,
    ...(chartVersion ? ['--version', chartVersion] : []),
    '--namespace',
    namespace,
    '--values',
    valuesPath,
  ]);
}

/**
 * An `ess migrate export` bundle is an archive of the same format, with a `migrateExport` block in its manifest and
 * placeholder namespace and release: it is imported, not restored.
 */
export function refuseMigrateBundle(manifest: BackupManifest, options: Pick<RestoreOptions, 'archive' | 'namespace'>) {
  if (!isMigrateBundle(manifest)) return;
  throw new PreconditionError(
    `${options.archive} is an \`ess migrate export\` bundle (of the self-hosted Synapse ${manifest.deployment.serverName}), not an ESS backup: import it with ess migrate import. Nothing was changed.`,
    {
      code: 'ARCHIVE_IS_MIGRATE_BUNDLE',
      next: [
        `ess migrate import ${shellJoin([options.archive])} -n ${options.namespace} --dry-run`,
        'See docs/commands/migrate-import.md',
      ],
    },
  );
}

function writeProblem(error: unknown): string {
  const { code, message } = error as NodeJS.ErrnoException;
  if (code === 'ENOENT') return 'its directory does not exist';
  if (code === 'ENOTDIR') return 'a part of its directory is not a directory';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EROFS') return 'read-only file system';
  return message;
}

/**
 * Checks that the Helm values file can be written where it goes (its directory exists and takes a new file, and the
 * path is not a directory), by creating and removing a probe file next to it. Throws PreconditionError (exit 4).
 */
export async function checkValuesPath(path: string): Promise<void> {
  const refuse = (why: string) =>
    new PreconditionError(`Cannot write the Helm values of the backup to ${path}: ${why}. Nothing was changed.`, {
      code: 'VALUES_OUT_UNWRITABLE',
      next: [
        'Pass a file in an existing, writable directory with --values-out',
        'Or restore without the Secrets and values: --only db,media',
      ],
    });
  const existing = await stat(path).catch(() => undefined);
  if (existing?.isDirectory()) throw refuse('it is a directory');
  const probe = `${path}.${randomBytes(4).toString('hex')}.probe`;
  try {
    await (await open(probe, 'wx', 0o600)).close();
  } catch (error) {
    throw refuse(writeProblem(error));
  }
  await unlink(probe).catch(() => undefined);
}

/**
 * Preflight: verifies the archive (and the parents it needs), inspects the target and decides the plan. Changes
 * nothing; throws PreconditionError (exit 4) for anything that would make the restore fail or do harm.
 */
export async function prepareRestore(
  options: RestoreOptions,
  deps: { kube: KubeClient; reporter: Reporter; location: ArchiveLocation; spool: Spool; cwd?: string },
): Promise<PreparedRestore> {
  const { kube, reporter, location, spool } = deps;
  const warnings: string[] = [];
  // An explicit --values-out is checked before the (long) verification; the default path once it is known.
  if (options.valuesOut && (!options.only || options.only.includes('secrets'))) {
    await checkValuesPath(resolvePath(deps.cwd ?? process.cwd(), options.valuesOut));
  }
  const keys = await loadKeys(options, reporter);
  const target = await inspectTarget(kube, options.namespace, options.release);
  if (!target.namespaceExists && !options.createNamespace) {
    throw new PreconditionError(`Namespace "${options.namespace}" does not exist in context "${kube.contextName}".`, {
      code: 'NAMESPACE_NOT_FOUND',
      next: ['Create it with the restore: --create-namespace', 'Or pick another one with -n/--namespace or --context'],
    });
  }
  reporter.info(`Verifying ${location.display} (every member, before anything changes)…`);
  const t0 = Date.now();
  const archive = await verifyArchive(location.store, location.name, {
    keys,
    signal: options.signal,
    reporter,
    spool,
    onManifest: (m) => {
      refuseMigrateBundle(m, options);
      checkManifestAgainstTarget(m, target, options, warnings);
    },
  });
  const manifest = archive.manifest;
  const parts = selectParts(archive, options.only);
  const deployment = target.deployment;
  const pending = deployment ? [] : parts.filter((p) => p !== 'secrets');

  let sources: MediaSource[] = [];
  if (parts.includes('media') && archive.mediaIndexPath) {
    sources = (await planMediaSources(readSpooledIndex(archive.mediaIndexPath), location.name)).filter(
      (s) => s.files > 0,
    );
    await verifyParents(
      location.store,
      sources.filter((s) => !s.own),
      { keys, signal: options.signal, reporter, serverName: manifest.deployment.serverName },
    );
  }
  const verifyMs = Date.now() - t0;
  reporter.info(`Verified ${location.name}: ${archive.memberCount} members, ${formatBytes(archive.contentBytes)}.`);

  let postgres: PostgresPlan | undefined;
  let media: MediaPlan | undefined;
  const writers = (deployment?.workloads ?? []).filter((w) => DATABASE_WRITERS.includes(w.component as ComponentId));
  if (deployment && parts.includes('db')) {
    postgres = await preparePostgres(kube, deployment, archive, options.jobs);
    const schema = schemaCheck(manifest, deployment.synapseVersion);
    if (schema.warning) warnings.push(schema.warning);
    if (schema.note) reporter.info(schema.note);
    if (postgres.method === 'stream') {
      warnings.push(
        'The Postgres volume has no room for staged copies of the dumps: restoring from a stream, one job.',
      );
    }
  }
  if (deployment && parts.includes('media') && sources.length > 0) {
    media = await prepareMedia(kube, deployment, sources, parts.includes('db'), warnings);
  }
  if (manifest.warnings?.length) {
    reporter.info(`The backup recorded warnings: ${manifest.warnings.join('; ')}`);
  }

  const chartVersion = archive.helmRelease?.version ?? manifest.deployment.chartVersion;
  const valuesPath =
    parts.includes('secrets') && archive.values
      ? resolvePath(deps.cwd ?? process.cwd(), options.valuesOut ?? `${options.release}-values.restored.yaml`)
      : undefined;
  if (valuesPath) await checkValuesPath(valuesPath);
  const helm = valuesPath ? helmCommand(options.release, options.namespace, valuesPath, chartVersion) : undefined;
  if (parts.includes('secrets') && !archive.values) {
    warnings.push('The backup holds no Helm values: keep using your own values files.');
  }
  if (deployment?.chartVersion && chartVersion && compareVersions(deployment.chartVersion, chartVersion) !== 0) {
    reporter.info(`The target runs chart ${deployment.chartVersion}; the backup was made with ${chartVersion}.`);
  }

  const plan = buildPlan({ options, archive, target, parts, pending, postgres, media, writers, valuesPath });
  return {
    location,
    keys,
    archive,
    target,
    parts,
    pending,
    postgres,
    media,
    writers,
    valuesPath,
    helmCommand: helm,
    plan,
    warnings,
    needsAttention: warnings.length > 0,
    verifyMs,
  };
}

function buildPlan(p: {
  options: RestoreOptions;
  archive: VerifiedArchive;
  target: TargetInfo;
  parts: RestorePart[];
  pending: RestorePart[];
  postgres?: PostgresPlan;
  media?: MediaPlan;
  writers: WorkloadInfo[];
  valuesPath?: string;
}): string[] {
  const { archive, target, parts, postgres, media } = p;
  const lines: string[] = [];
  if (!target.namespaceExists) lines.push(`Create namespace ${target.namespace}`);
  if (parts.includes('secrets')) {
    const secrets = archive.objects.filter((o) => o.kind === 'Secret').map((o) => o.name);
    const maps = archive.objects.filter((o) => o.kind === 'ConfigMap').map((o) => o.name);
    if (archive.objects.length > 0) {
      lines.push(
        `Create or replace ${secrets.length} Secret(s) ${secrets.join(', ')}${maps.length ? ` and ${maps.length} ConfigMap(s) ${maps.join(', ')}` : ''}, exact bytes and labels`,
      );
    }
    if (p.valuesPath) lines.push(`Write the Helm values to ${p.valuesPath} (mode 0600) for helm upgrade --install`);
  }
  const stops = postgres !== undefined;
  const writerNames = p.writers.map((w) => w.name).join(', ') || 'nothing running';
  if (stops) lines.push(`Scale to 0 (replica counts recorded on the objects): ${writerNames}`);
  if (media?.via === 'helper-pod') {
    lines.push(`Start a helper pod mounting ${media.claimName} (image ${media.image}, running as UID 10091)`);
  }
  if (postgres) {
    const dbs = postgres.databases.map((d) => d.target).join(', ');
    lines.push(
      `ERASE database(s) ${dbs}${postgres.roles.length ? ` and drop role(s) ${postgres.roles.join(', ')}; recreate the roles from the backup` : ''}`,
    );
    for (const d of postgres.databases) {
      const how =
        postgres.method === 'staged'
          ? `pg_restore --jobs ${postgres.jobs} from a copy staged on the Postgres volume (${postgres.mount})`
          : 'pg_restore from a stream (one job)';
      lines.push(
        `Restore ${d.target}${d.target !== d.manifest.name ? ` (from ${d.manifest.name})` : ''}, owner ${d.owner}: ${formatBytes(d.dumpBytes)} dump, ${how}`,
      );
    }
    lines.push('Empty e2e_one_time_keys_json; set the role passwords from the chart Secrets');
  }
  if (media) {
    const parents = media.sources.filter((s) => !s.own);
    lines.push(
      `Write ${media.files} media file(s) (${formatBytes(media.bytes)}) into ${media.storePath} on ${media.claimName} via ${media.via === 'media-pod' ? `pod ${media.pod}` : 'the helper pod'}, owned by UID 10091${parents.length ? `, ${parents.reduce((n, s) => n + s.files, 0)} of them from ${parents.map((s) => s.archive).join(', ')}` : ''}`,
    );
  }
  if (stops) lines.push(`Scale ${writerNames} back up and wait for readiness`);
  if (postgres) lines.push('Check the row count of every table against the manifest, and that Synapse is ready');
  for (const part of p.pending) {
    lines.push(
      `PENDING ${part}: no ESS deployment in ${target.namespace} yet (install the chart, then restore ${part})`,
    );
  }
  return lines;
}
