import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import { runCli, sandboxFlags } from '../helpers/cli.js';

describe('ess status against the sandbox', () => {
  let sandbox: Sandbox;

  beforeAll(async () => {
    sandbox = await startSandbox({ users: 20, mediaMb: 1 });
  });
  afterAll(async () => {
    await sandbox?.stop();
  });

  it('shows server name, chart, Helm release, every component, databases and media as JSON', async () => {
    const result = await runCli(['status', ...sandboxFlags(sandbox), '--json']);
    expect(result.code, result.stderr).toBe(0);
    const status = JSON.parse(result.stdout);
    expect(status.serverName).toBe('ess.localhost');
    expect(status.flavour).toBe('matrix-stack');
    expect(status.chartVersion).toBe('26.8.1');
    expect(status.helm).toMatchObject({ revision: 3, status: 'deployed' });
    const byName = Object.fromEntries(status.components.map((c: { name: string }) => [c.name, c]));
    for (const name of [
      'ess-synapse-main',
      'ess-matrix-authentication-service',
      'ess-postgres',
      'ess-element-web',
      'ess-haproxy',
    ]) {
      expect(byName[name], name).toBeDefined();
      expect(byName[name].state).toBe('running');
    }
    expect(byName['ess-synapse-main'].component).toBe('synapse');
    expect(byName['ess-postgres'].component).toBe('postgres');
    expect(status.components.every((c: { component: string }) => c.component !== 'unknown')).toBe(true);
    expect(status.postgres.mode).toBe('bundled');
    const synapseDb = status.postgres.databases.find((d: { name: string }) => d.name === 'synapse');
    expect(synapseDb.bytes).toBeGreaterThan(1_000_000);
    expect(status.media).toMatchObject({ claimName: 'ess-synapse-media', pod: 'ess-synapse-main-0' });
    expect(status.generatedSecret).toBe('ess-generated');
  });

  it('renders a table for humans on stdout and nothing else', async () => {
    const result = await runCli(['status', ...sandboxFlags(sandbox)]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/Server name:\s+ess\.localhost/);
    expect(result.stdout).toMatch(/ess-synapse-main/);
    expect(result.stdout).toMatch(/synapse\s.*\d+(\.\d)? MiB/);
  });

  it('reports a wrong namespace with exit code 4 and a next step', async () => {
    const result = await runCli(['status', '--kubeconfig', sandbox.kubeconfigPath, '-n', 'nope', '--json']);
    expect(result.code).toBe(4);
    const body = JSON.parse(result.stdout);
    expect(body.error.code).toBe('NAMESPACE_NOT_FOUND');
    expect(body.error.next.join('\n')).toMatch(/--namespace/);
    expect(body.error.next.join('\n')).toContain('-n element-onprem');
  });

  it('reports a wrong release with exit code 4 and names the releases it found', async () => {
    const result = await runCli(['status', '--kubeconfig', sandbox.kubeconfigPath, '--release', 'prod', '--json']);
    expect(result.code).toBe(4);
    const body = JSON.parse(result.stdout);
    expect(body.error.code).toBe('DEPLOYMENT_NOT_FOUND');
    expect(body.error.next.join('\n')).toMatch(/ess \(pass --release NAME\)/);
  });

  it('reports a wrong context with exit code 4 and the contexts available', async () => {
    const result = await runCli(['status', '--kubeconfig', sandbox.kubeconfigPath, '--context', 'prod']);
    expect(result.code).toBe(4);
    expect(result.stderr).toMatch(/Context "prod" is not in the kubeconfig/);
    expect(result.stderr).toMatch(/--context|Use one of/);
  });

  it('reports an unreachable API server as a failure with a next step', async () => {
    const text = await readFile(sandbox.kubeconfigPath, 'utf8');
    const broken = join(sandbox.stateDir, 'broken-kubeconfig');
    await writeFile(broken, text.replace(/http:\/\/127\.0\.0\.1:\d+/, 'http://127.0.0.1:9'));
    const result = await runCli(['status', '--kubeconfig', broken]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/Cannot reach the Kubernetes API/);
    expect(result.stderr).toMatch(/kubectl cluster-info/);
  });
});
