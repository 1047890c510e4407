/**
 * `ess mau` on the sandbox's older operator-based ESS (namespace element-onprem, Postgres pod synapse-postgres-0,
 * no chart Secrets): the database, role and password come from the Postgres container's environment (the password
 * through its secretKeyRef to the installer's Secret), and ess connects through the port-forward. Requires
 * `npm run build`.
 */
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import type { KubeObject } from '../../src/sandbox/types.js';
import { runCli } from '../helpers/cli.js';
import { runbookMonth } from './runbook.js';

let sb: Sandbox;

beforeAll(async () => {
  sb = await startSandbox({ users: 20, flavour: 'operator' });
});

afterAll(async () => {
  await sb?.stop();
});

it('counts the previous month through a port-forward to the operator-managed Postgres', async () => {
  const now = new Date();
  const start = Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1);
  const end = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1);
  const month = new Date(start).toISOString().slice(0, 7);
  const r = await runCli([
    'mau',
    '--kubeconfig',
    sb.kubeconfigPath,
    '-n',
    sb.namespace,
    '--month',
    month,
    '--json',
    '--verbose',
  ]);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stderr).not.toMatch(/No password/);
  expect(r.stderr).toMatch(/password of synapse_user from synapse\/postgresPassword/);
  const secret = sb.store.get(sb.store.resourceByKind('Secret', 'v1'), sb.namespace, 'synapse') as KubeObject & {
    data: Record<string, string>;
  };
  const password = Buffer.from(secret.data.postgresPassword, 'base64').toString('utf8');
  expect(password.length).toBeGreaterThan(8);
  expect(r.stdout + r.stderr).not.toContain(password);
  const result = JSON.parse(r.stdout);
  expect(result.database).toMatchObject({ via: 'port-forward', database: 'synapse', user: 'synapse_user' });
  expect(result.database.address).toMatch(/^element-onprem\/.*postgres.*:5432$/);
  const db = new pg.Client({ connectionString: sb.postgres.url.replace(/\/postgres$/, '/synapse') });
  await db.connect();
  try {
    const expected = Number((await db.query<{ count: string }>(runbookMonth(start, end))).rows[0].count);
    expect(result.rows[0]).toMatchObject({ period: month, users: expected });
    expect(expected).toBeGreaterThan(0);
  } finally {
    await db.end();
  }
});
