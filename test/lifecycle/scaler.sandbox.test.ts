/**
 * The scaler against the sandbox's real REST API and asynchronous controllers: withWorkloadsStopped as backup,
 * restore and migrate import use it, API 500s during the scale-up, a crashed run's record, and SIGTERM.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATABASE_WRITERS } from '../../src/lib/deployment/components.js';
import { discoverDeployment } from '../../src/lib/deployment/discover.js';
import type { WorkloadInfo } from '../../src/lib/deployment/model.js';
import { withWorkloadsStopped } from '../../src/lib/deployment/scaler.js';
import type { KubeClient } from '../../src/lib/kube/client.js';
import { connectKube } from '../../src/lib/kube/load.js';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import { repoRoot } from '../helpers/cli.js';
import { pods, RBS, workloads } from './helpers.js';

describe('scaler against the sandbox', () => {
  let sandbox: Sandbox;
  let kube: KubeClient;
  let writers: WorkloadInfo[];

  beforeAll(async () => {
    sandbox = await startSandbox({ users: 20, mediaMb: 1, podStartDelayMs: 150, podStopDelayMs: 150 });
    kube = await connectKube({ kubeconfig: sandbox.kubeconfigPath });
    const deployment = await discoverDeployment(kube, { namespace: sandbox.namespace, release: sandbox.release });
    writers = deployment.workloads.filter((w) => DATABASE_WRITERS.some((id) => id === w.component));
    expect(writers.map((w) => w.name)).toContain('ess-synapse-main');
    expect(writers.map((w) => w.name)).toContain('ess-matrix-authentication-service');
  });
  afterAll(async () => {
    await sandbox?.stop();
  });

  const writerPods = () => pods(sandbox).filter((p) => writers.some((w) => p.metadata.name.startsWith(`${w.name}-`)));
  const expectRunning = () => {
    const now = workloads(sandbox);
    for (const w of writers) {
      expect(now.get(w.name)?.replicas, w.name).toBe(w.replicas);
      expect(now.get(w.name)?.ready, w.name).toBe(w.replicas);
      expect(now.get(w.name)?.annotations[RBS], w.name).toBeUndefined();
    }
  };

  it('holds Synapse and MAS at 0 with no pods while fn runs, Postgres untouched, then restores', async () => {
    const result = await withWorkloadsStopped(kube, writers, { by: 'ess test', pollMs: 100 }, async () => {
      const now = workloads(sandbox);
      for (const w of writers) {
        expect(now.get(w.name)?.replicas, w.name).toBe(0);
        expect(now.get(w.name)?.annotations[RBS], w.name).toBe(String(w.replicas));
      }
      expect(writerPods()).toHaveLength(0);
      expect(now.get('ess-postgres')?.ready).toBe(1);
      return 'dumped';
    });
    expect(result.result).toBe('dumped');
    expect(result.stopped.every((w) => w.outcome === 'stopped')).toBe(true);
    expect(result.restored.notReady).toEqual([]);
    expect(result.restored.downtimeMs).toBeGreaterThan(0);
    expectRunning();
  });

  it('retries the scale-up through API 500s and restores everything', async () => {
    const since = sandbox.requests.length;
    await withWorkloadsStopped(kube, writers, { by: 'ess test', pollMs: 100 }, async () => {
      sandbox.faults.addApiFault({
        verb: 'patch',
        resource: 'statefulsets',
        name: 'ess-synapse-main',
        status: 500,
        times: 2,
      });
      sandbox.faults.addApiFault({ verb: 'patch', resource: 'deployments', status: 503, times: 1 });
    });
    const patches = sandbox.requests.slice(since).filter((r) => r.method === 'PATCH' && r.name === 'ess-synapse-main');
    // record, scale to 0, then the restore: two injected 500s and the successful retry
    expect(patches.map((r) => r.status)).toEqual([200, 200, 500, 500, 200]);
    expectRunning();
  });

  it('replaces the count a crashed run recorded once a helm upgrade has started the workload again', async () => {
    // A crashed backup recorded 2 for the synchrotron; a helm upgrade has since reset it to 1: 1 is what runs now.
    const resource = sandbox.store.resourceByKind('StatefulSet');
    const sts = sandbox.store.get(resource, sandbox.namespace, 'ess-synapse-synchrotron')!;
    sandbox.store.update(resource, {
      ...sts,
      metadata: { ...sts.metadata, annotations: { ...sts.metadata.annotations, [RBS]: '2' } },
    });
    const result = await withWorkloadsStopped(kube, writers, { by: 'ess test', pollMs: 100 }, async () => undefined);
    expect(result.stopped.find((w) => w.name === 'ess-synapse-synchrotron')).toMatchObject({
      outcome: 'stopped',
      recordedReplicas: 1,
    });
    expect(workloads(sandbox).get('ess-synapse-synchrotron')).toMatchObject({ replicas: 1, ready: 1 });
    const after = sandbox.store.get(resource, sandbox.namespace, 'ess-synapse-synchrotron')!;
    expect(after.metadata.annotations?.[RBS]).toBeUndefined();
  });

  it('restores on SIGTERM in another process and exits 130', async () => {
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        join(repoRoot, 'test/lifecycle/fixtures/hold-stopped.ts'),
        sandbox.kubeconfigPath,
        sandbox.namespace,
        sandbox.release,
      ],
      { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (c: Buffer) => {
        stdout += c.toString();
        if (stdout.includes('STOPPED')) resolve();
      });
      child.on('close', () => reject(new Error(`child exited early: ${stderr}`)));
    });
    expect(writerPods()).toHaveLength(0);
    child.kill('SIGTERM');
    expect(await exited).toBe(130);
    expect(stdout).toContain('RESTORED Interrupted by SIGTERM');
    expectRunning();
  });
});
