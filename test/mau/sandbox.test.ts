/**
 * End to end: the built CLI against the sandbox (a simulated ESS whose API server speaks real Kubernetes REST and
 * WebSocket port-forward, in front of a real PostgreSQL). `ess mau` finds the bundled Postgres, reads the
 * synapse_user password from `ess-generated`, connects through a port-forward to ess-postgres-0:5432, and must
 * agree with the runbook's SQL run directly on the same database. Requires `npm run build`.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import { runCli, sandboxFlags } from '../helpers/cli.js';
import { runbookCurrent, runbookMonth } from './runbook.js';

const DAY = 86_400_000;
let sb: Sandbox;
let db: pg.Client;

beforeAll(async () => {
  sb = await startSandbox({ users: 20 });
  db = new pg.Client({ connectionString: sb.postgres.url.replace(/\/postgres$/, '/synapse') });
  await db.connect();
});

afterAll(async () => {
  await db?.end().catch(() => {});
  await sb?.stop();
});

async function count(sql: string): Promise<number> {
  return Number((await db.query<{ count: string }>(sql)).rows[0].count);
}

describe('ess mau on the sandbox', () => {
  it('current MAU through the port-forward equals runbook query 1 and Synapse’s own queries', async () => {
    const before = sb.requests.length;
    const r = await runCli(['mau', ...sandboxFlags(sb), '--json']);
    expect(r.code, r.stderr).toBe(0);
    const result = JSON.parse(r.stdout);
    expect(result.database).toEqual({
      via: 'port-forward',
      address: `${sb.namespace}/ess-postgres-0:5432`,
      database: 'synapse',
      user: 'synapse_user',
    });
    expect(sb.requests.slice(before).some((q) => q.subresource === 'portforward' && q.name === 'ess-postgres-0')).toBe(
      true,
    );
    const now = Date.parse(result.generatedAt);
    const today = Math.floor(now / DAY) * DAY;
    const figure = (metric: string) => result.rows.find((row: { metric: string }) => row.metric === metric);
    expect(figure('ess').users).toBe(await count(runbookCurrent(today - 30 * DAY)));
    expect(figure('ess').users).toBeGreaterThan(0);
    expect(figure('synapse-mau-table').users).toBe(
      await count(
        "SELECT count(*) FROM monthly_active_users m LEFT JOIN users u ON m.user_id = u.name WHERE u.appservice_id IS NULL OR u.appservice_id = ''",
      ),
    );
    const since = Date.parse(figure('synapse-phone-home').from);
    expect(figure('synapse-phone-home').users).toBe(
      await count(`SELECT count(DISTINCT user_id) FROM user_ips WHERE last_seen > ${since}`),
    );
  });

  it('twelve months in one run, as CSV, equal the runbook month by month', async () => {
    const now = new Date();
    const months: { label: string; start: number; end: number }[] = [];
    for (let i = 12; i >= 1; i--) {
      const start = Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - i, 1);
      const end = Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - i + 1, 1);
      months.push({ label: new Date(start).toISOString().slice(0, 7), start, end });
    }
    const r = await runCli(['mau', ...sandboxFlags(sb), '--from', months[0].label, '--to', months[11].label, '--csv']);
    expect(r.code, r.stderr).toBe(0);
    const rows = r.stdout
      .trimEnd()
      .split('\r\n')
      .slice(1)
      .map((line) => line.split(',').slice(0, 3));
    const expected: string[][] = [];
    for (const m of months) expected.push([m.label, 'ess', String(await count(runbookMonth(m.start, m.end)))]);
    expect(rows).toEqual(expected);
    expect(expected.some(([, , n]) => Number(n) > 0)).toBe(true);
  });

  it('a Postgres pod that is not there is a precondition failure (exit 4), not a hang', async () => {
    sb.faults.addApiFault({ verb: 'get', resource: 'pods', name: 'ess-postgres-0', status: 404, times: 1 });
    const r = await runCli(['mau', ...sandboxFlags(sb), '--json']);
    expect(r.code).toBe(4);
    const error = JSON.parse(r.stdout).error;
    expect(error).toMatchObject({ code: 'POSTGRES_NOT_RUNNING' });
    expect(error.next.join('\n')).toContain(`ess start -n ${sb.namespace}`);
  });

  it('a port-forward cut mid-connection fails with exit 1 and says what to check', async () => {
    sb.faults.addExecFault({ pod: 'ess-postgres-0', cutAfterBytes: 64, times: 1 });
    const r = await runCli(['mau', ...sandboxFlags(sb), '--json']);
    expect(r.code).toBe(1);
    const error = JSON.parse(r.stdout).error;
    expect(error.code).toBe('DATABASE_UNREACHABLE');
    expect(error.next.join(' ')).toMatch(/Postgres pod/);
  });
});
