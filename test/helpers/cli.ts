import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** ../shared next to the repository: fixtures for the extra CI tier (absent on a fresh clone). */
export const sharedDir = resolve(repoRoot, '..', 'shared');
export const hasShared = existsSync(join(sharedDir, 'fixtures'));

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunCliOptions {
  env?: NodeJS.ProcessEnv;
  input?: string | Buffer;
  timeoutMs?: number;
  /** Called with the child process as soon as it starts (e.g. to send signals). */
  onSpawn?: (child: ReturnType<typeof spawn>) => void;
}

/**
 * Runs the built CLI (`node bin/run.js …`) as a child process, like a user would. Requires `npm run build` to have
 * run first (CI builds before testing; run `npm run build` locally after changing src/).
 */
export function runCli(args: string[], options: RunCliOptions = {}): Promise<CliResult> {
  if (!existsSync(join(repoRoot, 'dist', 'commands'))) {
    throw new Error('dist/ is missing: run `npm run build` before the CLI tests');
  }
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [join(repoRoot, 'bin', 'run.js'), ...args], {
      cwd: repoRoot,
      env: { ...process.env, NO_COLOR: '1', ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    options.onSpawn?.(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 110_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
    if (options.input !== undefined) child.stdin.end(options.input);
    else child.stdin.end();
  });
}

/** Global targeting flags for a sandbox. */
export function sandboxFlags(sandbox: { kubeconfigPath: string; namespace: string; release: string }): string[] {
  return ['--kubeconfig', sandbox.kubeconfigPath, '-n', sandbox.namespace, '--release', sandbox.release];
}
