/**
 * Where backups go: one interface for a local directory, S3-compatible storage, stdout and memory, so backup and
 * restore services never branch on the kind of destination.
 */
import type { Readable } from 'node:stream';
import type { CheckOptions } from './errors.js';

/** One stored object (a backup archive). */
export interface StoredObject {
  /** Name relative to the store, e.g. `ess-backup_example.com_20250301T020000Z.tar`. */
  name: string;
  size: number;
  modifiedAt: Date;
}

/** Options of {@link BackupSink.put}. */
export interface PutOptions {
  signal?: AbortSignal;
  /** Expected size in bytes, if known: lets S3 choose a part size that stays under 10,000 parts. */
  sizeHint?: number;
  /**
   * Only for a {@link PatchableSink}: once `body` has ended, bytes to write over a blank slot (spaces) of what was
   * stored, applied before the object becomes visible; a slot that is not blank fails the put. The archive writer
   * uses it to put the manifest in its slot.
   */
  patch?: () => Promise<{ offset: number; bytes: Uint8Array }>;
}

/** What a completed {@link BackupSink.put} reports. */
export interface PutResult {
  name: string;
  /** Human-readable location: a file path, an s3:// URL or "stdout". */
  location: string;
  /** Bytes stored. */
  bytes: number;
}

/** Something a backup can be written to. */
export interface BackupSink {
  /** Human-readable description of the destination (a directory, s3://bucket/prefix, stdout). */
  readonly location: string;
  /**
   * Stores `body` under `name`, streaming. Contract:
   * - starts consuming `body` at once: call put() first, keep the promise, then write into the body's source;
   * - the object becomes visible under `name` only after the last byte is durably stored (rename after fsync,
   *   S3 CompleteMultipartUpload), never partially;
   * - on any failure — including `body` erroring, `signal` aborting or the store failing — nothing is left under
   *   `name` (partial files removed, multipart uploads aborted), `body` is destroyed, and the promise rejects;
   * - refuses to overwrite an existing object (EssError BACKUP_EXISTS).
   */
  put(name: string, body: Readable, options?: PutOptions): Promise<PutResult>;
  /**
   * Checks, before anything changes, that a backup can be written here (a local directory exists or can be created
   * and is writable; the S3 bucket answers; stdout is not a terminal). Throws PreconditionError with next steps.
   */
  check(options: CheckOptions): Promise<void>;
}

/** A sink that can overwrite bytes it already stored before the object becomes visible (a local file). */
export interface PatchableSink extends BackupSink {
  readonly patchable: true;
}

/** Type guard: does this sink honour {@link PutOptions.patch}? */
export function isPatchable(sink: BackupSink): sink is PatchableSink {
  return (sink as Partial<PatchableSink>).patchable === true;
}

/** A sink that can also list, read and delete what it holds (for backup list|verify|prune and restore). */
export interface BackupStore extends BackupSink {
  /** Completed objects directly in the store (not partial uploads), in no particular order. */
  list(): Promise<StoredObject[]>;
  /** One object's facts, or undefined when it does not exist. */
  stat(name: string): Promise<StoredObject | undefined>;
  /**
   * Streams one object. `range` selects bytes start…end (inclusive). Throws EssError BACKUP_NOT_FOUND when it does
   * not exist. Destroying the returned stream stops the download.
   */
  get(name: string, options?: { signal?: AbortSignal; range?: { start: number; end?: number } }): Promise<Readable>;
  /** Deletes one object; deleting a missing object is not an error. */
  delete(name: string): Promise<void>;
}

/** Type guard: can this sink also list and read? (stdout cannot.) */
export function isBackupStore(sink: BackupSink): sink is BackupStore {
  return typeof (sink as Partial<BackupStore>).list === 'function';
}

/** Checks that a name is a plain object name (no folders, no dot files): stores never write outside themselves. */
export function assertObjectName(name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name) || name.length > 255) {
    throw new Error(`invalid backup object name ${JSON.stringify(name)}`);
  }
}
