/**
 * The first step of `ess backup`: everything read and checked before anything changes — options, keys, the
 * destination, the deployment, PostgreSQL (where its tools run, version, databases) and, for --incremental, the
 * parent's media index.
 */
import { constants as fsConstants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { formatArchiveName } from '../../lib/archive/naming.js';
import type { ArchiveKeys } from '../../lib/archive/transfer.js';
import { type AgeEncryptOptions, validateAgeEncryptOptions } from '../../lib/crypto/age.js';
import { readIdentityFile, readPassphraseFile } from '../../lib/crypto/keys.js';
import { targetFlags } from '../../lib/deployment/components.js';
import { discoverDeployment } from '../../lib/deployment/discover.js';
import type { Deployment } from '../../lib/deployment/model.js';
import { EssError, ExitCode, PreconditionError } from '../../lib/errors.js';
import { settingsFromUrl } from '../../lib/migrate/homeserver.js';
import type { DumpCompression } from '../../lib/postgres/pod-tools.js';
import { openBackupSink } from '../../lib/storage/destination.js';
import { type BackupSink, type BackupStore, isBackupStore } from '../../lib/storage/store.js';
import type { BackupDeps, BackupOptions } from './create.js';
import type { DatabaseTarget } from './dump-phase.js';
import type { ParentIndex } from './media.js';
import { findParent, readParentIndex } from './parent.js';
import { compressionFor, localPgTools, type PgTools, pgDumpMajor, podPgTools, serverFacts } from './postgres.js';

export function usage(message: string, next: string[] = []): EssError {
  return new EssError(message, { exitCode: ExitCode.USAGE, code: 'USAGE', next });
}

/** What a backup works from. */
export interface Prepared {
  sink: BackupSink;
  store?: BackupStore;
  encryption?: AgeEncryptOptions;
  parentKeys: ArchiveKeys;
  deployment: Deployment;
  serverName: string;
  tools: PgTools;
  databases: DatabaseTarget[];
  serverVersion: string;
  compression: DumpCompression;
  globals: boolean;
  parent?: ParentIndex & { createdAt: Date };
  incrementalFallback?: string;
  name: string;
  warnings: string[];
}

/** See the module comment. Throws PreconditionError/EssError before anything has changed. */
export async function prepareBackup(options: BackupOptions, deps: BackupDeps, createdAt: Date): Promise<Prepared> {
  const { kube, reporter } = deps;
  const warnings: string[] = [];
  const toStdout = options.output === '-' && !options.s3;
  if (toStdout && (options.keepLast !== undefined || options.keepWithinMs !== undefined)) {
    throw usage('--keep-last/--keep-within need a directory or --s3 destination, not stdout.');
  }
  if (options.passphraseFile && (options.encryptTo?.length ?? 0) > 0) {
    throw usage('Use either --encrypt-to or --passphrase-file, not both (age cannot mix them).');
  }
  if (options.spoolDir !== undefined) {
    const ok = await access(options.spoolDir, fsConstants.W_OK | fsConstants.X_OK).then(
      async () => (await stat(options.spoolDir!)).isDirectory(),
      () => false,
    );
    if (!ok) {
      throw new PreconditionError(`The spool directory ${options.spoolDir} does not exist or is not writable.`, {
        code: 'SPOOL_DIR_UNUSABLE',
        next: ['Create it (it needs room for the compressed database dumps), or pass another --spool-dir'],
      });
    }
  }
  let encryption: AgeEncryptOptions | undefined;
  const parentKeys: ArchiveKeys = { identities: [], passphrases: [] };
  if (options.passphraseFile) {
    const file = await readPassphraseFile(options.passphraseFile);
    if (file.looselyProtected) {
      warnings.push(`The passphrase file ${options.passphraseFile} is readable by other users (chmod 600 it).`);
    }
    encryption = { passphrase: file.passphrase, scryptWorkFactor: deps.scryptWorkFactor };
    parentKeys.passphrases!.push(file.passphrase);
  } else if ((options.encryptTo?.length ?? 0) > 0) {
    encryption = { recipients: options.encryptTo };
  }
  // Every recipient parses now, not when the archive is written after the downtime.
  if (encryption) validateAgeEncryptOptions(encryption);
  for (const path of options.identityFiles ?? []) parentKeys.identities!.push(...(await readIdentityFile(path)));
  const sink = openBackupSink({
    output: options.output,
    s3: options.s3,
    s3Endpoint: options.s3Endpoint,
    s3Region: options.s3Region,
    s3ChecksumMode: options.s3ChecksumMode,
    stdout: deps.stdout,
    stdoutIsTerminal: deps.stdoutIsTerminal,
    debug: (line) => reporter.debug(line),
  });
  // An unusable destination fails here, before anything is scaled (a dry-run creates nothing).
  await sink.check({ create: !options.dryRun });
  const store = isBackupStore(sink) ? sink : undefined;

  const deployment = await discoverDeployment(kube, { namespace: options.namespace, release: options.release });
  warnings.push(...deployment.warnings);
  if (deployment.flavour === 'operator') {
    throw new PreconditionError(
      'ess backup supports deployments of the matrix-stack Helm chart, not the operator-based ESS.',
      {
        code: 'UNSUPPORTED_FLAVOUR',
        next: ['Back up the operator deployment with the procedure of its documentation'],
      },
    );
  }
  const serverName = deployment.serverName;
  if (!serverName) {
    throw new PreconditionError('The Matrix server name of the deployment is unknown.', {
      code: 'SERVER_NAME_UNKNOWN',
      next: [`Check the ConfigMap ${options.release}-synapse (server_name), then retry`],
    });
  }

  let tools: PgTools;
  if (options.databaseUrl) {
    tools = localPgTools(settingsFromUrl(options.databaseUrl), options.pgBinDir);
  } else if (deployment.postgres?.mode === 'bundled') {
    tools = podPgTools(kube, { namespace: deployment.namespace, ...deployment.postgres });
  } else {
    throw new PreconditionError(
      deployment.postgres
        ? 'The deployment uses an external PostgreSQL server.'
        : 'No PostgreSQL database was found for this deployment.',
      {
        code: 'EXTERNAL_POSTGRES',
        next: [
          'Pass --database-url postgres://USER@HOST:5432/ (password in PGPASSWORD or ~/.pgpass) to dump it with local tools',
        ],
      },
    );
  }
  let facts: Awaited<ReturnType<typeof serverFacts>>;
  let major: number;
  try {
    [facts, major] = await Promise.all([serverFacts(tools, deps.signal), pgDumpMajor(tools, deps.signal)]);
  } catch (error) {
    if (error instanceof EssError && error.code === 'PG_TOOLS_MISSING') throw error;
    throw new PreconditionError(`Cannot query PostgreSQL (${tools.where}): ${(error as Error).message}`, {
      code: 'POSTGRES_UNREACHABLE',
      cause: error,
      next:
        tools.kind === 'pod'
          ? [
              `If ess stop stopped it: ess start ${targetFlags(options.namespace, options.release)}`,
              `Otherwise check that Postgres runs: kubectl get pods -n ${options.namespace}`,
            ]
          : ['Check --database-url', 'Check the client tools (--pg-bin-dir)'],
    });
  }
  const discovered = new Map((deployment.postgres?.databases ?? []).map((d) => [d.name, d.component]));
  const sizes = new Map(facts.databases.map((d) => [d.name, d.sizeBytes]));
  const databases: DatabaseTarget[] =
    tools.kind === 'pod'
      ? facts.databases.map((d) => ({
          name: d.name,
          component: discovered.get(d.name) ?? 'other',
          sizeBytes: d.sizeBytes,
        }))
      : [...discovered].map(([name, component]) => ({ name, component, sizeBytes: sizes.get(name) ?? 0 }));
  for (const name of discovered.keys()) {
    if (!sizes.has(name))
      throw new PreconditionError(`Database ${name} does not exist on ${tools.where}.`, { code: 'DATABASE_MISSING' });
  }

  let parent: Prepared['parent'];
  let incrementalFallback: string | undefined;
  if (options.incremental) {
    const found = store ? await findParent(store, serverName) : undefined;
    if (!store) incrementalFallback = 'the destination (stdout) cannot be listed';
    else if (!found) incrementalFallback = `no earlier backup of ${serverName} at ${store.location}`;
    else if (found.encrypted && !parentKeys.identities!.length && !parentKeys.passphrases!.length) {
      incrementalFallback = `the parent ${found.object.name} is encrypted: pass --identity (or the --passphrase-file it was made with) to read it`;
    } else {
      try {
        const read = await readParentIndex(store, found.object.name, { keys: parentKeys, signal: deps.signal });
        if (read.manifest.deployment.serverName !== serverName) {
          incrementalFallback = `the newest backup ${found.object.name} is of ${read.manifest.deployment.serverName}`;
        } else {
          parent = { name: found.object.name, entries: read.entries, createdAt: found.createdAt };
        }
      } catch (error) {
        if (deps.signal?.aborted) throw error;
        incrementalFallback = `the parent ${found.object.name} cannot be read (${(error as Error).message})`;
      }
    }
    if (incrementalFallback) warnings.push(`Made a full backup: ${incrementalFallback}.`);
  }
  const name = formatArchiveName({
    serverName,
    createdAt,
    parentCreatedAt: parent?.createdAt,
    encrypted: encryption !== undefined,
  });
  return {
    sink,
    store,
    encryption,
    parentKeys,
    deployment,
    serverName,
    tools,
    databases,
    serverVersion: facts.serverVersion,
    compression: compressionFor(major, options.compressionLevel),
    globals: tools.kind === 'pod',
    parent,
    incrementalFallback,
    name,
    warnings,
  };
}
