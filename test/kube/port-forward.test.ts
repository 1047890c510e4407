/**
 * ess's own WebSocket port-forward (src/lib/kube/port-forward.ts) against the sandbox's API server and its real
 * PostgreSQL: the pg driver through the tunnel, 20 MB each way, and two connections at once.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PortForwardHandle } from '../../src/lib/kube/client.js';
import { connectKube } from '../../src/lib/kube/load.js';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';

describe('port-forward over WebSocket (ess)', () => {
  let sandbox: Sandbox;
  let forward: PortForwardHandle;
  beforeAll(async () => {
    sandbox = await startSandbox({ users: 5, mediaMb: 0 });
    const kube = await connectKube({ kubeconfig: sandbox.kubeconfigPath });
    forward = await kube.portForward('ess', 'ess-postgres-0', 5432);
  });
  afterAll(async () => {
    await forward?.close();
    await sandbox?.stop();
  });

  const client = () =>
    new pg.Client({
      host: '127.0.0.1',
      port: forward.localPort,
      user: sandbox.postgres.superuser,
      database: 'postgres',
    });

  it('carries 20 MB each way for two connections at once, byte for byte', async () => {
    const [a, b] = [client(), client()];
    await Promise.all([a.connect(), b.connect()]);
    try {
      const down = 'SELECT repeat($1, 20000000) AS big';
      const [ra, rb] = await Promise.all([a.query(down, ['a']), b.query(down, ['b'])]);
      expect(ra.rows[0].big.length).toBe(20_000_000);
      expect(rb.rows[0].big).toBe('b'.repeat(20_000_000));
      const upload = 'y'.repeat(20_000_000);
      const up = await a.query('SELECT length($1::text) AS n, md5($1::text) AS sum', [upload]);
      const { createHash } = await import('node:crypto');
      expect(up.rows[0]).toEqual({ n: 20_000_000, sum: createHash('md5').update(upload).digest('hex') });
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
    expect(sandbox.requests.filter((r) => r.subresource === 'portforward').length).toBeGreaterThanOrEqual(2);
  });

  it("a connection to a port nothing listens on fails instead of hanging, with the kubelet's reason kept", async () => {
    const kube = await connectKube({ kubeconfig: sandbox.kubeconfigPath });
    const dead = await kube.portForward('ess', 'ess-postgres-0', 5999);
    try {
      const c = new pg.Client({ host: '127.0.0.1', port: dead.localPort, user: 'x', connectionTimeoutMillis: 10_000 });
      await expect(c.connect()).rejects.toThrow();
      // The kubelet's reason (error channel) is kept for ess's error messages.
      expect(dead.lastError?.()).toMatch(/5999/);
    } finally {
      await dead.close();
    }
  });
});
