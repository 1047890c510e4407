/**
 * The media index (`media-index.jsonl`): one JSON object per line for every file of the media store at backup
 * time, including files an incremental backup does not store itself. Each entry says which archive holds the
 * bytes, so a restore reads exactly the archives it needs; entries stream in and out, never as one document.
 */
import { EssError, PreconditionError } from '../errors.js';
import { isSafeMemberName } from './layout.js';

/** One media file. */
export interface MediaIndexEntry {
  /** Path relative to the media store, e.g. `local_content/ab/cd/efghij`. */
  path: string;
  size: number;
  /** Modification time in seconds since the epoch (may be fractional). */
  mtime?: number;
  /** SHA-256 when it was known up front (e.g. hashed in the pod); media members are verified via the trailer. */
  sha256?: string;
  /** Archive name of the backup that stores the bytes; absent when this archive stores them. */
  archive?: string;
}

/** Counts for the manifest's `media` section, computed while the index is written. */
export interface MediaIndexSummary {
  fileCount: number;
  bytes: number;
  storedFileCount: number;
  storedBytes: number;
  /** Other archives the index refers to, sorted. */
  requires: string[];
}

function badIndex(message: string): PreconditionError {
  return new PreconditionError(`The media index is damaged: ${message}.`, { code: 'ARCHIVE_CORRUPT' });
}

/** Encodes one entry as an index line (with its newline). */
export function encodeMediaIndexEntry(entry: MediaIndexEntry): string {
  const { path, size, mtime, sha256, archive } = entry;
  return `${JSON.stringify({ path, size, mtime, sha256, archive })}\n`;
}

function checkEntry(value: unknown, line: number): MediaIndexEntry {
  const e = value as Partial<MediaIndexEntry> | null;
  if (
    typeof e !== 'object' ||
    e === null ||
    typeof e.path !== 'string' ||
    !isSafeMemberName(e.path) ||
    typeof e.size !== 'number' ||
    !Number.isSafeInteger(e.size) ||
    e.size < 0 ||
    (e.mtime !== undefined && typeof e.mtime !== 'number') ||
    (e.sha256 !== undefined && !/^[0-9a-f]{64}$/.test(String(e.sha256))) ||
    (e.archive !== undefined && (typeof e.archive !== 'string' || e.archive.length === 0))
  ) {
    throw badIndex(`line ${line} is not a valid entry`);
  }
  return e as MediaIndexEntry;
}

async function* lines(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  separator: string,
): AsyncGenerator<string> {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let pending = '';
  for await (const chunk of source) {
    pending += decoder.decode(chunk, { stream: true });
    const parts = pending.split(separator);
    pending = parts.pop()!;
    yield* parts;
  }
  pending += decoder.decode();
  if (pending.length > 0) yield pending;
}

/** Parses an index stream entry by entry. Throws EssError (ARCHIVE_CORRUPT) on a malformed line. */
export async function* parseMediaIndex(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
): AsyncGenerator<MediaIndexEntry> {
  let n = 0;
  for await (const line of lines(source, '\n')) {
    n++;
    if (line.length === 0) continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw badIndex(`line ${n} is not JSON`);
    }
    yield checkEntry(value, n);
  }
}

/** Serialises entries as index lines while computing the manifest's media counts into `summary`. */
export async function* encodeMediaIndex(
  entries: AsyncIterable<MediaIndexEntry> | Iterable<MediaIndexEntry>,
  summary: MediaIndexSummary,
): AsyncGenerator<Buffer> {
  const requires = new Set(summary.requires);
  let batch = '';
  for await (const entry of entries) {
    summary.fileCount++;
    summary.bytes += entry.size;
    if (entry.archive === undefined) {
      summary.storedFileCount++;
      summary.storedBytes += entry.size;
    } else requires.add(entry.archive);
    batch += encodeMediaIndexEntry(entry);
    if (batch.length >= 64 * 1024) {
      yield Buffer.from(batch);
      batch = '';
    }
  }
  if (batch.length > 0) yield Buffer.from(batch);
  summary.requires = [...requires].sort();
}

/** An empty summary to pass to {@link encodeMediaIndex}. */
export function emptyMediaSummary(): MediaIndexSummary {
  return { fileCount: 0, bytes: 0, storedFileCount: 0, storedBytes: 0, requires: [] };
}

/**
 * The command that lists a media store in the pod, one record per file, NUL-terminated: `<size> <mtime> <path>`
 * (GNU find; the Synapse image is Debian-based). Parse its stdout with {@link parseMediaListing}.
 */
export function mediaListingCommand(storePath: string): string[] {
  return ['find', storePath, '-type', 'f', '-printf', '%s %T@ %P\\0'];
}

/** Parses the output of {@link mediaListingCommand} into index entries (without `archive`). */
export async function* parseMediaListing(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
): AsyncGenerator<MediaIndexEntry> {
  for await (const record of lines(source, '\0')) {
    if (record.length === 0) continue;
    const match = /^(\d+) (\d+(?:\.\d+)?) (.+)$/s.exec(record);
    if (!match || !isSafeMemberName(match[3]!)) {
      throw new EssError(`Unexpected media listing line ${JSON.stringify(record.slice(0, 200))}.`, {
        code: 'MEDIA_LISTING',
      });
    }
    yield { path: match[3]!, size: Number(match[1]), mtime: Number(match[2]) };
  }
}

/**
 * Incremental backups: marks every current file that the parent backup already has (same path and size, and same
 * mtime/SHA-256 where both sides know them) as held by the archive that stores its bytes; the rest are left
 * without `archive` and must be stored in the new archive. Holds the parent index in memory (~150 bytes a file).
 */
export async function* planIncrementalMedia(
  current: AsyncIterable<MediaIndexEntry> | Iterable<MediaIndexEntry>,
  parent: { name: string; index: AsyncIterable<MediaIndexEntry> | Iterable<MediaIndexEntry> },
): AsyncGenerator<MediaIndexEntry> {
  const known = new Map<string, MediaIndexEntry>();
  for await (const entry of parent.index) known.set(entry.path, entry);
  for await (const entry of current) {
    const previous = known.get(entry.path);
    const same =
      previous !== undefined &&
      previous.size === entry.size &&
      (previous.mtime === undefined || entry.mtime === undefined || previous.mtime === entry.mtime) &&
      (previous.sha256 === undefined || entry.sha256 === undefined || previous.sha256 === entry.sha256);
    if (same) yield { ...entry, sha256: entry.sha256 ?? previous.sha256, archive: previous.archive ?? parent.name };
    else yield { ...entry, archive: undefined };
  }
}

/**
 * Restore planning: which media paths to take from which other archive (the current archive's own files are its
 * media/ members). Returns archive name → set of paths, for the archives listed in `requires`.
 */
export async function mediaSourcesByArchive(
  index: AsyncIterable<MediaIndexEntry> | Iterable<MediaIndexEntry>,
): Promise<Map<string, Set<string>>> {
  const sources = new Map<string, Set<string>>();
  for await (const entry of index) {
    if (entry.archive === undefined) continue;
    const paths = sources.get(entry.archive) ?? new Set<string>();
    paths.add(entry.path);
    sources.set(entry.archive, paths);
  }
  return sources;
}
