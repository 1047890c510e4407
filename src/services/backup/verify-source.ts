/**
 * Where an `<archive>` argument points: a file path, a name in the destination (`-o DIR` / `--s3`), or a full
 * `s3://bucket/prefix/name` URL. Used by `ess backup verify`; `ess restore` can use it too.
 */
import { existsSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { EssError, ExitCode } from '../../lib/errors.js';
import { type DestinationOptions, openBackupStore } from '../../lib/storage/destination.js';
import { DEFAULT_LOCAL_DIR, LocalDirStore } from '../../lib/storage/local-dir.js';
import { assertObjectName, type BackupStore } from '../../lib/storage/store.js';

/** A stored archive: the store that holds it (also used to look for its parents) and its object name. */
export interface ArchiveLocation {
  store: BackupStore;
  name: string;
  /** Human-readable location of the archive. */
  display: string;
}

function usage(message: string, next: string[] = []): EssError {
  return new EssError(message, { exitCode: ExitCode.USAGE, code: 'USAGE', next });
}

function checkedName(name: string, argument: string): string {
  try {
    assertObjectName(name);
  } catch {
    throw usage(`${JSON.stringify(argument)} does not name a backup archive.`, [
      'Pass a file path, a name listed by `ess backup list`, or s3://bucket/prefix/NAME',
    ]);
  }
  return name;
}

/**
 * Resolves `argument` (see the module comment). Rules: `s3://…/NAME` → that bucket and prefix; with `--s3` a bare
 * NAME in it; a path with a `/` → its directory; a bare NAME → `-o DIR` when given, else the current directory when
 * the file is there, else the default ./ess-backups.
 */
export function resolveArchiveLocation(argument: string, destination: DestinationOptions): ArchiveLocation {
  if (argument === '-' || argument.length === 0) {
    throw usage('Name an archive: a file path, a name in the destination, or s3://bucket/prefix/NAME.');
  }
  if (argument.startsWith('s3://')) {
    if (destination.output !== undefined) throw usage('Use either -o/--output or an s3:// archive, not both.');
    const slash = argument.lastIndexOf('/');
    const name = checkedName(argument.slice(slash + 1), argument);
    const prefix = argument.slice(0, slash);
    if (prefix === 's3:/') throw usage(`${JSON.stringify(argument)} names no bucket.`);
    const store = openBackupStore({ ...destination, s3: prefix });
    return { store, name, display: argument };
  }
  if (destination.s3) {
    if (argument.includes('/')) throw usage('With --s3, name the archive by its object name only.');
    const store = openBackupStore(destination);
    const name = checkedName(argument, argument);
    return { store, name, display: `${store.location}/${name}` };
  }
  if (destination.output === '-') throw usage('stdout (-) cannot be read; name a directory or --s3.');
  if (destination.s3Endpoint || destination.s3Region) {
    throw usage('--s3-endpoint and --s3-region need --s3 or an s3:// archive.');
  }
  let dir: string;
  if (argument.includes('/')) {
    if (destination.output !== undefined) throw usage('Give either a path or -o/--output with a bare name, not both.');
    dir = dirname(argument);
  } else if (destination.output !== undefined) dir = destination.output;
  else dir = existsSync(argument) ? '.' : DEFAULT_LOCAL_DIR;
  const store = new LocalDirStore(dir);
  const name = checkedName(basename(argument), argument);
  return { store, name, display: `${store.location}/${name}` };
}
