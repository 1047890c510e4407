import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import type { Writable } from 'node:stream';

/** How a helm run ended. */
export interface HelmRunResult {
  exitCode: number;
  /** Last 64 KiB of helm's stderr, for error messages. */
  stderrTail: string;
}

/** Where a helm run's output goes and how to interrupt it. */
export interface HelmRunOptions {
  /** Receives helm's stdout and stderr as they arrive (ess passes its own stderr: helm's output is progress). */
  output: Writable;
  /** Aborting sends SIGINT to helm, like Ctrl-C would. */
  signal?: AbortSignal;
}

/** The helm binary, behind an interface so tests can inject a fake. */
export interface HelmRunner {
  /** Path of the helm executable found on PATH, or undefined when there is none. */
  available(): Promise<string | undefined>;
  /** Runs `helm argv…`, streaming its output; resolves with its exit code. Rejects when helm cannot be started. */
  run(argv: string[], options: HelmRunOptions): Promise<HelmRunResult>;
}

/** The parts of a `helm rollback` command line. */
export interface RollbackArgvOptions {
  release: string;
  revision: number;
  namespace: string;
  /** Go duration, e.g. `10m`. */
  timeout: string;
  kubeconfig?: string;
  context?: string;
}

/** argv (without `helm`) of `helm rollback <release> <rev> -n <ns> --wait --timeout <t>` for the same cluster. */
export function rollbackArgv(options: RollbackArgvOptions): string[] {
  const argv = ['rollback', options.release, String(options.revision), '-n', options.namespace];
  argv.push('--wait', '--timeout', options.timeout);
  if (options.kubeconfig) argv.push('--kubeconfig', options.kubeconfig);
  if (options.context) argv.push('--kube-context', options.context);
  return argv;
}

/** Quotes argv for display so the printed command can be pasted into a shell. */
export function shellQuote(argv: string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

const TAIL_BYTES = 64 * 1024;

/** The real helm: the first executable `helm` on PATH (of `env`). */
export function createHelmRunner(env: NodeJS.ProcessEnv = process.env): HelmRunner {
  let found: Promise<string | undefined> | undefined;
  const available = () => {
    found ??= (async () => {
      for (const dir of (env.PATH ?? '').split(delimiter).filter(Boolean)) {
        const candidate = join(dir, 'helm');
        if (await isExecutable(candidate)) return candidate;
      }
      return undefined;
    })();
    return found;
  };
  return {
    available,
    async run(argv, options) {
      const path = await available();
      if (!path) throw new Error('helm is not on PATH');
      return new Promise<HelmRunResult>((resolve, reject) => {
        const child = spawn(path, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
        let tail = Buffer.alloc(0);
        child.stdout.pipe(options.output, { end: false });
        child.stderr.pipe(options.output, { end: false });
        child.stderr.on('data', (chunk: Buffer) => {
          tail = Buffer.concat([tail, chunk]);
          if (tail.length > TAIL_BYTES) tail = tail.subarray(tail.length - TAIL_BYTES);
        });
        const onAbort = () => child.kill('SIGINT');
        options.signal?.addEventListener('abort', onAbort, { once: true });
        child.on('error', (error) => {
          options.signal?.removeEventListener('abort', onAbort);
          reject(error);
        });
        child.on('close', (code, signal) => {
          options.signal?.removeEventListener('abort', onAbort);
          child.stdout.unpipe(options.output);
          child.stderr.unpipe(options.output);
          resolve({ exitCode: code ?? (signal ? 128 : 1), stderrTail: tail.toString('utf8') });
        });
      });
    },
  };
}
