/**
 * The manifest (`manifest.json`, the first member) and the trailer (`checksums.sha256`, the last member) of an ess
 * backup archive: their types, validation and the format-version check.
 */
import { PreconditionError } from '../errors.js';
import { ARCHIVE_KIND, FORMAT_VERSION, isSafeMemberName, MEMBERS } from './layout.js';

/** Size and SHA-256 (lower-case hex) of one member. */
export interface MemberDigest {
  name: string;
  size: number;
  sha256: string;
}

/** A member listed in the manifest: its digest was known before the archive was written. */
export interface ManifestMember extends MemberDigest {
  /** File mode in the tar header (0o600 for members holding secrets). */
  mode: number;
}

/** Row count of one table at backup time. */
export interface TableRows {
  /** `schema.table`, e.g. `public.events`. */
  name: string;
  rows: number;
}

/** One database dump in the archive. */
export interface ManifestDatabase {
  name: string;
  component: 'synapse' | 'mas' | 'other';
  /** Member holding the `pg_dump -Fc` output. */
  member: string;
  /** pg_database_size() at backup time. */
  sizeBytes: number;
  /** Exact or estimated row counts per table (see `rowCounts`). */
  tables: TableRows[];
  /** 'exact' (count(*)) or 'estimate' (pg_class.reltuples). */
  rowCounts: 'exact' | 'estimate';
  /** Tables whose data was left out of the dump (e.g. e2e_one_time_keys_json). */
  excludedTableData?: string[];
}

/** The media part of a backup. */
export interface ManifestMedia {
  /** Media store path in the Synapse pod, e.g. /media/media_store. */
  storePath: string;
  /** Member holding the complete file list (JSON lines, see media-index.ts). */
  index: string;
  /** Files and bytes of the whole media store at backup time (including files kept in parent backups). */
  fileCount: number;
  bytes: number;
  /** Files and bytes stored in this archive. */
  storedFileCount: number;
  storedBytes: number;
  incremental: boolean;
  /** Archive name of the backup this one was made against (incremental only). */
  parent?: string;
  /** Every other archive the media index refers to: all of them are needed to restore the media. */
  requires: string[];
}

/** The contents of `manifest.json`. */
export interface BackupManifest {
  formatVersion: number;
  kind: typeof ARCHIVE_KIND;
  /** ISO 8601 UTC time the backup started. */
  createdAt: string;
  ess: { version: string };
  deployment: {
    serverName: string;
    namespace: string;
    release: string;
    chartVersion?: string;
    flavour?: 'matrix-stack' | 'operator';
  };
  postgres?: {
    /** server_version of the source PostgreSQL, e.g. "17.5". */
    serverVersion?: string;
    /** Member holding roles (pg_dumpall --globals-only), when included. */
    globals?: string;
    databases: ManifestDatabase[];
  };
  synapse?: { version?: string; schemaVersion?: number; schemaCompatVersion?: number };
  mas?: { version?: string; schemaVersion?: string };
  media?: ManifestMedia;
  /** Every member whose digest was known up front, in archive order (all but streamed media files). */
  members: ManifestMember[];
  /** Warnings recorded while the backup was made. */
  warnings?: string[];
}

/** What a caller supplies; the writer adds formatVersion, kind and members. */
export type ManifestInput = Omit<BackupManifest, 'formatVersion' | 'kind' | 'members'>;

/** The largest manifest a reader accepts (manifests are small; this bounds memory on hostile input). */
export const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;

function corrupt(what: string, problems: string[]): PreconditionError {
  return new PreconditionError(`The archive's ${what} is invalid: ${problems.slice(0, 5).join('; ')}.`, {
    code: 'ARCHIVE_CORRUPT',
    next: ['This is not a valid ess backup, or it was modified; use another backup'],
  });
}

/**
 * Checks the format version of a parsed manifest BEFORE anything else is looked at.
 * Throws PreconditionError (ARCHIVE_FORMAT_TOO_NEW) for a newer version and EssError (ARCHIVE_CORRUPT) for a
 * missing or malformed one.
 */
export function checkFormatVersion(document: unknown): number {
  const version = (document as { formatVersion?: unknown } | null)?.formatVersion;
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 1) {
    throw corrupt('manifest', ['formatVersion is missing or not a positive integer']);
  }
  if (version > FORMAT_VERSION) {
    throw new PreconditionError(
      `This backup uses archive format version ${version}; this ess reads format versions up to ${FORMAT_VERSION}.`,
      { code: 'ARCHIVE_FORMAT_TOO_NEW', next: ['Upgrade ess to a release that supports this format, then retry'] },
    );
  }
  return version;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isSha256 = (v: unknown): v is string => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v);
const isText = (v: unknown): v is string => typeof v === 'string' && v.length > 0;
const isIsoTime = (v: unknown): v is string => typeof v === 'string' && !Number.isNaN(Date.parse(v));

function checkMember(value: unknown, where: string, problems: string[]): void {
  if (!isObject(value)) {
    problems.push(`${where} is not an object`);
    return;
  }
  if (typeof value.name !== 'string' || !isSafeMemberName(value.name)) problems.push(`${where}.name is unsafe`);
  if (!isCount(value.size)) problems.push(`${where}.size is not a byte count`);
  if (!isSha256(value.sha256)) problems.push(`${where}.sha256 is not a SHA-256`);
  if (!isCount(value.mode)) problems.push(`${where}.mode is not a file mode`);
}

/**
 * Validates a parsed manifest (after {@link checkFormatVersion}). Returns it typed, or throws EssError
 * (ARCHIVE_CORRUPT) listing the first problems found.
 */
export function validateManifest(document: unknown): BackupManifest {
  checkFormatVersion(document);
  const problems: string[] = [];
  const m = document as Record<string, unknown>;
  if (m.kind !== ARCHIVE_KIND) problems.push(`kind is not "${ARCHIVE_KIND}"`);
  if (!isIsoTime(m.createdAt)) problems.push('createdAt is not a time');
  if (!isObject(m.ess) || !isText(m.ess.version)) problems.push('ess.version is missing');
  const d = m.deployment;
  if (!isObject(d) || !isText(d.serverName) || !isText(d.namespace) || !isText(d.release)) {
    problems.push('deployment.serverName, namespace and release are required');
  }
  if (!Array.isArray(m.members)) problems.push('members is not a list');
  else
    m.members.forEach((member, i) => {
      checkMember(member, `members[${i}]`, problems);
    });
  const names = new Set(Array.isArray(m.members) ? m.members.map((x) => (x as MemberDigest).name) : []);
  if (m.postgres !== undefined) {
    if (!isObject(m.postgres) || !Array.isArray(m.postgres.databases)) problems.push('postgres.databases is missing');
    else {
      m.postgres.databases.forEach((db: unknown, i: number) => {
        const where = `postgres.databases[${i}]`;
        if (!isObject(db) || !isText(db.name) || !isText(db.member) || !isCount(db.sizeBytes)) {
          problems.push(`${where} needs name, member and sizeBytes`);
          return;
        }
        if (!names.has(db.member as string)) problems.push(`${where}.member is not listed in members`);
        if (!Array.isArray(db.tables) || db.tables.some((t) => !isObject(t) || !isText(t.name) || !isCount(t.rows))) {
          problems.push(`${where}.tables must list {name, rows}`);
        }
      });
      const globals = m.postgres.globals;
      if (globals !== undefined && !names.has(globals as string)) problems.push('postgres.globals is not in members');
    }
  }
  if (m.media !== undefined) {
    const media = m.media;
    if (
      !isObject(media) ||
      !isText(media.storePath) ||
      !isCount(media.fileCount) ||
      !isCount(media.bytes) ||
      !isCount(media.storedFileCount) ||
      !isCount(media.storedBytes) ||
      typeof media.incremental !== 'boolean' ||
      !Array.isArray(media.requires) ||
      media.requires.some((r) => !isText(r))
    ) {
      problems.push('media needs storePath, fileCount, bytes, storedFileCount, storedBytes, incremental, requires');
    } else {
      if (!names.has(media.index as string)) problems.push('media.index is not listed in members');
      if (media.incremental && !isText(media.parent)) problems.push('an incremental backup needs media.parent');
    }
  }
  if (Array.isArray(m.members) && (m.members as MemberDigest[]).some((x) => x?.name === MEMBERS.manifest)) {
    problems.push('members must not list manifest.json itself');
  }
  if (problems.length > 0) throw corrupt('manifest', problems);
  return document as BackupManifest;
}

/** Parses the JSON bytes of a manifest, mapping syntax errors to ARCHIVE_CORRUPT. */
export function parseArchiveJson(bytes: Buffer, what: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (error) {
    throw corrupt(what, [`not valid JSON (${(error as Error).message})`]);
  }
}

/** Serialises a manifest exactly as it is stored (two-space indented JSON plus a newline). */
export function encodeManifest(manifest: BackupManifest): Buffer {
  return Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`);
}

/** One trailer line, in `sha256sum` format: `<hex digest>  <member name>`. */
export function encodeTrailerLine(digest: { name: string; sha256: string }): string {
  return `${digest.sha256}  ${digest.name}\n`;
}

/** Parses one trailer line (without its newline); throws EssError (ARCHIVE_CORRUPT) when malformed. */
export function parseTrailerLine(line: string): { name: string; sha256: string } {
  const match = /^([0-9a-f]{64}) {2}(.+)$/.exec(line);
  if (!match || !isSafeMemberName(match[2]!))
    throw corrupt('trailer (checksums.sha256)', [`bad line ${JSON.stringify(line.slice(0, 120))}`]);
  return { sha256: match[1]!, name: match[2]! };
}
