/** Internal: reading tar streams with tar-stream (streamx) from Node streams, with backpressure and no stray errors. */
import type { Readable } from 'node:stream';
import tar from 'tar-stream';

/** A tar entry as tar-stream's extractor yields it. */
export type TarEntry = AsyncIterable<Buffer> & {
  header: tar.Header;
  /** Offset of the entry's header in the tar stream. */
  offset: number;
  resume(): void;
  on(event: 'error', listener: (error: Error) => void): void;
};

/** The parts of a streamx stream (tar-stream's pack/extract/entries) that ess uses. */
export interface StreamxLike {
  write(chunk: Uint8Array): boolean;
  end(): void;
  destroy(error?: Error): void;
  once(event: string, listener: (...args: unknown[]) => void): void;
  off(event: string, listener: (...args: unknown[]) => void): void;
}

/** Resolves on `event`; rejects if the stream closes or errors first. */
export function waitFor(stream: { once: StreamxLike['once']; off: StreamxLike['off'] }, event: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      stream.off(event, onEvent);
      stream.off('close', onClose);
      stream.off('error', onError);
    };
    const onEvent = () => {
      cleanup();
      resolve();
    };
    const onClose = () => {
      cleanup();
      reject(new Error('stream closed'));
    };
    const onError = (error: unknown) => {
      cleanup();
      reject(error);
    };
    stream.once(event, onEvent);
    stream.once('close', onClose);
    stream.once('error', onError);
  });
}

/**
 * Opens a tar extractor fed from `source` with backpressure, counting the bytes fed. `close()` stops both (call it
 * in `finally`); `signal` aborts both.
 */
export function openExtract(source: Readable, signal?: AbortSignal) {
  const extract = tar.extract() as unknown as StreamxLike & AsyncIterable<TarEntry>;
  // streamx emits 'error' on destroy; the failure is reported through the reading promise instead.
  (extract as unknown as { on(event: string, listener: () => void): void }).on('error', () => {});
  const counter = { bytes: 0 };
  const onAbort = () => {
    const reason = signal?.reason instanceof Error ? signal.reason : new Error('aborted');
    source.destroy(reason);
    extract.destroy(reason);
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  const pump = (async () => {
    try {
      for await (const chunk of source as AsyncIterable<Buffer>) {
        counter.bytes += chunk.length;
        if (!extract.write(chunk)) await waitFor(extract, 'drain');
      }
      extract.end();
    } catch (error) {
      extract.destroy(error as Error);
    }
  })();
  const close = () => {
    signal?.removeEventListener('abort', onAbort);
    if (!source.destroyed) source.destroy();
    extract.destroy();
  };
  return { extract, counter, pump, close };
}
