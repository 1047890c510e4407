/**
 * Step 7 of a restore: media files from the archive, re-packed on the fly into one tar stream that `tar -x` (or
 * Python's tarfile) unpacks in a pod mounting the media volume. The pod reads an exact byte count (`head -c N`), so
 * this works on exec protocol v4 as well as v5; the count is computed up front from the media index, and the sink
 * refuses to send more or fewer bytes. Every entry (files and their directories) carries the Synapse UID/GID, so a
 * root extractor (helper pod) chowns them; an extractor running as the Synapse user owns them anyway.
 */
import { PassThrough, type Readable } from 'node:stream';
import { SYNAPSE_UID } from '../../lib/deployment/components.js';
import { EssError } from '../../lib/errors.js';
import type { ExecTarget, KubeClient } from '../../lib/kube/client.js';
import { entryHeaders } from '../../lib/migrate/tar-write.js';
import { sendIntoPod } from './into-pod.js';

const BLOCK = 512;

/** Options of {@link PodTarSink}. */
export interface PodTarSinkOptions {
  /** Extractor argv reading a tar on stdin into the current directory's target (from tarExtractor). */
  extractor: string[];
  /** Directory in the pod the files go to (created when missing). */
  storePath: string;
  /** Exact size of the tar that will be sent (see archive.ts podTarBytes). */
  totalBytes: number;
  /** Directories to create first, relative to storePath. */
  dirs: readonly string[];
  signal?: AbortSignal;
  onBytes?: (sent: number) => void;
}

function mediaFailure(message: string, cause?: unknown): EssError {
  return new EssError(`Restoring the media failed: ${message}`, { code: 'MEDIA_RESTORE_FAILED', cause });
}

/** Streams files into a pod as one tar; see the module comment. Use start → addFile… → finish (or abort). */
export class PodTarSink {
  private readonly feed = new PassThrough({ highWaterMark: 1024 * 1024 });
  private readonly controller = new AbortController();
  private exec: Promise<unknown> | undefined;
  private written = 0;
  private failure: Error | undefined;
  private finishing = false;
  files = 0;
  bytes = 0;

  constructor(
    private readonly kube: KubeClient,
    private readonly target: ExecTarget,
    private readonly options: PodTarSinkOptions,
  ) {
    options.signal?.addEventListener('abort', () => this.abort(new Error('interrupted')), { once: true });
  }

  /** Starts the extractor in the pod and sends the directory entries. */
  async start(): Promise<void> {
    const { storePath, extractor, totalBytes } = this.options;
    this.exec = sendIntoPod(
      this.kube,
      this.target,
      ['sh', '-c', 'mkdir -p "$0" && cd "$0" && exec "$@"', storePath, ...extractor],
      this.feed,
      totalBytes,
      { signal: this.controller.signal, onBytes: this.options.onBytes },
    );
    // An extractor that exits (or fails) before finish() closes the feed, which wakes a write waiting for drain.
    this.exec.then(
      () => {
        if (!this.finishing) this.abort(mediaFailure('the extractor in the pod exited before the end of the tar'));
      },
      (error: unknown) => this.abort(error as Error),
    );
    const owner = { uid: SYNAPSE_UID, gid: SYNAPSE_UID };
    for (const dir of this.options.dirs) {
      for (const block of entryHeaders({ name: dir, size: 0, mtime: 0, type: 'directory', mode: 0o755, ...owner })) {
        await this.write(block);
      }
    }
  }

  /** Adds one file whose bytes come from `source` (exactly `size` of them). */
  async addFile(path: string, size: number, mtime: Date | undefined, source: Readable): Promise<void> {
    const headers = entryHeaders({
      name: path,
      size,
      mtime: Math.floor((mtime?.getTime() ?? Date.now()) / 1000),
      mode: 0o644,
      uid: SYNAPSE_UID,
      gid: SYNAPSE_UID,
    });
    for (const block of headers) await this.write(block);
    let count = 0;
    for await (const chunk of source as AsyncIterable<Buffer>) {
      count += chunk.length;
      if (count > size) throw this.abort(mediaFailure(`${path} is longer than its ${size} bytes`));
      await this.write(chunk);
    }
    if (count !== size) throw this.abort(mediaFailure(`${path} ended after ${count} of ${size} bytes`));
    const pad = (BLOCK - (size % BLOCK)) % BLOCK;
    if (pad > 0) await this.write(Buffer.alloc(pad));
    this.files++;
    this.bytes += size;
  }

  /** Ends the tar and waits for the extractor to exit successfully. */
  async finish(): Promise<void> {
    await this.write(Buffer.alloc(2 * BLOCK));
    if (this.written !== this.options.totalBytes) {
      throw this.abort(
        mediaFailure(`the tar for the pod was ${this.written} bytes, ${this.options.totalBytes} were announced`),
      );
    }
    this.finishing = true;
    this.feed.end();
    await this.exec;
  }

  /** Stops the transfer (the exec is cut, so a v4 pod does not wait for bytes that will never come). */
  abort(error: Error): Error {
    this.failure ??= error;
    this.controller.abort(error);
    this.feed.destroy();
    return this.failure;
  }

  private async write(chunk: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.written + chunk.length > this.options.totalBytes) {
      throw this.abort(mediaFailure(`more than the announced ${this.options.totalBytes} bytes of tar`));
    }
    this.written += chunk.length;
    if (this.feed.write(chunk)) return;
    await new Promise<void>((resolve, reject) => {
      const cleanup = () => {
        this.feed.off('drain', onDrain);
        this.feed.off('close', onClose);
      };
      const onDrain = () => {
        cleanup();
        resolve();
      };
      const onClose = () => {
        cleanup();
        reject(this.failure ?? mediaFailure('the stream to the pod closed'));
      };
      this.feed.on('drain', onDrain);
      this.feed.on('close', onClose);
    });
  }
}
