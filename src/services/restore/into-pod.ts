/**
 * Streaming into a pod for the restore: {@link streamIntoPod}'s protocol (the remote side reads an exact byte count
 * with `head -c N`, so it works on exec v4 and v5), with one difference that matters when a restore is cut short:
 * the input pipeline's rejection is always handled, so aborting a transfer (SIGINT, a failed sibling pg_restore, a
 * damaged member) surfaces as the exec's error instead of an unhandled rejection that would end the process before
 * its cleanup ran.
 */
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ExternalToolError } from '../../lib/errors.js';
import type { ExecResult, ExecTarget, KubeClient } from '../../lib/kube/client.js';
import { shInPod } from '../../lib/migrate/pod-ops.js';
import { byteCounter, shellJoin } from '../../lib/postgres/pod-tools.js';

/** Options of {@link sendIntoPod}. */
export interface SendOptions {
  signal?: AbortSignal;
  onBytes?: (total: number) => void;
  stdout?: Writable;
  stderr?: Writable;
}

/**
 * Runs `argv` in the pod with exactly `sizeBytes` of `input` on its stdin (`input` must hold exactly that many).
 * Rejects with ExternalToolError on a non-zero exit or when `input` ended early, with the exec's error when the
 * stream was cut or aborted, and with `input`'s error when it failed after its last byte.
 */
export async function sendIntoPod(
  kube: KubeClient,
  target: ExecTarget,
  argv: string[],
  input: Readable,
  sizeBytes: number,
  options: SendOptions = {},
): Promise<ExecResult> {
  const counter = byteCounter(options.onBytes);
  const feed = new PassThrough();
  const pumping = pipeline(input, counter, feed, { signal: options.signal });
  pumping.catch(() => undefined);
  let result: ExecResult;
  try {
    result = await kube.exec(target, ['sh', '-c', `head -c ${sizeBytes} | ${shellJoin(argv)}`], {
      stdin: feed,
      stdout: options.stdout,
      stderr: options.stderr,
      signal: options.signal,
    });
  } catch (error) {
    input.unpipe?.();
    feed.destroy();
    await pumping.catch(() => undefined);
    throw error;
  }
  if (result.exitCode === 0 && counter.bytes() >= sizeBytes) {
    // Every byte went out; the input ends now — or errors, e.g. an archive member whose SHA-256 does not match,
    // which must fail the transfer although the pod already has the bytes.
    const inputError = await pumping.then(
      () => undefined,
      (error: unknown) => error,
    );
    if (inputError !== undefined) throw inputError;
  } else {
    input.unpipe?.();
    feed.destroy();
    await pumping.catch(() => undefined);
  }
  if (result.exitCode === 0 && counter.bytes() < sizeBytes) {
    throw new ExternalToolError(argv[0] ?? 'sh', 'input ended early', `sent ${counter.bytes()} of ${sizeBytes} bytes`);
  }
  if (result.exitCode !== 0) {
    throw new ExternalToolError(argv[0] ?? 'sh', `exit code ${result.exitCode}`, result.stderrTail);
  }
  return result;
}

/** Writes exactly `size` bytes of `input` to `path` in the container (parent directories created), then checks the size. */
export async function writeIntoPod(
  kube: KubeClient,
  target: ExecTarget,
  path: string,
  input: Readable,
  size: number,
  options: SendOptions = {},
): Promise<void> {
  await sendIntoPod(kube, target, ['sh', '-c', 'mkdir -p "$(dirname "$0")" && cat > "$0"', path], input, size, options);
  const actual = Number((await shInPod(kube, target, `wc -c < ${shellJoin([path])}`)).trim());
  if (actual !== size) {
    throw new ExternalToolError('cat', 'short write', `${path} has ${actual} of ${size} bytes in ${target.pod}`);
  }
}
