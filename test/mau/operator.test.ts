/**
 * `ess mau` on the sandbox's older operator-based ESS (namespace element-onprem, Postgres pod synapse-postgres-0,
 * no chart Secrets): the database and role come from the Postgres container's environment, there is no password to
 * find, so ess warns and connects without one through the port-forward. Requires `npm run build`.
 */
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
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
  const r = await runCli(['mau', '--kubeconfig', sb.kubeconfigPath, '-n', sb.namespace, '--month', month, '--json']);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stderr).toMatch(/No password for synapse_user found.*trying without one/);
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
