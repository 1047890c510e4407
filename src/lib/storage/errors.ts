import { EssError, PreconditionError } from '../errors.js';

/** The destination already holds an object with this name (never overwritten). */
export function backupExistsError(location: string): PreconditionError {
  return new PreconditionError(`A backup named ${location} already exists.`, {
    code: 'BACKUP_EXISTS',
    next: ['Wait a second and retry (names carry the time to the second), or choose another destination'],
  });
}

/** The named backup is not in the store. */
export function backupNotFoundError(location: string): EssError {
  return new PreconditionError(`No backup at ${location}.`, {
    code: 'BACKUP_NOT_FOUND',
    next: ['List the available backups with `ess backup list`'],
  });
}

/** Writing the backup to its destination failed; nothing was left there. */
export function storeWriteError(location: string, cause: unknown, next: string[] = []): EssError {
  const reason = (cause as Error)?.message ?? String(cause);
  return new EssError(`Writing the backup to ${location} failed: ${reason}`, {
    code: 'STORE_WRITE_FAILED',
    cause,
    next,
  });
}

/** Checks before anything changes that a destination can take a backup (see {@link BackupSink.check}). */
export interface CheckOptions {
  /**
   * Create the directory and probe it with a temporary file (a real run). False (dry-run): change nothing, only
   * look at what exists.
   */
  create: boolean;
}

const FS_NEXT: Record<string, (path: string) => string[]> = {
  ENOENT: () => ['Create the directory (or its parent), or pass another -o/--output'],
  ENOTDIR: (path) => [`${path} (or one of its parents) is a file: pass a directory with -o/--output`],
  EEXIST: (path) => [`${path} is a file: pass a directory with -o/--output`],
  EACCES: (path) => [`Check the permissions of ${path} (ls -ld), or pass another -o/--output`],
  EPERM: (path) => [`Check the permissions of ${path} (ls -ld), or pass another -o/--output`],
  EROFS: () => ['The file system is read-only: pass a writable directory with -o/--output'],
  ENOSPC: (path) => [`Free space in ${path} or choose another destination`],
  EDQUOT: (path) => [`Free space (disk quota) in ${path} or choose another destination`],
  EISDIR: (path) => [`${path} is a directory where a backup file was expected: move it away`],
  ENAMETOOLONG: () => ['Use a shorter -o/--output path'],
  ELOOP: () => ['The path has a symbolic link loop: pass another -o/--output'],
};

/** The next steps for a file system error of a local destination, by errno code. */
export function localFsNextSteps(error: unknown, path: string): string[] {
  const code = (error as NodeJS.ErrnoException)?.code;
  return code !== undefined && code in FS_NEXT ? FS_NEXT[code]!(path) : [`Check ${path}, or pass another -o/--output`];
}

/**
 * The one mapping of file system errors of a local destination (ENOENT, ENOTDIR, EACCES, EROFS, ENOSPC…) to an
 * EssError: a precondition (exit 4) when `action` happens before anything changed — checking, listing, reading,
 * deleting for prune — with the next step for its errno code.
 */
export function localStoreError(action: string, path: string, error: unknown): EssError {
  if (error instanceof EssError) return error;
  const reason = (error as Error)?.message ?? String(error);
  return new PreconditionError(`Cannot ${action} the local backup directory ${path}: ${reason}`, {
    code: 'DESTINATION_UNUSABLE',
    cause: error,
    next: localFsNextSteps(error, path),
  });
}
