/**
 * `npm run demo`: starts a sandbox, runs the main ess jobs against it as a user would (the real CLI in a child
 * process), prints their output and stops the sandbox.
 */
import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startSandbox } from './index.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

function ess(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  process.stdout.write(`\n$ ess ${args.join(' ')}\n`);
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [join(root, 'bin', 'run.js'), ...args], {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, ...env },
    });
    child.on('error', reject);
    child.on('close', (code) => resolvePromise(code ?? 1));
  });
}

/** The demo steps: each is an ess command line; the demo fails if one exits non-zero. */
function demoSteps(backupDir: string, valuesOut: string): string[][] {
  return [
    ['status'],
    ['backup', '--output', backupDir],
    ['backup', 'list', '--output', backupDir],
    ['restore', '--yes', '--values-out', valuesOut, join(backupDir, '*')],
    ['status'],
  ];
}

/** Replaces `<dir>/*` by the archive the backup step wrote there. */
async function resolveArchive(step: string[], backupDir: string): Promise<string[]> {
  const wildcard = join(backupDir, '*');
  if (!step.includes(wildcard)) return step;
  const archive = (await readdir(backupDir)).find((name) => name.endsWith('.tar'));
  if (!archive) throw new Error(`no archive in ${backupDir}`);
  return step.map((arg) => (arg === wildcard ? join(backupDir, archive) : arg));
}

async function main(): Promise<void> {
  process.stderr.write('Starting the sandbox (real PostgreSQL, simulated Kubernetes API)…\n');
  const sandbox = await startSandbox({ users: 200, mediaMb: 5 });
  let failed = false;
  try {
    process.stderr.write(`Sandbox up: ${sandbox.apiUrl} (kubeconfig ${sandbox.kubeconfigPath})\n`);
    const env = { KUBECONFIG: sandbox.kubeconfigPath };
    const backupDir = join(sandbox.stateDir, 'demo-backups');
    for (const template of demoSteps(backupDir, join(sandbox.stateDir, 'ess-values.restored.yaml'))) {
      const step = await resolveArchive(template, backupDir);
      const code = await ess(step, env);
      if (code !== 0) {
        process.stderr.write(`ess ${step.join(' ')} exited with ${code}\n`);
        failed = true;
        break;
      }
    }
  } finally {
    await sandbox.stop();
  }
  process.exitCode = failed ? 1 : 0;
}

main().catch((error: unknown) => {
  process.stderr.write(`demo failed: ${(error as Error).stack ?? error}\n`);
  process.exitCode = 1;
});
