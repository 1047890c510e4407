/**
 * Ties archive, encryption and storage together: write a whole backup archive to a sink in one streaming pass
 * (optionally age-encrypted), and open a stored archive for reading (decrypting when needed).
 */
import { pipeline, Readable } from 'node:stream';
import {
  AGE_MAGIC,
  type AgeDecryptKeys,
  type AgeEncryptOptions,
  createAgeDecryptStream,
  createAgeEncryptStream,
  looksLikeAge,
  validateAgeEncryptOptions,
} from '../crypto/age.js';
import { PreconditionError } from '../errors.js';
import type { BackupSink, BackupStore, PatchableSink, PutOptions, PutResult } from '../storage/store.js';
import type { BackupManifest, ManifestInput } from './manifest.js';
import { type ReadArchiveOptions, type ReadArchiveResult, readArchive, readManifest } from './reader.js';
import { ArchiveOutputClosedError, type ArchiveSummary, ArchiveWriter, type ManifestPatch } from './writer.js';

/** Options of {@link writeArchive}. */
export interface WriteArchiveOptions {
  /** Object name, from naming.ts (with `.age` when encrypting). */
  name: string;
  /** Encrypt with age to these recipients or this passphrase. */
  encryption?: AgeEncryptOptions;
  signal?: AbortSignal;
  /** Expected archive size (S3 part sizing). */
  sizeHint?: number;
  /** mtime of generated members; default now. */
  mtime?: Date;
}

/** What {@link writeArchive} reports. */
export interface WriteArchiveResult extends PutResult {
  encrypted: boolean;
  summary: ArchiveSummary;
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('aborted');
}

/**
 * Writes one archive to `sink`: starts the upload, runs `produce` (which writes the manifest and members through
 * the writer), writes the trailer and waits until the sink has stored everything. If anything fails — `produce`,
 * the sink or the signal — the writer is aborted, the sink discards what it got (no partial archive stays under
 * `name`), and the first cause is rethrown.
 *
 * @example
 * await writeArchive(store, { name }, async (w) => {
 *   await w.writeManifest(manifestInput, spooled);
 *   for (const file of spooled) await w.addFile(file);
 *   await addMediaFromTar(w, podTar);
 * });
 */
export async function writeArchive(
  sink: BackupSink,
  options: WriteArchiveOptions,
  produce: (writer: ArchiveWriter) => Promise<void>,
): Promise<WriteArchiveResult> {
  if (options.encryption) validateAgeEncryptOptions(options.encryption);
  return runArchive(sink, options, undefined, async (writer) => {
    await produce(writer);
    return writer.finish();
  });
}

/**
 * Like {@link writeArchive}, for a sink that can patch what it stored (a local directory): the manifest is written
 * last, into a slot of `slotBytes` reserved as the first member (see {@link ArchiveWriter.reserveManifest}), so
 * members can be written before their digests are all known — e.g. the media while the database dumps still run.
 * `produce` writes every member and returns the manifest. No encryption: age output cannot be patched in place.
 */
export async function writeArchiveLateManifest(
  sink: PatchableSink,
  options: Omit<WriteArchiveOptions, 'encryption'> & { slotBytes: number },
  produce: (writer: ArchiveWriter) => Promise<ManifestInput>,
): Promise<WriteArchiveResult> {
  let patchReady!: (patch: ManifestPatch) => void;
  let patchFailed!: (error: unknown) => void;
  const patch = new Promise<ManifestPatch>((resolve, reject) => {
    patchReady = resolve;
    patchFailed = reject;
  });
  patch.catch(() => {});
  return runArchive(
    sink,
    options,
    () => patch,
    async (writer) => {
      try {
        await writer.reserveManifest(options.slotBytes);
        const input = await produce(writer);
        const { patch: bytes, ...summary } = await writer.finishWithManifest(input);
        patchReady(bytes);
        return summary;
      } catch (error) {
        patchFailed(error);
        throw error;
      }
    },
  );
}

/**
 * Starts the upload, runs `body` (which writes everything and ends the archive) and waits until the sink has stored
 * it all. If anything fails — `body`, the sink or the signal — the writer is aborted, the sink discards what it got
 * (no partial archive stays under the name), and the first cause is rethrown.
 */
async function runArchive(
  sink: BackupSink,
  options: WriteArchiveOptions,
  patch: PutOptions['patch'],
  body: (writer: ArchiveWriter) => Promise<ArchiveSummary>,
): Promise<WriteArchiveResult> {
  options.signal?.throwIfAborted();
  const writer = new ArchiveWriter({ mtime: options.mtime });
  let output: Readable = writer.output;
  if (options.encryption) output = pipeline(writer.output, createAgeEncryptStream(options.encryption), () => {});
  const stored = sink.put(options.name, output, { signal: options.signal, sizeHint: options.sizeHint, patch });
  stored.catch((error: Error) => writer.abort(error));
  const onAbort = () => writer.abort(abortReason(options.signal!));
  options.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const summary = await body(writer);
    const result = await stored;
    return { ...result, encrypted: options.encryption !== undefined, summary };
  } catch (error) {
    writer.abort(error as Error);
    const sinkError = await stored.then(
      () => undefined,
      (e: unknown) => e,
    );
    // When the sink failed first, the producer only saw the closed output: the sink's error names the cause.
    if (sinkError !== undefined && (error instanceof ArchiveOutputClosedError || writer.closedByOutput)) {
      throw sinkError;
    }
    throw error;
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
  }
}

/** Decryption keys for reading archives; empty or absent when the archives are not encrypted. */
export type ArchiveKeys = AgeDecryptKeys;

/** An archive byte stream ready for {@link readArchive}. */
export interface OpenedArchive {
  stream: Readable;
  encrypted: boolean;
}

/**
 * Looks at the first bytes of `raw`: plain tar passes through; age is decrypted with `keys`. For encrypted
 * archives the age header is verified before this resolves, so a wrong passphrase or identity fails here with a
 * PreconditionError, before the caller has read or changed anything.
 */
export async function openArchiveStream(raw: Readable, keys?: ArchiveKeys): Promise<OpenedArchive> {
  const iterator = (raw as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let length = 0;
  let ended = false;
  while (length < AGE_MAGIC.length + 1) {
    const next = await iterator.next();
    if (next.done) {
      ended = true;
      break;
    }
    head.push(next.value);
    length += next.value.length;
  }
  const prefix = Buffer.concat(head);
  async function* rest(): AsyncGenerator<Buffer> {
    try {
      if (prefix.length > 0) yield prefix;
      if (ended) return;
      for (;;) {
        const next = await iterator.next();
        if (next.done) return;
        yield next.value;
      }
    } finally {
      await iterator.return?.();
    }
  }
  const stream = Readable.from(rest(), { objectMode: false, highWaterMark: 1024 * 1024 });
  if (!looksLikeAge(prefix)) return { stream, encrypted: false };
  if (!keys || ((keys.identities?.length ?? 0) === 0 && (keys.passphrases?.length ?? 0) === 0)) {
    stream.destroy();
    throw new PreconditionError('The backup is encrypted (age), but no key was given.', {
      code: 'ARCHIVE_ENCRYPTED',
      next: ['Pass --identity <key file> or --passphrase-file <file>'],
    });
  }
  const decrypt = createAgeDecryptStream(keys);
  pipeline(stream, decrypt, () => {});
  try {
    await decrypt.header;
  } catch (error) {
    decrypt.destroy();
    throw error;
  }
  return { stream: decrypt, encrypted: true };
}

/** Reads and fully verifies a stored archive; see {@link readArchive}. */
export async function readArchiveFrom(
  store: BackupStore,
  name: string,
  options: ReadArchiveOptions & { keys?: ArchiveKeys } = {},
): Promise<ReadArchiveResult & { encrypted: boolean }> {
  const raw = await store.get(name, { signal: options.signal });
  try {
    const opened = await openArchiveStream(raw, options.keys);
    return { ...(await readArchive(opened.stream, options)), encrypted: opened.encrypted };
  } finally {
    if (!raw.destroyed) raw.destroy();
  }
}

/** Reads only the manifest of a stored archive (stops the download after the first member). */
export async function readManifestFrom(
  store: BackupStore,
  name: string,
  options: { keys?: ArchiveKeys; signal?: AbortSignal } = {},
): Promise<BackupManifest> {
  const raw = await store.get(name, { signal: options.signal });
  try {
    const opened = await openArchiveStream(raw, options.keys);
    return await readManifest(opened.stream, options.signal);
  } finally {
    if (!raw.destroyed) raw.destroy();
  }
}
