/**
 * The checks `ess backup verify` adds on top of the archive reader's checksums: media index against media members,
 * pg_dump headers, and restored row counts against the manifest. Pure, streaming, constant memory.
 */
import type { ManifestDatabase, ManifestMedia } from '../../lib/archive/manifest.js';
import { type MediaIndexEntry, parseMediaIndex } from '../../lib/archive/media-index.js';
import { PathSetDigest } from '../../lib/archive/path-set-digest.js';

/**
 * Cross-checks the media index (`media-index.jsonl`) with the `media/…` members and the manifest's media counts,
 * without holding the file list in memory: every file the index says this archive stores must be a member with that
 * size, and no other media member may exist.
 */
export class MediaTally {
  private readonly indexed = new PathSetDigest();
  private readonly members = new PathSetDigest();
  private indexFiles = 0;
  private indexBytes = 0;
  private readonly requires = new Set<string>();
  private indexSeen = false;

  /** Reads the index member's stream. */
  async readIndex(source: AsyncIterable<Uint8Array>): Promise<void> {
    this.indexSeen = true;
    for await (const entry of parseMediaIndex(source)) this.addIndexEntry(entry);
  }

  private addIndexEntry(entry: MediaIndexEntry): void {
    this.indexFiles++;
    this.indexBytes += entry.size;
    if (entry.archive === undefined) this.indexed.add(entry.path, entry.size);
    else this.requires.add(entry.archive);
  }

  /** Records one `media/…` member (its path relative to the media store). */
  addMember(path: string, size: number): void {
    this.members.add(path, size);
  }

  /** Problems found, given the manifest's media section (undefined when the backup has no media). */
  problems(media: ManifestMedia | undefined): string[] {
    if (!media) {
      return this.members.count > 0 ? [`the archive holds ${this.members.count} media files but no media section`] : [];
    }
    if (!this.indexSeen) return [`the media index ${media.index} was not read`];
    const problems: string[] = [];
    if (!this.indexed.equals(this.members)) {
      problems.push(
        `the media files in the archive (${this.members.count} files, ${this.members.bytes} bytes) do not match the ` +
          `media index (${this.indexed.count} files, ${this.indexed.bytes} bytes stored here)`,
      );
    }
    const counts: [string, number, number][] = [
      ['fileCount', media.fileCount, this.indexFiles],
      ['bytes', media.bytes, this.indexBytes],
      ['storedFileCount', media.storedFileCount, this.indexed.count],
      ['storedBytes', media.storedBytes, this.indexed.bytes],
    ];
    for (const [field, declared, actual] of counts) {
      if (declared !== actual) problems.push(`manifest media.${field} is ${declared}, the media index says ${actual}`);
    }
    const declaredRequires = [...media.requires].sort().join(', ');
    const actualRequires = [...this.requires].sort().join(', ');
    if (declaredRequires !== actualRequires) {
      problems.push(`manifest media.requires [${declaredRequires}] differs from the index's [${actualRequires}]`);
    }
    if (!media.incremental && this.requires.size > 0) {
      problems.push('a full backup must not refer to media in other archives');
    }
    return problems;
  }

  /** Archives the index refers to (the media of an incremental chain). */
  get requiredArchives(): string[] {
    return [...this.requires].sort();
  }
}

/** pg_dump custom-format magic and the format byte that follows the version and size bytes. */
const PGDMP = Buffer.from('PGDMP');
const FORMAT_CUSTOM = 1;

/**
 * Checks the first bytes of a database member: a `pg_dump -Fc` archive starts with `PGDMP`, the archive version
 * (3 bytes), int and offset sizes, then the format (1 = custom). Returns a problem, or undefined when it looks right.
 */
export function checkDumpHeader(head: Buffer): string | undefined {
  if (head.length < 11 || !head.subarray(0, 5).equals(PGDMP)) return 'is not a pg_dump archive (no PGDMP header)';
  if (head[10] !== FORMAT_CUSTOM) return `is a pg_dump archive in format ${head[10]}, not custom (-Fc)`;
  return undefined;
}

/** The pg_dump archive version of a dump header, e.g. "1.16" (PostgreSQL 17's pg_dump). */
export function dumpArchiveVersion(head: Buffer): string | undefined {
  return head.length >= 8 && head.subarray(0, 5).equals(PGDMP) ? `${head[5]}.${head[6]}` : undefined;
}

/** One table whose restored row count differs from the manifest. */
export interface RowMismatch {
  table: string;
  expected: number;
  actual: number;
}

/** Result of comparing restored row counts with the manifest. */
export interface RowComparison {
  /** Tables compared. */
  compared: number;
  mismatches: RowMismatch[];
  /** Tables the manifest lists that the restored database lacks. */
  missingTables: string[];
  /** Tables restored that the manifest does not list (not a failure). */
  extraTables: string[];
  /** Why nothing was compared (estimated counts), when that is the case. */
  skipped?: string;
}

function qualified(table: string): string {
  return table.includes('.') ? table : `public.${table}`;
}

/**
 * Compares restored counts with a manifest database entry. Tables whose data the backup excluded
 * (`excludedTableData`, e.g. e2e_one_time_keys_json) must restore empty. Estimated counts are not compared.
 */
export function compareRowCounts(db: ManifestDatabase, restored: Map<string, number>): RowComparison {
  const excluded = new Set((db.excludedTableData ?? []).map(qualified));
  const listed = new Set(db.tables.map((t) => qualified(t.name)));
  const extraTables = [...restored.keys()].filter((name) => !listed.has(name)).sort();
  const result: RowComparison = { compared: 0, mismatches: [], missingTables: [], extraTables };
  if (db.rowCounts !== 'exact') {
    result.skipped = 'the manifest holds estimated row counts only';
    return result;
  }
  for (const table of db.tables) {
    const name = qualified(table.name);
    const actual = restored.get(name);
    if (actual === undefined) {
      result.missingTables.push(name);
      continue;
    }
    const expected = excluded.has(name) ? 0 : table.rows;
    result.compared++;
    if (actual !== expected) result.mismatches.push({ table: name, expected, actual });
  }
  for (const name of excluded) {
    if (!listed.has(name) && (restored.get(name) ?? 0) !== 0) {
      result.mismatches.push({ table: name, expected: 0, actual: restored.get(name)! });
    }
  }
  return result;
}
