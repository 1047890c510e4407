import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';

describe('CLI frame', () => {
  it('lists the commands in --help and exits 0', async () => {
    const result = await runCli(['--help']);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/status/);
  });

  it('prints exit codes in command help', async () => {
    const result = await runCli(['status', '--help']);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/EXIT CODES/);
    expect(result.stdout).toMatch(/--namespace/);
  });

  it('exits 2 on an unknown flag', async () => {
    const result = await runCli(['status', '--no-such-flag']);
    expect(result.code).toBe(2);
  });

  it('exits 2 (a usage error, not "a bug") on a malformed --timeout', async () => {
    const result = await runCli(['backup', '--timeout', '5x', '--dry-run', '--json']);
    expect(result.code).toBe(2);
    const body = JSON.parse(result.stdout);
    expect(body.error).toMatchObject({ code: 'USAGE', exitCode: 2 });
    expect(body.error.message).toMatch(/Expected a duration such as 90s or 5m, got "5x"/);
    expect(result.stderr).not.toMatch(/bug in ess/);
  });

  it('exits 4 with a next step when the kubeconfig is missing, as JSON on stdout only', async () => {
    const result = await runCli(['status', '--kubeconfig', '/nonexistent/kubeconfig', '--json']);
    expect(result.code).toBe(4);
    const body = JSON.parse(result.stdout);
    expect(body.error.code).toBe('NO_KUBECONFIG');
    expect(body.error.next.join(' ')).toMatch(/--kubeconfig/);
    expect(result.stderr).toMatch(/Next steps/);
  });

  it('exits 4 without any kubeconfig and no cluster', async () => {
    const result = await runCli(['status'], {
      env: { KUBECONFIG: '', HOME: '/nonexistent-home', KUBERNETES_SERVICE_HOST: '' },
    });
    expect(result.code).toBe(4);
    expect(result.stderr).toMatch(/No Kubernetes configuration found/);
  });
});
