/**
 * `npm run demo`: starts a sandbox, runs the main ess jobs against it as a user would (the real CLI in a child
 * process), prints their output and stops the sandbox.
 */
import { spawn } from 'node:child_process';
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
export const DEMO_STEPS: string[][] = [['status']];

async function main(): Promise<void> {
  process.stderr.write('Starting the sandbox (real PostgreSQL, simulated Kubernetes API)…\n');
  const sandbox = await startSandbox({ users: 200, mediaMb: 5 });
  let failed = false;
  try {
    process.stderr.write(`Sandbox up: ${sandbox.apiUrl} (kubeconfig ${sandbox.kubeconfigPath})\n`);
    const env = { KUBECONFIG: sandbox.kubeconfigPath };
    for (const step of DEMO_STEPS) {
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
