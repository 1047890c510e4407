/**
 * Synapse media stores as a list of files, from a directory, a tar of one, or the media members of an export
 * bundle; and the same store on the ESS media PVC. Layout (synapse-database.md §11): `local_content/…`,
 * `local_thumbnails/…`, the caches `remote_content/…`, `remote_thumbnail/…`, `url_cache/…`, `url_cache_thumbnails/…`.
 */
import { createReadStream } from 'node:fs';
import { lstat, opendir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { indexTar, normaliseMemberName, type TarMember } from './tar-index.js';

/** Top-level folders of a media store that are caches Synapse refills by itself: left out unless asked for. */
export const MEDIA_CACHE_DIRS = ['remote_content', 'remote_thumbnail', 'url_cache', 'url_cache_thumbnails'] as const;

/** One file of a media store. */
export interface MediaFile {
  /** Path relative to the media store root, with `/` separators, e.g. `local_content/ab/cd/efgh…`. */
  path: string;
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  open(): Readable;
}

export interface MediaListing {
  files: MediaFile[];
  bytes: number;
  /** Files left out because they are caches (see {@link MEDIA_CACHE_DIRS}). */
  skippedCaches: { files: number; bytes: number };
  /** Paths that are not valid media paths (refused: they would escape the store or Synapse would never serve them). */
  invalid: string[];
}

/** Synapse's own path rule: every component matches [A-Za-z0-9_\-.\[\]:], and is neither `.` nor `..`. */
export function isValidMediaPath(path: string): boolean {
  if (path.length === 0 || path.startsWith('/')) return false;
  return path.split('/').every((c) => c.length > 0 && c !== '.' && c !== '..' && /^[A-Za-z0-9_\-.[\]:]+$/.test(c));
}

function isCache(path: string): boolean {
  const top = path.split('/')[0] ?? '';
  return (MEDIA_CACHE_DIRS as readonly string[]).includes(top);
}

class ListingBuilder {
  readonly listing: MediaListing = { files: [], bytes: 0, skippedCaches: { files: 0, bytes: 0 }, invalid: [] };

  constructor(private readonly includeCaches: boolean) {}

  add(file: MediaFile): void {
    if (!isValidMediaPath(file.path)) {
      this.listing.invalid.push(file.path);
      return;
    }
    if (!this.includeCaches && isCache(file.path)) {
      this.listing.skippedCaches.files++;
      this.listing.skippedCaches.bytes += file.size;
      return;
    }
    this.listing.files.push(file);
    this.listing.bytes += file.size;
  }

  done(): MediaListing {
    this.listing.files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    return this.listing;
  }
}

/** Lists the regular files under a media store directory (symlinks and other special files are not followed). */
export async function listMediaDir(root: string, options: { includeCaches: boolean }): Promise<MediaListing> {
  const builder = new ListingBuilder(options.includeCaches);
  const walk = async (rel: string): Promise<void> => {
    const dir = await opendir(join(root, rel));
    for await (const entry of dir) {
      const childRel = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) {
        if (!options.includeCaches && !rel && isCache(entry.name)) {
          const sizes = await dirSize(join(root, entry.name));
          builder.listing.skippedCaches.files += sizes.files;
          builder.listing.skippedCaches.bytes += sizes.bytes;
          continue;
        }
        await walk(childRel);
      } else if (entry.isFile()) {
        const full = join(root, childRel);
        const st = await lstat(full);
        builder.add({
          path: childRel,
          size: st.size,
          mtime: Math.floor(st.mtimeMs / 1000),
          open: () => createReadStream(full),
        });
      }
    }
  };
  await walk('');
  return builder.done();
}

async function dirSize(dir: string): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  const walk = async (d: string): Promise<void> => {
    for await (const entry of await opendir(d)) {
      const full = join(d, entry.name);
      if (entry.isDirectory()) await walk(full);
      else if (entry.isFile()) {
        files++;
        bytes += (await lstat(full)).size;
      }
    }
  };
  await walk(dir);
  return { files, bytes };
}

/**
 * Lists the files of a media store held in a tar: a tar of the store's contents (`tar -C media_store -cf x.tar .`)
 * or of the directory itself (`media_store/…`), or the members under `prefix` of an export bundle.
 */
export function listMediaTar(
  tarPath: string,
  members: TarMember[],
  options: { includeCaches: boolean; prefix?: string },
): MediaListing {
  const builder = new ListingBuilder(options.includeCaches);
  const files = members.filter((m) => m.type === 'file').map((m) => ({ m, name: normaliseMemberName(m.name) }));
  let prefix = options.prefix;
  if (prefix === undefined) {
    const knownTop = (n: string) =>
      /^(local_content|local_thumbnails|remote_content|remote_thumbnail|url_cache|url_cache_thumbnails)\//.test(n);
    if (files.length > 0 && !files.some(({ name }) => knownTop(name))) {
      // A tar of the directory itself: strip the common first component (e.g. "media_store/").
      const first = files[0]?.name.split('/')[0];
      if (first && files.every(({ name }) => name.startsWith(`${first}/`))) prefix = `${first}/`;
    }
  }
  for (const { m, name } of files) {
    if (prefix && !name.startsWith(prefix)) continue;
    const path = prefix ? name.slice(prefix.length) : name;
    builder.add({
      path,
      size: m.size,
      mtime: m.mtime,
      open: () =>
        m.size === 0 ? Readable.from([]) : createReadStream(tarPath, { start: m.offset, end: m.offset + m.size - 1 }),
    });
  }
  return builder.done();
}

/** {@link listMediaTar} for a tar file on disk. */
export async function listMediaTarFile(tarPath: string, options: { includeCaches: boolean }): Promise<MediaListing> {
  return listMediaTar(tarPath, await indexTar(tarPath), options);
}

/** Parses `find . -type f -exec stat -c '%s %n' {} +` output into path → size. */
export function parseRemoteListing(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const match = /^(\d+) (?:\.\/)?(.+)$/.exec(line);
    if (match) out.set(match[2] as string, Number(match[1]));
  }
  return out;
}
