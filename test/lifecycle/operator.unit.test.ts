/**
 * Operator flavour, the path the sandbox cannot show (its updater always recreates CRs): when the updater does not
 * bring a deleted CR back, `ess start` recreates it from the copy `ess stop` saved. In-memory fake KubeClient.
 */
import { describe, expect, it } from 'vitest';
import { silentReporter } from '../../src/lib/output/log.js';
import { startServices } from '../../src/services/lifecycle/start.js';
import { FakeClock, FakeKube } from './fake-kube.js';
import { RBS } from './helpers.js';

const NS = 'element-onprem';
const ED = 'first-element-deployment';

describe('ess start, operator flavour, without an updater', () => {
  it('recreates a saved CR from its copy (owner uid refreshed), waits for its workloads, forgets the copy', async () => {
    const clock = new FakeClock();
    const kube = new FakeKube(clock);
    kube.add('Namespace', { metadata: { name: NS } });
    kube.add('ElementDeployment', {
      apiVersion: 'matrix.element.io/v1alpha1',
      metadata: { name: ED, namespace: NS, uid: 'ed-uid-now' },
      status: { dependentCRs: { [`Synapse/${ED}`]: 'matrix.element.io/v1alpha1' } },
    } as never);
    kube.addWorkload('Deployment', 'operator-onprem', 'element-operator-controller-manager', 0, {
      annotations: { [RBS]: '1' },
    });
    const savedObject = {
      apiVersion: 'matrix.element.io/v1alpha1',
      kind: 'Synapse',
      metadata: {
        name: ED,
        namespace: NS,
        ownerReferences: [{ kind: 'ElementDeployment', name: ED, uid: 'ed-uid-before-reinstall' }],
      },
      spec: { config: { maxMauUsers: 500 } },
    };
    kube.add('ConfigMap', {
      metadata: { name: `${ED}-ess-saved-crs`, namespace: NS },
      data: {
        [`Synapse.${ED}.json`]: JSON.stringify({
          kind: 'Synapse',
          name: ED,
          component: 'synapse',
          ownedWorkloads: [`StatefulSet/${ED}-synapse-main`],
          savedAt: '2026-01-01T00:00:00Z',
          object: savedObject,
        }),
      },
    } as never);
    // The operator (no updater here) makes the StatefulSet once the CR exists.
    kube.afterCreate = (kind) => {
      if (kind === 'Synapse') kube.addWorkload('StatefulSet', NS, `${ED}-synapse-main`, 1);
    };

    const result = await startServices(
      kube,
      { namespace: NS, release: 'ess', components: [], crWaitMs: 2_000 },
      { reporter: silentReporter, clock, pollMs: 100 },
    );

    expect(result.operator).toMatchObject({ replicas: 1, crs: [{ kind: 'Synapse', name: ED, restoredBy: 'ess' }] });
    expect(kube.replicas('Deployment', 'operator-onprem', 'element-operator-controller-manager')).toBe(1);
    const created = kube.workload('Synapse', NS, ED);
    expect(created.spec).toEqual(savedObject.spec);
    expect(created.metadata.ownerReferences?.[0].uid).toBe('ed-uid-now');
    // ess waited the updater's grace period before recreating.
    const createdAt = kube.calls.find((c) => c.verb === 'create' && c.kind === 'Synapse')!.at;
    const operatorUp = kube.calls.find(
      (c) => c.verb === 'patch' && c.name === 'element-operator-controller-manager',
    )!.at;
    expect(createdAt - operatorUp).toBeGreaterThanOrEqual(2_000);
    expect(kube.objects.has(`ConfigMap/${NS}/${ED}-ess-saved-crs`)).toBe(false);
  });
});
