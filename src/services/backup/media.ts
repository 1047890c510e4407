/**
 * The media side of `ess backup`: where the media store is read from (the pod that mounts the media PVC, or a
 * short-lived helper pod when that container lacks tar/find or is not running), the listing that becomes the media
 * index (with the incremental plan), and the tar stream re-packed into `media/…` members.
 */
import { randomBytes } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { MEMBERS } from '../../lib/archive/layout.js';
import { type AddMediaResult, addMediaFromTar } from '../../lib/archive/media.js';
import {
  emptyMediaSummary,
  encodeMediaIndex,
  type MediaIndexEntry,
  type MediaIndexSummary,
  parseMediaListing,
  planIncrementalMedia,
} from '../../lib/archive/media-index.js';
import type { Spool, SpooledFile } from '../../lib/archive/spool.js';
import type { ArchiveWriter } from '../../lib/archive/writer.js';
import { ESS_MANAGED_BY, LABELS, SYNAPSE_UID } from '../../lib/deployment/components.js';
import type { Deployment, MediaInfo } from '../../lib/deployment/model.js';
import { type Clock, interruption, systemClock } from '../../lib/deployment/scaler.js';
import { EssError, ExternalToolError } from '../../lib/errors.js';
import type { ExecTarget, KubeClient } from '../../lib/kube/client.js';
import { ExecStreamError, KubeApiError } from '../../lib/kube/client.js';
import type { Pod, Workload } from '../../lib/kube/types.js';
import { isValidMediaPath, MEDIA_CACHE_DIRS } from '../../lib/migrate/media.js';
import type { Reporter } from '../../lib/output/log.js';
import { collect } from '../../lib/postgres/in-pod.js';
import { shellQuote, streamIntoPod } from '../../lib/postgres/pod-tools.js';

/** Value of app.kubernetes.io/component on helper pods (they are found and removed by it). */
export const HELPER_COMPONENT = 'ess-backup-media-reader';

/** Where the media store is read from. */
export interface MediaSource {
  target: ExecTarget;
  /** Media store path in that container, e.g. /media/media_store. */
  storePath: string;
  via: 'pod' | 'helper-pod';
  /** GNU find (fast NUL-separated listing with -printf); otherwise a BusyBox-compatible `stat` listing. */
  gnuFind: boolean;
  /** Deletes the helper pod (no-op for the media pod). Idempotent. */
  close(): Promise<void>;
}

export interface MediaSourceOptions {
  namespace: string;
  release: string;
  /** Image for a helper pod (the Postgres image: already on the nodes). */
  helperImage?: string;
  signal?: AbortSignal;
  reporter: Reporter;
  clock?: Clock;
  /** How long to wait for a helper pod to run (default 5 minutes). */
  timeoutMs?: number;
  pollMs?: number;
}

interface Probe {
  missing: string[];
  gnuFind: boolean;
}

const PROBE_SCRIPT =
  'for t in tar find head; do command -v $t >/dev/null 2>&1 || echo "missing $t"; done; ' +
  "find --version 2>/dev/null | grep -q 'GNU find' && echo gnu-find; true";

function isMissingExecutable(error: unknown): boolean {
  return error instanceof ExecStreamError && /executable file not found|no such file or directory/i.test(error.message);
}

/** Which of the tools the media copy needs exist in a container; `sh` itself missing counts as all missing. */
async function probeTools(kube: KubeClient, target: ExecTarget, signal?: AbortSignal): Promise<Probe> {
  const out = collect(4096);
  try {
    const result = await kube.exec(target, ['sh', '-c', PROBE_SCRIPT], { stdout: out.sink, signal });
    if (result.exitCode !== 0) return { missing: ['sh'], gnuFind: false };
  } catch (error) {
    if (isMissingExecutable(error)) return { missing: ['sh', 'tar', 'find'], gnuFind: false };
    throw error;
  }
  const lines = out.text().split('\n');
  return {
    missing: lines.filter((l) => l.startsWith('missing ')).map((l) => l.slice('missing '.length)),
    gnuFind: lines.includes('gnu-find'),
  };
}

function isRunningAndReady(pod: Pod | undefined): boolean {
  return (
    pod !== undefined &&
    !pod.metadata.deletionTimestamp &&
    pod.status?.phase === 'Running' &&
    (pod.status.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True')
  );
}

/** The helper pod: the media PVC mounted read-only where Synapse mounts it, running as Synapse's user. */
export function helperPodSpec(
  media: MediaInfo,
  options: { name: string; release: string; image: string; nodeName?: string },
): Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: options.name,
      labels: {
        [LABELS.managedBy]: ESS_MANAGED_BY,
        [LABELS.component]: HELPER_COMPONENT,
        [LABELS.instance]: `${options.release}-${HELPER_COMPONENT}`,
      },
    },
    spec: {
      restartPolicy: 'Never',
      // A crashed ess must not leave it forever; the next backup also removes leftovers.
      activeDeadlineSeconds: 6 * 3600,
      terminationGracePeriodSeconds: 1,
      ...(options.nodeName ? { nodeName: options.nodeName } : {}),
      securityContext: { runAsUser: SYNAPSE_UID, runAsGroup: SYNAPSE_UID, runAsNonRoot: true },
      containers: [
        {
          name: 'media',
          image: options.image,
          command: ['sleep', '21600'],
          volumeMounts: [{ name: 'media', mountPath: media.mountPath, readOnly: true }],
        },
      ],
      volumes: [{ name: 'media', persistentVolumeClaim: { claimName: media.claimName, readOnly: true } }],
    },
  } as unknown as Pod;
}

/** Deletes helper pods left by an earlier run that crashed (call while holding the ess lock). */
export async function removeLeftoverHelpers(kube: KubeClient, namespace: string, release: string): Promise<string[]> {
  const pods = await kube.list<Pod>(
    'Pod',
    namespace,
    `${LABELS.component}=${HELPER_COMPONENT},${LABELS.instance}=${release}-${HELPER_COMPONENT}`,
  );
  for (const pod of pods) await kube.delete('Pod', namespace, pod.metadata.name).catch(() => false);
  return pods.map((p) => p.metadata.name);
}

/** The image of the Postgres container of the deployment (already pulled on the nodes), if any. */
export async function postgresImage(kube: KubeClient, deployment: Deployment): Promise<string | undefined> {
  if (deployment.postgres?.mode !== 'bundled') return undefined;
  const sts = await kube.get<Workload>('StatefulSet', deployment.namespace, deployment.postgres.statefulSet);
  const containers = sts?.spec.template.spec.containers ?? [];
  return (containers.find((c) => c.name === 'postgres') ?? containers[0])?.image;
}

async function waitForHelper(
  kube: KubeClient,
  namespace: string,
  name: string,
  options: MediaSourceOptions,
): Promise<void> {
  const clock = options.clock ?? systemClock;
  const deadline = clock.now() + (options.timeoutMs ?? 5 * 60_000);
  for (;;) {
    if (options.signal?.aborted) throw interruption(options.signal);
    const pod = await kube.get<
      Pod & { status?: { containerStatuses?: { state?: { waiting?: { reason?: string; message?: string } } }[] } }
    >('Pod', namespace, name);
    if (!pod)
      throw new EssError(`The media helper pod ${namespace}/${name} disappeared.`, { code: 'HELPER_POD_FAILED' });
    if (isRunningAndReady(pod)) return;
    const waiting = pod.status?.containerStatuses?.[0]?.state?.waiting;
    if (
      pod.status?.phase === 'Failed' ||
      /ErrImagePull|ImagePullBackOff|InvalidImageName|CreateContainerError/.test(waiting?.reason ?? '')
    ) {
      throw new EssError(
        `The media helper pod ${namespace}/${name} cannot run: ${waiting?.reason ?? pod.status?.phase}${waiting?.message ? ` (${waiting.message})` : ''}.`,
        { code: 'HELPER_POD_FAILED', next: [`kubectl describe pod -n ${namespace} ${name}`] },
      );
    }
    if (clock.now() > deadline) {
      throw new EssError(`The media helper pod ${namespace}/${name} did not start in time.`, {
        code: 'HELPER_POD_TIMEOUT',
        next: [`kubectl describe pod -n ${namespace} ${name}`],
      });
    }
    await clock.sleep(options.pollMs ?? 500, options.signal);
  }
}

/**
 * Finds where to read the media store: the pod that mounts the media PVC when it is running and has sh, tar, find
 * and head; otherwise starts a helper pod (the Postgres image, the PVC mounted read-only, on the same node) and waits
 * until it runs. Always call {@link MediaSource.close}.
 */
export async function openMediaSource(
  kube: KubeClient,
  media: MediaInfo,
  options: MediaSourceOptions,
): Promise<MediaSource> {
  const { namespace } = options;
  const pod = await kube.get<Pod>('Pod', namespace, media.pod);
  let reason: string;
  if (isRunningAndReady(pod)) {
    const target = { namespace, pod: media.pod, container: media.container };
    const probe = await probeTools(kube, target, options.signal);
    if (probe.missing.length === 0) {
      return { target, storePath: media.storePath, via: 'pod', gnuFind: probe.gnuFind, close: async () => {} };
    }
    reason = `${media.pod} has no ${probe.missing.join(', ')}`;
  } else {
    reason = `${media.pod} is not running`;
  }
  if (!options.helperImage) {
    throw new EssError(`Cannot read the media store: ${reason}, and no image for a helper pod was found.`, {
      code: 'MEDIA_UNREADABLE',
      next: [`Start Synapse (ess start -n ${namespace}) and retry`],
    });
  }
  const name = `${options.release}-ess-media-reader-${randomBytes(3).toString('hex')}`;
  options.reporter.info(`Reading media through helper pod ${name} (${reason}).`);
  const spec = helperPodSpec(media, {
    name,
    release: options.release,
    image: options.helperImage,
    nodeName: pod?.spec.nodeName,
  });
  await kube.create<Pod>('Pod', namespace, spec);
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await kube.delete('Pod', namespace, name).catch((error: unknown) => {
      if (!(error instanceof KubeApiError && error.statusCode === 404)) {
        options.reporter.warn(`Could not delete the media helper pod ${name}: ${(error as Error).message}`);
      }
    });
  };
  try {
    await waitForHelper(kube, namespace, name, options);
    const target = { namespace, pod: name, container: 'media' };
    const probe = await probeTools(kube, target, options.signal);
    if (probe.missing.length > 0) {
      throw new EssError(`The media helper pod (${options.helperImage}) has no ${probe.missing.join(', ')}.`, {
        code: 'MEDIA_UNREADABLE',
      });
    }
    return { target, storePath: media.storePath, via: 'helper-pod', gnuFind: probe.gnuFind, close };
  } catch (error) {
    await close();
    throw error;
  }
}

/** The shell script that lists the store, cache folders pruned unless included. Output: see the parsers. */
export function mediaListingScript(storePath: string, options: { includeRemote: boolean; gnuFind: boolean }): string {
  const prune = options.includeRemote
    ? ''
    : `\\( ${MEDIA_CACHE_DIRS.map((d) => `-path ./${d}`).join(' -o ')} \\) -prune -o `;
  const print = options.gnuFind ? `-printf '%s %T@ %P\\0'` : `-exec stat -c '%s %Y %n' {} +`;
  const store = shellQuote(storePath);
  return `[ -d ${store} ] || exit 0; cd ${store} && find . ${prune}-type f ${print}`;
}

/** Parses the BusyBox-compatible listing (`<size> <mtime> ./<path>` per line). */
export async function* parseStatListing(source: AsyncIterable<Uint8Array>): AsyncGenerator<MediaIndexEntry> {
  let pending = '';
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const parse = (line: string): MediaIndexEntry | undefined => {
    if (line.length === 0) return undefined;
    const match = /^(\d+) (\d+) \.\/(.+)$/.exec(line);
    if (!match) {
      throw new EssError(`Unexpected media listing line ${JSON.stringify(line.slice(0, 200))}.`, {
        code: 'MEDIA_LISTING',
      });
    }
    return { path: match[3]!, size: Number(match[1]), mtime: Number(match[2]) };
  };
  for await (const chunk of source) {
    pending += decoder.decode(chunk, { stream: true });
    const lines = pending.split('\n');
    pending = lines.pop()!;
    for (const line of lines) {
      const entry = parse(line);
      if (entry) yield entry;
    }
  }
  const last = parse(pending + decoder.decode());
  if (last) yield last;
}

/**
 * Streams the listing of the media store (cache folders pruned unless included). `done` settles when the listing
 * command ended: it rejects when the command failed (the entries stream fails too).
 */
export function listMediaStore(
  kube: KubeClient,
  source: Pick<MediaSource, 'target' | 'storePath' | 'gnuFind'>,
  options: { includeRemote: boolean; signal?: AbortSignal },
): { entries: AsyncIterable<MediaIndexEntry>; done: Promise<void> } {
  const raw = new PassThrough({ highWaterMark: 256 * 1024 });
  const script = mediaListingScript(source.storePath, {
    includeRemote: options.includeRemote,
    gnuFind: source.gnuFind,
  });
  const done = kube.exec(source.target, ['sh', '-c', script], { stdout: raw, signal: options.signal }).then(
    (result) => {
      if (result.exitCode === 0) {
        raw.end();
        return;
      }
      const error = new ExternalToolError('find', `exit code ${result.exitCode}`, result.stderrTail);
      raw.destroy(error);
      throw error;
    },
    (error: Error) => {
      raw.destroy(error);
      throw error;
    },
  );
  done.catch(() => {});
  return { entries: source.gnuFind ? parseMediaListing(raw) : parseStatListing(raw), done };
}

/**
 * Dry-run estimate: lists the store in the media pod (read-only) and counts files and bytes. Throws when the pod
 * cannot be read without starting a helper pod (a dry run changes nothing).
 */
export async function estimateMedia(
  kube: KubeClient,
  media: MediaInfo,
  options: { namespace: string; includeRemote: boolean; signal?: AbortSignal },
): Promise<{ files: number; bytes: number }> {
  const pod = await kube.get<Pod>('Pod', options.namespace, media.pod);
  if (!isRunningAndReady(pod)) throw new Error(`${media.pod} is not running (the backup will use a helper pod)`);
  const target = { namespace: options.namespace, pod: media.pod, container: media.container };
  const probe = await probeTools(kube, target, options.signal);
  if (probe.missing.length)
    throw new Error(`${media.pod} has no ${probe.missing.join(', ')} (the backup will use a helper pod)`);
  const { entries, done } = listMediaStore(
    kube,
    { target, storePath: media.storePath, gnuFind: probe.gnuFind },
    options,
  );
  let files = 0;
  let bytes = 0;
  for await (const entry of entries) {
    files++;
    bytes += entry.size;
  }
  await done;
  return { files, bytes };
}

/** The listed media: the spooled index, its counts, and the files this archive must store (in listing order). */
export interface MediaPlan {
  index: SpooledFile;
  summary: MediaIndexSummary;
  /** path → size of the files to store, in the order the pod will send them. */
  toStore: Map<string, number>;
  /** Paths Synapse would never serve (left out, with a warning). */
  invalid: string[];
  incremental: boolean;
  /** Archive name of the parent (incremental only). */
  parent?: string;
}

/** A parent backup's media index, for an incremental plan. */
export interface ParentIndex {
  name: string;
  entries: MediaIndexEntry[];
}

/**
 * Lists the media store in the source container and spools the media index (`media-index.jsonl`), marking files
 * the parent already holds. Streams: the listing is never held in memory except the files to store (path → size).
 */
export async function planMedia(
  kube: KubeClient,
  source: MediaSource,
  spool: Spool,
  options: { includeRemote: boolean; parent?: ParentIndex; signal?: AbortSignal },
): Promise<MediaPlan> {
  const { entries: listed, done: listing } = listMediaStore(kube, source, options);
  const invalid: string[] = [];
  const toStore = new Map<string, number>();
  async function* valid(entries: AsyncIterable<MediaIndexEntry>): AsyncGenerator<MediaIndexEntry> {
    for await (const entry of entries) {
      if (isValidMediaPath(entry.path) && !entry.path.startsWith('-')) yield entry;
      else invalid.push(entry.path);
    }
  }
  async function* tap(entries: AsyncIterable<MediaIndexEntry>): AsyncGenerator<MediaIndexEntry> {
    for await (const entry of entries) {
      if (entry.archive === undefined) toStore.set(entry.path, entry.size);
      yield entry;
    }
  }
  let entries: AsyncIterable<MediaIndexEntry> = valid(listed);
  if (options.parent)
    entries = planIncrementalMedia(entries, { name: options.parent.name, index: options.parent.entries });
  const summary = emptyMediaSummary();
  const index = await spool.add(MEMBERS.mediaIndex, Readable.from(encodeMediaIndex(tap(entries), summary)), {
    signal: options.signal,
  });
  await listing;
  return { index, summary, toStore, invalid, incremental: options.parent !== undefined, parent: options.parent?.name };
}

/**
 * Streams the files of `plan.toStore` out of the source container (`tar -T -`, the list sent on stdin with an exact
 * byte count so it works on exec v4) and re-packs them into `media/…` members. A file that vanished, changed size or
 * appeared fails the copy; so does a tar that exits non-zero or a stream cut short.
 */
export async function copyMedia(
  kube: KubeClient,
  source: MediaSource,
  plan: MediaPlan,
  writer: ArchiveWriter,
  options: { signal?: AbortSignal; onBytes?: (total: number) => void } = {},
): Promise<AddMediaResult> {
  if (plan.toStore.size === 0) return { files: 0, bytes: 0, skipped: [] };
  let listBytes = 0;
  for (const path of plan.toStore.keys()) listBytes += Buffer.byteLength(path) + 1;
  async function* list(): AsyncGenerator<Buffer> {
    let batch = '';
    for (const path of plan.toStore.keys()) {
      batch += `${path}\n`;
      if (batch.length >= 64 * 1024) {
        yield Buffer.from(batch);
        batch = '';
      }
    }
    if (batch.length > 0) yield Buffer.from(batch);
  }
  // If re-packing fails (e.g. the upload failed), the exec must stop: nobody reads its stdout any more.
  const local = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, local.signal]) : local.signal;
  const podTar = new PassThrough({ highWaterMark: 256 * 1024 });
  let copied = 0;
  let tarSettled = false;
  let tarFailure: unknown;
  const tar = streamIntoPod(
    kube,
    source.target,
    ['tar', '-C', source.storePath, '-cf', '-', '-T', '-'],
    Readable.from(list()),
    listBytes,
    { stdout: podTar, signal },
  ).then(
    () => {
      tarSettled = true;
      podTar.end();
    },
    (error: unknown) => {
      tarSettled = true;
      tarFailure = error;
      podTar.destroy(error as Error);
    },
  );
  let result: AddMediaResult | undefined;
  let addError: unknown;
  let addFailedFirst = false;
  try {
    result = await addMediaFromTar(writer, podTar, {
      expected: plan.toStore,
      signal: options.signal,
      onFile: (_path, size) => {
        copied += size;
        options.onBytes?.(copied);
      },
    });
  } catch (error) {
    addError = error;
    addFailedFirst = !tarSettled;
    if (!tarSettled) local.abort(error);
  }
  await tar;
  if (result) return result;
  if (tarFailure !== undefined && !addFailedFirst && !options.signal?.aborted) throw mediaCopyError(source, tarFailure);
  throw addError;
}

function mediaCopyError(source: MediaSource, cause: unknown): EssError {
  const message = (cause as Error)?.message ?? String(cause);
  const killed = /exit code 137/.test(message) ? ' (the pod was killed or deleted)' : '';
  return new EssError(`Copying the media out of ${source.target.pod} failed${killed}: ${message}`, {
    code: 'MEDIA_COPY_FAILED',
    cause,
    next: ['Nothing was stored; re-run ess backup once the pod is running again'],
  });
}
