/**
 * Incremental backups: finding the parent (the newest backup of the same server at the same destination) and
 * reading its media index — only the first two members of the archive, verified against the manifest's SHA-256.
 */
import { createHash } from 'node:crypto';
import { MEMBERS } from '../../lib/archive/layout.js';
import { type BackupManifest, parseArchiveJson, validateManifest } from '../../lib/archive/manifest.js';
import { type MediaIndexEntry, parseMediaIndex } from '../../lib/archive/media-index.js';
import { fileSafeServerName, parseArchiveName } from '../../lib/archive/naming.js';
import { openExtract } from '../../lib/archive/tar-extract.js';
import { type ArchiveKeys, openArchiveStream } from '../../lib/archive/transfer.js';
import { EssError } from '../../lib/errors.js';
import type { BackupStore, StoredObject } from '../../lib/storage/store.js';

/** A candidate parent: the newest archive of `serverName` in the store. */
export interface ParentCandidate {
  object: StoredObject;
  createdAt: Date;
  encrypted: boolean;
}

/** The newest backup of `serverName` in `store` (by the time in its name), or undefined. */
export async function findParent(store: BackupStore, serverName: string): Promise<ParentCandidate | undefined> {
  const server = fileSafeServerName(serverName);
  let best: ParentCandidate | undefined;
  for (const object of await store.list()) {
    const parsed = parseArchiveName(object.name);
    if (!parsed || parsed.server !== server) continue;
    if (!best || parsed.createdAt.getTime() > best.createdAt.getTime()) {
      best = { object, createdAt: parsed.createdAt, encrypted: parsed.encrypted };
    }
  }
  return best;
}

function badParent(name: string, problem: string): EssError {
  return new EssError(`Cannot use ${name} as the parent of an incremental backup: ${problem}.`, {
    code: 'PARENT_UNUSABLE',
  });
}

/**
 * Reads the parent's manifest and media index (members 1 and 2) and stops the download. The index bytes are checked
 * against the SHA-256 the manifest declares. Holds the index in memory (~150 bytes a file).
 */
export async function readParentIndex(
  store: BackupStore,
  name: string,
  options: { keys?: ArchiveKeys; signal?: AbortSignal } = {},
): Promise<{ manifest: BackupManifest; entries: MediaIndexEntry[] }> {
  const raw = await store.get(name, { signal: options.signal });
  const opened = await openArchiveStream(raw, options.keys).catch((error: unknown) => {
    raw.destroy();
    throw error;
  });
  const { extract, close } = openExtract(opened.stream, options.signal);
  const iterator = extract[Symbol.asyncIterator]();
  try {
    const first = await iterator.next();
    if (first.done || first.value.header.name !== MEMBERS.manifest) throw badParent(name, 'no manifest');
    const chunks: Buffer[] = [];
    for await (const chunk of first.value) chunks.push(chunk);
    const manifest = validateManifest(parseArchiveJson(Buffer.concat(chunks), MEMBERS.manifest));
    if (!manifest.media) throw badParent(name, 'it holds no media index');
    const declared = manifest.members.find((m) => m.name === manifest.media?.index);
    if (!declared) throw badParent(name, 'its manifest does not list the media index');
    // ess writes the index right after the manifest; skip anything else before it all the same.
    let second = await iterator.next();
    while (!second.done && second.value.header.name !== manifest.media.index) {
      second.value.resume();
      second = await iterator.next();
    }
    if (second.done) throw badParent(name, 'its media index is missing');
    const hash = createHash('sha256');
    async function* hashed(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
      for await (const chunk of source) {
        hash.update(chunk);
        yield chunk;
      }
    }
    const entries: MediaIndexEntry[] = [];
    for await (const entry of parseMediaIndex(hashed(second.value))) entries.push(entry);
    if (hash.digest('hex') !== declared.sha256) throw badParent(name, 'its media index does not match its SHA-256');
    return { manifest, entries };
  } finally {
    close();
    if (!raw.destroyed) raw.destroy();
  }
}
