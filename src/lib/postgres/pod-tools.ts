import { PassThrough, type Readable, Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { EssError, ExitCode, ExternalToolError } from '../errors.js';
import type { ExecResult, KubeClient } from '../kube/client.js';
import { collect, type PodPostgres } from './in-pod.js';

/** Quotes one argument for a POSIX shell. */
export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_\-./=:@%+,]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** Joins argv into one shell command line. */
export function shellJoin(argv: string[]): string {
  return argv.map(shellQuote).join(' ');
}

/** Counts bytes flowing through, calling `onBytes` with the running total. */
export function byteCounter(onBytes?: (total: number) => void): Transform & { bytes: () => number } {
  let total = 0;
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      total += chunk.length;
      onBytes?.(total);
      cb(null, chunk);
    },
  }) as Transform & { bytes: () => number };
  t.bytes = () => total;
  return t;
}

function target(pg: PodPostgres) {
  return { namespace: pg.namespace, pod: pg.pod, container: pg.container };
}

function check(tool: string, result: ExecResult): void {
  if (result.exitCode !== 0) throw new ExternalToolError(tool, `exit code ${result.exitCode}`, result.stderrTail);
}

export interface StreamOptions {
  signal?: AbortSignal;
  /** Called with the running byte count. */
  onBytes?: (total: number) => void;
}

/**
 * Runs a dump command (pg_dump, pg_dumpall, tar…) in a pod and streams its stdout into `out` with backpressure.
 * Resolves with the number of bytes written; rejects with ExternalToolError (non-zero exit) or ExecStreamError (cut).
 */
export async function streamFromPod(
  kube: KubeClient,
  pod: { namespace: string; pod: string; container?: string },
  argv: string[],
  out: Writable,
  options: StreamOptions = {},
): Promise<number> {
  const counter = byteCounter(options.onBytes);
  const done = pipeline(counter, out, { signal: options.signal });
  const result = await kube.exec(pod, argv, { stdout: counter, signal: options.signal });
  counter.end();
  await done;
  check(argv[0], result);
  return counter.bytes();
}

/**
 * Runs `argv` in a pod reading exactly `sizeBytes` from `input` on its stdin. The remote side reads a fixed byte count
 * (`head -c N | …`), so this works on exec protocol v4 servers (Kubernetes < 1.30), which cannot half-close stdin, as
 * well as on v5. Memory stays bounded: stdin is sent with socket backpressure.
 */
export async function streamIntoPod(
  kube: KubeClient,
  pod: { namespace: string; pod: string; container?: string },
  argv: string[],
  input: Readable,
  sizeBytes: number,
  options: StreamOptions & { stdout?: Writable } = {},
): Promise<ExecResult> {
  const counter = byteCounter(options.onBytes);
  const feed = new PassThrough();
  // The input can fail while the exec runs (a checksum mismatch, an abort): remember why, and end the exec.
  let inputError: Error | undefined;
  let execEnded = false;
  const pumping = pipeline(input, counter, feed, { signal: options.signal }).catch((error: Error) => {
    // Once the exec has ended, the early close below is ours, not the input's fault.
    if (!execEnded) inputError = error;
    feed.destroy();
  });
  const script = `head -c ${sizeBytes} | ${shellJoin(argv)}`;
  let result: ExecResult;
  try {
    result = await kube.exec(pod, ['sh', '-c', script], {
      stdin: feed,
      stdout: options.stdout,
      signal: options.signal,
    });
  } catch (error) {
    execEnded = true;
    feed.destroy();
    await pumping;
    throw inputError ?? error;
  }
  execEnded = true;
  input.unpipe?.();
  feed.destroy();
  await pumping;
  if (inputError) throw inputError;
  if (result.exitCode === 0 && counter.bytes() < sizeBytes) {
    throw new ExternalToolError(argv[0], 'input ended early', `sent ${counter.bytes()} of ${sizeBytes} bytes`);
  }
  check(argv[0], result);
  return result;
}

/** Major version of a PostgreSQL tool in the pod (e.g. 17 from "pg_dump (PostgreSQL) 17.5"). */
export async function toolMajorVersion(kube: KubeClient, pg: PodPostgres, tool = 'pg_dump'): Promise<number> {
  const out = collect(4096);
  const result = await kube.exec(target(pg), [tool, '--version'], { stdout: out.sink });
  check(tool, result);
  const match = /(\d+)(?:\.\d+)?/.exec(out.text());
  if (!match) throw new ExternalToolError(tool, 'unparseable --version', out.text());
  return Number(match[1]);
}

/** How pg_dump compresses a custom-format dump. */
export interface DumpCompression {
  /** 'zstd' needs pg_dump ≥ 16. */
  method: 'zstd' | 'gzip';
  level: number;
}

/**
 * Default and allowed levels per method. The defaults favour speed: gzip 1 costs ~3 % more bytes than pg_dump's
 * own default (6) on Synapse data and ~25 % less CPU in the Postgres pod (and a shorter-held snapshot); zstd 3 is
 * zstd's own default.
 */
export const COMPRESSION_LEVELS = {
  gzip: { default: 1, min: 0, max: 9 },
  zstd: { default: 3, min: 1, max: 19 },
} as const;

/** Compression pg_dump supports: zstd from PostgreSQL 16, gzip before; `level` defaults per method. */
export function compressionFor(pgDumpMajor: number, level?: number): DumpCompression {
  const method = pgDumpMajor >= 16 ? 'zstd' : 'gzip';
  const range = COMPRESSION_LEVELS[method];
  if (level !== undefined && (!Number.isInteger(level) || level < range.min || level > range.max)) {
    throw new EssError(
      `Compression level ${level} is out of range for ${method} (pg_dump ${pgDumpMajor}): use ${range.min}–${range.max}.`,
      {
        code: 'BAD_COMPRESSION_LEVEL',
        exitCode: ExitCode.USAGE,
        next: [`Pass --compression-level between ${range.min} and ${range.max}`],
      },
    );
  }
  return { method, level: level ?? range.default };
}

/** pg_dump's compression argument: PostgreSQL 15 only knows `-Z 0-9` (gzip); 16+ takes `--compress=METHOD:LEVEL`. */
export function compressArg(compression: DumpCompression): string {
  return compression.method === 'zstd' ? `--compress=zstd:${compression.level}` : `-Z${compression.level}`;
}

/** "gzip 1", "zstd 3": for plans and summaries. */
export function describeCompression(compression: DumpCompression): string {
  return `${compression.method} ${compression.level}`;
}
