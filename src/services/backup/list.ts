/**
 * `ess backup list`: the backups at a destination, from object names and sizes only (no downloads, no keys). The
 * archive name encodes server, time, encryption and the incremental parent (see lib/archive/naming.ts).
 */
import {
  type ArchiveName,
  backupId,
  fileSafeServerName,
  parentBackupId,
  parseArchiveName,
} from '../../lib/archive/naming.js';
import type { BackupStore, StoredObject } from '../../lib/storage/store.js';

/** One backup found at the destination. */
export interface BackupEntry {
  /** Object name, e.g. `ess-backup_example.com_20250301T020000Z.tar.age`. */
  name: string;
  /** `<server>_<timestamp>`: identity used by incremental parents and retention. */
  id: string;
  /** Creation time from the name (ISO 8601 UTC). */
  createdAt: string;
  /** Server name as written in file names (characters other than letters, digits, `.`, `-` became `-`). */
  server: string;
  encrypted: boolean;
  /** Bytes stored. */
  size: number;
  /** Last modification time of the object (ISO 8601). */
  modifiedAt: string;
  incremental: boolean;
  /** Id of the parent backup (incremental backups only). */
  parentId?: string;
  /** Object name of the parent, when it is at the destination. */
  parent?: string;
  /** False when the parent of an incremental backup is not at the destination (its chain is broken). */
  parentPresent?: boolean;
}

/** What {@link listBackups} returns (the `--json` output of `ess backup list`). */
export interface ListBackupsResult {
  location: string;
  /** Newest first. */
  backups: BackupEntry[];
  /** Objects at the destination that are not ess backups (left alone). */
  ignored: string[];
  totalBytes: number;
  warnings: string[];
}

/** Options of {@link listBackups}. */
export interface ListBackupsOptions {
  /** Only backups of this server (real or file-safe spelling). */
  server?: string;
}

/** A stored object parsed as an archive name. */
export interface ParsedBackupObject {
  object: StoredObject;
  parsed: ArchiveName;
}

/**
 * Reads the store's listing and splits it into ess backups (parsed names) and other objects. Shared by list, verify
 * (parent checks) and prune.
 */
export async function scanStore(store: BackupStore): Promise<{ backups: ParsedBackupObject[]; ignored: string[] }> {
  const backups: ParsedBackupObject[] = [];
  const ignored: string[] = [];
  for (const object of await store.list()) {
    const parsed = parseArchiveName(object.name);
    if (parsed) backups.push({ object, parsed });
    else ignored.push(object.name);
  }
  backups.sort(
    (a, b) =>
      b.parsed.createdAt.getTime() - a.parsed.createdAt.getTime() ||
      (a.object.name < b.object.name ? 1 : a.object.name > b.object.name ? -1 : 0),
  );
  return { backups, ignored: ignored.sort() };
}

/** Turns scanned objects into list entries, resolving each incremental parent to an object name. */
export function toBackupEntries(backups: ParsedBackupObject[]): BackupEntry[] {
  const byId = new Map<string, string>();
  // Oldest first, so that with duplicates (plain and .age of the same backup) the first one listed wins.
  for (const { object, parsed } of [...backups].reverse()) {
    if (!byId.has(backupId(parsed))) byId.set(backupId(parsed), object.name);
  }
  return backups.map(({ object, parsed }) => {
    const parentId = parentBackupId(parsed);
    const parent = parentId === undefined ? undefined : byId.get(parentId);
    return {
      name: object.name,
      id: backupId(parsed),
      createdAt: parsed.createdAt.toISOString(),
      server: parsed.server,
      encrypted: parsed.encrypted,
      size: object.size,
      modifiedAt: object.modifiedAt.toISOString(),
      incremental: parentId !== undefined,
      ...(parentId === undefined ? {} : { parentId, parent, parentPresent: parent !== undefined }),
    };
  });
}

/** Lists the backups at `store`, newest first. Never downloads an archive. */
export async function listBackups(store: BackupStore, options: ListBackupsOptions = {}): Promise<ListBackupsResult> {
  const { backups, ignored } = await scanStore(store);
  let entries = toBackupEntries(backups);
  if (options.server !== undefined) {
    const wanted = fileSafeServerName(options.server);
    entries = entries.filter((e) => e.server === options.server || e.server === wanted);
  }
  const warnings = entries
    .filter((e) => e.incremental && !e.parentPresent)
    .map((e) => `${e.name}: its parent backup ${e.parentId} is missing; it cannot be restored with its media.`);
  return {
    location: store.location,
    backups: entries,
    ignored,
    totalBytes: entries.reduce((sum, e) => sum + e.size, 0),
    warnings,
  };
}
