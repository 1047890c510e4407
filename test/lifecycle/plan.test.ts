import { describe, expect, it } from 'vitest';
import type { ComponentId } from '../../src/lib/deployment/components.js';
import type { Deployment, WorkloadInfo } from '../../src/lib/deployment/model.js';
import { EssError, ExitCode } from '../../src/lib/errors.js';
import { parseComponents, planStart, planStop, renderPlan, replicasValues } from '../../src/services/lifecycle/plan.js';

function workload(
  name: string,
  component: ComponentId,
  role: string,
  replicas: number,
  extra: Partial<WorkloadInfo> = {},
): WorkloadInfo {
  return {
    kind: component === 'synapse' || component === 'postgres' ? 'StatefulSet' : 'Deployment',
    name,
    namespace: 'ess',
    component,
    role,
    replicas,
    readyReplicas: replicas,
    selector: {},
    ...extra,
  };
}

function deployment(workloads: WorkloadInfo[]): Deployment {
  return { flavour: 'matrix-stack', namespace: 'ess', release: 'ess', workloads, warnings: [] };
}

const running = () =>
  deployment([
    workload('ess-postgres', 'postgres', 'postgres', 1),
    workload('ess-haproxy', 'haproxy', 'haproxy', 2),
    workload('ess-element-web', 'element-web', 'element-web', 1),
    workload('ess-matrix-rtc-sfu', 'matrix-rtc', 'matrix-rtc-sfu', 1),
    workload('ess-matrix-authentication-service', 'mas', 'matrix-authentication-service', 2),
    workload('ess-synapse-main', 'synapse', 'synapse-main', 1),
    workload('ess-synapse-event-persist', 'synapse', 'synapse-event-persister', 2),
  ]);

describe('parseComponents', () => {
  it('accepts component names and all', () => {
    expect(parseComponents([])).toBe('all');
    expect(parseComponents(['synapse', 'all'])).toBe('all');
    expect(parseComponents(['synapse', 'mas', 'synapse'])).toEqual(['synapse', 'mas']);
  });

  it('rejects unknown names with a usage error listing the valid ones', () => {
    const error = (() => {
      try {
        parseComponents(['synapse', 'matrix']);
      } catch (e) {
        return e;
      }
    })() as EssError;
    expect(error).toBeInstanceOf(EssError);
    expect(error.exitCode).toBe(ExitCode.USAGE);
    expect(error.message).toContain('matrix');
    expect(error.next[0]).toContain('synapse, mas');
  });
});

describe('planStop', () => {
  it('orders Synapse and MAS first and Postgres last, and warns that helm upgrade resets replicas', () => {
    const plan = planStop(running(), 'all');
    expect(plan.workloads.map((w) => [w.name, w.phase, w.action, w.target])).toEqual([
      ['ess-matrix-authentication-service', 1, 'stop', 0],
      ['ess-synapse-event-persist', 1, 'stop', 0],
      ['ess-synapse-main', 1, 'stop', 0],
      ['ess-element-web', 2, 'stop', 0],
      ['ess-matrix-rtc-sfu', 2, 'stop', 0],
      ['ess-haproxy', 3, 'stop', 0],
      ['ess-postgres', 4, 'stop', 0],
    ]);
    expect(plan.warnings.join('\n')).toMatch(/helm upgrade.*resets replica counts/);
    expect(plan.noop).toBe(false);
  });

  it('keeps workloads already at 0 and says when a named component does not exist', () => {
    const d = running();
    d.workloads[4] = { ...d.workloads[4], replicas: 0, rememberedReplicas: 2 };
    const plan = planStop(d, ['mas', 'hookshot']);
    expect(plan.workloads).toMatchObject([{ name: 'ess-matrix-authentication-service', action: 'keep' }]);
    expect(plan.noop).toBe(true);
    expect(plan.warnings).toContain('No workload of component "hookshot" was found in ess.');
  });
});

describe('planStop: stale records and the database', () => {
  it('replaces a record a running workload has outgrown, and warns when Postgres goes while its clients stay', () => {
    const d = running();
    d.workloads[6] = { ...d.workloads[6], rememberedReplicas: 1 };
    expect(planStop(d, ['synapse']).workloads.find((w) => w.name === 'ess-synapse-event-persist')?.note).toBe(
      'stale record 1 replaced by 2',
    );
    const plan = planStop(running(), ['postgres']);
    expect(plan.warnings.join('\n')).toMatch(
      /ess-matrix-authentication-service, ess-synapse-main, ess-synapse-event-persist keep running without their database.*ess stop mas synapse postgres/,
    );
    expect(planStop(running(), ['synapse', 'mas', 'postgres']).warnings.join('\n')).not.toMatch(/without their/);
  });
});

describe('planStart: stale records', () => {
  it('keeps a running workload at its live count and drops a record that is not its count', () => {
    const d = running();
    d.workloads[6] = { ...d.workloads[6], replicas: 3, rememberedReplicas: 1 };
    const plan = planStart(d, undefined);
    expect(plan.workloads.map((w) => [w.name, w.action, w.target])).toEqual([
      ['ess-synapse-event-persist', 'start', 3],
    ]);
    expect(plan.warnings.join('\n')).toMatch(/runs with 3 replicas, so its recorded count 1 is stale/);
  });
});

describe('planStart', () => {
  it('without components resumes only what ess recorded, Postgres first', () => {
    const d = running();
    for (const i of [0, 4, 5]) d.workloads[i] = { ...d.workloads[i], replicas: 0, rememberedReplicas: i === 4 ? 2 : 1 };
    d.workloads[3] = { ...d.workloads[3], replicas: 0 }; // stopped by hand: not resumed
    const plan = planStart(d, undefined);
    expect(plan.workloads.map((w) => [w.name, w.target])).toEqual([
      ['ess-postgres', 1],
      ['ess-synapse-main', 1],
      ['ess-matrix-authentication-service', 2],
    ]);
  });

  it('starts a named component without a record with 1 replica, and warns when Postgres stays down', () => {
    const d = running();
    d.workloads[0] = { ...d.workloads[0], replicas: 0, rememberedReplicas: 1 };
    d.workloads[5] = { ...d.workloads[5], replicas: 0 };
    const plan = planStart(d, ['synapse']);
    expect(plan.workloads.map((w) => [w.name, w.action, w.target, w.note])).toEqual([
      ['ess-synapse-main', 'start', 1, 'no recorded count: 1 replica'],
      ['ess-synapse-event-persist', 'keep', 2, 'running'],
    ]);
    expect(plan.warnings.join('\n')).toMatch(/ess-postgres \(postgres\) stays at 0/);
    expect(renderPlan(plan)).toContain('0 -> 1');
  });

  it('does not warn that a component has no workloads when ess deleted its CR (operator flavour)', () => {
    const d = running();
    d.workloads = d.workloads.filter((w) => w.component !== 'synapse');
    const cr = { kind: 'Synapse', name: 'first-element-deployment', component: 'synapse' as const, ownedWorkloads: [] };
    const deleted = planStart(d, ['synapse'], { operatorReplicas: 0, crs: [{ ...cr, exists: false }] });
    expect(deleted.warnings.join('\n')).not.toMatch(/No workload of component "synapse"/);
    const present = planStart(d, ['synapse'], { operatorReplicas: 0, crs: [{ ...cr, exists: true }] });
    expect(present.warnings).toContain('No workload of component "synapse" was found in ess.');
  });

  it('is a no-op when nothing was stopped', () => {
    expect(planStart(running(), undefined).noop).toBe(true);
  });
});

describe('replicasValues', () => {
  it('maps every workload to its chart values path, workers by type', () => {
    const snippet = replicasValues(running(), ['synapse', 'mas', 'matrix-rtc', 'postgres']);
    expect(snippet.paths).toEqual([
      'matrixAuthenticationService.replicas',
      'synapse.replicas',
      'synapse.workers.event-persister.replicas',
      'matrixRTC.sfu.replicas',
      'postgres.replicas',
    ]);
    expect(snippet.values).toEqual({
      matrixAuthenticationService: { replicas: 0 },
      synapse: { replicas: 0, workers: { 'event-persister': { replicas: 0 } } },
      matrixRTC: { sfu: { replicas: 0 } },
      postgres: { replicas: 0 },
    });
    expect(snippet.yaml).toContain('event-persister:\n      replicas: 0');
  });
});
