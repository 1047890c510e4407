/**
 * An in-memory store for unit tests of services: same contract as the real stores (objects appear only when
 * complete, never overwritten, failed puts leave nothing). Holds whole objects in memory: tests only.
 */
import { Readable } from 'node:stream';
import { backupExistsError, backupNotFoundError } from './errors.js';
import { assertObjectName, type BackupStore, type PutOptions, type PutResult, type StoredObject } from './store.js';

/** See the module comment. */
export class MemoryStore implements BackupStore {
  readonly location: string;
  private readonly objects = new Map<string, { data: Buffer; modifiedAt: Date }>();

  constructor(
    name = 'memory',
    private readonly now: () => Date = () => new Date(),
  ) {
    this.location = `memory://${name}`;
  }

  async check(): Promise<void> {}

  async put(name: string, body: Readable, options: PutOptions = {}): Promise<PutResult> {
    assertObjectName(name);
    if (this.objects.has(name)) {
      body.destroy();
      throw backupExistsError(`${this.location}/${name}`);
    }
    const chunks: Buffer[] = [];
    try {
      for await (const chunk of body) {
        options.signal?.throwIfAborted();
        chunks.push(Buffer.from(chunk as Uint8Array));
      }
    } catch (error) {
      if (!body.destroyed) body.destroy(error as Error);
      throw error;
    }
    if (this.objects.has(name)) throw backupExistsError(`${this.location}/${name}`);
    const data = Buffer.concat(chunks);
    this.objects.set(name, { data, modifiedAt: this.now() });
    return { name, location: `${this.location}/${name}`, bytes: data.length };
  }

  async list(): Promise<StoredObject[]> {
    return [...this.objects].map(([name, o]) => ({ name, size: o.data.length, modifiedAt: o.modifiedAt }));
  }

  async stat(name: string): Promise<StoredObject | undefined> {
    const o = this.objects.get(name);
    return o && { name, size: o.data.length, modifiedAt: o.modifiedAt };
  }

  async get(name: string, options: { range?: { start: number; end?: number } } = {}): Promise<Readable> {
    const o = this.objects.get(name);
    if (!o) throw backupNotFoundError(`${this.location}/${name}`);
    const start = options.range?.start ?? 0;
    const end = options.range?.end === undefined ? o.data.length : options.range.end + 1;
    return Readable.from([o.data.subarray(start, end)]);
  }

  async delete(name: string): Promise<void> {
    this.objects.delete(name);
  }

  /** The stored bytes of one object (tests: to corrupt or inspect them). */
  bytes(name: string): Buffer | undefined {
    return this.objects.get(name)?.data;
  }

  /** Replaces an object's bytes (tests: simulate damage at rest). */
  overwrite(name: string, data: Buffer): void {
    const o = this.objects.get(name);
    this.objects.set(name, { data, modifiedAt: o?.modifiedAt ?? this.now() });
  }
}
