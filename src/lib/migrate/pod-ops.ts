/**
 * The in-pod operations of an import, each one exec: free space on a volume, files on a PVC, listing a media store,
 * extracting a tar stream, and pg_restore from a staged file or from stdin. Streams go through
 * {@link streamIntoPod}, which has the remote side read an exact byte count, so they work on exec protocol v4 and
 * v5 servers alike; memory stays bounded by the socket buffers.
 */
import { createReadStream } from 'node:fs';
import { Readable, Writable } from 'node:stream';
import { ExternalToolError } from '../errors.js';
import type { ExecTarget, KubeClient } from '../kube/client.js';
import { collectingPassThrough } from '../memory.js';
import { collect, type PodPostgres } from '../postgres/in-pod.js';
import { shellJoin, streamIntoPod } from '../postgres/pod-tools.js';

function check(tool: string, result: { exitCode: number; stderrTail: string }): void {
  if (result.exitCode !== 0) throw new ExternalToolError(tool, `exit code ${result.exitCode}`, result.stderrTail);
}

/** Runs a shell script in a container and returns its stdout (small outputs only). */
export async function shInPod(
  kube: KubeClient,
  target: ExecTarget,
  script: string,
  limitBytes?: number,
): Promise<string> {
  const out = collect(limitBytes);
  const result = await kube.exec(target, ['sh', '-c', script], { stdout: out.sink });
  check('sh', result);
  return out.text();
}

/** Free and total bytes of the filesystem holding `path` in the container (`df -Pk`). */
export async function diskSpace(
  kube: KubeClient,
  target: ExecTarget,
  path: string,
): Promise<{ availableBytes: number; totalBytes: number }> {
  const text = await shInPod(kube, target, `df -Pk ${shellJoin([path])}`);
  const line = text.trim().split('\n').at(-1) ?? '';
  const fields = line.split(/\s+/);
  const total = Number(fields[1]);
  const available = Number(fields[3]);
  if (!Number.isFinite(total) || !Number.isFinite(available)) {
    throw new ExternalToolError('df', 'unparseable output', text);
  }
  return { availableBytes: available * 1024, totalBytes: total * 1024 };
}

/**
 * Writes exactly `size` bytes of `input` to `path` in the container (parent directories created), then checks the
 * file's size there.
 */
export async function writeFileInPod(
  kube: KubeClient,
  target: ExecTarget,
  path: string,
  input: Readable,
  size: number,
  options: { signal?: AbortSignal; onBytes?: (n: number) => void } = {},
): Promise<void> {
  await streamIntoPod(
    kube,
    target,
    ['sh', '-c', 'mkdir -p "$(dirname "$0")" && cat > "$0"', path],
    input,
    size,
    options,
  );
  const actual = Number((await shInPod(kube, target, `wc -c < ${shellJoin([path])}`)).trim());
  if (actual !== size) {
    throw new ExternalToolError('cat', 'short write', `${path} has ${actual} of ${size} bytes in ${target.pod}`);
  }
}

/** Removes a path in the container (`rm -rf`); best effort when `ignoreErrors`. */
export async function removeInPod(kube: KubeClient, target: ExecTarget, path: string): Promise<void> {
  await shInPod(kube, target, `rm -rf ${shellJoin([path])}`);
}

/** A Writable that splits text into lines and hands each to `onLine`. */
export function lineSink(onLine: (line: string) => void): Writable {
  let rest = '';
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      const text = rest + chunk.toString('utf8');
      const lines = text.split('\n');
      rest = lines.pop() ?? '';
      if (rest.length > 64 * 1024) rest = rest.slice(-64 * 1024);
      for (const line of lines) onLine(line);
      cb();
    },
    final(cb) {
      if (rest) onLine(rest);
      cb();
    },
  });
}

/**
 * Lists the regular files under `root` in the container with their sizes (`find … -exec stat`), streaming the
 * output line by line into a map (relative path → size). An absent root is an empty listing.
 */
export async function listRemoteFiles(
  kube: KubeClient,
  target: ExecTarget,
  root: string,
): Promise<Map<string, number>> {
  const files = new Map<string, number>();
  const sink = lineSink((line) => {
    const match = /^(\d+) \.\/(.+)$/.exec(line);
    if (match) files.set(match[2] as string, Number(match[1]));
  });
  const q = shellJoin([root]);
  const result = await kube.exec(
    target,
    ['sh', '-c', `if [ -d ${q} ]; then cd ${q} && find . -type f -exec stat -c '%s %n' {} +; fi`],
    { stdout: sink },
  );
  await new Promise<void>((resolve) => sink.end(resolve));
  check('find', result);
  return files;
}

/** Which extractor the container has: GNU/BusyBox tar, else Python's tarfile (the Synapse image always has python3). */
export async function tarExtractor(kube: KubeClient, target: ExecTarget, dest: string): Promise<string[]> {
  const has = (await shInPod(kube, target, 'command -v tar || true')).trim();
  if (has) return ['tar', '-x', '-f', '-', '-C', dest];
  return [
    'python3',
    '-c',
    'import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode="r|").extractall(sys.argv[1])',
    dest,
  ];
}

/** Options of the pg_restore runs. */
export interface RestoreCommand {
  database: string;
  /** Objects are created as this role (`--no-owner --role`). */
  role: string;
  /** Path of the `-L` list file in the pod. */
  listPath: string;
  /** Called for each TOC item pg_restore reports done (from its --verbose output). */
  onItem?: (description: string) => void;
  /** Restore only these sections (pre-data, data, post-data); all when unset. */
  sections?: ('pre-data' | 'data' | 'post-data')[];
  signal?: AbortSignal;
}

/** Session settings for the restore connections: faster index builds; durability is moot until it completes. */
const RESTORE_PGOPTIONS = '-c maintenance_work_mem=256MB -c synchronous_commit=off';

function restoreArgv(pg: PodPostgres, cmd: RestoreCommand, extra: string[], verbose: boolean): string[] {
  return [
    'env',
    `PGOPTIONS=${RESTORE_PGOPTIONS}`,
    'pg_restore',
    '-U',
    pg.superuser,
    '-d',
    cmd.database,
    '--no-owner',
    '--no-privileges',
    `--role=${cmd.role}`,
    '--exit-on-error',
    ...(verbose ? ['--verbose'] : []),
    ...(cmd.sections ?? []).map((section) => `--section=${section}`),
    '-L',
    cmd.listPath,
    ...extra,
  ];
}

/**
 * Keeps pg_restore's error lines (its --verbose chatter would otherwise fill the error tail) and counts items done:
 * with --jobs the leader prints "processing item" (pre-data, serial) and "finished item"; serially every object
 * gets a "creating …", "processing data …" or "executing …" line.
 */
function restoreStderr(cmd: RestoreCommand, parallel: boolean): { sink: Writable; errors: () => string } {
  const errors: string[] = [];
  const itemLine = parallel
    ? /pg_restore: (?:processing|finished) item \d+ (.*)$/
    : /pg_restore: (?:creating |processing data for table |executing )(.*)$/;
  const sink = lineSink((line) => {
    const item = itemLine.exec(line);
    if (item) cmd.onItem?.(item[1] as string);
    else if (/error|ERROR|FATAL|DETAIL|HINT|Command was/.test(line)) {
      errors.push(line);
      if (errors.length > 40) errors.shift();
    }
  });
  return { sink, errors: () => errors.join('\n') };
}

/** pg_restore from a dump file staged in the pod, with `jobs` parallel connections. */
export async function restoreFromPodFile(
  kube: KubeClient,
  pg: PodPostgres,
  cmd: RestoreCommand & { dumpPath: string; jobs: number },
): Promise<void> {
  const stderr = restoreStderr(cmd, cmd.jobs > 1);
  const argv = restoreArgv(pg, cmd, [...(cmd.jobs > 1 ? [`--jobs=${cmd.jobs}`] : []), cmd.dumpPath], true);
  const result = await kube.exec({ namespace: pg.namespace, pod: pg.pod, container: pg.container }, argv, {
    stderr: stderr.sink,
    signal: cmd.signal,
  });
  if (result.exitCode !== 0)
    throw new ExternalToolError('pg_restore', `exit code ${result.exitCode}`, stderr.errors() || result.stderrTail);
}

/**
 * pg_restore reading the dump from stdin (one connection; for when the PVC has no room for a staged copy). Progress
 * is the byte count sent; stderr then carries only pg_restore's errors.
 */
export async function restoreFromStream(
  kube: KubeClient,
  pg: PodPostgres,
  cmd: RestoreCommand,
  input: Readable,
  size: number,
  onBytes?: (n: number) => void,
): Promise<void> {
  await streamIntoPod(
    kube,
    { namespace: pg.namespace, pod: pg.pod, container: pg.container },
    restoreArgv(pg, cmd, [], false),
    input,
    size,
    { signal: cmd.signal, onBytes },
  );
}

/** A stream of byte ranges of one file, one after the other (with periodic collection, see memory.ts). */
export function rangesStream(path: string, ranges: readonly { start: number; end: number }[]): Readable {
  async function* read(): AsyncGenerator<Buffer> {
    for (const range of ranges) {
      if (range.end <= range.start) continue;
      for await (const chunk of createReadStream(path, {
        start: range.start,
        end: range.end - 1,
        highWaterMark: 256 * 1024,
      })) {
        yield chunk as Buffer;
      }
    }
  }
  const source = Readable.from(read(), { objectMode: false });
  const collecting = collectingPassThrough();
  source.on('error', (error) => collecting.destroy(error));
  return source.pipe(collecting);
}
