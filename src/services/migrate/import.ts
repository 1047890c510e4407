/**
 * `ess migrate import <synapse.dump | bundle.tar>`: the ESS docs' "Migrating from Self-Hosted to ESS", automated
 * and made safe. Preflight first (nothing is touched), then typed confirmation, then: media, stop Synapse and MAS,
 * drop and recreate the database, pg_restore streamed into the Postgres pod (one-time keys filtered out of the TOC),
 * identity Secret, start again, post-checks. On any failure Synapse and MAS are scaled back and the message says
 * what state the database is in and how to retry.
 */
import { basename } from 'node:path';
import { type ComponentId, DATABASE_WRITERS } from '../../lib/deployment/components.js';
import { discoverDeployment } from '../../lib/deployment/discover.js';
import type { Deployment, WorkloadInfo } from '../../lib/deployment/model.js';
import { type StoppedWorkload, WorkloadScaler } from '../../lib/deployment/scaler.js';
import { EssError, ExitCode, InterruptedError, isEssError, PreconditionError } from '../../lib/errors.js';
import type { KubeClient } from '../../lib/kube/client.js';
import type { Workload } from '../../lib/kube/types.js';
import { acquireLock } from '../../lib/lock.js';
import { collectNow } from '../../lib/memory.js';
import { ONE_TIME_KEYS_TABLE } from '../../lib/migrate/dump-facts.js';
import { diskSpace, removeInPod } from '../../lib/migrate/pod-ops.js';
import { checkSchema, type SchemaVerdict } from '../../lib/migrate/schema-check.js';
import { confirmTyped } from '../../lib/output/confirm.js';
import { formatBytes, type Reporter } from '../../lib/output/log.js';
import type { PostCheck } from '../../lib/output/table.js';
import { type PodPostgres, psqlInPod } from '../../lib/postgres/in-pod.js';
import { type IdentityPlan, planIdentity, writeIdentity } from './identity.js';
import {
  collectIdentity,
  collectMedia,
  type ImportIdentity,
  type ImportSource,
  openImportSource,
} from './import-source.js';
import { checkMas, type MasCheck } from './mas.js';
import { type MediaUploadResult, uploadMedia } from './media-upload.js';
import { type RestoreMethod, restoreDump, supportsParallel } from './restore.js';

/** A restored database is this many times the size of its compressed dump (when the source size is unknown). */
export const RESTORE_EXPANSION = 4;
/** Headroom on top of the space estimates. */
const SPACE_MARGIN = 1.1;
const DEFAULT_PG_MOUNT = '/var/lib/postgres/data';

export interface ImportOptions {
  namespace: string;
  release: string;
  file: string;
  signingKey?: string;
  homeserverConfig?: string;
  updateGeneratedSecret: boolean;
  mediaStore?: string;
  noMedia: boolean;
  includeMediaCaches: boolean;
  /** Parallel streams for the data and pg_restore --jobs for indexes (parallel, staged). */
  jobs: number;
  /** How pg_restore gets the dump (see restore.ts); auto = parallel when the dump has data offsets, else stream. */
  method: 'auto' | RestoreMethod;
  dryRun: boolean;
  yes: boolean;
  /** Timeout for stopping and starting workloads. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface ImportDeps {
  /** The Kubernetes client, created only after the local checks of the file passed. */
  kube: () => Promise<KubeClient>;
  reporter: Reporter;
  confirm?: typeof confirmTyped;
}

export interface ImportResult {
  dryRun: boolean;
  input: { path: string; kind: ImportSource['kind']; bytes: number; dumpBytes: number };
  dump: {
    archiveVersion: string;
    pgDumpVersion?: string;
    serverVersion?: string;
    compression: string;
    tocEntries: number;
    tables: number;
    users: number;
    rooms?: number;
    excludedData: string[];
  };
  serverName: { dump?: string; ess: string };
  schema: { dump: number; dumpCompat?: number; ess?: number; synapseVersion?: string; note: string };
  target: { namespace: string; release: string; pod: string; database: string; owner: string };
  space: {
    availableBytes: number;
    reclaimableBytes: number;
    neededBytes: number;
    method: RestoreMethod;
    jobs: number;
  };
  media?: { source?: string; files: number; bytes: number; pod?: string; when: 'before-stop' | 'after-start' };
  identity?: Omit<IdentityPlan, 'warnings'>;
  mas: MasCheck;
  plan: string[];
  /** Filled after a real run. */
  restore?: { method: RestoreMethod; jobs: number; durationMs: number };
  mediaUpload?: MediaUploadResult;
  stopped?: string[];
  postChecks?: PostCheck[];
  /** Wall time of each phase that ran, in order. */
  phases: { name: string; ms: number }[];
  warnings: string[];
  /** Warnings that need action (exit code 3). */
  needsAttention: boolean;
  durationMs: number;
}

interface Prepared {
  result: ImportResult;
  source: ImportSource;
  deployment: Deployment;
  pg: PodPostgres;
  pgMount: string;
  identity: ImportIdentity;
  identityPlan?: IdentityPlan;
  media: Awaited<ReturnType<typeof collectMedia>>;
  writers: WorkloadInfo[];
}

function workloadReady(deployment: Deployment, name: string | undefined): boolean {
  const w = deployment.workloads.find((x) => x.name === name);
  return Boolean(w && w.replicas > 0 && w.readyReplicas > 0);
}

async function liveSchema(kube: KubeClient, pg: PodPostgres, database: string) {
  const rows = await psqlInPod(
    kube,
    pg,
    `SELECT datname FROM pg_database WHERE datname = '${database.replace(/'/g, "''")}'`,
  );
  if (rows.length === 0) return { exists: false, bytes: 0 };
  const [[bytes] = ['0']] = await psqlInPod(kube, pg, `SELECT pg_database_size(current_database())`, database);
  const [[hasTable] = ['f']] = await psqlInPod(
    kube,
    pg,
    `SELECT to_regclass('public.schema_version') IS NOT NULL`,
    database,
  );
  if (hasTable !== 't') return { exists: true, bytes: Number(bytes) };
  const [[version] = []] = await psqlInPod(kube, pg, 'SELECT version FROM schema_version LIMIT 1', database);
  if (version === undefined) return { exists: true, bytes: Number(bytes) };
  const deltas = await psqlInPod(
    kube,
    pg,
    `SELECT version || '/' || file FROM applied_schema_deltas WHERE version >= ${Number(version)}`,
    database,
  );
  return { exists: true, bytes: Number(bytes), version: Number(version), deltas: deltas.map((r) => r[0] as string) };
}

async function postgresMount(kube: KubeClient, deployment: Deployment, container: string): Promise<string> {
  const pgInfo = deployment.postgres;
  if (pgInfo?.mode !== 'bundled') return DEFAULT_PG_MOUNT;
  const sts = await kube.get<Workload>('StatefulSet', deployment.namespace, pgInfo.statefulSet);
  const spec = sts?.spec.template.spec;
  const volume = spec?.volumes?.find(
    (v) => v.persistentVolumeClaim && (!pgInfo.dataClaim || v.persistentVolumeClaim.claimName === pgInfo.dataClaim),
  );
  const mount = spec?.containers.find((c) => c.name === container)?.volumeMounts?.find((m) => m.name === volume?.name);
  return mount?.mountPath ?? DEFAULT_PG_MOUNT;
}

/** Preflight: every check, the plan; changes nothing. */
async function prepare(options: ImportOptions, kube: KubeClient, source: ImportSource): Promise<Prepared> {
  const warnings: string[] = [];
  let needsAttention = false;
  const facts = source.facts;
  const schema = facts.schema as NonNullable<typeof facts.schema>;
  const users = facts.users as NonNullable<typeof facts.users>;

  const deployment = await discoverDeployment(kube, { namespace: options.namespace, release: options.release });
  if (deployment.flavour === 'operator') {
    throw new PreconditionError(
      'ess migrate import supports ESS deployed with the matrix-stack Helm chart, not the operator-based ESS.',
      {
        code: 'OPERATOR_UNSUPPORTED',
        next: ['Follow the ESS documentation "Migrating from Self-Hosted to ESS" for operator-based ESS'],
      },
    );
  }
  if (!deployment.serverName) {
    throw new PreconditionError('Cannot read the server name of this ESS deployment.', {
      code: 'SERVER_NAME_UNKNOWN',
      next: [`Check the ConfigMap ${options.release}-synapse: kubectl get cm -n ${options.namespace}`],
    });
  }
  const pgInfo = deployment.postgres;
  const synapseDb = pgInfo?.databases.find((d) => d.component === 'synapse');
  if (pgInfo?.mode !== 'bundled' || !synapseDb) {
    throw new PreconditionError(
      'This ESS uses an external PostgreSQL for Synapse; ess imports into the bundled Postgres only.',
      {
        code: 'EXTERNAL_DATABASE',
        next: [
          'Restore into the external database yourself: pg_restore --no-owner --role=OWNER -d DB synapse.dump, then TRUNCATE e2e_one_time_keys_json',
        ],
      },
    );
  }
  const pg: PodPostgres = {
    namespace: deployment.namespace,
    pod: pgInfo.pod,
    container: pgInfo.container,
    superuser: pgInfo.superuser,
  };
  if (!workloadReady(deployment, pgInfo.statefulSet)) {
    throw new PreconditionError(`Postgres (${pgInfo.statefulSet}) is not running; the import needs it.`, {
      code: 'POSTGRES_NOT_RUNNING',
      next: [`Start it: ess start postgres -n ${options.namespace}`],
    });
  }
  const database = synapseDb.name;
  const owner = synapseDb.owner ?? 'synapse_user';

  // Server name: Synapse refuses to start on users of another server.
  const dumpDomains = users.domains.map((d) => d.domain);
  const foreign = dumpDomains.filter((d) => d !== deployment.serverName);
  if (foreign.length > 0) {
    throw new PreconditionError(
      `The dump belongs to server "${foreign[0]}"${dumpDomains.length > 1 ? ` (users of ${dumpDomains.join(', ')})` : ''}, but this ESS is "${deployment.serverName}". Synapse refuses to start on a database of another server name. Nothing was changed.`,
      {
        code: 'SERVER_NAME_MISMATCH',
        next: [
          `Install ESS with serverName: ${foreign[0]} (it cannot be changed after the first install), then import`,
          'Or check that you picked the right dump and the right --namespace/--release',
        ],
      },
    );
  }
  if (dumpDomains.length === 0) warnings.push('The dump has no users, so its server name cannot be checked.');

  // Schema.
  const roleRows = await psqlInPod(kube, pg, `SELECT 1 FROM pg_roles WHERE rolname = '${owner.replace(/'/g, "''")}'`);
  if (roleRows.length === 0) {
    throw new PreconditionError(`The role ${owner} does not exist in ${pg.pod}.`, {
      code: 'ROLE_MISSING',
      next: [
        `Restart Postgres so that its configure-dbs script creates it: kubectl delete pod -n ${options.namespace} ${pg.pod}`,
      ],
    });
  }
  const live = await liveSchema(kube, pg, database);
  const verdict: SchemaVerdict = checkSchema(schema, {
    synapseVersion: deployment.synapseVersion,
    liveVersion: live.version,
    liveDeltas: live.deltas,
  });
  if (!verdict.ok) {
    throw new PreconditionError(`${verdict.reason} Nothing was changed.`, { code: verdict.code, next: verdict.next });
  }

  // Space on the Postgres PVC: the old database is dropped first; the staged dump and the restored one must fit.
  const pgMount = await postgresMount(kube, deployment, pg.container);
  const disk = await diskSpace(kube, { namespace: pg.namespace, pod: pg.pod, container: pg.container }, pgMount);
  const fromBundle = source.bundle?.manifest.postgres?.databases[0]?.sizeBytes;
  const restored = Math.ceil(
    (fromBundle && fromBundle > 0 ? fromBundle : source.dump.length * RESTORE_EXPANSION) * SPACE_MARGIN,
  );
  const usable = disk.availableBytes + live.bytes;
  const parallelOk = supportsParallel(source.toc, source.dump);
  let method: RestoreMethod;
  if (options.method === 'auto') method = parallelOk ? 'parallel' : 'stream';
  else if (options.method === 'parallel' && !parallelOk) {
    throw new PreconditionError(
      'The dump has no data offsets (pg_dump wrote it to a pipe), so it cannot be split into parallel streams.',
      { code: 'DUMP_NOT_SEEKABLE', next: ['Use --method stream (one job) or --method staged'] },
    );
  } else method = options.method;
  const needed = restored + (method === 'staged' ? source.dump.length : source.toc.dataStart);
  if (usable < needed) {
    throw new PreconditionError(
      `Not enough space on the Postgres volume: ${formatBytes(usable)} usable (${formatBytes(disk.availableBytes)} free + ${formatBytes(live.bytes)} of the current database), about ${formatBytes(needed)} needed${method === 'staged' ? ' for a staged copy of the dump and' : ' for'} the restored database. Nothing was changed.`,
      {
        code: 'NO_SPACE',
        next: [
          ...(method === 'staged'
            ? ['Use --method parallel or stream: they need no copy of the dump on the volume']
            : []),
          'Grow the Postgres PVC (values: postgres.storage.size) and retry',
        ],
      },
    );
  }
  if (method === 'stream' && options.method === 'auto') {
    warnings.push('The dump was written to a pipe (no data offsets): it is restored as one stream, with one job.');
  }
  const jobs = method === 'stream' ? 1 : Math.max(1, options.jobs);

  // Identity.
  const collected = await collectIdentity(
    { signingKey: options.signingKey, homeserverConfig: options.homeserverConfig },
    source.bundle,
  );
  warnings.push(...collected.warnings);
  if (collected.warnings.length) needsAttention = true;
  const identityPlan = await planIdentity(
    kube,
    { namespace: options.namespace, release: options.release, updateGeneratedSecret: options.updateGeneratedSecret },
    collected.identity,
  );
  if (identityPlan) warnings.push(...identityPlan.warnings);
  if (!collected.identity.signingKey) {
    warnings.push(
      'No signing key given (--signing-key, --homeserver-config or a bundle): ESS keeps its own key, so remote servers will see a new key for this server name.',
    );
    needsAttention = true;
  }
  if (collected.identity.pepper) {
    needsAttention = true;
    warnings.push(
      'The old server set password_config.pepper: ESS does not support a pepper, so every password must be reset after the import.',
    );
  }

  // Media.
  const media = await collectMedia(
    { mediaStore: options.mediaStore, noMedia: options.noMedia, includeCaches: options.includeMediaCaches },
    source.bundle,
  );
  let mediaWhen: 'before-stop' | 'after-start' = 'before-stop';
  if (media.listing && media.listing.files.length > 0) {
    if (!deployment.media) {
      throw new PreconditionError('This ESS has no Synapse media volume to upload the media to.', {
        code: 'NO_MEDIA_VOLUME',
        next: ['Import without media (--no-media) and copy the media store by hand'],
      });
    }
    if (workloadReady(deployment, deployment.media.statefulSet)) {
      const mediaDisk = await diskSpace(
        kube,
        { namespace: deployment.namespace, pod: deployment.media.pod, container: deployment.media.container },
        deployment.media.mountPath,
      );
      if (mediaDisk.availableBytes < media.listing.bytes) {
        throw new PreconditionError(
          `The media volume ${deployment.media.claimName} has ${formatBytes(mediaDisk.availableBytes)} free; the media store is ${formatBytes(media.listing.bytes)}. Nothing was changed.`,
          {
            code: 'NO_SPACE',
            next: ['Grow the media PVC (synapse.media.storage.size) and retry', 'Or import without media: --no-media'],
          },
        );
      }
    } else {
      mediaWhen = 'after-start';
    }
    if (media.listing.invalid.length) {
      needsAttention = true;
      warnings.push(
        `${media.listing.invalid.length} media file(s) have names Synapse never writes and are skipped, e.g. ${media.listing.invalid[0]}`,
      );
    }
  } else if (!options.noMedia) {
    warnings.push('No media given (--media-store or a bundle with media): only the database is imported.');
  }

  const mas = await checkMas(kube, deployment, collected.identity, facts);
  if (mas.needsAttention) needsAttention = true;

  const writers = deployment.workloads.filter((w) => DATABASE_WRITERS.includes(w.component as ComponentId));
  const otk = facts.oneTimeKeyData ? [ONE_TIME_KEYS_TABLE] : [];
  const mediaLine =
    media.listing && media.listing.files.length > 0 && deployment.media
      ? `Upload ${media.listing.files.length} media file(s) (${formatBytes(media.listing.bytes)}) to ${deployment.media.pod}:${deployment.media.storePath}, skipping files already there${mediaWhen === 'after-start' ? ' (after Synapse is up again: its pod mounts the volume)' : ''}`
      : undefined;
  const plan = [
    ...(mediaLine && mediaWhen === 'before-stop' ? [mediaLine] : []),
    `Scale to 0 (replica counts recorded on the objects): ${writers.map((w) => w.name).join(', ') || 'nothing running'}`,
    `ERASE database ${database}: drop it and create it again, owned by ${owner}`,
    {
      parallel: `Restore the dump (${formatBytes(source.dump.length)}) as ${owner}: schema from its TOC staged on ${pgMount}, data in ${jobs} parallel stream(s) into pg_restore, indexes with ${jobs} job(s)`,
      staged: `Copy the dump (${formatBytes(source.dump.length)}) onto the Postgres volume (${pgMount}) and pg_restore it with ${jobs} job(s), as ${owner}`,
      stream: `Stream the dump (${formatBytes(source.dump.length)}) into one pg_restore in ${pg.pod}, as ${owner}`,
    }[method],
    `Leave out the rows of ${ONE_TIME_KEYS_TABLE} (TOC filter) and truncate it afterwards`,
    ...(identityPlan
      ? [
          `Write ${identityPlan.keys.join(', ')} to Secret ${identityPlan.secret}${identityPlan.mode === 'own-secret' ? ' (then add the printed Helm values)' : ''}`,
        ]
      : []),
    ...(mediaLine && mediaWhen === 'after-start' ? [mediaLine] : []),
    `Scale ${writers.map((w) => w.name).join(', ') || 'Synapse and MAS'} back up and wait for readiness`,
    'Check users, rooms, server name and one-time keys in the database, and that Synapse is ready',
  ];

  const result: ImportResult = {
    dryRun: options.dryRun,
    input: { path: options.file, kind: source.kind, bytes: source.fileBytes, dumpBytes: source.dump.length },
    dump: {
      archiveVersion: facts.header.archiveVersion,
      pgDumpVersion: facts.header.pgDumpVersion,
      serverVersion: facts.header.serverVersion,
      compression: facts.header.compression,
      tocEntries: facts.tocEntries,
      tables: facts.tables.length,
      users: users.total,
      rooms: facts.rooms,
      excludedData: otk,
    },
    serverName: { dump: dumpDomains[0], ess: deployment.serverName },
    schema: {
      dump: schema.version,
      dumpCompat: schema.compatVersion,
      ess: verdict.targetVersion,
      synapseVersion: deployment.synapseVersion,
      note: verdict.note,
    },
    target: { namespace: deployment.namespace, release: deployment.release, pod: pg.pod, database, owner },
    space: { availableBytes: disk.availableBytes, reclaimableBytes: live.bytes, neededBytes: needed, method, jobs },
    media: media.listing
      ? {
          source: media.source,
          files: media.listing.files.length,
          bytes: media.listing.bytes,
          pod: deployment.media?.pod,
          when: mediaWhen,
        }
      : undefined,
    identity: identityPlan
      ? {
          mode: identityPlan.mode,
          secret: identityPlan.secret,
          keys: identityPlan.keys,
          valuesFragment: identityPlan.valuesFragment,
        }
      : undefined,
    mas,
    plan,
    phases: [],
    warnings,
    needsAttention,
    durationMs: 0,
  };
  return { result, source, deployment, pg, pgMount, identity: collected.identity, identityPlan, media, writers };
}

function importFailure(
  error: unknown,
  phase: string,
  dbTouched: boolean,
  options: ImportOptions,
  interrupted: boolean,
): EssError {
  const cause = isEssError(error) ? error.message : ((error as Error)?.message ?? String(error));
  const retry = `ess migrate import ${options.file} -n ${options.namespace} --release ${options.release} --yes (it starts again from a fresh database)`;
  const details = isEssError(error) ? error.next : [];
  if (dbTouched) {
    return new EssError(
      `The import ${interrupted ? 'was interrupted' : 'failed'} while ${phase}: ${cause}\nThe ESS Synapse database is now INCOMPLETE (it was erased and only partly restored). Synapse and MAS were scaled back up, but Synapse will not work properly until the import is retried.`,
      {
        code: interrupted ? 'IMPORT_INTERRUPTED' : 'IMPORT_INCOMPLETE',
        exitCode: interrupted ? ExitCode.INTERRUPTED : ExitCode.FAILED,
        next: [
          ...details,
          `Fix the cause, then retry: ${retry}`,
          `Check the workloads: ess status -n ${options.namespace}`,
        ],
        cause: error,
      },
    );
  }
  return new EssError(
    `The import ${interrupted ? 'was interrupted' : 'failed'} while ${phase}: ${cause}\nThe ESS database was not touched; workloads were scaled back.`,
    {
      code: interrupted ? 'INTERRUPTED' : 'IMPORT_FAILED',
      exitCode: interrupted ? ExitCode.INTERRUPTED : ExitCode.FAILED,
      next: [...details, `Retry: ${retry}`],
      cause: error,
    },
  );
}

async function postChecks(kube: KubeClient, p: Prepared, synapseReady: boolean): Promise<PostCheck[]> {
  const { pg } = p;
  const db = p.result.target.database;
  const one = async (sql: string) => (await psqlInPod(kube, pg, sql, db))[0]?.[0];
  const checks: PostCheck[] = [];
  const users = Number(await one('SELECT count(*) FROM users'));
  checks.push({ name: 'users', ok: users === p.result.dump.users, expected: p.result.dump.users, actual: users });
  if (p.result.dump.rooms !== undefined) {
    const rooms = Number(await one('SELECT count(*) FROM rooms'));
    checks.push({ name: 'rooms', ok: rooms === p.result.dump.rooms, expected: p.result.dump.rooms, actual: rooms });
  }
  const domains = (
    await psqlInPod(kube, pg, "SELECT DISTINCT substring(name from position(':' in name) + 1) FROM users", db)
  ).map((r) => r[0]);
  checks.push({
    name: 'server name',
    ok: domains.every((d) => d === p.result.serverName.ess),
    expected: p.result.serverName.ess,
    actual: domains.join(', ') || '(no users)',
  });
  const otk = Number((await one(`SELECT count(*) FROM ${ONE_TIME_KEYS_TABLE}`)) ?? 0);
  checks.push({ name: 'one-time keys', ok: otk === 0, expected: 0, actual: otk });
  const seq = await one(
    "SELECT CASE WHEN to_regclass('public.state_groups') IS NULL OR to_regclass('public.state_group_id_seq') IS NULL THEN 'n/a' " +
      "WHEN (SELECT last_value FROM state_group_id_seq) >= coalesce((SELECT max(id) FROM state_groups), 0) THEN 'ok' ELSE 'behind' END",
  );
  checks.push({ name: 'state_group_id_seq', ok: seq !== 'behind', expected: '>= max(state_groups.id)', actual: seq });
  checks.push({
    name: 'Synapse ready',
    ok: synapseReady,
    expected: 'ready',
    actual: synapseReady ? 'ready' : 'not ready',
  });
  return checks;
}

/** Runs the import (or, with dryRun, only the preflight and the plan). */
export async function importSynapse(options: ImportOptions, deps: ImportDeps): Promise<ImportResult> {
  const started = Date.now();
  const { reporter } = deps;
  reporter.info(`Checking ${options.file}…`);
  const source = await openImportSource(options.file, reporter);
  const kube = await deps.kube();
  const p = await prepare(options, kube, source);
  collectNow();
  const { result } = p;
  result.phases.push({ name: 'preflight', ms: Date.now() - started });
  for (const w of result.warnings) reporter.warn(w);
  if (options.dryRun) {
    result.durationMs = Date.now() - started;
    return result;
  }
  // Take the lock before asking, so that nobody confirms an import another run would collide with.
  const lock = await acquireLock(kube, {
    namespace: options.namespace,
    release: options.release,
    operation: 'migrate import',
  });
  try {
    await (deps.confirm ?? confirmTyped)({
      expected: result.serverName.ess,
      action: `ERASE the Synapse database "${result.target.database}" of ${result.target.namespace}/${result.target.release} (${result.serverName.ess}) and replace it with ${basename(options.file)}`,
      yes: options.yes,
    });
    const confirmed = Date.now();
    await runImport(p, options, kube, reporter, confirmed);
  } finally {
    await lock.release().catch(() => undefined);
  }
  result.durationMs = Date.now() - started;
  return result;
}

async function runImport(
  p: Prepared,
  options: ImportOptions,
  kube: KubeClient,
  reporter: Reporter,
  startedAt: number,
): Promise<void> {
  const { result, pg, source } = p;
  const signal = options.signal;
  const mediaInfo = p.deployment.media;
  const doMedia = async () => {
    if (!p.media.listing || p.media.listing.files.length === 0 || !mediaInfo) return;
    result.mediaUpload = await uploadMedia(
      kube,
      { namespace: p.deployment.namespace, pod: mediaInfo.pod, container: mediaInfo.container },
      mediaInfo.storePath,
      p.media.listing,
      { reporter, signal },
    );
  };

  let phase = 'uploading media';
  let phaseStart = startedAt;
  const enter = (next: string) => {
    result.phases.push({ name: phase, ms: Date.now() - phaseStart });
    phase = next;
    phaseStart = Date.now();
  };
  let dbTouched = false;
  const scaler = new WorkloadScaler(kube, p.writers, {
    by: 'ess migrate import',
    reason: `import of ${basename(options.file)}`,
    signal,
    reporter,
    timeoutMs: options.timeoutMs,
  });
  const staging = `${p.pgMount}/ess-import-${Date.now()}`;
  const pgTarget = { namespace: pg.namespace, pod: pg.pod, container: pg.container };
  try {
    if (result.media?.when === 'before-stop') await doMedia();
    enter('stopping Synapse and MAS');
    await scaler.stop();
    result.stopped = scaler.workloads
      .filter((w: StoppedWorkload) => w.outcome === 'stopped' || w.outcome === 'adopted')
      .map((w) => w.name);
    if (signal?.aborted) throw new InterruptedError('a signal');

    enter('recreating the database');
    const db = result.target.database;
    const ident = (s: string) => `"${s.replace(/"/g, '""')}"`;
    dbTouched = true;
    await psqlInPod(kube, pg, `DROP DATABASE IF EXISTS ${ident(db)} WITH (FORCE)`);
    await psqlInPod(
      kube,
      pg,
      `CREATE DATABASE ${ident(db)} OWNER ${ident(result.target.owner)} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`,
    );

    enter('restoring the dump');
    const t0 = Date.now();
    await restoreDump(kube, pg, {
      toc: source.toc,
      dump: source.dump,
      database: db,
      role: result.target.owner,
      staging,
      method: result.space.method,
      jobs: result.space.jobs,
      reporter,
      signal,
      onPhase: enter,
    });
    await psqlInPod(kube, pg, `TRUNCATE ${ONE_TIME_KEYS_TABLE}`, db).catch((error: unknown) => {
      const message = `Could not truncate ${ONE_TIME_KEYS_TABLE}: ${(error as Error).message}`;
      result.warnings.push(message);
      reporter.warn(message);
    });
    result.restore = { method: result.space.method, jobs: result.space.jobs, durationMs: Date.now() - t0 };

    enter('writing the identity Secret');
    if (p.identityPlan)
      await writeIdentity(kube, { namespace: options.namespace, release: options.release }, p.identityPlan, p.identity);
  } catch (error) {
    const interrupted = error instanceof InterruptedError || Boolean(signal?.aborted);
    reporter.warn(`Import failed while ${phase}; scaling Synapse and MAS back up.`);
    await scaler.restore({ wait: false }).catch((restoreError: unknown) => {
      reporter.warn(`Scaling back failed: ${(restoreError as Error).message}; run ess start -n ${options.namespace}`);
    });
    throw importFailure(error, phase, dbTouched, options, interrupted);
  } finally {
    await removeInPod(kube, pgTarget, staging).catch(() => undefined);
  }

  enter('starting Synapse and MAS');
  reporter.info('Starting Synapse and MAS again…');
  const restored = await scaler.restore({ wait: true, throwOnTimeout: false });
  const warn = (message: string) => {
    result.warnings.push(message);
    reporter.warn(message);
  };
  for (const name of restored.notReady) warn(`${name} was scaled back up but is not ready yet.`);
  if (result.media?.when === 'after-start') {
    try {
      await doMedia();
    } catch (error) {
      result.needsAttention = true;
      warn(
        `The database was imported, but uploading the media failed: ${(error as Error).message}. Re-run the import to resume the media (files already there are skipped).`,
      );
    }
  }
  enter('post-checks');
  const synapseMain = p.writers.filter((w) => w.component === 'synapse');
  const synapseReady = synapseMain.every((w) => !restored.notReady.some((n) => n.endsWith(`/${w.name}`)));
  result.postChecks = await postChecks(kube, p, synapseReady);
  for (const check of result.postChecks.filter((c) => !c.ok)) {
    result.needsAttention = true;
    warn(`Post-check failed: ${check.name}: expected ${check.expected}, found ${check.actual}.`);
  }
  enter('done');
}
