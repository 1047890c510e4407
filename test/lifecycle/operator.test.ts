/**
 * `ess stop` / `ess start` on the older operator-based ESS (sandbox operator flavour: workloads in element-onprem,
 * the operator in operator-onprem, an updater that recreates deleted component CRs while the operator runs).
 * Requires `npm run build` (see test/helpers/cli.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import { runCli } from '../helpers/cli.js';
import { allReady, pods, RBS, waitFor, workloads } from './helpers.js';

const NS = 'element-onprem';
const OPERATOR_NS = 'operator-onprem';
const OPERATOR = 'element-operator-controller-manager';
const ED = 'first-element-deployment';
const SYNAPSE_STS = `${ED}-synapse-main`;
const SAVED = `${ED}-ess-saved-crs`;

describe('ess stop / ess start, operator flavour', () => {
  let sandbox: Sandbox;
  let flags: string[];
  const cr = (kind: string) => sandbox.store.get(sandbox.store.resourceByKind(kind), NS, ED);
  const configMap = () => sandbox.store.get(sandbox.store.resourceByKind('ConfigMap'), NS, SAVED);
  const operator = () => workloads(sandbox, OPERATOR_NS).get(OPERATOR);

  beforeAll(async () => {
    sandbox = await startSandbox({
      flavour: 'operator',
      users: 20,
      mediaMb: 1,
      podStartDelayMs: 150,
      podStopDelayMs: 150,
    });
    flags = ['--kubeconfig', sandbox.kubeconfigPath, '-n', NS];
    expect(sandbox.namespace).toBe(NS);
    await waitFor('the operator deployment to be ready', () => allReady(sandbox) && allReady(sandbox, OPERATOR_NS));
  });
  afterAll(async () => {
    await sandbox?.stop();
  });

  it('stops Synapse the runbook way: operator to 0, CR saved and deleted, its workloads gone', async () => {
    const spec = cr('Synapse')?.spec;
    expect(spec).toBeDefined();
    const result = await runCli(['stop', 'synapse', ...flags, '--yes', '--json']);
    expect(result.code, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout);
    expect(out.flavour).toBe('operator');
    expect(out.operator).toMatchObject({ deployment: OPERATOR, deletedCRs: [`Synapse/${ED}`], savedIn: SAVED });

    expect(operator()).toMatchObject({ replicas: 0 });
    expect(operator()?.annotations[RBS]).toBe('1');
    expect(pods(sandbox, OPERATOR_NS)).toHaveLength(0);
    expect(cr('Synapse')).toBeUndefined();
    expect(workloads(sandbox).has(SYNAPSE_STS)).toBe(false);
    expect(pods(sandbox).filter((p) => p.metadata.name.startsWith(SYNAPSE_STS))).toHaveLength(0);
    // Not selected: the database and MAS keep running.
    expect(workloads(sandbox).get('synapse-postgres')).toMatchObject({ replicas: 1, ready: 1 });
    expect(cr('MatrixAuthenticationService')).toBeDefined();

    const saved = JSON.parse((configMap()!.data as Record<string, string>)[`Synapse.${ED}.json`]);
    expect(saved).toMatchObject({ kind: 'Synapse', name: ED, ownedWorkloads: [`StatefulSet/${SYNAPSE_STS}`] });
    expect(saved.object.metadata.uid).toBeUndefined();
    expect(saved.object.spec).toEqual(spec);
  });

  it('start scales the operator back; the updater recreates the CR and the operator its workloads', async () => {
    const result = await runCli(['start', ...flags, '--json']);
    expect(result.code, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout);
    expect(out.operator).toMatchObject({ replicas: 1, crs: [{ kind: 'Synapse', name: ED, restoredBy: 'updater' }] });
    expect(operator()).toMatchObject({ replicas: 1, ready: 1 });
    expect(operator()?.annotations[RBS]).toBeUndefined();
    expect(cr('Synapse')).toBeDefined();
    expect(workloads(sandbox).get(SYNAPSE_STS)).toMatchObject({ replicas: 1, ready: 1 });
    expect(configMap()).toBeUndefined();
  });

  it('stop all also stops the installer Postgres (no CR owns it) after the CRs, and start brings all back', async () => {
    const result = await runCli(['stop', 'all', ...flags, '--yes', '--json']);
    expect(result.code, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout);
    expect(out.operator.deletedCRs).toEqual(
      expect.arrayContaining([`Synapse/${ED}`, `MatrixAuthenticationService/${ED}`, `ElementWeb/${ED}`]),
    );
    expect(out.operator.deletedCRs).not.toContain(`SynapseUser/${ED}-adminuser-donotdelete`);
    expect(out.workloads).toMatchObject([{ name: 'synapse-postgres', outcome: 'stopped', recordedReplicas: 1 }]);
    expect(workloads(sandbox).get('synapse-postgres')).toMatchObject({ replicas: 0 });

    const start = await runCli(['start', ...flags, '--json']);
    expect(start.code, start.stderr).toBe(0);
    for (const kind of ['Synapse', 'MatrixAuthenticationService', 'ElementWeb']) expect(cr(kind), kind).toBeDefined();
    await waitFor('everything ready', () => allReady(sandbox) && allReady(sandbox, OPERATOR_NS), 5_000);
    expect(workloads(sandbox).get('synapse-postgres')).toMatchObject({ replicas: 1, ready: 1 });
    expect(configMap()).toBeUndefined();
  });
});
