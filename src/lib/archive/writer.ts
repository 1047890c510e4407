/**
 * Writes an ess backup archive as one tar stream, in one pass: `manifest.json` first, then the members, then the
 * `checksums.sha256` trailer. Members whose digest is known up front (spooled database dumps, Kubernetes objects, the
 * media index) are declared in the manifest and re-checked as they are written; streamed members (media files) get
 * their digest in the trailer only. See docs/backup-format.md for why.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { EssError } from '../errors.js';
import { ARCHIVE_KIND, FORMAT_VERSION, isSafeMemberName, isStreamedMember, MEMBERS, memberMode } from './layout.js';
import {
  type BackupManifest,
  encodeManifest,
  encodeTrailerLine,
  type ManifestInput,
  type ManifestMember,
  type MemberDigest,
  validateManifest,
} from './manifest.js';

/** A member whose content (size and SHA-256) is known before the archive is written, e.g. a spooled file. */
export interface DeclaredMember {
  name: string;
  size: number;
  sha256: string;
  /** Defaults to {@link memberMode}. */
  mode?: number;
}

/** A declared member whose bytes sit in a local file (see spool.ts). */
export interface FileMember extends DeclaredMember {
  path: string;
}

/** Tar header fields of a member. */
export interface MemberHeader {
  name: string;
  /** Exact size in bytes; the source must deliver exactly this many. */
  size: number;
  mode?: number;
  mtime?: Date;
}

/** What {@link ArchiveWriter.finish} reports. */
export interface ArchiveSummary {
  manifest: BackupManifest;
  /** Members written, including manifest and trailer. */
  memberCount: number;
  /** Bytes of member content written (excluding tar headers and padding). */
  contentBytes: number;
  /** Size of the tar stream. */
  archiveBytes: number;
}

/** Thrown into pending writes when the archive output was closed or failed underneath them. */
export class ArchiveOutputClosedError extends Error {
  constructor(cause?: unknown) {
    super('the archive output was closed', { cause });
    this.name = 'ArchiveOutputClosedError';
  }
}

type WriterState = 'new' | 'open' | 'finished' | 'failed';

/** Where the real manifest goes once known (see {@link ArchiveWriter.reserveManifest}). */
export interface ManifestPatch {
  /** Byte offset of the manifest's content in the tar stream. */
  offset: number;
  bytes: Buffer;
}

interface StreamxWritable {
  write(chunk: Uint8Array): boolean;
  end(): void;
  on(event: string, listener: (...args: unknown[]) => void): void;
  once(event: string, listener: (...args: unknown[]) => void): void;
  off(event: string, listener: (...args: unknown[]) => void): void;
  destroyed?: boolean;
}

function waitForDrain(stream: StreamxWritable): Promise<void> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      stream.off('drain', onDrain);
      stream.off('close', onClose);
      stream.off('error', onError);
    };
    const onDrain = () => {
      cleanup();
      resolve();
    };
    const onClose = () => {
      cleanup();
      reject(new ArchiveOutputClosedError());
    };
    const onError = (error: unknown) => {
      cleanup();
      reject(new ArchiveOutputClosedError(error));
    };
    stream.once('drain', onDrain);
    stream.once('close', onClose);
    stream.once('error', onError);
  });
}

function writerBug(message: string): EssError {
  return new EssError(`Cannot write the backup archive: ${message}.`, { code: 'ARCHIVE_WRITE' });
}

/**
 * A one-shot, single-pass archive writer. Call {@link writeManifest} once, then {@link addMember} /
 * {@link addFile} sequentially (never concurrently), then {@link finish}. Any failure poisons the writer: the
 * output stream errors, so whatever consumes it (a store upload) aborts instead of keeping a partial archive.
 *
 * Memory: constant per member; the trailer lines (~100 bytes per member) are kept until {@link finish}.
 */
export class ArchiveWriter {
  /** The tar bytes. Consume it (store upload, encryption, file) while members are being added. */
  readonly output: Readable;
  private readonly pack = tar.pack();
  private state: WriterState = 'new';
  private readonly declared = new Map<string, ManifestMember>();
  private readonly written = new Set<string>();
  private readonly trailerLines: string[] = [];
  private manifest: BackupManifest | undefined;
  private contentBytes = 0;
  private archiveBytes = 0;
  private failure: Error | undefined;
  private readonly mtime: Date;
  /** Size of the manifest slot when the manifest is written last ({@link reserveManifest}). */
  private manifestSlot: number | undefined;
  private rejectFailed!: (error: Error) => void;
  /**
   * Rejects when the writer fails (its output closed, the destination failed, abort()): lets a producer that waits
   * for something else (the dumps) stop at once. Never resolves.
   */
  readonly failed = new Promise<never>((_resolve, reject) => {
    this.rejectFailed = reject;
  });

  constructor(options: { mtime?: Date } = {}) {
    this.failed.catch(() => {});
    this.mtime = options.mtime ?? new Date();
    const pack = this.pack;
    // streamx emits 'error' when destroyed; failures are reported through the writer's promises instead.
    pack.on('error', () => {});
    const count = (n: number) => {
      this.archiveBytes += n;
    };
    async function* bytes(): AsyncGenerator<Buffer> {
      for await (const chunk of pack as AsyncIterable<Buffer>) {
        count(chunk.length);
        yield chunk;
      }
    }
    this.output = Readable.from(bytes(), { objectMode: false, highWaterMark: 1024 * 1024 });
    this.output.on('close', () => {
      if (this.state !== 'finished' && this.state !== 'failed') this.fail(new ArchiveOutputClosedError());
    });
  }

  /**
   * Writes `manifest.json`. `members` are the declared members, in the order they will be written; the manifest
   * lists them with their digests. Returns the complete manifest.
   */
  async writeManifest(input: ManifestInput, members: DeclaredMember[]): Promise<BackupManifest> {
    if (this.state !== 'new') throw writerBug('the manifest must be written first and only once');
    for (const member of members) {
      if (!isSafeMemberName(member.name) || member.name === MEMBERS.manifest || member.name === MEMBERS.trailer) {
        throw writerBug(`bad member name ${JSON.stringify(member.name)}`);
      }
      if (this.declared.has(member.name)) throw writerBug(`member ${member.name} declared twice`);
      this.declared.set(member.name, {
        name: member.name,
        size: member.size,
        sha256: member.sha256,
        mode: member.mode ?? memberMode(member.name),
      });
    }
    const manifest: BackupManifest = {
      formatVersion: FORMAT_VERSION,
      kind: ARCHIVE_KIND,
      ...input,
      members: [...this.declared.values()],
    };
    validateManifest(manifest);
    this.state = 'open';
    const bytes = encodeManifest(manifest);
    await this.writeEntry({ name: MEMBERS.manifest, size: bytes.length, mode: memberMode(MEMBERS.manifest) }, bytes);
    this.manifest = manifest;
    return manifest;
  }

  /**
   * Starts an archive whose manifest is known only at the end, for outputs that can overwrite bytes they already
   * stored (a local file): `manifest.json` is written first as `slotBytes` of spaces, members are declared as they
   * are added (every member but media files), and {@link finishWithManifest} returns the bytes to put at the slot —
   * the manifest JSON padded with spaces (valid JSON; the trailer's digest covers the padded bytes).
   */
  async reserveManifest(slotBytes: number): Promise<void> {
    if (this.state !== 'new') throw writerBug('the manifest must be written first and only once');
    this.state = 'open';
    this.manifestSlot = slotBytes;
    const name = MEMBERS.manifest;
    await this.writeEntry({ name, size: slotBytes, mode: memberMode(name) }, Buffer.alloc(slotBytes, 0x20));
    // Its digest is known only with the content: finishWithManifest() puts the real line first.
    this.trailerLines.shift();
  }

  /**
   * Adds one member from a stream, buffer or async iterable of exactly `header.size` bytes. Declared members are
   * checked against their declared size and SHA-256; undeclared members must be streamed ones (media/…).
   * Resolves with the member's digest once its bytes are in the tar stream.
   */
  async addMember(
    header: MemberHeader,
    source: Readable | AsyncIterable<Uint8Array> | Uint8Array,
    /** For a member declared late (manifest written last): the digest it must have, e.g. from the spool. */
    expectedSha256?: string,
  ): Promise<MemberDigest> {
    if (this.state !== 'open') throw this.failure ?? writerBug('write the manifest first; finish() ends the archive');
    const { name } = header;
    if (!isSafeMemberName(name) || name === MEMBERS.manifest || name === MEMBERS.trailer) {
      throw this.fail(writerBug(`bad member name ${JSON.stringify(name)}`));
    }
    if (this.written.has(name)) throw this.fail(writerBug(`member ${name} written twice`));
    const declared = this.declared.get(name);
    const late = this.manifestSlot !== undefined && !isStreamedMember(name);
    if (!declared && !late && !isStreamedMember(name)) {
      throw this.fail(writerBug(`member ${name} is not in the manifest`));
    }
    if (declared && declared.size !== header.size) {
      throw this.fail(writerBug(`member ${name} is ${header.size} bytes, the manifest says ${declared.size}`));
    }
    const digest = await this.writeEntry(
      { ...header, mode: header.mode ?? declared?.mode ?? memberMode(name) },
      source,
      declared?.sha256 ?? expectedSha256,
    );
    this.written.add(name);
    if (late) {
      this.declared.set(name, {
        name,
        size: digest.size,
        sha256: digest.sha256,
        mode: header.mode ?? memberMode(name),
      });
    }
    return digest;
  }

  /** Adds a declared member from a local file (a spooled dump). */
  async addFile(member: FileMember): Promise<MemberDigest> {
    return this.addMember(
      { name: member.name, size: member.size, mode: member.mode },
      createReadStream(member.path, { highWaterMark: 1024 * 1024 }),
    );
  }

  /** Names of declared members not written yet. */
  pendingMembers(): string[] {
    return [...this.declared.keys()].filter((name) => !this.written.has(name));
  }

  /**
   * Writes the trailer and ends the tar stream. Fails if a declared member was not written. Resolves when the last
   * byte has been handed to the output (the consumer may still be uploading it).
   */
  async finish(): Promise<ArchiveSummary> {
    if (this.state !== 'open') throw this.failure ?? writerBug('finish() called before the manifest or twice');
    const missing = this.pendingMembers();
    if (missing.length > 0) throw this.fail(writerBug(`declared members were not written: ${missing.join(', ')}`));
    const trailer = Buffer.from(this.trailerLines.join(''));
    await this.writeEntry({ name: MEMBERS.trailer, size: trailer.length, mode: memberMode(MEMBERS.trailer) }, trailer);
    this.state = 'finished';
    const ended = new Promise<void>((resolve, reject) => {
      if (this.output.readableEnded) return resolve();
      this.output.once('end', resolve);
      this.output.once('close', () => (this.output.readableEnded ? resolve() : reject(new ArchiveOutputClosedError())));
    });
    this.pack.finalize();
    await ended;
    return {
      manifest: this.manifest!,
      memberCount: this.trailerLines.length,
      contentBytes: this.contentBytes,
      archiveBytes: this.archiveBytes,
    };
  }

  /**
   * Ends an archive started with {@link reserveManifest}: builds the manifest from `input` and the members written,
   * writes the trailer and ends the tar stream. Returns the summary and the patch for the manifest slot. When the
   * manifest does not fit, its warnings are replaced by one line saying how many there were; if it still does not
   * fit, this fails (the caller sizes the slot from a draft of the same manifest, so that is a bug).
   */
  async finishWithManifest(input: ManifestInput): Promise<ArchiveSummary & { patch: ManifestPatch }> {
    const slot = this.manifestSlot;
    if (this.state !== 'open' || slot === undefined) {
      throw this.failure ?? writerBug('finishWithManifest() needs reserveManifest() first');
    }
    const encode = (warnings: string[] | undefined) => {
      const manifest: BackupManifest = {
        formatVersion: FORMAT_VERSION,
        kind: ARCHIVE_KIND,
        ...input,
        ...(warnings ? { warnings } : {}),
        members: [...this.declared.values()],
      };
      validateManifest(manifest);
      return { manifest, bytes: encodeManifest(manifest) };
    };
    let encoded = encode(input.warnings);
    if (encoded.bytes.length > slot && input.warnings?.length) {
      encoded = encode([`${input.warnings.length} warnings did not fit here: see the output of the backup run.`]);
    }
    if (encoded.bytes.length > slot) {
      throw this.fail(writerBug(`the manifest (${encoded.bytes.length} bytes) exceeds its ${slot}-byte slot`));
    }
    this.manifest = encoded.manifest;
    const bytes = encoded.bytes;
    const padded = Buffer.alloc(slot, 0x20);
    bytes.copy(padded);
    this.trailerLines.unshift(
      encodeTrailerLine({ name: MEMBERS.manifest, sha256: createHash('sha256').update(padded).digest('hex') }),
    );
    const summary = await this.finish();
    return { ...summary, patch: { offset: 512, bytes: padded } };
  }

  /** True when the writer failed because its output was closed underneath it (its consumer failed). */
  get closedByOutput(): boolean {
    return this.failure instanceof ArchiveOutputClosedError;
  }

  /** Fails the archive: the output stream errors with `error`. Safe to call more than once. */
  abort(error: Error): void {
    this.fail(error);
  }

  private fail(error: Error): Error {
    if (this.state === 'failed') return this.failure!;
    this.state = 'failed';
    this.failure = error;
    this.pack.destroy(error);
    this.rejectFailed(error);
    return error;
  }

  private async writeEntry(
    header: MemberHeader,
    source: Readable | AsyncIterable<Uint8Array> | Uint8Array,
    expectedSha256?: string,
  ): Promise<MemberDigest> {
    const hash = createHash('sha256');
    let count = 0;
    let entryError: Error | null | undefined;
    let entryDone!: (error?: Error | null) => void;
    const finished = new Promise<void>((resolve, reject) => {
      entryDone = (error) => (error ? reject(error) : resolve());
    });
    finished.catch(() => {});
    let entry: StreamxWritable;
    try {
      entry = this.pack.entry(
        { name: header.name, size: header.size, mode: header.mode, mtime: header.mtime ?? this.mtime, type: 'file' },
        (error) => {
          entryError = error;
          entryDone(error);
        },
      ) as unknown as StreamxWritable;
      entry.on('error', () => {});
    } catch (error) {
      throw this.fail(new ArchiveOutputClosedError(error));
    }
    try {
      const chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array> =
        source instanceof Uint8Array ? [source] : (source as AsyncIterable<Uint8Array>);
      for await (const chunk of chunks) {
        if (this.state === 'failed') throw this.failure!;
        count += chunk.length;
        if (count > header.size)
          throw writerBug(`member ${header.name} is longer than its declared ${header.size} bytes`);
        hash.update(chunk);
        if (!entry.write(chunk)) await waitForDrain(entry);
      }
      if (count !== header.size) {
        throw writerBug(`member ${header.name} ended after ${count} of ${header.size} bytes`);
      }
      const sha256 = hash.digest('hex');
      if (expectedSha256 !== undefined && sha256 !== expectedSha256) {
        throw writerBug(`member ${header.name} changed after it was spooled (SHA-256 mismatch)`);
      }
      entry.end();
      await finished;
      if (entryError) throw entryError;
      this.contentBytes += count;
      this.trailerLines.push(encodeTrailerLine({ name: header.name, sha256 }));
      return { name: header.name, size: count, sha256 };
    } catch (error) {
      throw this.fail(this.failure ?? (error as Error));
    }
  }
}

/**
 * Bytes to reserve for a manifest written last ({@link ArchiveWriter.reserveManifest}): a draft of it with the final
 * member names, sizes and digests at their longest, plus `warningRoom` for warnings added later, rounded up to
 * 4 KiB. The slot ends up as spaces after the JSON; 64 KiB is nothing next to a database dump.
 */
export function manifestSlotBytes(draft: ManifestInput, memberNames: string[], warningRoom = 64 * 1024): number {
  const longest: ManifestMember[] = memberNames.map((name) => ({
    name,
    size: Number.MAX_SAFE_INTEGER,
    sha256: 'f'.repeat(64),
    mode: 0o644,
  }));
  const bytes = encodeManifest({ formatVersion: FORMAT_VERSION, kind: ARCHIVE_KIND, ...draft, members: longest });
  return Math.ceil((bytes.length + warningRoom) / 4096) * 4096;
}
