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
