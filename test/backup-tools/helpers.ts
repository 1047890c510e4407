/**
 * Test archives for backup list|verify|prune, written with the real archive library (writeArchive, Spool, the
 * media index encoder) — the same code `ess backup` uses — so tests control exactly what goes in (including
 * deliberately wrong row counts) without needing a cluster.
 */

import { createReadStream } from 'node:fs';
import { cp, mkdtemp, open, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { databaseMember, MEMBERS, mediaMember } from '../../src/lib/archive/layout.js';
import type { ManifestDatabase, ManifestInput, TableRows } from '../../src/lib/archive/manifest.js';
import { emptyMediaSummary, encodeMediaIndex, type MediaIndexEntry } from '../../src/lib/archive/media-index.js';
import { formatArchiveName } from '../../src/lib/archive/naming.js';
import { Spool } from '../../src/lib/archive/spool.js';
import { writeArchive } from '../../src/lib/archive/transfer.js';
import type { AgeEncryptOptions } from '../../src/lib/crypto/age.js';
import type { BackupStore } from '../../src/lib/storage/store.js';
import { repoRoot } from '../helpers/cli.js';

/** One database dump to put into a test archive. */
export interface TestDump {
  database: string;
  component?: ManifestDatabase['component'];
  /** The dump bytes, or a file holding them (e.g. a real pg_dump). */
  data: Buffer | { path: string };
  tables: TableRows[];
  rowCounts?: 'exact' | 'estimate';
  excludedTableData?: string[];
}

/** What a test archive holds. */
export interface TestBackupSpec {
  serverName?: string;
  createdAt: Date;
  /** Makes the backup incremental: `inherited` media files (path → size) are held by `parent`. */
  parent?: { name: string; createdAt: Date; inherited: Record<string, number> };
  media?: Record<string, Buffer>;
  dumps?: TestDump[];
  postgresVersion?: string;
  encryption?: AgeEncryptOptions;
  /** Media index entries this archive claims to store but does not (to test index checks). */
  phantomMedia?: Record<string, number>;
}

/** Deterministic pseudo-random bytes. */
export function bytesOf(size: number, seed = 1): Buffer {
  const out = Buffer.alloc(size);
  let x = (seed * 2654435761) >>> 0;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** Bytes that look like a pg_dump custom-format archive header (archive version 1.14), then filler. */
export function fakeDump(size: number, seed = 7): Buffer {
  const header = Buffer.from([...Buffer.from('PGDMP'), 1, 14, 0, 4, 8, 1]);
  return Buffer.concat([header, bytesOf(Math.max(0, size - header.length), seed)]);
}

export const DEFAULT_MEDIA: Record<string, Buffer> = {
  'local_content/ab/cd/efghijklmnop': bytesOf(20_000, 2),
  'local_thumbnails/ab/cd/efghijklmnop/32-32-image-png-crop': bytesOf(1_234, 4),
};

export const DEFAULT_DUMPS: TestDump[] = [
  {
    database: 'synapse',
    component: 'synapse',
    data: fakeDump(150_000, 5),
    tables: [{ name: 'public.events', rows: 10 }],
    excludedTableData: ['public.e2e_one_time_keys_json'],
  },
];

/** A fresh temp dir; remove with {@link removeDir}. */
export async function tempDir(prefix = 'ess-backup-tools-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export async function removeDir(dir: string | undefined): Promise<void> {
  if (dir) await rm(dir, { recursive: true, force: true });
}

/** The archive name {@link writeTestBackup} uses for a spec. */
export function testBackupName(spec: TestBackupSpec): string {
  return formatArchiveName({
    serverName: spec.serverName ?? 'example.com',
    createdAt: spec.createdAt,
    parentCreatedAt: spec.parent?.createdAt,
    encrypted: spec.encryption !== undefined,
  });
}

/** Writes one archive to `store` with the archive library; returns its name. */
export async function writeTestBackup(store: BackupStore, spec: TestBackupSpec, workDir: string): Promise<string> {
  const name = testBackupName(spec);
  const spool = await Spool.create({ parentDir: workDir });
  try {
    const media = spec.media ?? DEFAULT_MEDIA;
    const index: MediaIndexEntry[] = [
      ...Object.entries(media).map(([path, data]) => ({ path, size: data.length, mtime: 1_700_000_000 })),
      ...Object.entries(spec.phantomMedia ?? {}).map(([path, size]) => ({ path, size, mtime: 1_700_000_000 })),
      ...Object.entries(spec.parent?.inherited ?? {}).map(([path, size]) => ({
        path,
        size,
        mtime: 1_700_000_000,
        archive: spec.parent!.name,
      })),
    ];
    const summary = emptyMediaSummary();
    const indexChunks: Buffer[] = [];
    for await (const chunk of encodeMediaIndex(index, summary)) indexChunks.push(chunk);
    const dumps = spec.dumps ?? DEFAULT_DUMPS;
    const files = [
      await spool.add(MEMBERS.mediaIndex, Buffer.concat(indexChunks)),
      await spool.add(MEMBERS.postgresGlobals, Buffer.from('CREATE ROLE synapse_user;\n')),
    ];
    const databases: ManifestDatabase[] = [];
    for (const dump of dumps) {
      const member = databaseMember(dump.database);
      const source = Buffer.isBuffer(dump.data) ? dump.data : createReadStream(dump.data.path);
      files.push(await spool.add(member, source));
      databases.push({
        name: dump.database,
        component: dump.component ?? 'other',
        member,
        sizeBytes: 1_000_000,
        tables: dump.tables,
        rowCounts: dump.rowCounts ?? 'exact',
        ...(dump.excludedTableData ? { excludedTableData: dump.excludedTableData } : {}),
      });
    }
    const input: ManifestInput = {
      createdAt: spec.createdAt.toISOString(),
      ess: { version: '0.1.0-test' },
      deployment: { serverName: spec.serverName ?? 'example.com', namespace: 'ess', release: 'ess' },
      postgres: { serverVersion: spec.postgresVersion ?? '15.18', globals: MEMBERS.postgresGlobals, databases },
      media: {
        storePath: '/media/media_store',
        index: MEMBERS.mediaIndex,
        ...summary,
        incremental: spec.parent !== undefined,
        ...(spec.parent ? { parent: spec.parent.name } : {}),
      },
    };
    await writeArchive(store, { name, encryption: spec.encryption }, async (writer) => {
      await writer.writeManifest(input, files);
      for (const file of files) await writer.addFile(file);
      for (const [path, data] of Object.entries(media)) {
        await writer.addMember({ name: mediaMember(path), size: data.length }, data);
      }
    });
    return name;
  } finally {
    await spool.cleanup();
  }
}

/** Flips one byte of a file at `offset` (negative: from the end). */
export async function flipByte(path: string, offset: number): Promise<void> {
  const size = (await stat(path)).size;
  const at = offset < 0 ? size + offset : offset;
  const handle = await open(path, 'r+');
  try {
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, at);
    byte[0] = byte[0]! ^ 0xff;
    await handle.write(byte, 0, 1, at);
  } finally {
    await handle.close();
  }
}

/** Offset of the first occurrence of `needle` in a (test-sized) file. */
export async function offsetOf(path: string, needle: Buffer): Promise<number> {
  const offset = (await readFile(path)).indexOf(needle);
  if (offset < 0) throw new Error(`${needle.toString('hex').slice(0, 16)}… not found in ${path}`);
  return offset;
}

/** Cuts a file to `size` bytes. */
export async function truncateFile(path: string, size: number): Promise<void> {
  await truncate(path, size);
}

/** Copies a file (to damage a copy and keep the original). */
export async function copyFile(from: string, to: string): Promise<void> {
  await cp(from, to);
}

export async function writeText(path: string, text: string): Promise<void> {
  await writeFile(path, text, { mode: 0o600 });
}

/** Parses the --json output of a CLI run. */
export function parseJson<T>(stdout: string): T {
  try {
    return JSON.parse(stdout) as T;
  } catch {
    throw new Error(`not JSON: ${stdout.slice(0, 500)}`);
  }
}

export { repoRoot };
