/**
 * Reads an ess backup archive as a stream: checks the format version before anything else, hands each member to a
 * callback as a stream, and verifies every member's size and SHA-256 while streaming. Truncation, flipped bytes,
 * missing, extra or duplicated members all fail the read with an EssError.
 */
import { createHash } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import { EssError, PreconditionError } from '../errors.js';
import { isSafeMemberName, isStreamedMember, MEMBERS } from './layout.js';
import {
  type BackupManifest,
  checkFormatVersion,
  MAX_MANIFEST_BYTES,
  type ManifestMember,
  parseArchiveJson,
  parseTrailerLine,
  validateManifest,
} from './manifest.js';
import { openExtract, type TarEntry } from './tar-extract.js';

/** One member handed to {@link ReadArchiveOptions.onMember}. */
export interface ArchiveMember {
  name: string;
  size: number;
  mode: number;
  mtime?: Date;
  /**
   * The SHA-256 the manifest declares. When set, `stream` errors (ARCHIVE_CORRUPT) instead of ending if the bytes do
   * not match, so a consumer never sees a clean end of a damaged member. When unset (streamed media), the digest is
   * checked against the trailer and a mismatch fails {@link readArchive} at the end.
   */
  expectedSha256?: string;
  /**
   * The member's bytes. Consume it, leave it or destroy it: whatever the consumer does not read is drained and still
   * verified afterwards.
   */
  stream: Readable;
}

/** Callbacks and options of {@link readArchive}. */
export interface ReadArchiveOptions {
  /**
   * Called with the validated manifest before any other member is read. Throw to stop (e.g. server name mismatch):
   * nothing else has been read or handed out at that point.
   */
  onManifest?: (manifest: BackupManifest) => void | Promise<void>;
  /** Called for each member after the manifest, except the trailer, in archive order, one at a time. */
  onMember?: (member: ArchiveMember) => void | Promise<void>;
  signal?: AbortSignal;
}

/** What a completed, fully verified read reports. */
export interface ReadArchiveResult {
  manifest: BackupManifest;
  /** Members between the manifest and the trailer. */
  memberCount: number;
  /** Bytes of member content, all members. */
  contentBytes: number;
  /** Bytes of the tar stream read. */
  archiveBytes: number;
}

function corrupt(message: string): PreconditionError {
  return new PreconditionError(`The backup archive is damaged: ${message}.`, {
    code: 'ARCHIVE_CORRUPT',
    next: ['Use another backup; run `ess backup verify` on the others to find a good one'],
  });
}

function truncated(message: string): PreconditionError {
  return new PreconditionError(`The backup archive is incomplete: ${message}.`, {
    code: 'ARCHIVE_TRUNCATED',
    next: ['The archive was cut short (failed upload or copy?); use another backup'],
  });
}

function notAnArchive(message: string): PreconditionError {
  return new PreconditionError(`This is not an ess backup archive: ${message}.`, {
    code: 'ARCHIVE_NOT_ESS',
    next: ['Point ess at a file named ess-backup_….tar or ….tar.age'],
  });
}

/** Maps tar-stream's errors to ess errors; leaves everything else alone. */
function mapTarError(error: unknown): unknown {
  if (error instanceof EssError) return error;
  const message = (error as Error)?.message ?? '';
  if (message === 'Unexpected end of data') return truncated('the tar stream ends in the middle');
  if (message.startsWith('Invalid tar header')) return corrupt(`a tar header is invalid (${message})`);
  return error;
}

async function readSmallEntry(entry: TarEntry, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of entry) {
    size += chunk.length;
    if (size > limit) throw corrupt(`${what} is larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

async function parseManifestEntry(entry: TarEntry | undefined): Promise<{ manifest: BackupManifest; sha256: string }> {
  if (!entry) throw notAnArchive('it holds no members');
  if (entry.header.name !== MEMBERS.manifest) {
    entry.resume();
    throw notAnArchive(`its first member is ${JSON.stringify(entry.header.name)}, not ${MEMBERS.manifest}`);
  }
  const bytes = await readSmallEntry(entry, MAX_MANIFEST_BYTES, MEMBERS.manifest);
  const document = parseArchiveJson(bytes, MEMBERS.manifest);
  // The version decides how to read everything else, including the rest of the manifest: check it first.
  checkFormatVersion(document);
  return { manifest: validateManifest(document), sha256: createHash('sha256').update(bytes).digest('hex') };
}

/**
 * Reads only the manifest (the first member) and stops reading the source. Checks the format version first.
 * For `backup list` and for finding an incremental backup's parent without downloading the whole archive.
 */
export async function readManifest(source: Readable, signal?: AbortSignal): Promise<BackupManifest> {
  const { extract, close } = openExtract(source, signal);
  const iterator = extract[Symbol.asyncIterator]();
  try {
    const first = await iterator.next();
    if (!first.done) first.value.on('error', () => {});
    return (await parseManifestEntry(first.done ? undefined : first.value)).manifest;
  } catch (error) {
    throw mapTarError(error);
  } finally {
    close();
  }
}

/**
 * Streams a whole archive: manifest (version checked first), every member (verified while streaming) and the
 * trailer. Resolves only when everything matched; rejects with an EssError (ARCHIVE_CORRUPT, ARCHIVE_TRUNCATED,
 * ARCHIVE_NOT_ESS, ARCHIVE_FORMAT_TOO_NEW) or with the error a callback threw.
 *
 * Declared members (dumps, Kubernetes objects, media index) are verified before their stream ends. Streamed media
 * members are verified against the trailer, so a damaged media file is reported when the read completes — after
 * its bytes were handed out. Memory: constant per member, plus ~100 bytes per streamed member until the trailer.
 */
export async function readArchive(source: Readable, options: ReadArchiveOptions = {}): Promise<ReadArchiveResult> {
  const { extract, counter, close } = openExtract(source, options.signal);
  let manifest: BackupManifest | undefined;
  let manifestSha256 = '';
  let declared = new Map<string, ManifestMember>();
  const seen = new Set<string>();
  // Digests of members not declared in the manifest, to check against the trailer.
  const streamed = new Map<string, string>();
  let trailerSeen = false;
  let trailerEnd = 0;
  let memberCount = 0;
  let contentBytes = 0;
  try {
    for await (const entry of extract) {
      entry.on('error', () => {});
      const { header } = entry;
      if (!manifest) {
        ({ manifest, sha256: manifestSha256 } = await parseManifestEntry(entry));
        declared = new Map(manifest.members.map((m) => [m.name, m]));
        await options.onManifest?.(manifest);
        continue;
      }
      if (trailerSeen) throw corrupt(`member ${JSON.stringify(header.name)} follows the trailer`);
      if (header.type !== 'file') throw corrupt(`unexpected ${header.type} entry ${JSON.stringify(header.name)}`);
      if (!isSafeMemberName(header.name)) throw corrupt(`unsafe member name ${JSON.stringify(header.name)}`);
      if (header.name === MEMBERS.trailer) {
        await verifyTrailer(entry, { manifestSha256, declared, streamed, seen });
        trailerSeen = true;
        trailerEnd = entry.offset + 512 + Math.ceil((header.size ?? 0) / 512) * 512;
        continue;
      }
      if (seen.has(header.name) || header.name === MEMBERS.manifest) throw corrupt(`duplicate member ${header.name}`);
      seen.add(header.name);
      const expected = declared.get(header.name);
      const size = header.size ?? 0;
      if (!expected && !isStreamedMember(header.name)) {
        throw corrupt(`member ${header.name} is not listed in the manifest`);
      }
      if (expected && expected.size !== size) {
        throw corrupt(`member ${header.name} is ${size} bytes, the manifest says ${expected.size}`);
      }
      const sha256 = await deliverMember(entry, size, expected?.sha256, options.onMember);
      if (!expected) streamed.set(header.name, sha256);
      memberCount++;
      contentBytes += size;
    }
    if (!manifest) throw notAnArchive('it holds no members');
    if (!trailerSeen) throw truncated(`it ends before ${MEMBERS.trailer}`);
    // The writer always ends with two zero blocks; without them the file was cut (even if no data is missing).
    if (counter.bytes < trailerEnd + 1024) throw truncated('the end-of-archive marker is missing');
    const missing = [...declared.keys()].filter((name) => !seen.has(name));
    if (missing.length > 0) throw corrupt(`members listed in the manifest are missing: ${missing.join(', ')}`);
    return { manifest, memberCount, contentBytes, archiveBytes: counter.bytes };
  } catch (error) {
    throw mapTarError(error);
  } finally {
    close();
  }
}

/** Waits until `stream` can take more data or is gone (a consumer may destroy its stream early). */
function drainedOrClosed(stream: PassThrough): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.once('drain', done);
    stream.once('close', done);
  });
}

/**
 * Streams one member to the consumer while hashing it in the pump (not in the consumer's stream), so the digest
 * covers every byte even if the consumer stops reading or destroys its stream. The consumer's stream ends only after
 * the member verified; otherwise it errors with the verification failure.
 */
async function deliverMember(
  entry: TarEntry,
  size: number,
  expectedSha256: string | undefined,
  onMember: ReadArchiveOptions['onMember'],
): Promise<string> {
  const { header } = entry;
  const out = new PassThrough({ highWaterMark: 1024 * 1024 });
  // Failures are reported through readArchive's promise; a consumer may or may not listen.
  out.on('error', () => {});
  let verificationError: EssError | undefined;
  const pumped = (async () => {
    const hash = createHash('sha256');
    let bytes = 0;
    try {
      for await (const chunk of entry) {
        hash.update(chunk);
        bytes += chunk.length;
        if (!out.destroyed && !out.write(chunk)) await drainedOrClosed(out);
      }
    } catch (error) {
      const mapped = mapTarError(error) as Error;
      out.destroy(mapped);
      throw mapped;
    }
    const sha256 = hash.digest('hex');
    if (bytes !== size) verificationError = truncated(`member ${header.name} has ${bytes} of ${size} bytes`);
    else if (expectedSha256 !== undefined && sha256 !== expectedSha256) {
      verificationError = corrupt(`member ${header.name} does not match its SHA-256 in the manifest`);
    }
    if (verificationError) {
      out.destroy(verificationError);
      throw verificationError;
    }
    out.end();
    return sha256;
  })();
  pumped.catch(() => {});
  if (onMember) {
    try {
      await onMember({
        name: header.name,
        size,
        mode: header.mode ?? 0o644,
        mtime: header.mtime,
        expectedSha256,
        stream: out,
      });
    } catch (error) {
      // A verification failure surfaces in the consumer too; report ours, it names the cause.
      if (verificationError) throw verificationError;
      out.destroy();
      throw error;
    }
  }
  // Whatever the consumer left unread is drained, and still verified.
  if (!out.destroyed && !out.readableEnded) out.resume();
  return pumped;
}

async function verifyTrailer(
  entry: TarEntry,
  context: {
    manifestSha256: string;
    declared: Map<string, ManifestMember>;
    streamed: Map<string, string>;
    seen: Set<string>;
  },
): Promise<void> {
  const listed = new Set<string>();
  let pending = '';
  const check = (line: string) => {
    const { name, sha256 } = parseTrailerLine(line);
    if (listed.has(name)) throw corrupt(`the trailer lists ${name} twice`);
    listed.add(name);
    if (name === MEMBERS.manifest) {
      if (sha256 !== context.manifestSha256) throw corrupt(`${MEMBERS.manifest} does not match its SHA-256`);
      return;
    }
    if (!context.seen.has(name)) throw corrupt(`the trailer lists ${name}, which is not in the archive`);
    const expected = context.declared.get(name)?.sha256 ?? context.streamed.get(name);
    if (sha256 !== expected) throw corrupt(`member ${name} does not match its SHA-256 in the trailer`);
  };
  for await (const chunk of entry) {
    pending += chunk.toString('utf8');
    if (pending.length > 64 * 1024 && !pending.includes('\n')) throw corrupt('the trailer has an overlong line');
    const lines = pending.split('\n');
    pending = lines.pop()!;
    for (const line of lines) check(line);
  }
  if (pending.length > 0) throw truncated('the trailer ends in the middle of a line');
  if (!listed.has(MEMBERS.manifest)) throw corrupt(`the trailer does not list ${MEMBERS.manifest}`);
  const unlisted = [...context.seen].filter((name) => !listed.has(name));
  if (unlisted.length > 0) throw corrupt(`the trailer does not list ${unlisted.slice(0, 5).join(', ')}`);
}
