import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { databaseMember, MEMBERS, secretMember } from '../../src/lib/archive/layout.js';
import type { ManifestInput } from '../../src/lib/archive/manifest.js';
import { addMediaFromTar } from '../../src/lib/archive/media.js';
import { emptyMediaSummary, encodeMediaIndex, type MediaIndexEntry } from '../../src/lib/archive/media-index.js';
import { Spool, type SpooledFile } from '../../src/lib/archive/spool.js';
import type { ArchiveWriter } from '../../src/lib/archive/writer.js';

/** True when an executable is on PATH. */
export function hasCommand(name: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** A fresh temp directory (0755 so other users, e.g. postgres, could read it); remove it with `rm`. */
export async function tempDir(prefix = 'ess-archive-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  await chmod(dir, 0o755);
  return dir;
}

export async function removeDir(dir: string | undefined): Promise<void> {
  if (dir) await rm(dir, { recursive: true, force: true });
}

export const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

/** Collects a stream into one buffer (tests only). */
export async function collect(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

/** Deterministic pseudo-random bytes (so failures reproduce). */
export function bytesOf(size: number, seed = 1): Buffer {
  const out = Buffer.alloc(size);
  let x = seed * 2654435761;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** A fake media store on disk: path → content. */
export const MEDIA_FILES: Record<string, Buffer> = {
  'local_content/ab/cd/efghijklmnop': bytesOf(200_000, 2),
  'local_content/ab/ce/qrstuvwxyz': bytesOf(70_001, 3),
  'local_thumbnails/ab/cd/efghijklmnop/32-32-image-png-crop': bytesOf(1_234, 4),
  'local_content/zz/zz/empty': Buffer.alloc(0),
};

/** Writes {@link MEDIA_FILES} (or `files`) under `root` with fixed mtimes. */
export async function makeMediaStore(root: string, files: Record<string, Buffer> = MEDIA_FILES): Promise<void> {
  for (const [path, data] of Object.entries(files)) {
    const full = join(root, path);
    await mkdir(dirname(full), { recursive: true });
    await writeFile(full, data);
    await utimes(full, 1_700_000_000, 1_700_000_000);
  }
}

/** The pod side of a media backup, for real: GNU tar writing the store to stdout. */
export function tarStream(root: string, paths?: string[]): Readable {
  const args = paths ? ['-C', root, '-cf', '-', '--', ...paths] : ['-C', root, '-cf', '-', '.'];
  const child = spawn('tar', args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return child.stdout;
}

export const BASE_MANIFEST: ManifestInput = {
  createdAt: '2025-03-01T02:00:00.000Z',
  ess: { version: '0.1.0-test' },
  deployment: { serverName: 'example.com', namespace: 'ess', release: 'ess', chartVersion: '25.2.0' },
  synapse: { version: '1.128.0', schemaVersion: 92, schemaCompatVersion: 88 },
};

/** The spooled members and manifest input of a typical backup, plus the expected content of every member. */
export interface TypicalBackup {
  spool: Spool;
  files: SpooledFile[];
  input: ManifestInput;
  contents: Map<string, Buffer>;
  mediaRoot: string;
  index: MediaIndexEntry[];
}

/** Spools dumps, a Secret and a media index the way the backup service will, from real files. */
export async function prepareTypicalBackup(dir: string, dumpSize = 3 * 1024 * 1024 + 17): Promise<TypicalBackup> {
  const spool = await Spool.create({ parentDir: dir });
  const mediaRoot = join(dir, 'media_store');
  await makeMediaStore(mediaRoot);
  const contents = new Map<string, Buffer>();
  const synapseDump = bytesOf(dumpSize, 5);
  const masDump = bytesOf(40_000, 6);
  const secret = Buffer.from('apiVersion: v1\nkind: Secret\ndata:\n  SIGNING_KEY: c2VjcmV0\n');
  const globals = Buffer.from('CREATE ROLE synapse_user;\n');
  const index: MediaIndexEntry[] = Object.entries(MEDIA_FILES).map(([path, data]) => ({
    path,
    size: data.length,
    mtime: 1_700_000_000,
  }));
  const summary = emptyMediaSummary();
  const indexBytes = await collect(encodeMediaIndex(index, summary));
  const files = [
    await spool.add(MEMBERS.mediaIndex, indexBytes),
    await spool.add(MEMBERS.postgresGlobals, globals),
    await spool.add(
      databaseMember('synapse'),
      Readable.from([synapseDump.subarray(0, 1000), synapseDump.subarray(1000)]),
    ),
    await spool.add(databaseMember('matrixauthenticationservice'), masDump),
    await spool.add(secretMember('ess-generated'), secret),
  ];
  contents.set(MEMBERS.mediaIndex, indexBytes);
  contents.set(MEMBERS.postgresGlobals, globals);
  contents.set(databaseMember('synapse'), synapseDump);
  contents.set(databaseMember('matrixauthenticationservice'), masDump);
  contents.set(secretMember('ess-generated'), secret);
  for (const [path, data] of Object.entries(MEDIA_FILES)) contents.set(`media/${path}`, data);
  const input: ManifestInput = {
    ...BASE_MANIFEST,
    postgres: {
      serverVersion: '17.5',
      globals: MEMBERS.postgresGlobals,
      databases: [
        {
          name: 'synapse',
          component: 'synapse',
          member: databaseMember('synapse'),
          sizeBytes: 9_000_000,
          tables: [
            { name: 'public.events', rows: 1200 },
            { name: 'public.users', rows: 12 },
          ],
          rowCounts: 'exact',
          excludedTableData: ['public.e2e_one_time_keys_json'],
        },
        {
          name: 'matrixauthenticationservice',
          component: 'mas',
          member: databaseMember('matrixauthenticationservice'),
          sizeBytes: 800_000,
          tables: [{ name: 'public.users', rows: 12 }],
          rowCounts: 'exact',
        },
      ],
    },
    media: {
      storePath: '/media/media_store',
      index: MEMBERS.mediaIndex,
      ...summary,
      incremental: false,
    },
  };
  return { spool, files, input, contents, mediaRoot, index };
}

/** Writes a typical backup through `writer`: manifest, spooled members, then media from a real tar stream. */
export async function produceTypicalBackup(writer: ArchiveWriter, backup: TypicalBackup): Promise<void> {
  await writer.writeManifest(backup.input, backup.files);
  for (const file of backup.files) await writer.addFile(file);
  await addMediaFromTar(writer, tarStream(backup.mediaRoot), {
    expected: new Map(backup.index.map((e) => [e.path, e.size])),
  });
}

/** Random bytes (non-deterministic, for keys and nonces in tests). */
export const random = (n: number): Buffer => randomBytes(n);
