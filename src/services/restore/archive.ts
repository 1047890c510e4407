/**
 * The verification pass of a restore: the whole archive is streamed and checked (format version first, then every
 * member's size and SHA-256, the trailer, the media index against the media members) BEFORE anything in the
 * cluster changes. A truncated archive, a flipped byte or a wrong key therefore fails here, with nothing touched.
 *
 * On the way it keeps what is small and needed later — the Kubernetes objects, the Helm values, the roles dump — and
 * spools the media index to a local file. Database dumps and media are not kept: the apply pass reads the archive a
 * second time and streams them straight into the pods (reading from S3 twice costs bandwidth, not disk).
 */

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { MEMBERS, mediaPathOf, PREFIXES } from '../../lib/archive/layout.js';
import type { BackupManifest } from '../../lib/archive/manifest.js';
import { type MediaIndexEntry, parseMediaIndex } from '../../lib/archive/media-index.js';
import { PathSetDigest } from '../../lib/archive/path-set-digest.js';
import type { ArchiveMember } from '../../lib/archive/reader.js';
import type { Spool } from '../../lib/archive/spool.js';
import { type ArchiveKeys, readArchiveFrom } from '../../lib/archive/transfer.js';
import { isEssError, PreconditionError } from '../../lib/errors.js';
import { entryHeaders } from '../../lib/migrate/tar-write.js';
import type { Reporter } from '../../lib/output/log.js';
import type { BackupStore } from '../../lib/storage/store.js';
import { MediaTally } from '../backup/verify-checks.js';
import { isObjectMember, parseObjectMember, type RestorableObject } from './objects.js';

/** Largest non-dump, non-media member kept in memory (Kubernetes objects, values, roles). */
export const SMALL_MEMBER_LIMIT = 16 * 1024 * 1024;

/** What the verification pass found and kept. */
export interface VerifiedArchive {
  name: string;
  manifest: BackupManifest;
  /** SHA-256 of the canonical manifest JSON, to recognise the same archive in the apply pass. */
  manifestDigest: string;
  encrypted: boolean;
  storedBytes: number;
  memberCount: number;
  contentBytes: number;
  objects: RestorableObject[];
  /** `helm/values.yaml`, exact bytes. */
  values?: Buffer;
  /** `helm/release.json`, parsed. */
  helmRelease?: { chart?: string; version?: string; revision?: number };
  /** `postgres/globals.sql` (roles), exact bytes. */
  globals?: Buffer;
  /** Local copy of the media index (in the spool directory). */
  mediaIndexPath?: string;
  /** Archives whose media this one needs (incremental chain). */
  requiredArchives: string[];
}

/** Canonical digest of a manifest (key order as written). */
export function manifestDigest(manifest: BackupManifest): string {
  return createHash('sha256').update(JSON.stringify(manifest)).digest('hex');
}

function corrupt(message: string): PreconditionError {
  return new PreconditionError(`The backup archive is damaged: ${message}.`, {
    code: 'ARCHIVE_CORRUPT',
    next: ['Use another backup; run `ess backup verify` on the others to find a good one'],
  });
}

async function readSmall(stream: Readable, name: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > SMALL_MEMBER_LIMIT) throw corrupt(`${name} is larger than ${SMALL_MEMBER_LIMIT} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** Options of {@link verifyArchive}. */
export interface VerifyArchiveOptions {
  keys?: ArchiveKeys;
  signal?: AbortSignal;
  reporter: Reporter;
  /** Where the media index is spooled. */
  spool: Spool;
  /** Checks on the manifest that must fail fast (server name, release…), before the rest is read. */
  onManifest?: (manifest: BackupManifest) => void | Promise<void>;
}

/** The verification pass over one archive; see the module comment. Throws PreconditionError on any damage. */
export async function verifyArchive(
  store: BackupStore,
  name: string,
  options: VerifyArchiveOptions,
): Promise<VerifiedArchive> {
  const stat = await store.stat(name);
  if (!stat) {
    throw new PreconditionError(`No backup named ${name} at ${store.location}.`, {
      code: 'BACKUP_NOT_FOUND',
      next: ['List the available backups with `ess backup list` (same -o/--s3 flags)'],
    });
  }
  const tally = new MediaTally();
  const objects: RestorableObject[] = [];
  let manifest: BackupManifest | undefined;
  let values: Buffer | undefined;
  let helmRelease: VerifiedArchive['helmRelease'];
  let globals: Buffer | undefined;
  let mediaIndexPath: string | undefined;
  let done = 0;
  const onMember = async (member: ArchiveMember) => {
    const mediaPath = mediaPathOf(member.name);
    if (mediaPath !== undefined) tally.addMember(mediaPath, member.size);
    else if (member.name === manifest?.media?.index) {
      mediaIndexPath = (await options.spool.add(member.name, member.stream, { signal: options.signal })).path;
    } else if (isObjectMember(member.name)) {
      objects.push(parseObjectMember(member.name, await readSmall(member.stream, member.name)));
    } else if (member.name === MEMBERS.helmValues) values = await readSmall(member.stream, member.name);
    else if (member.name === MEMBERS.helmRelease) {
      try {
        helmRelease = JSON.parse((await readSmall(member.stream, member.name)).toString('utf8'));
      } catch {
        throw corrupt(`${member.name} is not JSON`);
      }
    } else if (member.name === manifest?.postgres?.globals) globals = await readSmall(member.stream, member.name);
    done += member.size;
    options.reporter.progress(`Verifying ${name}`, done);
  };
  const read = await readArchiveFrom(store, name, {
    keys: options.keys,
    signal: options.signal,
    onManifest: async (m) => {
      manifest = m;
      await options.onManifest?.(m);
    },
    onMember,
  });
  const m = read.manifest;
  if (m.media) {
    if (!mediaIndexPath) throw corrupt(`the media index ${m.media.index} is missing`);
    await tally.readIndex(createReadStream(mediaIndexPath));
  }
  const problems = tally.problems(m.media);
  if (problems.length > 0) throw corrupt(problems.join('; '));
  for (const db of m.postgres?.databases ?? []) {
    if (!db.member.startsWith(PREFIXES.postgres)) throw corrupt(`database ${db.name} is stored outside postgres/`);
  }
  return {
    name,
    manifest: m,
    manifestDigest: manifestDigest(m),
    encrypted: read.encrypted,
    storedBytes: stat.size,
    memberCount: read.memberCount,
    contentBytes: read.contentBytes,
    objects: objects.sort((a, b) => a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name)),
    values,
    helmRelease,
    globals,
    mediaIndexPath,
    requiredArchives: tally.requiredArchives,
  };
}

/** The media files one archive contributes to a restore. */
export interface MediaSource {
  /** Archive name. */
  archive: string;
  /** True for the archive being restored (all its media members are used). */
  own: boolean;
  files: number;
  bytes: number;
  /** Parent directories of the files (for tar directory entries owned by the Synapse UID). */
  dirs: string[];
  /** Exact size of the tar stream sent to the pod for these files (see pod-tar.ts). */
  tarBytes: number;
  /** Paths to take from a parent archive (undefined for the own archive: every media member). */
  paths?: Set<string>;
  digest: PathSetDigest;
}

const BLOCK = 512;

/** Size of the tar headers entryHeaders writes for a name. */
function headerBytes(name: string, type: 'file' | 'directory'): number {
  return entryHeaders({ name, size: 0, mtime: 0, type }).reduce((n, b) => n + b.length, 0);
}

/** Bytes of a tar stream of `dirs` and files (`Σ headers + data + padding`, plus the two end blocks). */
export function podTarBytes(dirs: readonly string[], fileHeaderAndData: number): number {
  return dirs.reduce((n, d) => n + headerBytes(d, 'directory'), 0) + fileHeaderAndData + 2 * BLOCK;
}

/** Header, data and padding bytes of one file entry. */
export function fileEntryBytes(path: string, size: number): number {
  return headerBytes(path, 'file') + size + ((BLOCK - (size % BLOCK)) % BLOCK);
}

/**
 * Reads the media index and works out, per archive, which files to take from it and how large the tar sent to the
 * pod will be. Holds the parent archives' paths in memory (the own archive's files are not kept).
 */
export async function planMediaSources(
  index: AsyncIterable<MediaIndexEntry> | Iterable<MediaIndexEntry>,
  ownArchive: string,
): Promise<MediaSource[]> {
  const sources = new Map<string, MediaSource & { dirSet: Set<string>; entryBytes: number }>();
  const sourceFor = (archive: string) => {
    let s = sources.get(archive);
    if (!s) {
      const own = archive === ownArchive;
      s = {
        archive,
        own,
        files: 0,
        bytes: 0,
        dirs: [],
        tarBytes: 0,
        paths: own ? undefined : new Set(),
        digest: new PathSetDigest(),
        dirSet: new Set(),
        entryBytes: 0,
      };
      sources.set(archive, s);
    }
    return s;
  };
  sourceFor(ownArchive);
  for await (const entry of index) {
    const s = sourceFor(entry.archive ?? ownArchive);
    s.files++;
    s.bytes += entry.size;
    s.entryBytes += fileEntryBytes(entry.path, entry.size);
    s.digest.add(entry.path, entry.size);
    s.paths?.add(entry.path);
    for (let i = entry.path.lastIndexOf('/'); i > 0; i = entry.path.lastIndexOf('/', i - 1)) {
      const dir = entry.path.slice(0, i);
      if (s.dirSet.has(dir)) break;
      s.dirSet.add(dir);
    }
  }
  return [...sources.values()].map(({ dirSet, entryBytes, ...s }) => {
    const dirs = [...dirSet].sort();
    return { ...s, dirs, tarBytes: s.files === 0 ? 0 : podTarBytes(dirs, entryBytes) };
  });
}

/** Reads a spooled media index. */
export function readSpooledIndex(path: string): AsyncGenerator<MediaIndexEntry> {
  return parseMediaIndex(createReadStream(path));
}

/**
 * Verification pass over the parent archives of an incremental backup: each must exist, be intact, belong to the
 * same server, and hold every media file the index attributes to it with the indexed size.
 */
export async function verifyParents(
  store: BackupStore,
  parents: readonly MediaSource[],
  options: { keys?: ArchiveKeys; signal?: AbortSignal; reporter: Reporter; serverName: string },
): Promise<void> {
  for (const parent of parents) {
    if (!(await store.stat(parent.archive))) {
      throw new PreconditionError(
        `The backup is incremental: ${parent.archive}, which holds ${parent.files} of its media files, is not at ${store.location}.`,
        {
          code: 'PARENT_MISSING',
          next: ['Copy the parent backups next to this one', 'Or restore without media: --only db,secrets'],
        },
      );
    }
    options.reporter.info(`Verifying ${parent.archive} (holds ${parent.files} media files of this backup)…`);
    const found = new PathSetDigest();
    let done = 0;
    try {
      await readArchiveFrom(store, parent.archive, {
        keys: options.keys,
        signal: options.signal,
        onManifest: (m) => {
          if (m.deployment.serverName !== options.serverName) {
            throw corrupt(`the parent ${parent.archive} is a backup of ${m.deployment.serverName}`);
          }
        },
        onMember: (member) => {
          const path = mediaPathOf(member.name);
          if (path !== undefined && parent.paths?.has(path)) found.add(path, member.size);
          done += member.size;
          options.reporter.progress(`Verifying ${parent.archive}`, done);
        },
      });
    } catch (error) {
      // The reader's message names the damaged member; say which archive holds it (the parent, not this backup).
      if (
        isEssError(error) &&
        /^(ARCHIVE_|AGE_PAYLOAD|AGE_HEADER)/.test(error.code) &&
        !error.message.includes(parent.archive)
      ) {
        throw new PreconditionError(`In the parent ${parent.archive}: ${error.message}`, {
          code: error.code,
          next: [`Verify it: ess backup verify ${parent.archive}`, 'Or restore without media: --only db,secrets'],
          cause: error,
        });
      }
      throw error;
    }
    if (!found.equals(parent.digest)) {
      throw corrupt(
        `the parent ${parent.archive} holds ${found.count} of the ${parent.digest.count} media files the index attributes to it (or with other sizes)`,
      );
    }
  }
}
