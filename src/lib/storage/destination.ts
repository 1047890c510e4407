/** Turns destination options (`-o DIR|-`, `--s3 …`) into a sink or store. */
import type { Writable } from 'node:stream';
import { EssError, ExitCode } from '../errors.js';
import { DEFAULT_LOCAL_DIR, LocalDirStore } from './local-dir.js';
import { type S3ChecksumMode, S3Store } from './s3.js';
import type { BackupSink, BackupStore } from './store.js';
import { StreamSink } from './stream-sink.js';

/** Destination options as the backup/restore commands take them. */
export interface DestinationOptions {
  /** A directory, or `-` for stdout (write only). Default ./ess-backups. */
  output?: string;
  /** `s3://bucket/prefix`; excludes `output`. */
  s3?: string;
  s3Endpoint?: string;
  s3Region?: string;
  s3ChecksumMode?: S3ChecksumMode;
  /** Where `-` writes; default process.stdout. */
  stdout?: Writable;
  /** Whether that output is a terminal (refused); default: its isTTY. */
  stdoutIsTerminal?: () => boolean;
  /** Per-request S3 debug lines. */
  debug?: (message: string) => void;
}

function usage(message: string): EssError {
  return new EssError(message, { exitCode: ExitCode.USAGE, code: 'USAGE' });
}

/** The sink for writing a backup: a local directory, S3, or stdout for `-o -`. */
export function openBackupSink(options: DestinationOptions): BackupSink {
  if (options.output === '-') {
    if (options.s3) throw usage('Use either -o/--output or --s3, not both.');
    const stdout = options.stdout ?? process.stdout;
    return new StreamSink(stdout, 'stdout', options.stdoutIsTerminal);
  }
  return openBackupStore(options);
}

/** A store that can list and read (for list, verify, prune, restore, incremental parents). Rejects `-`. */
export function openBackupStore(options: DestinationOptions): BackupStore {
  if (options.s3 && options.output !== undefined) throw usage('Use either -o/--output or --s3, not both.');
  if (options.output === '-') throw usage('stdout (-) can only be written to; name a directory or --s3.');
  if (!options.s3 && (options.s3Endpoint || options.s3Region)) {
    throw usage('--s3-endpoint and --s3-region need --s3 s3://bucket/prefix.');
  }
  if (options.s3) {
    return new S3Store({
      url: options.s3,
      endpoint: options.s3Endpoint,
      region: options.s3Region,
      checksumMode: options.s3ChecksumMode,
      debug: options.debug,
    });
  }
  return new LocalDirStore(options.output ?? DEFAULT_LOCAL_DIR);
}
