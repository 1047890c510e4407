/**
 * Step 5 of the import: the media store into the media PVC, under `media_store/`, keeping the layout, owned by the
 * Synapse UID. Resumable: files already there with the same size are skipped, so a re-run sends only what is
 * missing (a file cut short by an interrupted run has a different size and is sent again).
 */
import { posix } from 'node:path';
import { SYNAPSE_UID } from '../../lib/deployment/components.js';
import type { KubeClient } from '../../lib/kube/client.js';
import { collectingPassThrough } from '../../lib/memory.js';
import type { MediaFile, MediaListing } from '../../lib/migrate/media.js';
import { listRemoteFiles, tarExtractor } from '../../lib/migrate/pod-ops.js';
import { packTar, type TarFileEntry, tarSize } from '../../lib/migrate/tar-write.js';
import type { Reporter } from '../../lib/output/log.js';
import { streamIntoPod } from '../../lib/postgres/pod-tools.js';

export interface MediaUploadResult {
  pod: string;
  storePath: string;
  uploadedFiles: number;
  uploadedBytes: number;
  /** Already present with the same size (an earlier run). */
  skippedFiles: number;
  skippedBytes: number;
}

/** Splits a listing into what the pod lacks and what it has (same size). */
export function missingFiles(
  listing: MediaListing,
  remote: Map<string, number>,
): { send: MediaFile[]; present: MediaFile[] } {
  const send: MediaFile[] = [];
  const present: MediaFile[] = [];
  for (const file of listing.files) (remote.get(file.path) === file.size ? present : send).push(file);
  return { send, present };
}

/** Tar entries for the files plus every parent directory, all owned by the Synapse UID. */
export function uploadEntries(files: readonly MediaFile[]): TarFileEntry[] {
  const dirs = new Set<string>();
  for (const f of files) {
    for (let d = posix.dirname(f.path); d !== '.' && !dirs.has(d); d = posix.dirname(d)) dirs.add(d);
  }
  const owner = { uid: SYNAPSE_UID, gid: SYNAPSE_UID };
  return [
    ...[...dirs].sort().map((d) => ({ name: d, size: 0, mtime: 0, type: 'directory' as const, mode: 0o755, ...owner })),
    ...files.map((f) => ({ name: f.path, size: f.size, mtime: f.mtime, mode: 0o644, open: f.open, ...owner })),
  ];
}

/** Uploads what the media store in the pod lacks, as one tar stream extracted there. */
export async function uploadMedia(
  kube: KubeClient,
  target: { namespace: string; pod: string; container: string },
  storePath: string,
  listing: MediaListing,
  options: { reporter: Reporter; signal?: AbortSignal },
): Promise<MediaUploadResult> {
  const { reporter } = options;
  reporter.info(`Listing the media already in ${target.pod}:${storePath}…`);
  const remote = await listRemoteFiles(kube, target, storePath);
  const { send, present } = missingFiles(listing, remote);
  const result: MediaUploadResult = {
    pod: target.pod,
    storePath,
    uploadedFiles: send.length,
    uploadedBytes: send.reduce((n, f) => n + f.size, 0),
    skippedFiles: present.length,
    skippedBytes: present.reduce((n, f) => n + f.size, 0),
  };
  if (present.length) reporter.info(`${present.length} media file(s) are already there (an earlier run): skipped.`);
  if (send.length === 0) return result;
  const entries = uploadEntries(send);
  const size = tarSize(entries);
  const extract = await tarExtractor(kube, target, storePath);
  reporter.info(`Uploading ${send.length} media file(s) to ${target.pod}:${storePath}…`);
  const tar = packTar(entries);
  const collecting = collectingPassThrough();
  tar.on('error', (error) => collecting.destroy(error));
  await streamIntoPod(
    kube,
    target,
    ['sh', '-c', 'mkdir -p "$0" && exec "$@"', storePath, ...extract],
    tar.pipe(collecting),
    size,
    {
      signal: options.signal,
      onBytes: (n) => reporter.progress('Uploading media', n, size),
    },
  );
  return result;
}
