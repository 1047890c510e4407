/**
 * A private local directory for members whose size must be known before they go into the archive (a tar header
 * needs the exact size up front; a pg_dump arriving over exec has none). Files are written 0600 in a 0700
 * directory, hashed while they are written, and removed by {@link Spool.cleanup}.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, statfs, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { EssError } from '../errors.js';
import { formatBytes } from '../output/log.js';
import { isSafeMemberName, memberMode } from './layout.js';
import type { FileMember } from './writer.js';

/** A spooled member: ready for {@link ArchiveWriter.addFile} and for the manifest's member list. */
export type SpooledFile = FileMember & { mode: number };

class Digest extends Transform {
  private readonly hash = createHash('sha256');
  bytes = 0;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    callback(null, chunk);
  }

  digest(): string {
    return this.hash.digest('hex');
  }
}

/**
 * Gathers small chunks into writes of up to `maxBytes`. An exec stream delivers a pg_dump as one WebSocket message
 * per pipe write (4 KiB); writing each to the file separately cost ~10 % of the dump's wall time in system calls.
 */
export class Coalesce extends Transform {
  private parts: Buffer[] = [];
  private bytes = 0;

  constructor(private readonly maxBytes = 256 * 1024) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.parts.push(chunk);
    this.bytes += chunk.length;
    if (this.bytes >= this.maxBytes) callback(null, this.gathered());
    else callback();
  }

  override _flush(callback: TransformCallback): void {
    callback(null, this.bytes > 0 ? this.gathered() : undefined);
  }

  private gathered(): Buffer {
    const out = this.parts.length === 1 ? (this.parts[0] as Buffer) : Buffer.concat(this.parts, this.bytes);
    this.parts = [];
    this.bytes = 0;
    return out;
  }
}

/** See the module comment. Create with {@link Spool.create}; always call {@link Spool.cleanup} (finally). */
export class Spool {
  private counter = 0;

  private constructor(
    /** The spool directory (0700). */
    readonly dir: string,
  ) {}

  /** Creates a new spool directory under `parentDir` (default: the OS temp directory). */
  static async create(options: { parentDir?: string } = {}): Promise<Spool> {
    return new Spool(await mkdtemp(join(options.parentDir ?? tmpdir(), 'ess-spool-')));
  }

  /**
   * Streams `source` into a spool file (mode 0600) while hashing it. On failure the partial file is removed and the
   * error rethrown (ENOSPC becomes an EssError naming the directory).
   */
  async add(
    name: string,
    source: Readable | AsyncIterable<Uint8Array> | Uint8Array,
    options: { signal?: AbortSignal } = {},
  ): Promise<SpooledFile> {
    if (!isSafeMemberName(name)) throw new Error(`unsafe member name ${JSON.stringify(name)}`);
    const path = join(this.dir, `${++this.counter}-${name.replace(/[^A-Za-z0-9._-]/g, '_')}`);
    const digest = new Digest();
    const input = source instanceof Uint8Array ? Readable.from([source]) : source;
    try {
      await pipeline(input, new Coalesce(), digest, createWriteStream(path, { flags: 'wx', mode: 0o600 }), {
        signal: options.signal,
      });
    } catch (error) {
      await unlink(path).catch(() => {});
      if ((error as NodeJS.ErrnoException).code === 'ENOSPC') {
        throw new EssError(`No space left in the spool directory ${this.dir} after ${formatBytes(digest.bytes)}.`, {
          code: 'SPOOL_FULL',
          cause: error,
          next: ['Free space there, or point the spool at a larger disk (TMPDIR or the spool-dir option)'],
        });
      }
      throw error;
    }
    return { name, path, size: digest.bytes, sha256: digest.digest(), mode: memberMode(name) };
  }

  /** Bytes available to this process in the spool's file system. */
  async freeBytes(): Promise<number> {
    const stats = await statfs(this.dir);
    return stats.bavail * stats.bsize;
  }

  /** Removes the spool directory and everything in it. Safe to call twice. */
  async cleanup(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}
