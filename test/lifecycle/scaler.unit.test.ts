/**
 * Unit tests of the crash-safe scaler against an in-memory fake KubeClient and a fake clock (no waiting). The
 * same behaviours are exercised end to end against the sandbox in scaler.sandbox.test.ts.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { ANNOTATIONS } from '../../src/lib/deployment/components.js';
import {
  RestoreFailedError,
  readStopMark,
  restoreWorkloads,
  ScaleTimeoutError,
  stopWorkloads,
  type WorkloadRef,
  withRetry,
  withWorkloadsStopped,
} from '../../src/lib/deployment/scaler.js';
import { InterruptedError } from '../../src/lib/errors.js';
import { KubeApiError } from '../../src/lib/kube/client.js';
import { silentReporter } from '../../src/lib/output/log.js';
import { FakeClock, FakeKube } from './fake-kube.js';

const NS = 'ess';
const RBS = ANNOTATIONS.replicasBeforeStop;
const synapse: WorkloadRef = { kind: 'StatefulSet', namespace: NS, name: 'ess-synapse-main', component: 'synapse' };
const worker: WorkloadRef = { kind: 'StatefulSet', namespace: NS, name: 'ess-synapse-sync', component: 'synapse' };
const mas: WorkloadRef = { kind: 'Deployment', namespace: NS, name: 'ess-mas', component: 'mas' };
const postgres: WorkloadRef = { kind: 'StatefulSet', namespace: NS, name: 'ess-postgres', component: 'postgres' };
const all = [postgres, synapse, worker, mas];

let clock: FakeClock;
let kube: FakeKube;

beforeEach(() => {
  clock = new FakeClock();
  kube = new FakeKube(clock);
  kube.addWorkload('StatefulSet', NS, 'ess-synapse-main', 1);
  kube.addWorkload('StatefulSet', NS, 'ess-synapse-sync', 3);
  kube.addWorkload('Deployment', NS, 'ess-mas', 2);
  kube.addWorkload('StatefulSet', NS, 'ess-postgres', 1);
});

const opts = () => ({ by: 'ess test', clock, pollMs: 100, timeoutMs: 10_000 });

describe('stopWorkloads', () => {
  it('records every count before scaling anything, then stops Synapse and MAS before Postgres', async () => {
    const handle = await stopWorkloads(kube, all, opts());

    expect(handle.workloads.map((w) => [w.name, w.outcome, w.recordedReplicas])).toEqual([
      ['ess-synapse-main', 'stopped', 1],
      ['ess-synapse-sync', 'stopped', 3],
      ['ess-mas', 'stopped', 2],
      ['ess-postgres', 'stopped', 1],
    ]);
    for (const ref of all) {
      expect(kube.replicas(ref.kind, NS, ref.name)).toBe(0);
      expect(kube.pods(NS, ref.name)).toHaveLength(0);
    }
    expect(kube.annotations('StatefulSet', NS, 'ess-synapse-sync')[RBS]).toBe('3');
    expect(readStopMark(kube.workload('Deployment', NS, 'ess-mas'))).toMatchObject({ by: 'ess test', hold: false });

    const patches = kube.calls.filter((c) => c.verb === 'patch');
    const isScaleDown = (c: (typeof patches)[number]) =>
      (c.body as { spec?: { replicas?: number } }).spec?.replicas === 0;
    const firstScale = patches.findIndex(isScaleDown);
    const records = patches.filter((c) => JSON.stringify(c.body).includes(RBS));
    expect(records).toHaveLength(4);
    expect(patches.indexOf(records[3])).toBeLessThan(firstScale);
    // Postgres is scaled only after the Synapse/MAS pods were seen gone (a later clock tick).
    const pgScale = patches.find((c) => isScaleDown(c) && c.name === 'ess-postgres');
    const masScale = patches.find((c) => isScaleDown(c) && c.name === 'ess-mas');
    expect(pgScale!.at).toBeGreaterThan(masScale!.at);
    expect(handle.firstStoppedAt).toBeDefined();
  });

  it('keeps a count recorded by a crashed run instead of overwriting it', async () => {
    // Given a workload a crashed backup recorded at 3 and left at 0
    await kube.patch('StatefulSet', NS, 'ess-synapse-sync', {
      metadata: { annotations: { [RBS]: '3', [ANNOTATIONS.stoppedBy]: '{"by":"ess backup","hold":false}' } },
      spec: { replicas: 0 },
    });
    kube.step();

    const handle = await stopWorkloads(kube, [worker], opts());

    expect(handle.workloads[0]).toMatchObject({ outcome: 'adopted', recordedReplicas: 3, replicasBefore: 0 });
    expect(kube.annotations('StatefulSet', NS, 'ess-synapse-sync')[RBS]).toBe('3');
    await handle.restore();
    expect(kube.replicas('StatefulSet', NS, 'ess-synapse-sync')).toBe(3);
    expect(kube.annotations('StatefulSet', NS, 'ess-synapse-sync')[RBS]).toBeUndefined();
  });

  it('replaces a record that a running workload has outgrown (helm upgrade since), and never goes back to it', async () => {
    // Given a record of 3 on a workload that `helm upgrade` has since started again with 1
    await kube.patch('StatefulSet', NS, 'ess-synapse-sync', {
      metadata: { annotations: { [RBS]: '3', [ANNOTATIONS.stoppedBy]: '{"by":"ess stop","hold":true}' } },
      spec: { replicas: 1 },
    });
    kube.step();

    const warnings: string[] = [];
    const reporter = { ...silentReporter, warn: (message: string) => warnings.push(message) };
    const handle = await stopWorkloads(kube, [worker], { ...opts(), reporter });

    expect(handle.workloads[0]).toMatchObject({ outcome: 'stopped', recordedReplicas: 1, replicasBefore: 1 });
    expect(kube.annotations('StatefulSet', NS, 'ess-synapse-sync')[RBS]).toBe('1');
    expect(warnings.join('\n')).toMatch(/ess-synapse-sync: runs with 1 replica, so its recorded count 3 is stale/);
    await handle.restore();
    expect(kube.replicas('StatefulSet', NS, 'ess-synapse-sync')).toBe(1);
  });

  it('start drops a stale record on a running workload instead of scaling it back to the record', async () => {
    // Given `ess stop` recorded 1, then someone scaled the workload to 3 by hand
    await kube.patch('StatefulSet', NS, 'ess-synapse-sync', {
      metadata: { annotations: { [RBS]: '1', [ANNOTATIONS.stoppedBy]: '{"by":"ess stop","hold":true}' } },
      spec: { replicas: 3 },
    });
    kube.step();

    const report = await restoreWorkloads(kube, [worker], opts());

    expect(report.workloads[0]).toMatchObject({ replicas: 3, source: 'stale-record' });
    expect(kube.replicas('StatefulSet', NS, 'ess-synapse-sync')).toBe(3);
    expect(kube.annotations('StatefulSet', NS, 'ess-synapse-sync')[RBS]).toBeUndefined();
    expect(report.warnings.join('\n')).toMatch(/runs with 3 replicas, so its recorded count 1 is stale/);
  });

  it('leaves a workload held by `ess stop` stopped, and one at 0 without a record alone', async () => {
    await stopWorkloads(kube, [synapse], { ...opts(), by: 'ess stop', hold: true });
    await kube.patch('Deployment', NS, 'ess-mas', { spec: { replicas: 0 } });
    kube.step();

    const result = await withWorkloadsStopped(kube, [synapse, mas, postgres], opts(), async () => 'dumped');

    expect(result.result).toBe('dumped');
    expect(result.stopped.map((w) => w.outcome)).toEqual(['held', 'already-zero', 'stopped']);
    expect(kube.replicas('StatefulSet', NS, 'ess-synapse-main')).toBe(0);
    expect(kube.annotations('StatefulSet', NS, 'ess-synapse-main')[RBS]).toBe('1');
    expect(kube.replicas('Deployment', NS, 'ess-mas')).toBe(0);
    expect(kube.replicas('StatefulSet', NS, 'ess-postgres')).toBe(1);
  });

  it('re-reads and retries when the object changed between read and record (409)', async () => {
    kube.faults.push({ verb: 'patch', name: 'ess-mas', status: 409, times: 2 });
    const handle = await stopWorkloads(kube, [mas], opts());
    expect(handle.workloads[0].outcome).toBe('stopped');
    expect(kube.annotations('Deployment', NS, 'ess-mas')[RBS]).toBe('2');
  });

  it('times out when pods do not terminate, leaving the records for `ess start`', async () => {
    kube.stuckPods.add('ess-mas');
    const error = await stopWorkloads(kube, all, { ...opts(), timeoutMs: 2_000, release: 'prod' }).catch((e) => e);
    expect(error).toBeInstanceOf(ScaleTimeoutError);
    // The next step names the release too: `ess start -n ess` alone would find no deployment of release prod.
    expect((error as ScaleTimeoutError).next.join('\n')).toContain(`ess start -n ${NS} --release prod`);
    // Postgres was never reached (its phase comes after MAS), but it is recorded.
    expect(kube.replicas('StatefulSet', NS, 'ess-postgres')).toBe(1);
    expect(kube.annotations('StatefulSet', NS, 'ess-postgres')[RBS]).toBe('1');

    kube.stuckPods.clear();
    const report = await restoreWorkloads(kube, all, opts());
    expect(report.workloads.map((w) => [w.name, w.replicas, w.source])).toEqual([
      ['ess-postgres', 1, 'recorded'],
      ['ess-synapse-main', 1, 'recorded'],
      ['ess-synapse-sync', 3, 'recorded'],
      ['ess-mas', 2, 'recorded'],
    ]);
  });
});

describe('restore', () => {
  it('retries 5xx and connection loss with backoff and is idempotent', async () => {
    const handle = await stopWorkloads(kube, [synapse, worker], opts());
    kube.faults.push({ verb: 'patch', name: 'ess-synapse-main', status: 500, times: 2 });
    kube.faults.push({ verb: 'get', name: 'ess-synapse-sync', status: 'connection', times: 2 });
    const sleepsBefore = clock.sleeps.length;

    const report = await handle.restore();

    expect(report.workloads.every((w) => w.ready && w.source === 'recorded')).toBe(true);
    expect(kube.replicas('StatefulSet', NS, 'ess-synapse-main')).toBe(1);
    expect(kube.replicas('StatefulSet', NS, 'ess-synapse-sync')).toBe(3);
    expect(clock.sleeps.slice(sleepsBefore)).toEqual(expect.arrayContaining([250, 500]));
    expect(report.downtimeMs).toBeGreaterThan(0);

    const again = await handle.restore();
    expect(again.workloads.map((w) => w.source)).toEqual(['unchanged', 'unchanged']);
  });

  it('does not apply a retried scale-up twice when the first request went through', async () => {
    await stopWorkloads(kube, [worker], opts());
    // A concurrent `ess start` restored it and someone scaled it to 5 since: the stale patch must not win.
    await kube.patch('StatefulSet', NS, 'ess-synapse-sync', {
      metadata: { annotations: { [RBS]: null } },
      spec: { replicas: 5 },
    });
    const report = await restoreWorkloads(kube, [worker], opts());
    expect(report.workloads[0].source).toBe('unchanged');
    expect(kube.replicas('StatefulSet', NS, 'ess-synapse-sync')).toBe(5);
  });

  it('starts a workload at 0 without a record with defaultReplicas and warns', async () => {
    await kube.patch('Deployment', NS, 'ess-mas', { spec: { replicas: 0 } });
    const report = await restoreWorkloads(kube, [mas], { ...opts(), defaultReplicas: 1 });
    expect(report.workloads[0]).toMatchObject({ source: 'default', replicas: 1, ready: true });
    expect(report.warnings[0]).toMatch(/no count was recorded; started with 1 replica/);
  });

  it('restores every phase even when one does not become ready, then reports the timeout', async () => {
    await stopWorkloads(kube, all, opts());
    kube.neverReady.add('ess-postgres');
    const error = await restoreWorkloads(kube, all, { ...opts(), timeoutMs: 1_000 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ScaleTimeoutError);
    expect((error as ScaleTimeoutError).pending).toEqual(['statefulset/ess-postgres']);
    expect(kube.replicas('StatefulSet', NS, 'ess-synapse-sync')).toBe(3);
  });

  it('gives up after the retry budget with RestoreFailedError, keeping the record', async () => {
    await stopWorkloads(kube, [mas], opts());
    kube.faults.push({ verb: 'patch', name: 'ess-mas', status: 503, times: 100 });
    await expect(restoreWorkloads(kube, [mas], { ...opts(), retry: { attempts: 3 } })).rejects.toBeInstanceOf(
      RestoreFailedError,
    );
    expect(kube.annotations('Deployment', NS, 'ess-mas')[RBS]).toBe('2');
  });
});

describe('withWorkloadsStopped', () => {
  it('restores when fn throws and rethrows its error', async () => {
    const boom = new Error('pg_dump failed');
    await expect(
      withWorkloadsStopped(kube, [synapse, mas], opts(), async () => {
        expect(kube.replicas('Deployment', NS, 'ess-mas')).toBe(0);
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(kube.replicas('Deployment', NS, 'ess-mas')).toBe(2);
    expect(kube.annotations('Deployment', NS, 'ess-mas')[RBS]).toBeUndefined();
  });

  it('restores on abort (SIGTERM) and then throws InterruptedError', async () => {
    const controller = new AbortController();
    const error = await withWorkloadsStopped(kube, all, { ...opts(), signal: controller.signal }, async () => {
      controller.abort(new Error('SIGTERM'));
      await clock.sleep(10, controller.signal);
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InterruptedError);
    expect((error as Error).message).toContain('SIGTERM');
    for (const ref of all) expect(kube.annotations(ref.kind, NS, ref.name)[RBS]).toBeUndefined();
    expect(kube.replicas('StatefulSet', NS, 'ess-synapse-sync')).toBe(3);
  });

  it('restores what was already stopped when stopping itself fails half-way', async () => {
    kube.faults.push({ verb: 'patch', name: 'ess-postgres', status: 403, times: 1 });
    // The 403 hits postgres' record patch: nothing has been scaled yet, so the restore finds only records.
    await expect(withWorkloadsStopped(kube, all, opts(), async () => 'never')).rejects.toBeInstanceOf(KubeApiError);
    for (const ref of all) {
      expect(kube.annotations(ref.kind, NS, ref.name)[RBS]).toBeUndefined();
      expect(kube.replicas(ref.kind, NS, ref.name)).toBeGreaterThan(0);
    }
  });

  it('names both failures when fn fails and the restore fails too', async () => {
    const error = await withWorkloadsStopped(kube, [mas], { ...opts(), retry: { attempts: 2 } }, async () => {
      kube.faults.push({ verb: 'patch', name: 'ess-mas', status: 500, times: 100 });
      throw new Error('upload failed');
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RestoreFailedError);
    expect((error as Error).message).toMatch(/upload failed[\s\S]*Could not scale deployment\/ess-mas back up/);
    expect((error as RestoreFailedError).next.join(' ')).toContain('ess start');
  });
});

describe('withRetry', () => {
  it('does not retry a 4xx', async () => {
    let calls = 0;
    await expect(
      withRetry(
        'x',
        async () => {
          calls++;
          throw new KubeApiError(422, undefined, 'PATCH', '/x');
        },
        { clock },
      ),
    ).rejects.toBeInstanceOf(KubeApiError);
    expect(calls).toBe(1);
  });
});
