/**
 * Re-packs the tar stream of the media store (as `tar -c` in the Synapse pod writes it) into `media/<path>` members
 * of the backup archive, file by file: sizes come from the pod's tar headers, so nothing is staged on local disk,
 * and each file gets its own SHA-256 in the trailer.
 */
import type { Readable } from 'node:stream';
import { EssError } from '../errors.js';
import { isSafeMemberName, mediaMember } from './layout.js';
import { openExtract } from './tar-extract.js';
import type { ArchiveWriter } from './writer.js';

/** Options of {@link addMediaFromTar}. */
export interface AddMediaOptions {
  /**
   * A leading directory of the pod's tar names to remove, e.g. `media_store/` for `tar -C /media -c media_store`.
   * A leading `./` is always removed.
   */
  stripPrefix?: string;
  /**
   * The files the media index promised this archive stores (path → size). When given, any other file is an error,
   * and so is a promised file that does not arrive or has another size.
   */
  expected?: Map<string, number>;
  /** Called after each file is in the archive (progress). */
  onFile?: (path: string, size: number) => void;
  signal?: AbortSignal;
}

/** What {@link addMediaFromTar} added and skipped. */
export interface AddMediaResult {
  files: number;
  bytes: number;
  /** Entries that are not regular files (symlinks, devices) and were left out. */
  skipped: string[];
}

function mediaError(message: string): EssError {
  return new EssError(`Media backup failed: ${message}.`, {
    code: 'MEDIA_CHANGED',
    next: ['Stop Synapse during the backup (the default) so media cannot change, then retry'],
  });
}

/**
 * Adds every regular file of `podTar` to the archive as `media/<path>`. Resolves when the pod's tar stream ended
 * cleanly and every file is in the archive; a failure here has already failed the writer.
 */
export async function addMediaFromTar(
  writer: ArchiveWriter,
  podTar: Readable,
  options: AddMediaOptions = {},
): Promise<AddMediaResult> {
  const { extract, close } = openExtract(podTar, options.signal);
  const result: AddMediaResult = { files: 0, bytes: 0, skipped: [] };
  const remaining = options.expected ? new Map(options.expected) : undefined;
  try {
    for await (const entry of extract) {
      entry.on('error', () => {});
      const { header } = entry;
      let path = header.name.replace(/^(\.\/)+/, '');
      if (options.stripPrefix && path.startsWith(options.stripPrefix)) path = path.slice(options.stripPrefix.length);
      path = path.replace(/\/+$/, '');
      if (header.type === 'directory' || path === '' || path === '.') {
        entry.resume();
        continue;
      }
      if (header.type !== 'file' && header.type !== 'contiguous-file') {
        result.skipped.push(path);
        entry.resume();
        continue;
      }
      if (!isSafeMemberName(path)) throw mediaError(`unsafe path ${JSON.stringify(header.name)} in the media tar`);
      if (remaining) {
        const size = remaining.get(path);
        if (size === undefined) throw mediaError(`${path} appeared after the media was listed`);
        if (size !== header.size) throw mediaError(`${path} changed size after the media was listed`);
        remaining.delete(path);
      }
      await writer.addMember({ name: mediaMember(path), size: header.size, mtime: header.mtime }, entry);
      result.files++;
      result.bytes += header.size;
      options.onFile?.(path, header.size);
    }
    if (remaining && remaining.size > 0) {
      const missing = [...remaining.keys()];
      throw mediaError(`${missing.length} listed file(s) vanished, e.g. ${missing.slice(0, 3).join(', ')}`);
    }
    return result;
  } catch (error) {
    const message = (error as Error).message;
    const mapped =
      message === 'Unexpected end of data' ? mediaError('the media tar stream from the pod ended early') : error;
    writer.abort(mapped as Error);
    throw mapped;
  } finally {
    close();
  }
}
