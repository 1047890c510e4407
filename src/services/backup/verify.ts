/**
 * `ess backup verify <archive>`: streams one archive and checks everything that can be checked without a cluster —
 * format version, manifest, every member's size and SHA-256, the trailer, the media index against the media members,
 * the pg_dump headers and that an incremental backup's parents are at the destination. With a restore test it also
 * restores every database dump into a throwaway database and compares the row count of every table with the
 * manifest. Nothing is buffered whole: the archive streams once, dumps stream straight into pg_restore.
 */

import { mediaPathOf } from '../../lib/archive/layout.js';
import type { BackupManifest, ManifestDatabase } from '../../lib/archive/manifest.js';
import { fileSafeServerName, formatArchiveTimestamp, parseArchiveName } from '../../lib/archive/naming.js';
import type { ArchiveMember } from '../../lib/archive/reader.js';
import { type ArchiveKeys, readArchiveFrom } from '../../lib/archive/transfer.js';
import { InterruptedError, isEssError, PreconditionError } from '../../lib/errors.js';
import { isMigrateBundle } from '../../lib/migrate/bundle.js';
import type { Reporter } from '../../lib/output/log.js';
import type { ThrowawayServer } from '../../lib/postgres/throwaway.js';
import {
  checkDumpHeader,
  compareRowCounts,
  dumpArchiveVersion,
  MediaTally,
  type RowComparison,
} from './verify-checks.js';
import type { ArchiveLocation } from './verify-source.js';

/** Error codes of the archive library that mean "this archive is damaged" (a verification failure, exit 1). */
export const DAMAGE_CODES = new Set([
  'ARCHIVE_CORRUPT',
  'ARCHIVE_TRUNCATED',
  'ARCHIVE_NOT_ESS',
  'AGE_PAYLOAD_INVALID',
  'AGE_HEADER_INVALID',
]);

/** One thing verification found wrong. */
export interface VerifyProblem {
  /** ARCHIVE_CORRUPT, ARCHIVE_TRUNCATED, MEDIA_MISMATCH, DUMP_INVALID, PARENT_MISSING, RESTORE_FAILED, ROWS_MISMATCH… */
  code: string;
  message: string;
}

/** The restore test of one database. */
export interface DatabaseVerification {
  database: string;
  member: string;
  /** pg_dump archive version from the dump header, e.g. "1.16". */
  dumpFormat?: string;
  /** Set when the restore test ran: the throwaway database used (dropped afterwards). */
  throwawayDatabase?: string;
  restored: boolean;
  rows?: RowComparison;
}

/** A parent archive an incremental backup needs. */
export interface ParentCheck {
  name: string;
  present: boolean;
  /** Read in full and every checksum passed (undefined when not checked: missing, or --skip-parents). */
  intact?: boolean;
}

/** What {@link verifyBackup} returns (the `--json` output of `ess backup verify`). */
export interface VerifyResult {
  ok: boolean;
  archive: string;
  location: string;
  encrypted: boolean;
  /** Bytes of the stored object. */
  size?: number;
  /** Facts from the manifest (when it could be read). */
  backup?: {
    formatVersion: number;
    createdAt: string;
    serverName: string;
    namespace: string;
    release: string;
    chartVersion?: string;
    postgresVersion?: string;
    synapseVersion?: string;
    synapseSchemaVersion?: number;
    databases: string[];
    mediaFiles?: number;
    mediaBytes?: number;
    incremental: boolean;
    parent?: string;
  };
  /** Members read and verified (without manifest and trailer) and their content bytes; set when the read completed. */
  members?: number;
  contentBytes?: number;
  parents: ParentCheck[];
  restoreTest: { ran: boolean; server?: string };
  databases: DatabaseVerification[];
  problems: VerifyProblem[];
  warnings: string[];
  durationMs: number;
}

/** Options of {@link verifyBackup}. */
export interface VerifyOptions {
  location: ArchiveLocation;
  keys?: ArchiveKeys;
  /**
   * Also read every parent archive an incremental backup needs in full and check its checksums, as a restore does
   * (default true): without it, verify can pass a backup that restore refuses because a parent is damaged.
   */
  checkParents?: boolean;
  /** Run the restore test on this server (see lib/postgres/throwaway.ts). */
  restoreTest?: () => Promise<ThrowawayServer>;
  signal?: AbortSignal;
}

/** Dependencies of {@link verifyBackup}. */
export interface VerifyDeps {
  reporter: Reporter;
  now?: () => number;
}

function majorOf(version: string | undefined): number | undefined {
  const match = /^(\d+)/.exec(version ?? '');
  return match ? Number(match[1]) : undefined;
}

function summarise(manifest: BackupManifest): NonNullable<VerifyResult['backup']> {
  return {
    formatVersion: manifest.formatVersion,
    createdAt: manifest.createdAt,
    serverName: manifest.deployment.serverName,
    namespace: manifest.deployment.namespace,
    release: manifest.deployment.release,
    chartVersion: manifest.deployment.chartVersion,
    postgresVersion: manifest.postgres?.serverVersion,
    synapseVersion: manifest.synapse?.version,
    synapseSchemaVersion: manifest.synapse?.schemaVersion,
    databases: (manifest.postgres?.databases ?? []).map((d) => d.name),
    mediaFiles: manifest.media?.fileCount,
    mediaBytes: manifest.media?.bytes,
    incremental: manifest.media?.incremental ?? false,
    parent: manifest.media?.parent,
  };
}

/** Reads up to `n` bytes from the start of a stream, then stops reading it (the reader drains and verifies the rest). */
async function head(stream: AsyncIterable<Buffer>, n: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of stream) {
    chunks.push(chunk);
    length += chunk.length;
    if (length >= n) break;
  }
  return Buffer.concat(chunks).subarray(0, n);
}

/**
 * Verifies one archive. Resolves with `ok: false` and the problems when the archive is damaged, a parent is
 * missing, a dump does not restore or row counts differ. Throws (exit 4) when it cannot verify at all: archive not
 * found, key missing or wrong, format too new, restore test impossible (e.g. pg_restore too old).
 */
export async function verifyBackup(options: VerifyOptions, deps: VerifyDeps): Promise<VerifyResult> {
  const { location, signal } = options;
  const { reporter } = deps;
  const now = deps.now ?? Date.now;
  const started = now();
  const problems: VerifyProblem[] = [];
  const warnings: string[] = [];
  const databases: DatabaseVerification[] = [];
  const tally = new MediaTally();
  const result: VerifyResult = {
    ok: false,
    archive: location.name,
    location: location.display,
    encrypted: parseArchiveName(location.name)?.encrypted ?? false,
    parents: [],
    restoreTest: { ran: false },
    databases,
    problems,
    warnings,
    durationMs: 0,
  };
  const stat = await location.store.stat(location.name);
  if (!stat) {
    throw new PreconditionError(`No backup at ${location.display}.`, {
      code: 'BACKUP_NOT_FOUND',
      next: ['List the available backups with `ess backup list` (same -o/--s3 flags)'],
    });
  }
  result.size = stat.size;
  const server = options.restoreTest ? await options.restoreTest() : undefined;
  if (server) result.restoreTest = { ran: true, server: server.description };
  let manifest: BackupManifest | undefined;
  let dumpsByMember = new Map<string, ManifestDatabase>();
  let doneBytes = 0;

  const onManifest = async (m: BackupManifest) => {
    if (isMigrateBundle(m)) {
      // Not a backup: nothing to judge here (exit 4), and `ess migrate import` checks a bundle itself.
      throw new PreconditionError(
        `${location.name} is an \`ess migrate export\` bundle (of the self-hosted Synapse ${m.deployment.serverName}), not an ESS backup.`,
        {
          code: 'ARCHIVE_IS_MIGRATE_BUNDLE',
          next: [`Import it (its checksums are verified first): ess migrate import ${location.display} --dry-run`],
        },
      );
    }
    manifest = m;
    result.backup = summarise(m);
    dumpsByMember = new Map((m.postgres?.databases ?? []).map((d) => [d.member, d]));
    reporter.info(`${location.name}: backup of ${m.deployment.serverName} made ${m.createdAt}; checking every member.`);
    checkNameAgainstManifest(location.name, m, warnings);
    if (server && dumpsByMember.size > 0) {
      const toolMajor = await server.restoreToolMajor();
      const dumpMajor = majorOf(m.postgres?.serverVersion);
      if (dumpMajor !== undefined && toolMajor < dumpMajor) {
        throw new PreconditionError(
          `The restore test cannot run on ${server.description}: its pg_restore is version ${toolMajor}, the dumps ` +
            `come from PostgreSQL ${m.postgres?.serverVersion}.`,
          {
            code: 'RESTORE_TEST_TOO_OLD',
            next: ['Run the restore test in the cluster (omit --restore-test-url)', 'Or use a newer PostgreSQL'],
          },
        );
      }
    }
  };

  const onMember = async (member: ArchiveMember) => {
    const mediaPath = mediaPathOf(member.name);
    if (mediaPath !== undefined) tally.addMember(mediaPath, member.size);
    else if (member.name === manifest?.media?.index) await tally.readIndex(member.stream);
    else {
      const db = dumpsByMember.get(member.name);
      if (db) await checkDatabase(db, member);
    }
    doneBytes += member.size;
    reporter.progress('verify', doneBytes, stat.size);
  };

  const checkDatabase = async (db: ManifestDatabase, member: ArchiveMember) => {
    const entry: DatabaseVerification = { database: db.name, member: member.name, restored: false };
    databases.push(entry);
    if (!server) {
      const first = await head(member.stream, 16);
      entry.dumpFormat = dumpArchiveVersion(first);
      const bad = checkDumpHeader(first);
      if (bad) problems.push({ code: 'DUMP_INVALID', message: `${member.name} ${bad}` });
      return;
    }
    const throwaway = await server.create();
    entry.throwawayDatabase = throwaway.name;
    reporter.info(`Restoring ${db.name} (${member.name}) into ${throwaway.name} on ${server.description}…`);
    try {
      try {
        await throwaway.restore(member.stream, member.size, { signal });
        entry.restored = true;
      } catch (error) {
        if (signal?.aborted) throw error;
        // A damaged member fails the restore too; the archive read reports the damage itself.
        if (isEssError(error) && DAMAGE_CODES.has(error.code)) return;
        problems.push({
          code: 'RESTORE_FAILED',
          message: `${member.name} did not restore: ${(error as Error).message.split('\n').slice(0, 6).join('\n')}`,
        });
        return;
      }
      entry.rows = compareRowCounts(db, await throwaway.countRows());
      reportRows(db.name, entry.rows);
    } finally {
      await throwaway.drop().catch((error: unknown) => {
        warnings.push(
          `Could not drop the throwaway database ${throwaway.name}: ${(error as Error).message}. Drop it by hand.`,
        );
      });
    }
  };

  const reportRows = (database: string, rows: RowComparison) => {
    if (rows.skipped) warnings.push(`${database}: row counts not compared (${rows.skipped}).`);
    for (const m of rows.mismatches) {
      problems.push({
        code: 'ROWS_MISMATCH',
        message: `${database}: table ${m.table} restored ${m.actual} rows, the manifest says ${m.expected}`,
      });
    }
    if (rows.missingTables.length > 0) {
      problems.push({
        code: 'ROWS_MISMATCH',
        message: `${database}: tables in the manifest but not in the restored dump: ${rows.missingTables.join(', ')}`,
      });
    }
    if (rows.extraTables.length > 0) {
      warnings.push(`${database}: restored tables the manifest does not count: ${rows.extraTables.join(', ')}`);
    }
  };

  let readComplete = false;
  try {
    const read = await readArchiveFrom(location.store, location.name, {
      keys: options.keys,
      signal,
      onManifest,
      onMember,
    });
    result.encrypted = read.encrypted;
    result.members = read.memberCount;
    result.contentBytes = read.contentBytes;
    readComplete = true;
  } catch (error) {
    if (signal?.aborted) throw new InterruptedError(String((signal.reason as Error)?.message ?? 'signal'));
    if (!isEssError(error) || !DAMAGE_CODES.has(error.code)) throw error;
    problems.push({ code: error.code, message: error.message });
  }
  if (readComplete && manifest) {
    for (const message of tally.problems(manifest.media)) problems.push({ code: 'MEDIA_MISMATCH', message });
  }
  if (manifest) {
    await checkParents(location, manifest, tally, result, {
      deep: options.checkParents !== false,
      keys: options.keys,
      signal,
      reporter,
    });
  }
  result.ok = problems.length === 0;
  result.durationMs = now() - started;
  return result;
}

/** The archive name encodes the server and time: a mismatch with the manifest means the file was renamed. */
function checkNameAgainstManifest(name: string, manifest: BackupManifest, warnings: string[]): void {
  const parsed = parseArchiveName(name);
  if (!parsed) {
    warnings.push(`${name} is not named like an ess backup; list and prune will not see it.`);
    return;
  }
  if (parsed.server !== fileSafeServerName(manifest.deployment.serverName)) {
    warnings.push(`The file name says server ${parsed.server}, the manifest ${manifest.deployment.serverName}.`);
  }
  const created = Date.parse(manifest.createdAt);
  if (formatArchiveTimestamp(parsed.createdAt) !== formatArchiveTimestamp(new Date(created))) {
    warnings.push(`The file name's time differs from the manifest's createdAt ${manifest.createdAt}.`);
  }
}

/**
 * Every archive an incremental backup needs (its parent and the archives its media index refers to) must exist and,
 * with `deep`, be intact (every checksum) and belong to the same server: exactly what a restore checks first.
 */
async function checkParents(
  location: ArchiveLocation,
  manifest: BackupManifest,
  tally: MediaTally,
  result: VerifyResult,
  options: { deep: boolean; keys?: ArchiveKeys; signal?: AbortSignal; reporter: Reporter },
): Promise<void> {
  const needed = new Set<string>();
  if (manifest.media?.parent) needed.add(manifest.media.parent);
  for (const name of manifest.media?.requires ?? []) needed.add(name);
  for (const name of tally.requiredArchives) needed.add(name);
  const parsed = parseArchiveName(location.name);
  if (parsed?.parentCreatedAt && !manifest.media?.incremental) {
    result.warnings.push('The file name marks an incremental backup, but its manifest does not.');
  }
  for (const name of [...needed].sort()) {
    const present = (await location.store.stat(name)) !== undefined;
    const check: ParentCheck = { name, present };
    result.parents.push(check);
    if (!present) {
      result.problems.push({
        code: 'PARENT_MISSING',
        message: `${name}, which this incremental backup needs for its media, is not at ${location.store.location}`,
      });
    } else if (options.deep) {
      const problem = await parentProblem(location, name, manifest.deployment.serverName, options);
      check.intact = problem === undefined;
      if (problem) result.problems.push({ code: 'PARENT_DAMAGED', message: problem });
    }
  }
  if (needed.size > 0 && !options.deep && result.problems.every((p) => p.code !== 'PARENT_MISSING')) {
    result.warnings.push(
      `Parents present but not read (--skip-parents): ${[...needed].join(', ')}; a restore reads them for the media.`,
    );
  }
}

/** Reads one parent archive in full; returns why it cannot serve the restore, or undefined when it is intact. */
async function parentProblem(
  location: ArchiveLocation,
  name: string,
  serverName: string,
  options: { keys?: ArchiveKeys; signal?: AbortSignal; reporter: Reporter },
): Promise<string | undefined> {
  options.reporter.info(`Reading the parent ${name} (a restore of this backup takes media from it)…`);
  let other: string | undefined;
  let done = 0;
  try {
    await readArchiveFrom(location.store, name, {
      keys: options.keys,
      signal: options.signal,
      onManifest: (m) => {
        if (m.deployment.serverName !== serverName) other = m.deployment.serverName;
      },
      onMember: (member) => {
        done += member.size;
        options.reporter.progress(`verify ${name}`, done);
      },
    });
  } catch (error) {
    if (options.signal?.aborted)
      throw new InterruptedError(String((options.signal.reason as Error)?.message ?? 'signal'));
    if (!isEssError(error) || !DAMAGE_CODES.has(error.code)) throw error;
    return `the parent ${name} is damaged, so this backup's media cannot be restored: ${error.message}`;
  }
  if (other !== undefined) return `the parent ${name} is a backup of ${other}, not ${serverName}`;
  return undefined;
}
