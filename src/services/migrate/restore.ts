/**
 * Step 3 of the import: pg_restore inside the Postgres pod, as the Synapse role, without the one-time keys' rows,
 * never buffering the dump in memory nor copying it to the pod's memory-backed /tmp. Three ways:
 *
 * - `parallel` (default when the dump has data offsets, i.e. was written to a file): only the archive's header and
 *   TOC (a few hundred KB) are staged on the Postgres volume. pre-data is restored from it; the table data goes as
 *   N concurrent streams, each a valid archive made of the header+TOC followed by its share of the data blocks (cut
 *   from the dump by their TOC offsets), into `pg_restore --section=data` reading stdin; then post-data (indexes,
 *   constraints, triggers) runs with `--jobs N` from the staged TOC. Transfer and loading overlap, the data loads in
 *   parallel, and the volume needs no room for a copy of the dump.
 * - `staged`: the whole dump is copied onto the Postgres volume and restored with `--jobs N`.
 * - `stream`: the whole dump is streamed into one `pg_restore` (for dumps without offsets).
 *
 * Every stream is an exact byte count read by `head -c` in the pod, so all of it works over exec protocol v4 too.
 */
import { Readable } from 'node:stream';
import type { KubeClient } from '../../lib/kube/client.js';
import { ONE_TIME_KEYS_TABLE } from '../../lib/migrate/dump-facts.js';
import {
  type BlockRange,
  type DumpToc,
  dataBlockRanges,
  type FileRange,
  partitionBlocks,
  type TocEntry,
  tocList,
} from '../../lib/migrate/pgdump.js';
import { rangesStream, restoreFromPodFile, restoreFromStream, writeFileInPod } from '../../lib/migrate/pod-ops.js';
import type { Reporter } from '../../lib/output/log.js';
import type { PodPostgres } from '../../lib/postgres/in-pod.js';

export type RestoreMethod = 'parallel' | 'staged' | 'stream';

export interface RestorePlanInput {
  toc: DumpToc;
  dump: FileRange;
  database: string;
  role: string;
  /** A directory on the Postgres volume for the TOC, lists (and, for `staged`, the dump). */
  staging: string;
  method: RestoreMethod;
  jobs: number;
  reporter: Reporter;
  signal?: AbortSignal;
  /** Called with the name of each sub-phase (for timings and failure messages). */
  onPhase?: (name: string) => void;
}

/** The dump entries never restored: the rows of e2e_one_time_keys_json. */
export function isExcludedData(entry: TocEntry): boolean {
  return entry.desc === 'TABLE DATA' && entry.namespace === 'public' && entry.tag === ONE_TIME_KEYS_TABLE;
}

/** Whether the dump allows the parallel method (it has data offsets). */
export function supportsParallel(toc: DumpToc, dump: FileRange): boolean {
  return dataBlockRanges(toc, dump.length) !== undefined;
}

function absolute(dump: FileRange, ranges: { start: number; end: number }[]): { start: number; end: number }[] {
  const base = dump.start ?? 0;
  return ranges.map((r) => ({ start: base + r.start, end: base + r.end }));
}

async function writeText(kube: KubeClient, pg: PodPostgres, path: string, text: string, signal?: AbortSignal) {
  const data = Buffer.from(text);
  await writeFileInPod(
    kube,
    { namespace: pg.namespace, pod: pg.pod, container: pg.container },
    path,
    Readable.from([data]),
    data.length,
    {
      signal,
    },
  );
}

function itemProgress(reporter: Reporter, stage: string, total: number) {
  let items = 0;
  return () => {
    if (++items <= total) reporter.progress(stage, items, total, 'items');
  };
}

/** Runs the restore with the chosen method. */
export async function restoreDump(kube: KubeClient, pg: PodPostgres, input: RestorePlanInput): Promise<void> {
  const { toc, dump, reporter, signal } = input;
  const target = { namespace: pg.namespace, pod: pg.pod, container: pg.container };
  const fullList = tocList(toc, isExcludedData);
  const listPath = `${input.staging}/restore.list`;
  await writeText(kube, pg, listPath, fullList, signal);
  const total = toc.entries.length;
  const base = { database: input.database, role: input.role, listPath, signal };

  if (input.method === 'stream') {
    reporter.info(`Streaming the dump into pg_restore in ${pg.pod}…`);
    input.onPhase?.('running pg_restore');
    await restoreFromStream(
      kube,
      pg,
      base,
      rangesStream(dump.path, absolute(dump, [{ start: 0, end: dump.length }])),
      dump.length,
      (n) => reporter.progress('Restoring', n, dump.length),
    );
    return;
  }

  if (input.method === 'staged') {
    const dumpPath = `${input.staging}/synapse.dump`;
    reporter.info(`Staging the dump on ${pg.pod}:${input.staging}…`);
    await writeFileInPod(
      kube,
      target,
      dumpPath,
      rangesStream(dump.path, absolute(dump, [{ start: 0, end: dump.length }])),
      dump.length,
      {
        signal,
        onBytes: (n) => reporter.progress('Staging the dump', n, dump.length),
      },
    );
    input.onPhase?.('running pg_restore');
    reporter.info(`Running pg_restore --jobs=${input.jobs} in ${pg.pod}…`);
    await restoreFromPodFile(kube, pg, {
      ...base,
      dumpPath,
      jobs: input.jobs,
      onItem: itemProgress(reporter, 'Restoring', total),
    });
    return;
  }

  // parallel
  const ranges = dataBlockRanges(toc, dump.length);
  if (!ranges) throw new Error('the parallel restore needs a dump with data offsets');
  const tocPath = `${input.staging}/toc.dump`;
  await writeFileInPod(
    kube,
    target,
    tocPath,
    rangesStream(dump.path, absolute(dump, [{ start: 0, end: toc.dataStart }])),
    toc.dataStart,
    {
      signal,
    },
  );
  input.onPhase?.('restoring the schema (pre-data)');
  reporter.info(`Restoring the schema in ${pg.pod}…`);
  await restoreFromPodFile(kube, pg, { ...base, dumpPath: tocPath, jobs: 1, sections: ['pre-data'] });

  input.onPhase?.('loading the data');
  const blocks = [...ranges.values()].filter((b: BlockRange) => !isExcludedData(b.entry));
  const groups = partitionBlocks(toc, blocks, input.jobs);
  if (groups.length === 0) groups.push([]);
  const sizes = groups.map((g) => toc.dataStart + g.reduce((n, b) => n + b.end - b.start, 0));
  const grand = sizes.reduce((a, b) => a + b, 0);
  const sent = sizes.map(() => 0);
  const inner = new AbortController();
  const onOuterAbort = () => inner.abort(signal?.reason);
  signal?.addEventListener('abort', onOuterAbort, { once: true });
  reporter.info(`Loading the data in ${groups.length} parallel stream(s) into ${pg.pod}…`);
  try {
    const outcomes = await Promise.allSettled(
      groups.map(async (group, i) => {
        const ids = new Set(group.map((b) => b.entry.dumpId));
        // Entries of the data section without a block (SEQUENCE SET) go with the first stream.
        const list = tocList(
          toc,
          (e) => !(ids.has(e.dumpId) || (i === 0 && e.section === 'data' && e.dataState === 'none')),
        );
        const groupList = `${input.staging}/data-${i}.list`;
        await writeText(kube, pg, groupList, list, inner.signal);
        const parts = [{ start: 0, end: toc.dataStart }, ...group.map((b) => ({ start: b.start, end: b.end }))];
        await restoreFromStream(
          kube,
          pg,
          { ...base, listPath: groupList, sections: ['data'], signal: inner.signal },
          rangesStream(dump.path, absolute(dump, parts)),
          sizes[i] as number,
          (n) => {
            sent[i] = n;
            reporter.progress(
              'Loading the data',
              sent.reduce((a, b) => a + b, 0),
              grand,
            );
          },
        ).catch((error: unknown) => {
          // One stream failing stops the others; the first failure is the one reported.
          inner.abort(error);
          throw error;
        });
      }),
    );
    const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (failed) throw inner.signal.reason ?? failed.reason;
  } finally {
    signal?.removeEventListener('abort', onOuterAbort);
  }

  input.onPhase?.('building indexes and constraints (post-data)');
  reporter.info(`Building indexes and constraints with ${input.jobs} job(s)…`);
  const postData = toc.entries.filter((e) => e.section === 'post-data').length;
  await restoreFromPodFile(kube, pg, {
    ...base,
    dumpPath: tocPath,
    jobs: input.jobs,
    sections: ['post-data'],
    onItem: itemProgress(reporter, 'Indexes and constraints', postData),
  });
}
