/**
 * `ess migrate export`: on the old host, dump the Synapse database with the local pg_dump and write one bundle with
 * the dump, the identity (signing key and homeserver.yaml secrets) and the media store. No Kubernetes involved.
 */
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, rm, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { PreconditionError } from '../../lib/errors.js';
import { BUNDLE, EXPORT_FORMAT_VERSION, writeBundle } from '../../lib/migrate/bundle.js';
import { ONE_TIME_KEYS_TABLE } from '../../lib/migrate/dump-facts.js';
import { sha256Of } from '../../lib/migrate/hash.js';
import {
  type HomeserverConfig,
  type IdentitySecrets,
  type PostgresSettings,
  readHomeserverConfig,
  settingsFromUrl,
  sqliteRefusal,
} from '../../lib/migrate/homeserver.js';
import { listMediaDir, MEDIA_CACHE_DIRS, type MediaListing } from '../../lib/migrate/media.js';
import { readSigningKey, type SigningKey } from '../../lib/migrate/signing-key.js';
import { localToolVersion, readSourceFacts, runLocalPgDump, type SourceFacts } from '../../lib/migrate/source-db.js';
import { formatBytes, type Reporter } from '../../lib/output/log.js';
import { localFsNextSteps } from '../../lib/storage/errors.js';

export interface ExportOptions {
  /** The old homeserver.yaml. */
  config?: string;
  /** postgres:// URL; overrides the database settings of the config. */
  databaseUrl?: string;
  /** Base URL of the old Synapse, to check that it is stopped. */
  synapseUrl?: string;
  /** Bundle to write; default ./synapse-export-<server>-<time>.tar. */
  output?: string;
  /** Media store directory; overrides media_store_path of the config. */
  mediaStore?: string;
  noMedia: boolean;
  includeMediaCaches: boolean;
  /** Signing key file; overrides signing_key_path of the config. */
  signingKey?: string;
  pgDump: string;
  dryRun: boolean;
  essVersion: string;
  signal?: AbortSignal;
}

export interface ExportDeps {
  reporter: Reporter;
  now?: () => Date;
  /** HTTP GET used for the "is Synapse stopped" probe (tests inject one). */
  probe?: (url: string) => Promise<{ status: number } | { error: string }>;
}

export interface ExportResult {
  dryRun: boolean;
  output: string;
  /** Size of the bundle (undefined on --dry-run). */
  bytes?: number;
  serverName: string;
  database: { name: string; bytes: number; postgresVersion: string; dumpBytes?: number };
  schema: { version?: number; compatVersion?: number };
  users: number;
  identity: { signingKeyId?: string; secrets: string[] };
  media: { source?: string; files: number; bytes: number; skippedCacheFiles: number; skippedCacheBytes: number };
  synapseStopped: 'verified' | 'not-checked';
  warnings: string[];
  /** Warnings that need action (exit code 3): pepper, unreadable secrets, invalid media paths. */
  needsAttention: boolean;
  durationMs: number;
}

async function defaultProbe(url: string): Promise<{ status: number } | { error: string }> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000), redirect: 'manual' });
    await res.body?.cancel();
    return { status: res.status };
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause;
    return { error: cause?.code ?? (error as Error).message };
  }
}

function timestamp(date: Date): string {
  return date
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
}

function databaseSettings(config: HomeserverConfig | undefined, databaseUrl: string | undefined): PostgresSettings {
  if (databaseUrl) return settingsFromUrl(databaseUrl);
  const db = config?.database;
  if (!db) {
    throw new PreconditionError('No database to export: pass --config homeserver.yaml or --database-url.', {
      code: 'NO_DATABASE',
    });
  }
  if (db.engine === 'sqlite') throw sqliteRefusal(db.path);
  return db.settings;
}

async function checkSynapseStopped(
  options: ExportOptions,
  deps: ExportDeps,
  facts: SourceFacts,
  warnings: string[],
): Promise<ExportResult['synapseStopped']> {
  const sessions = facts.otherSessions.reduce((n, s) => n + s.count, 0);
  if (sessions > 0) {
    warnings.push(
      `${sessions} other session(s) are connected to database ${facts.database} (${facts.otherSessions
        .map((s) => `${s.user}${s.application ? `/${s.application}` : ''}×${s.count}`)
        .join(', ')}): if that is Synapse, stop it first, or the dump will miss what it writes afterwards.`,
    );
  }
  if (!options.synapseUrl) {
    warnings.push(
      'Synapse must be stopped before the export (and never started again on this host); this was not checked. Pass --synapse-url https://HOST to check it.',
    );
    return 'not-checked';
  }
  const url = `${options.synapseUrl.replace(/\/+$/, '')}/health`;
  const answer = await (deps.probe ?? defaultProbe)(url);
  if ('status' in answer && answer.status === 200) {
    throw new PreconditionError(`Synapse is still running: ${url} answered 200. Nothing was exported.`, {
      code: 'SYNAPSE_RUNNING',
      next: [
        'Stop Synapse on the old host (e.g. systemctl stop matrix-synapse) and keep it stopped',
        'Then run ess migrate export again',
      ],
    });
  }
  deps.reporter.info(
    `Synapse does not answer at ${url} (${'status' in answer ? `HTTP ${answer.status}` : answer.error}): treated as stopped.`,
  );
  return 'verified';
}

async function identityFiles(
  config: HomeserverConfig | undefined,
  options: ExportOptions,
  warnings: string[],
): Promise<{ files: { name: string; data: Buffer }[]; key?: SigningKey; secretNames: string[] }> {
  const files: { name: string; data: Buffer }[] = [];
  const keyPath = options.signingKey ?? config?.signingKeyPath;
  let key: SigningKey | undefined;
  if (keyPath) {
    key = await readSigningKey(keyPath);
    files.push({ name: BUNDLE.signingKey, data: Buffer.from(`${key.line}\n`) });
  } else {
    warnings.push(
      'No signing key exported (no --config with signing_key_path, no --signing-key): ESS will sign with a new key and remote servers will see a different identity.',
    );
  }
  const secrets: IdentitySecrets = config?.secrets ?? {};
  const json: Record<string, string> = {};
  if (secrets.macaroonSecretKey) json.macaroon_secret_key = secrets.macaroonSecretKey;
  if (secrets.registrationSharedSecret) json.registration_shared_secret = secrets.registrationSharedSecret;
  if (secrets.formSecret) json.form_secret = secrets.formSecret;
  if (config && !json.macaroon_secret_key) {
    warnings.push(
      'homeserver.yaml has no macaroon_secret_key: existing login and password-reset tokens will stop working.',
    );
  }
  if (Object.keys(json).length > 0) {
    files.push({ name: BUNDLE.secrets, data: Buffer.from(`${JSON.stringify(json, null, 2)}\n`) });
  }
  return { files, key, secretNames: Object.keys(json) };
}

async function mediaListing(
  config: HomeserverConfig | undefined,
  options: ExportOptions,
): Promise<{ root?: string; listing?: MediaListing }> {
  if (options.noMedia) return {};
  const root = options.mediaStore ? resolve(options.mediaStore) : config?.mediaStorePath;
  if (!root) {
    throw new PreconditionError('No media store: homeserver.yaml has no media_store_path.', {
      code: 'MEDIA_STORE_UNKNOWN',
      next: ['Pass the media directory with --media-store DIR', 'Or export without media: --no-media'],
    });
  }
  if (!existsSync(root)) {
    throw new PreconditionError(`The media store ${root} does not exist.`, {
      code: 'MEDIA_STORE_MISSING',
      next: ['Pass the media directory with --media-store DIR', 'Or export without media: --no-media'],
    });
  }
  return { root, listing: await listMediaDir(root, { includeCaches: options.includeMediaCaches }) };
}

/** Runs the export (or, with dryRun, only its checks and the plan). */
export async function exportSynapse(options: ExportOptions, deps: ExportDeps): Promise<ExportResult> {
  const started = Date.now();
  const now = deps.now ?? (() => new Date());
  const { reporter } = deps;
  const warnings: string[] = [];
  let needsAttention = false;

  let config: HomeserverConfig | undefined;
  if (options.config) {
    const read = await readHomeserverConfig(options.config);
    config = read.config;
    if (read.warnings.length) needsAttention = true;
    warnings.push(...read.warnings);
  }
  const settings = databaseSettings(config, options.databaseUrl);
  if (!options.dryRun) await localToolVersion(options.pgDump);

  reporter.info(`Reading the source database ${settings.database ?? '(default)'} on ${settings.host ?? 'localhost'}…`);
  const facts = await readSourceFacts(settings);
  if (facts.schemaVersion === undefined) {
    throw new PreconditionError(
      `Database ${facts.database} has no schema_version table: it is not a Synapse database.`,
      {
        code: 'NOT_SYNAPSE',
        next: ['Check database.args in homeserver.yaml or the database in --database-url'],
      },
    );
  }
  const serverName = config?.serverName ?? facts.domains[0]?.domain;
  if (!serverName) {
    throw new PreconditionError(
      'Cannot tell the server name: no server_name in the config and no users in the database.',
      {
        code: 'SERVER_NAME_UNKNOWN',
        next: ['Pass --config with the old homeserver.yaml'],
      },
    );
  }
  const foreign = facts.domains.filter((d) => d.domain !== serverName);
  if (foreign.length) {
    needsAttention = true;
    warnings.push(
      `users has names of other servers than ${serverName}: ${foreign.map((d) => `${d.domain} (${d.users})`).join(', ')}; ESS will refuse an import whose server name does not match.`,
    );
  }
  if (config?.pepper) {
    needsAttention = true;
    warnings.push(
      'password_config.pepper is set: ESS does not support a password pepper, so after the import NO user can log in with their password until it is reset (or the pepper is removed before the export and passwords are reset on the old server).',
    );
  }

  const synapseStopped = await checkSynapseStopped(options, deps, facts, warnings);
  const identity = await identityFiles(config, options, warnings);
  const media = await mediaListing(config, options);
  if (media.listing?.invalid.length) {
    needsAttention = true;
    warnings.push(
      `${media.listing.invalid.length} file(s) in the media store have names Synapse never writes and are left out, e.g. ${media.listing.invalid.slice(0, 3).join(', ')}`,
    );
  }
  if (options.noMedia) warnings.push('Media is not exported (--no-media): copy the media store separately.');

  const output = resolve(
    options.output ?? `synapse-export-${serverName.replace(/[^A-Za-z0-9.-]/g, '_')}-${timestamp(now())}.tar`,
  );
  const result: ExportResult = {
    dryRun: options.dryRun,
    output,
    serverName,
    database: { name: facts.database, bytes: facts.databaseBytes, postgresVersion: facts.serverVersion },
    schema: { version: facts.schemaVersion, compatVersion: facts.schemaCompatVersion },
    users: facts.users,
    identity: { signingKeyId: identity.key?.keyId, secrets: identity.secretNames },
    media: {
      source: media.root,
      files: media.listing?.files.length ?? 0,
      bytes: media.listing?.bytes ?? 0,
      skippedCacheFiles: media.listing?.skippedCaches.files ?? 0,
      skippedCacheBytes: media.listing?.skippedCaches.bytes ?? 0,
    },
    synapseStopped,
    warnings,
    needsAttention,
    durationMs: 0,
  };
  for (const w of warnings) reporter.warn(w);
  if (options.dryRun) {
    result.durationMs = Date.now() - started;
    return result;
  }
  if (existsSync(output)) {
    throw new PreconditionError(`${output} already exists; ess does not overwrite bundles.`, {
      code: 'OUTPUT_EXISTS',
      next: ['Choose another file with --output, or remove the old one'],
    });
  }
  await prepareOutputDir(dirname(output));

  // The dump is spooled next to the bundle (same disk as the output, never a memory-backed /tmp).
  const spool = join(dirname(output), `.${basename(output)}.dump.partial`);
  try {
    reporter.info(
      `Dumping ${facts.database} (${formatBytes(facts.databaseBytes)} on disk) with ${options.pgDump} -Fc -O…`,
    );
    const pgDumpVersion = await localToolVersion(options.pgDump);
    const dump = await runLocalPgDump({
      binary: options.pgDump,
      settings,
      output: spool,
      excludeTableData: [ONE_TIME_KEYS_TABLE],
      signal: options.signal,
      onBytes: (bytes) => reporter.progress('Dumping the database', bytes),
    });
    result.database.dumpBytes = dump.bytes;

    reporter.info('Checksumming the dump…');
    const dumpSha = await sha256Of(createReadStream(spool, { highWaterMark: 1024 * 1024 }));
    const written = await writeBundle(
      output,
      {
        createdAt: now(),
        essVersion: options.essVersion,
        serverName,
        database: {
          name: facts.database,
          sizeBytes: facts.databaseBytes,
          serverVersion: facts.serverVersion,
          tables: facts.tables,
          excludedTableData: [ONE_TIME_KEYS_TABLE],
        },
        schema: { version: facts.schemaVersion, compatVersion: facts.schemaCompatVersion },
        warnings,
        exportInfo: {
          formatVersion: EXPORT_FORMAT_VERSION,
          source: {
            database: facts.database,
            postgresVersion: facts.serverVersion,
            pgDumpVersion,
            dumpCommand: dump.argv.filter((a) => a !== spool && a !== '-f').join(' '),
            users: facts.users,
            passwordLogin: config?.passwordLogin,
            sso: config?.sso,
            pepper: config?.pepper ?? false,
          },
          identity: {
            signingKey: identity.key ? BUNDLE.signingKey : undefined,
            signingKeyId: identity.key?.keyId,
            secrets: identity.secretNames.length ? BUNDLE.secrets : undefined,
            secretNames: identity.secretNames,
          },
          media: {
            prefix: BUNDLE.mediaPrefix,
            files: result.media.files,
            bytes: result.media.bytes,
            excluded: options.includeMediaCaches || options.noMedia ? [] : [...MEDIA_CACHE_DIRS],
            excludedFiles: result.media.skippedCacheFiles,
            excludedBytes: result.media.skippedCacheBytes,
          },
        },
        dump: { path: spool, size: dump.bytes, sha256: dumpSha },
        files: identity.files,
        media: media.listing?.files ?? [],
      },
      (done, total) => reporter.progress('Writing the bundle', done, total),
    );
    result.bytes = written.bytes;
  } finally {
    await rm(spool, { force: true });
  }
  result.durationMs = Date.now() - started;
  return result;
}

/** Creates the bundle's directory and proves it writable, so that a bad --output fails before the dump starts. */
async function prepareOutputDir(dir: string): Promise<void> {
  const probe = join(dir, `.ess-write-test-${process.pid}`);
  try {
    await mkdir(dir, { recursive: true });
    await writeFile(probe, '');
    await unlink(probe);
  } catch (error) {
    throw new PreconditionError(`Cannot write the bundle into ${dir}: ${(error as Error).message}`, {
      code: 'OUTPUT_UNUSABLE',
      cause: error,
      next: localFsNextSteps(error, dir),
    });
  }
}
