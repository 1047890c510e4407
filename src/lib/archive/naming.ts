/**
 * Archive file names: `ess-backup_<server>_<UTC timestamp>[_incr-<parent UTC timestamp>].tar[.age]`, e.g.
 * `ess-backup_matrix.example.com_20250301T020000Z.tar.age`. The name alone tells which server, when, whether it is
 * encrypted and which backup an incremental one depends on, so listing and retention need no downloads or keys.
 */

/** Prefix of every archive name. */
export const ARCHIVE_PREFIX = 'ess-backup';
/** Extension of a plain archive. */
export const TAR_EXTENSION = '.tar';
/** Extension added by age encryption. */
export const AGE_EXTENSION = '.age';

/** What an archive name encodes. */
export interface ArchiveName {
  /** The server name as used in file names (see {@link fileSafeServerName}). */
  server: string;
  createdAt: Date;
  /** Creation time of the parent backup (incremental backups only). */
  parentCreatedAt?: Date;
  encrypted: boolean;
}

const TIMESTAMP = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;
const NAME = /^ess-backup_([A-Za-z0-9.-]+)_(\d{8}T\d{6}Z)(?:_incr-(\d{8}T\d{6}Z))?\.tar(\.age)?$/;

/** A UTC timestamp with second precision, as used in names: `20250301T020000Z`. */
export function formatArchiveTimestamp(date: Date): string {
  return date
    .toISOString()
    .replace(/\.\d{3}Z$/, 'Z')
    .replace(/[-:]/g, '');
}

/** Parses {@link formatArchiveTimestamp} output; undefined when malformed. */
export function parseArchiveTimestamp(text: string): Date | undefined {
  const m = TIMESTAMP.exec(text);
  if (!m) return undefined;
  const date = new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!));
  return formatArchiveTimestamp(date) === text ? date : undefined;
}

/**
 * The server name as it appears in file names: every character other than letters, digits, `.` and `-` becomes `-`
 * (`example.com:8448` → `example.com-8448`). The manifest keeps the real server name.
 */
export function fileSafeServerName(serverName: string): string {
  const safe = serverName.replace(/[^A-Za-z0-9.-]/g, '-').replace(/^[.-]+/, '');
  return safe.length > 0 ? safe : 'unknown';
}

/** Builds the archive name for a backup. */
export function formatArchiveName(options: {
  serverName: string;
  createdAt: Date;
  parentCreatedAt?: Date;
  encrypted: boolean;
}): string {
  const parent = options.parentCreatedAt ? `_incr-${formatArchiveTimestamp(options.parentCreatedAt)}` : '';
  const extension = `${TAR_EXTENSION}${options.encrypted ? AGE_EXTENSION : ''}`;
  return `${ARCHIVE_PREFIX}_${fileSafeServerName(options.serverName)}_${formatArchiveTimestamp(options.createdAt)}${parent}${extension}`;
}

/** Parses an archive name; undefined for anything that is not one (other files in the destination). */
export function parseArchiveName(name: string): ArchiveName | undefined {
  const m = NAME.exec(name);
  if (!m) return undefined;
  const createdAt = parseArchiveTimestamp(m[2]!);
  const parentCreatedAt = m[3] === undefined ? undefined : parseArchiveTimestamp(m[3]);
  if (!createdAt || (m[3] !== undefined && !parentCreatedAt)) return undefined;
  return { server: m[1]!, createdAt, parentCreatedAt, encrypted: m[4] !== undefined };
}

/**
 * A backup's identity independent of encryption and parentage: `<server>_<timestamp>`. Incremental backups name
 * their parent by the same id ({@link parentBackupId}).
 */
export function backupId(name: ArchiveName): string {
  return `${name.server}_${formatArchiveTimestamp(name.createdAt)}`;
}

/** The id of an incremental backup's parent, or undefined for a full backup. */
export function parentBackupId(name: ArchiveName): string | undefined {
  return name.parentCreatedAt ? `${name.server}_${formatArchiveTimestamp(name.parentCreatedAt)}` : undefined;
}
