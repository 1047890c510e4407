import { describe, expect, it } from 'vitest';
import { FORMAT_VERSION, isSafeMemberName, memberMode, secretMember } from '../../src/lib/archive/layout.js';
import { checkFormatVersion, parseTrailerLine, validateManifest } from '../../src/lib/archive/manifest.js';
import {
  emptyMediaSummary,
  encodeMediaIndex,
  type MediaIndexEntry,
  parseMediaIndex,
  planIncrementalMedia,
} from '../../src/lib/archive/media-index.js';
import {
  backupId,
  fileSafeServerName,
  formatArchiveName,
  parentBackupId,
  parseArchiveName,
} from '../../src/lib/archive/naming.js';
import { EssError } from '../../src/lib/errors.js';
import { parseRetentionDuration, type RetentionItem, selectRetention } from '../../src/lib/retention.js';
import { collect } from './helpers.js';

describe('archive names', () => {
  it('Given backups, when named and parsed back, then server, times, parent and encryption round-trip', () => {
    const createdAt = new Date('2025-03-02T02:03:04.567Z');
    const parentCreatedAt = new Date('2025-03-01T02:00:00Z');
    const name = formatArchiveName({ serverName: 'matrix.example.com', createdAt, parentCreatedAt, encrypted: true });
    expect(name).toBe('ess-backup_matrix.example.com_20250302T020304Z_incr-20250301T020000Z.tar.age');
    const parsed = parseArchiveName(name)!;
    expect(parsed).toEqual({
      server: 'matrix.example.com',
      createdAt: new Date('2025-03-02T02:03:04Z'),
      parentCreatedAt,
      encrypted: true,
    });
    expect(backupId(parsed)).toBe('matrix.example.com_20250302T020304Z');
    expect(parentBackupId(parsed)).toBe('matrix.example.com_20250301T020000Z');
    const full = parseArchiveName('ess-backup_example.com-8448_20250101T000000Z.tar')!;
    expect(full.encrypted).toBe(false);
    expect(parentBackupId(full)).toBeUndefined();
    expect(fileSafeServerName('example.com:8448')).toBe('example.com-8448');
    expect(fileSafeServerName('[::1]:8448')).toBe('1--8448');
    for (const bad of ['ess-backup_x_20251301T000000Z.tar', 'other.tar', 'ess-backup_x_20250101T000000Z.tar.partial']) {
      expect(parseArchiveName(bad), bad).toBeUndefined();
    }
  });
});

describe('layout and manifest rules', () => {
  it('Given member names, when checked, then traversal is refused and secrets get 0600', () => {
    for (const bad of ['', '/etc/passwd', 'a/../b', 'a//b', './a', 'a\\b', 'a\nb']) {
      expect(isSafeMemberName(bad), JSON.stringify(bad)).toBe(false);
    }
    expect(isSafeMemberName('media/local_content/ab/cd/x')).toBe(true);
    expect(memberMode(secretMember('ess-generated'))).toBe(0o600);
    expect(memberMode('manifest.json')).toBe(0o644);
    expect(() => secretMember('../x')).toThrow();
  });

  it('Given manifests, when validated, then missing fields and newer versions are reported', () => {
    expect(() => checkFormatVersion({ formatVersion: FORMAT_VERSION + 1 })).toThrow(/newer|reads format versions/);
    expect(() => checkFormatVersion({})).toThrow(EssError);
    const error = (() => {
      try {
        validateManifest({ formatVersion: 1, kind: 'ess-backup', members: [{ name: 'x', size: -1 }] });
      } catch (e) {
        return e as EssError;
      }
    })();
    expect(error?.code).toBe('ARCHIVE_CORRUPT');
    expect(error?.message).toMatch(/createdAt/);
    expect(() => parseTrailerLine(`${'a'.repeat(64)}  ../x`)).toThrow(EssError);
    expect(parseTrailerLine(`${'a'.repeat(64)}  media/x y`)).toEqual({ sha256: 'a'.repeat(64), name: 'media/x y' });
  });
});

describe('media index', () => {
  it('Given entries, when encoded and parsed, then they round-trip and the summary counts stored files', async () => {
    const entries: MediaIndexEntry[] = [
      { path: 'a/b/c', size: 10, mtime: 1.5 },
      { path: 'a/b/d', size: 20, archive: 'older.tar' },
      { path: 'a/b/e', size: 30, sha256: 'f'.repeat(64), archive: 'oldest.tar' },
    ];
    const summary = emptyMediaSummary();
    const bytes = await collect(encodeMediaIndex(entries, summary));
    expect(summary).toEqual({
      fileCount: 3,
      bytes: 60,
      storedFileCount: 1,
      storedBytes: 10,
      requires: ['older.tar', 'oldest.tar'],
    });
    const parsed: MediaIndexEntry[] = [];
    // Split mid-line and mid-character to exercise the streaming parser.
    for await (const e of parseMediaIndex([bytes.subarray(0, 7), bytes.subarray(7)])) parsed.push(e);
    expect(parsed).toEqual(entries);
    await expect(collectAll(parseMediaIndex([Buffer.from('{"path":"../x","size":1}\n')]))).rejects.toThrow(EssError);
  });

  it('Given a parent index, when planning an incremental backup, then unchanged files point at the archive holding them', async () => {
    const parent: MediaIndexEntry[] = [
      { path: 'same', size: 1, mtime: 5 },
      { path: 'older', size: 2, mtime: 5, archive: 'grandparent.tar' },
      { path: 'resized', size: 3, mtime: 5 },
      { path: 'touched', size: 4, mtime: 5 },
    ];
    const current: MediaIndexEntry[] = [
      { path: 'same', size: 1, mtime: 5 },
      { path: 'older', size: 2, mtime: 5 },
      { path: 'resized', size: 30, mtime: 5 },
      { path: 'touched', size: 4, mtime: 6 },
      { path: 'new', size: 5, mtime: 7 },
    ];
    const planned = await collectAll(planIncrementalMedia(current, { name: 'parent.tar', index: parent }));
    expect(Object.fromEntries(planned.map((e) => [e.path, e.archive ?? 'here']))).toEqual({
      same: 'parent.tar',
      older: 'grandparent.tar',
      resized: 'here',
      touched: 'here',
      new: 'here',
    });
  });
});

async function collectAll<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

describe('retention', () => {
  const day = 86_400_000;
  const now = new Date('2025-04-01T00:00:00Z');
  const at = (daysAgo: number) => new Date(now.getTime() - daysAgo * day);

  it('Given durations, when parsed, then hours, days and weeks add up and nonsense is refused', () => {
    expect(parseRetentionDuration('30d')).toBe(30 * day);
    expect(parseRetentionDuration('1w3d')).toBe(10 * day);
    expect(parseRetentionDuration('36h')).toBe(1.5 * day);
    for (const bad of ['', '30', 'd', '1m', '-1d', '1.5d'])
      expect(() => parseRetentionDuration(bad), bad).toThrow(EssError);
  });

  it('Given keep-last, when selecting, then the N newest stay and the rest go', () => {
    const items: RetentionItem[] = [1, 2, 3, 4, 5].map((d) => ({ id: `b${d}`, createdAt: at(d) }));
    const decision = selectRetention(items, { keepLast: 2 }, now);
    expect(decision.keep.map((k) => k.id)).toEqual(['b1', 'b2']);
    expect(decision.keep[0]!.reasons).toEqual(['newest', 'keep-last']);
    expect(decision.remove.map((r) => r.id)).toEqual(['b3', 'b4', 'b5']);
  });

  it('Given keep-within, when every backup is older, then the newest is still kept', () => {
    const items: RetentionItem[] = [40, 50].map((d) => ({ id: `b${d}`, createdAt: at(d) }));
    const decision = selectRetention(items, { keepWithinMs: 30 * day }, now);
    expect(decision.keep).toEqual([{ id: 'b40', reasons: ['newest'] }]);
    expect(decision.remove).toEqual([{ id: 'b50' }]);
  });

  it('Given incremental chains, when selecting, then every ancestor of a kept backup is kept', () => {
    const items: RetentionItem[] = [
      { id: 'full-10', createdAt: at(10) },
      { id: 'incr-9', createdAt: at(9), parentId: 'full-10' },
      { id: 'incr-8', createdAt: at(8), parentId: 'incr-9' },
      { id: 'full-7', createdAt: at(7) },
      { id: 'incr-1', createdAt: at(1), parentId: 'incr-8' },
      { id: 'orphan-2', createdAt: at(2), parentId: 'deleted-3' },
    ];
    const decision = selectRetention(items, { keepLast: 1, keepWithinMs: 2 * day }, now);
    expect(decision.keep.map((k) => k.id).sort()).toEqual(['full-10', 'incr-1', 'incr-8', 'incr-9', 'orphan-2']);
    expect(decision.keep.find((k) => k.id === 'full-10')!.reasons).toEqual(['parent-of-kept']);
    expect(decision.remove).toEqual([{ id: 'full-7' }]);
    expect(decision.missingParents).toEqual(['deleted-3']);
  });

  it('Given groups, when selecting, then each group keeps its own newest', () => {
    const items: RetentionItem[] = [
      { id: 'a1', createdAt: at(1), group: 'a' },
      { id: 'a2', createdAt: at(2), group: 'a' },
      { id: 'b9', createdAt: at(9), group: 'b' },
    ];
    expect(selectRetention(items, { keepLast: 1 }, now).remove).toEqual([{ id: 'a2' }]);
    expect(() => selectRetention(items, {}, now)).toThrow(/keep-last/);
    expect(() => selectRetention(items, { keepLast: 0 }, now)).toThrow(EssError);
  });
});
