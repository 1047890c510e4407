import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export interface Timed {
  ms: number;
  /** Peak resident set size of the child process in bytes (from /usr/bin/time when available, else undefined). */
  peakRssBytes?: number;
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command, measuring wall time and (via GNU time when present) the child's peak RSS. */
export function timeCommand(argv: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Timed> {
  const useTime = process.platform === 'linux';
  const full = useTime
    ? [
        '/usr/bin/env',
        'bash',
        '-c',
        `command -v /usr/bin/time >/dev/null && exec /usr/bin/time -f 'ESS_BENCH_RSS_KB=%M' "$@" || exec "$@"`,
        'bench',
        ...argv,
      ]
    : argv;
  return new Promise((resolvePromise, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(full[0], full.slice(1), {
      env: { ...process.env, ...options.env },
      cwd: options.cwd ?? repoRoot,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      let stderr = Buffer.concat(err).toString('utf8');
      const match = /ESS_BENCH_RSS_KB=(\d+)/.exec(stderr);
      stderr = stderr.replace(/ESS_BENCH_RSS_KB=\d+\n?/, '');
      resolvePromise({
        ms,
        peakRssBytes: match ? Number(match[1]) * 1024 : undefined,
        code,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr,
      });
    });
  });
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Prints a result table and writes bench/results/<name>.json. */
export function report(
  name: string,
  rows: Record<string, string | number>[],
  extra: Record<string, unknown> = {},
): void {
  console.table(rows);
  writeFileSync(
    join(repoRoot, 'bench', 'results', `${name}.json`),
    `${JSON.stringify({ name, at: new Date().toISOString(), rows, ...extra }, null, 2)}\n`,
  );
}

/** Runs a command that must succeed (exit 0); its timing and output. */
export async function runOk(argv: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Timed> {
  const t = await timeCommand(argv, options);
  if (t.code !== 0) throw new Error(`${argv.join(' ')} exited ${t.code}:\n${t.stderr.slice(-2000)}`);
  return t;
}

/** The kubectl the runbook baselines use. */
export const KUBECTL = '/usr/lib/google-cloud-sdk/bin/kubectl.1.31';
// Synapse process pods and MAS pods, not the pods of completed hook Jobs (ess-deployment.md §3.2).
const RUNBOOK_POD_SELECTORS = [
  'k8s.element.io/synapse-instance=ess-synapse',
  'app.kubernetes.io/name=matrix-authentication-service',
];

/** kubectl argv against a sandbox namespace. */
export function kubectlFor(target: { kubeconfigPath: string; namespace: string }) {
  return (...args: string[]) => [KUBECTL, '--kubeconfig', target.kubeconfigPath, '-n', target.namespace, ...args];
}

/** The runbooks' "scale Synapse and MAS to `replicas`" step, then waiting for their pods to go or be ready. */
export async function runbookScale(k: (...args: string[]) => string[], replicas: 0 | 1): Promise<void> {
  await runOk(k('scale', 'statefulset', '-l', 'app.kubernetes.io/component=matrix-server', `--replicas=${replicas}`));
  await runOk(
    k('scale', 'deployment', '-l', 'app.kubernetes.io/component=matrix-authentication', `--replicas=${replicas}`),
  );
  for (const selector of RUNBOOK_POD_SELECTORS) {
    if (replicas === 0) {
      const t = await timeCommand(k('wait', '--for=delete', 'pod', '-l', selector, '--timeout=300s'));
      if (t.code !== 0 && !/no matching resources/.test(t.stderr)) throw new Error(`kubectl wait: ${t.stderr}`);
    } else {
      await runOk(k('wait', '--for=condition=Ready', 'pod', '-l', selector, '--timeout=300s'));
    }
  }
}
