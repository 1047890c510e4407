/** A sink that writes the archive to an existing stream, for `-o -` (stdout). */
import type { Readable, Writable } from 'node:stream';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { PreconditionError } from '../errors.js';
import { storeWriteError } from './errors.js';
import type { BackupSink, PutOptions, PutResult } from './store.js';

class ByteCounter extends Transform {
  bytes = 0;
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    callback(null, chunk);
  }
}

/**
 * Writes the archive bytes to `output` (not ended afterwards, so process.stdout stays usable). There is no atomic
 * "appear when complete" on a pipe: a reader detects an incomplete archive by its missing trailer, and a failed
 * write makes ess exit non-zero.
 */
export class StreamSink implements BackupSink {
  /**
   * @param isTerminal whether `output` is a terminal (default: its `isTTY`); an archive is never written to one.
   */
  constructor(
    private readonly output: Writable,
    readonly location = 'stdout',
    private readonly isTerminal: () => boolean = () => (output as { isTTY?: boolean }).isTTY === true,
  ) {}

  /** Refuses a terminal: the archive is binary and holds Secrets (passwords) in the clear unless encrypted. */
  async check(): Promise<void> {
    if (this.isTerminal()) {
      throw new PreconditionError(
        `${this.location} is a terminal: -o - writes the binary archive (with Secrets) there.`,
        {
          code: 'STDOUT_IS_TTY',
          next: ['Redirect or pipe it: ess backup -o - > ess-backup.tar (or | ssh host "cat > ess-backup.tar")'],
        },
      );
    }
  }

  async put(name: string, body: Readable, options: PutOptions = {}): Promise<PutResult> {
    const counter = new ByteCounter();
    let bodyError: unknown;
    body.once('error', (error) => {
      bodyError = error;
    });
    try {
      await pipeline(body, counter, this.output, { end: false, signal: options.signal });
    } catch (error) {
      if (!body.destroyed) body.destroy(error as Error);
      if (bodyError !== undefined || options.signal?.aborted) throw bodyError ?? error;
      throw storeWriteError(this.location, error);
    }
    return { name, location: this.location, bytes: counter.bytes };
  }
}
