/**
 * A local directory of backups. Archives are written as `<name>.partial` (mode 0600), fsynced and renamed to
 * `<name>` only when complete; a failed write removes the partial file, so a complete-looking file is always a
 * complete archive.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, stat, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { type Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  backupExistsError,
  backupNotFoundError,
  type CheckOptions,
  localFsNextSteps,
  localStoreError,
  storeWriteError,
} from './errors.js';
import {
  assertObjectName,
  type BackupStore,
  type PatchableSink,
  type PutOptions,
  type PutResult,
  type StoredObject,
} from './store.js';

/** The default local destination, relative to the working directory. */
export const DEFAULT_LOCAL_DIR = './ess-backups';
/** Suffix of files still being written. */
export const PARTIAL_SUFFIX = '.partial';

class ByteCounter extends Transform {
  bytes = 0;
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    callback(null, chunk);
  }
}

/**
 * Overwrites a blank slot (spaces) of a written file in place, then fsyncs all of it (the stream did not: one sync
 * instead of two).
 */
async function applyPatch(path: string, patch: { offset: number; bytes: Uint8Array }): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    const { size } = await handle.stat();
    if (patch.offset + patch.bytes.length > size) throw new Error(`patch beyond the end of ${path}`);
    // Only a blank slot (spaces) may be overwritten: anything else means the offsets disagree.
    const current = Buffer.alloc(patch.bytes.length);
    await handle.read(current, 0, current.length, patch.offset);
    if (!current.every((b) => b === 0x20)) throw new Error(`the bytes to patch in ${path} are not a blank slot`);
    await handle.write(patch.bytes, 0, patch.bytes.length, patch.offset);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function fsError(code: string, path: string): NodeJS.ErrnoException {
  const message = code === 'ENOTDIR' ? 'not a directory' : 'no such file or directory';
  return Object.assign(new Error(`${code}: ${message}, ${path}`), { code, path });
}

function isMissing(error: unknown): boolean {
  return (error as NodeJS.ErrnoException)?.code === 'ENOENT';
}

/** See the module comment. */
export class LocalDirStore implements BackupStore, PatchableSink {
  readonly location: string;
  readonly patchable = true as const;

  constructor(readonly dir: string = DEFAULT_LOCAL_DIR) {
    this.location = resolve(dir);
  }

  private path(name: string): string {
    assertObjectName(name);
    return join(this.location, name);
  }

  async put(name: string, body: Readable, options: PutOptions = {}): Promise<PutResult> {
    const final = this.path(name);
    let bodyError: unknown;
    body.once('error', (error) => {
      bodyError = error;
    });
    const partial = `${final}${PARTIAL_SUFFIX}`;
    let createdPartial = false;
    let fileClosed: Promise<void> | undefined;
    try {
      await mkdir(this.location, { recursive: true, mode: 0o700 });
      if (await this.exists(final)) throw backupExistsError(final);
      // 'wx': two writers of the same name must not share a partial file. flush: fsync before close.
      const file = createWriteStream(partial, {
        flags: 'wx',
        mode: 0o600,
        flush: options.patch === undefined,
        highWaterMark: 1024 * 1024,
      });
      file.once('open', () => {
        createdPartial = true;
      });
      fileClosed = new Promise((resolve) => file.once('close', () => resolve()));
      const counter = new ByteCounter();
      await pipeline(body, counter, file, { signal: options.signal });
      if (options.patch) await applyPatch(partial, await options.patch());
      if (await this.exists(final)) throw backupExistsError(final);
      await rename(partial, final);
      await this.syncDir();
      return { name, location: final, bytes: counter.bytes };
    } catch (error) {
      if (!body.destroyed) body.destroy(error as Error);
      // A stream destroyed while its file was still opening opens it (and says so) before it closes.
      await fileClosed;
      if (createdPartial) await unlink(partial).catch(() => {});
      if (bodyError !== undefined) throw bodyError;
      if ((error as { code?: string }).code === 'BACKUP_EXISTS' || options.signal?.aborted) throw error;
      throw storeWriteError(final, error, localFsNextSteps(error, this.location));
    }
  }

  /**
   * The directory must be a directory, exist or be creatable, and be writable: it is probed by creating and removing
   * a temporary file. With `create` the directory is created first; without (dry-run), the probe goes to the nearest
   * existing ancestor, so nothing is left changed.
   */
  async check(options: CheckOptions): Promise<void> {
    try {
      // The nearest existing ancestor, and the directories to create below it (not mkdir's `recursive`, which
      // loops forever on some file systems such as /proc).
      let dir = this.location;
      const missing: string[] = [];
      while (!(await this.exists(dir))) {
        if (dirname(dir) === dir) throw fsError('ENOENT', dir);
        missing.unshift(dir);
        dir = dirname(dir);
      }
      if (options.create) {
        if (missing.length > 0 && !(await stat(dir)).isDirectory()) throw fsError('ENOTDIR', dir);
        for (const path of missing) await mkdir(path, { mode: 0o700 });
        dir = this.location;
      }
      if (!(await stat(dir)).isDirectory()) throw fsError('ENOTDIR', dir);
      const probe = join(dir, `.ess-probe-${randomBytes(6).toString('hex')}`);
      const handle = await open(probe, 'wx', 0o600);
      await handle.close();
      await unlink(probe);
    } catch (error) {
      throw localStoreError('write to', this.location, error);
    }
  }

  async list(): Promise<StoredObject[]> {
    let names: string[];
    try {
      names = await readdir(this.location);
    } catch (error) {
      if (isMissing(error)) return [];
      throw localStoreError('list', this.location, error);
    }
    const objects: StoredObject[] = [];
    for (const name of names) {
      if (name.endsWith(PARTIAL_SUFFIX) || name.startsWith('.')) continue;
      const object = await this.stat(name).catch(() => undefined);
      if (object) objects.push(object);
    }
    return objects;
  }

  async stat(name: string): Promise<StoredObject | undefined> {
    try {
      const info = await stat(this.path(name));
      return info.isFile() ? { name, size: info.size, modifiedAt: info.mtime } : undefined;
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw localStoreError('read', this.location, error);
    }
  }

  async get(
    name: string,
    options: { signal?: AbortSignal; range?: { start: number; end?: number } } = {},
  ): Promise<Readable> {
    const path = this.path(name);
    if (!(await this.stat(name))) throw backupNotFoundError(path);
    return createReadStream(path, {
      start: options.range?.start,
      end: options.range?.end,
      signal: options.signal,
      highWaterMark: 1024 * 1024,
    });
  }

  async delete(name: string): Promise<void> {
    await unlink(this.path(name)).catch((error: unknown) => {
      if (!isMissing(error)) throw localStoreError('delete from', this.location, error);
    });
  }

  private async exists(path: string): Promise<boolean> {
    return stat(path).then(
      () => true,
      (error: unknown) => {
        if (isMissing(error)) return false;
        throw error;
      },
    );
  }

  private async syncDir(): Promise<void> {
    try {
      const dir = await open(this.location, 'r');
      await dir.sync().finally(() => dir.close());
    } catch {
      // Some file systems cannot fsync a directory; the rename itself is still atomic.
    }
  }
}
