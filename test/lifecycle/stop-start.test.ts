/**
 * `ess stop` / `ess start` end to end: the built CLI as a child process against the sandbox (matrix-stack flavour).
 * Requires `npm run build` (see test/helpers/cli.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import { runCli, sandboxFlags } from '../helpers/cli.js';
import { allReady, pods, RBS, recordChanges, STOPPED_BY, setReplicas, waitFor, workloads } from './helpers.js';

const WRITERS = [
  'ess-synapse-main',
  'ess-synapse-event-persist',
  'ess-synapse-fed-sender',
  'ess-synapse-synchrotron',
  'ess-matrix-authentication-service',
];

describe('ess stop / ess start against the sandbox', () => {
  let sandbox: Sandbox;
  let flags: string[];
  let before: Map<string, number>;

  beforeAll(async () => {
    sandbox = await startSandbox({ users: 20, mediaMb: 1, podStartDelayMs: 150, podStopDelayMs: 250 });
    flags = sandboxFlags(sandbox);
    // A worker with 2 replicas shows that the real count, not 1, comes back.
    setReplicas(sandbox, 'StatefulSet', 'ess-synapse-event-persist', 2);
    await waitFor('the seeded deployment to be ready', () => allReady(sandbox));
    before = new Map([...workloads(sandbox)].map(([name, w]) => [name, w.replicas]));
    expect(before.get('ess-synapse-event-persist')).toBe(2);
    for (const name of [...WRITERS, 'ess-postgres']) expect(before.has(name), name).toBe(true);
  });
  afterAll(async () => {
    await sandbox?.stop();
  });

  const expectAllBack = () => {
    for (const [name, w] of workloads(sandbox)) {
      expect(w.replicas, name).toBe(before.get(name));
      expect(w.ready, name).toBe(before.get(name));
      expect(w.annotations[RBS], name).toBeUndefined();
      expect(w.annotations[STOPPED_BY], name).toBeUndefined();
    }
  };

  it('--dry-run prints the plan in stop order and changes nothing', async () => {
    const patches = () => sandbox.requests.filter((r) => r.method !== 'GET').length;
    const writesBefore = patches();
    const result = await runCli(['stop', ...flags, '--dry-run', '--json']);
    expect(result.code, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout);
    expect(out).toMatchObject({ action: 'stop', dryRun: true, changed: false });
    const order: { name: string; phase: number }[] = out.plan.workloads;
    const pgIndex = order.findIndex((w) => w.name === 'ess-postgres');
    expect(pgIndex).toBe(order.length - 1);
    for (const name of WRITERS) expect(order.findIndex((w) => w.name === name)).toBeLessThan(pgIndex);
    expect(out.warnings.join('\n')).toMatch(/helm upgrade/);
    expect(patches()).toBe(writesBefore);
  });

  it('--print-values gives the values snippet for a persistent stop', async () => {
    const result = await runCli(['stop', 'synapse', 'mas', ...flags, '--print-values']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain('matrixAuthenticationService:\n  replicas: 0');
    expect(result.stdout).toMatch(/synapse:\n {2}replicas: 0\n {2}workers:\n/);
    for (const worker of ['event-persister', 'federation-sender', 'synchrotron']) {
      expect(result.stdout).toContain(`    ${worker}:\n      replicas: 0`);
    }
    expect(workloads(sandbox).get('ess-synapse-main')?.replicas).toBe(1);
  });

  it('refuses without --yes when there is no TTY, and rejects unknown components', async () => {
    const refused = await runCli(['stop', 'synapse', ...flags, '--json']);
    expect(refused.code).toBe(4);
    expect(JSON.parse(refused.stdout).error.code).toBe('CONFIRMATION_REQUIRED');
    const unknown = await runCli(['stop', 'synaps', ...flags, '--yes']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/Unknown component: synaps[\s\S]*synapse, mas/);
    expect(workloads(sandbox).get('ess-synapse-main')?.annotations[RBS]).toBeUndefined();
  });

  it('stops everything: records each count, Synapse and MAS gone before Postgres is scaled', async () => {
    const changes = recordChanges(sandbox);
    const result = await runCli(['stop', ...flags, '--yes', '--json']);
    changes.stop();
    expect(result.code, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout);
    expect(out.changed).toBe(true);
    expect(out.workloads.every((w: { outcome: string }) => w.outcome === 'stopped')).toBe(true);

    for (const [name, w] of workloads(sandbox)) {
      expect(w.replicas, name).toBe(0);
      expect(w.annotations[RBS], name).toBe(String(before.get(name)));
      expect(JSON.parse(w.annotations[STOPPED_BY])).toMatchObject({ by: 'ess stop', hold: true });
    }
    expect(pods(sandbox)).toHaveLength(0);

    const writerPodsGone = changes.events.filter(
      (e) => e.kind === 'Pod' && e.type === 'DELETED' && WRITERS.some((w) => e.name.startsWith(`${w}-`)),
    );
    expect(writerPodsGone.length).toBeGreaterThanOrEqual(WRITERS.length);
    const pgScaled = changes.events.find(
      (e) => e.name === 'ess-postgres' && e.kind === 'StatefulSet' && e.replicas === 0,
    );
    expect(pgScaled).toBeDefined();
    expect(pgScaled!.at).toBeGreaterThan(Math.max(...writerPodsGone.map((e) => e.at)));
    expect(result.stderr).toMatch(/helm upgrade/);
  });

  it('start with no arguments resumes everything, Postgres ready before Synapse is scaled up', async () => {
    const changes = recordChanges(sandbox);
    const result = await runCli(['start', ...flags, '--json']);
    changes.stop();
    expect(result.code, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout);
    expect(out).toMatchObject({ action: 'start', resumed: true, changed: true });
    expect(out.workloads.every((w: { source: string; ready: boolean }) => w.source === 'recorded' && w.ready)).toBe(
      true,
    );
    expectAllBack();
    const pgReady = changes.events.find((e) => e.name === 'ess-postgres' && e.kind === 'StatefulSet' && e.ready === 1);
    const synapseUp = changes.events.find(
      (e) => e.name === 'ess-synapse-main' && e.kind === 'StatefulSet' && e.replicas === 1,
    );
    expect(synapseUp!.at).toBeGreaterThan(pgReady!.at);

    const again = await runCli(['start', ...flags]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('Nothing to start');
  });

  it('a stop killed with SIGKILL half-way is undone by `ess start`', async () => {
    let killedAt: Map<string, { replicas: number; rbs?: string }> | undefined;
    let unsubscribe = () => {};
    const result = await runCli(['stop', ...flags, '--yes'], {
      onSpawn: (child) => {
        unsubscribe = sandbox.store.subscribe((e) => {
          if (killedAt || (e.resource.kind !== 'StatefulSet' && e.resource.kind !== 'Deployment')) return;
          if ((e.object.spec as { replicas?: number }).replicas !== 0) return;
          child.kill('SIGKILL');
          killedAt = new Map(
            [...workloads(sandbox)].map(([n, w]) => [n, { replicas: w.replicas, rbs: w.annotations[RBS] }]),
          );
        });
      },
    });
    unsubscribe();
    expect(result.signal).toBe('SIGKILL');
    expect(killedAt).toBeDefined();
    // Every workload was recorded before the first was scaled; some are at 0, Postgres is not.
    for (const [name, w] of killedAt!) expect(w.rbs, name).toBe(String(before.get(name)));
    expect([...killedAt!.values()].some((w) => w.replicas === 0)).toBe(true);
    expect(workloads(sandbox).get('ess-postgres')?.replicas).toBe(1);

    const start = await runCli(['start', ...flags, '--json']);
    expect(start.code, start.stderr).toBe(0);
    expect(start.stderr).toMatch(/Taking over the ess lock/);
    expectAllBack();
  });

  it('SIGTERM during stop exits 130 and says how to undo; start restores', async () => {
    let unsubscribe = () => {};
    let signalled = false;
    const result = await runCli(['stop', ...flags, '--yes'], {
      onSpawn: (child) => {
        unsubscribe = sandbox.store.subscribe((e) => {
          if (signalled || e.resource.kind !== 'StatefulSet') return;
          if ((e.object.spec as { replicas?: number }).replicas !== 0) return;
          signalled = true;
          child.kill('SIGTERM');
        });
      },
    });
    unsubscribe();
    expect(result.code, result.stderr).toBe(130);
    expect(result.stderr).toMatch(/SIGTERM[\s\S]*Undo: ess start/);
    const start = await runCli(['start', ...flags]);
    expect(start.code, start.stderr).toBe(0);
    expectAllBack();
  });

  it('starts a named component that has no recorded count with 1 replica and a warning', async () => {
    setReplicas(sandbox, 'Deployment', 'ess-matrix-authentication-service', 0);
    await waitFor('MAS pods gone', () => !pods(sandbox).some((p) => p.metadata.name.startsWith('ess-matrix-auth')));
    const result = await runCli(['start', 'mas', ...flags, '--json']);
    expect(result.code, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout);
    expect(out.workloads).toMatchObject([
      { name: 'ess-matrix-authentication-service', replicas: 1, source: 'default' },
    ]);
    expect(out.warnings.join('\n')).toMatch(/no count was recorded; started with 1 replica/);
    expectAllBack();
  });

  it('start fails with SCALE_TIMEOUT (exit 1) when a pod does not become ready in time', async () => {
    const stop = await runCli(['stop', 'synapse', ...flags, '--yes']);
    expect(stop.code, stop.stderr).toBe(0);
    sandbox.faults.delayReadiness('ess-synapse-main', 60_000);
    const result = await runCli(['start', ...flags, '--timeout', '2s', '--json']);
    expect(result.code).toBe(1);
    const body = JSON.parse(result.stdout);
    expect(body.error.code).toBe('SCALE_TIMEOUT');
    expect(body.error.message).toContain('statefulset/ess-synapse-main');
    // The counts are restored (records cleared) even though readiness timed out.
    expect(workloads(sandbox).get('ess-synapse-main')).toMatchObject({ replicas: 1 });
    expect(workloads(sandbox).get('ess-synapse-main')?.annotations[RBS]).toBeUndefined();
    sandbox.faults.clear();
    sandbox.faults.disappearPod(sandbox.namespace, 'ess-synapse-main-0');
    await waitFor('Synapse ready again', () => allReady(sandbox));
    expectAllBack();
  });
});
