/**
 * Correctness of `ess mau` on a real PostgreSQL 15: every figure is compared with the ESS runbook's SQL run
 * verbatim (with the right epochs), with Synapse's own queries, and with an independent TypeScript oracle over the
 * generated rows (month boundaries to the millisecond, a leap day, December into January, support/bot/guest/
 * appservice/deactivated users, several devices per day, deleted users, users seen only in user_ips).
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EssError } from '../../src/lib/errors.js';
import { openPostgres, readOnlyTransaction, type SqlSession } from '../../src/lib/postgres/connect.js';
import { monthOf, monthRange, parseMonth } from '../../src/services/mau/periods.js';
import {
  computeMau,
  MAU_EXCLUSIONS,
  type MauExclusion,
  type MauPlan,
  type MonthsStrategy,
  planMau,
  runMau,
} from '../../src/services/mau/report.js';
import { hasShared, sharedDir } from '../helpers/cli.js';
import { buildDataset, CUTOFF, DATA_START, DAY, loadDataset, NOW, Oracle, SYNAPSE_DDL, U } from './dataset.js';
import { startTestServer, type TestServer } from './db.js';
import { RUNBOOK_CURRENT_USER_IPS, RUNBOOK_MONTH, runbookCurrent, runbookMonth } from './runbook.js';

const data = buildDataset();
const oracle = new Oracle(data);
let srv: TestServer;
let admin: pg.Client;

/** Runs `fn` through the product's own connection path: openPostgres(url) + read-only transaction. */
async function withSession<T>(database: string, fn: (s: SqlSession) => Promise<T>): Promise<T> {
  const conn = await openPostgres({ kind: 'url', url: srv.url(database) }, { applicationName: 'ess mau test' });
  try {
    return await readOnlyTransaction(conn, { statementTimeoutMs: 30_000 }, fn);
  } finally {
    await conn.close();
  }
}

function compute(plan: MauPlan, strategy?: MonthsStrategy, database = 'mau') {
  return withSession(database, (s) => computeMau(s, plan, { nowMs: NOW, monthsStrategy: strategy }));
}

async function runbook(sql: string, client = admin): Promise<number> {
  const r = await client.query<{ count: string }>(sql);
  return Number(r.rows[0].count);
}

beforeAll(async () => {
  srv = await startTestServer();
  admin = await srv.createDatabase('mau');
  await loadDataset(admin, data);
});

afterAll(async () => {
  await srv?.stop();
});

describe('calendar months (user_daily_visits)', () => {
  const months = monthRange(parseMonth('2023-10'), parseMonth('2025-01'));

  it('the data covers the edge cases it claims to', () => {
    const nov = oracle.visitors(Date.UTC(2024, 10, 1), Date.UTC(2024, 11, 1));
    const dec = oracle.visitors(Date.UTC(2024, 11, 1), Date.UTC(2025, 0, 1));
    expect(nov.has(U.lastMs) && !nov.has(U.firstMs)).toBe(true);
    expect(dec.has(U.firstMs) && !dec.has(U.lastMs) && dec.has(U.nye2024) && !dec.has(U.ny2025)).toBe(true);
    expect(oracle.visitors(Date.UTC(2024, 1, 1), Date.UTC(2024, 2, 1)).has(U.leap)).toBe(true);
    expect(oracle.visitors(Date.UTC(2024, 0, 1), Date.UTC(2024, 1, 1)).has(U.nye2023)).toBe(false);
    expect(nov.has(U.support1)).toBe(false);
    expect(nov.has(U.deletedWithVisits) && nov.has(U.bot) && nov.has(U.guest) && nov.has(U.bridged)).toBe(true);
    const multiDevice = data.visits.filter((v) => v.userId === U.nye2024).length;
    expect(multiDevice).toBe(3);
  });

  it('the runbook query for November 2024, verbatim, equals ess mau --month 2024-11', async () => {
    const expected = await runbook(RUNBOOK_MONTH);
    expect(expected).toBe(oracle.visitors(Date.UTC(2024, 10, 1), Date.UTC(2024, 11, 1)).size);
    const plan = planMau({ kind: 'months', from: '2024-11', to: '2024-11' }, [], NOW);
    const result = await compute(plan);
    expect(result.rows.map((r) => [r.period, r.users])).toEqual([['2024-11', expected]]);
    expect(result.rows[0]).toMatchObject({ fromMs: 1730419200000, toMs: 1733011200000, source: 'user_daily_visits' });
  });

  for (const strategy of ['monthly', 'probe', 'auto'] as const) {
    it(`a 16-month range in one query equals the runbook month by month (strategy ${strategy})`, async () => {
      const plan = planMau({ kind: 'months', from: '2023-10', to: '2025-01' }, [], NOW);
      const result = await compute(plan, strategy);
      const expected: [string, number][] = [];
      for (const m of months) expected.push([m.label, await runbook(runbookMonth(m.startMs, m.endMs))]);
      expect(result.rows.map((r) => [r.period, r.users])).toEqual(expected);
      for (const m of months) {
        expect(expected.find(([l]) => l === m.label)?.[1]).toBe(oracle.visitors(m.startMs, m.endMs).size);
      }
      expect(expected.some(([, n]) => n > 20)).toBe(true);
    });
  }

  it('the longest range (240 months) runs as one statement with either strategy and matches the oracle', async () => {
    const plan = planMau({ kind: 'months', from: '2005-02', to: '2025-01' }, [], NOW);
    if (plan.kind !== 'months') throw new Error('expected a months plan');
    expect(plan.months).toHaveLength(240);
    const expected = plan.months.map((m) => oracle.visitors(m.startMs, m.endMs, plan.exclusions).size);
    expect(expected.filter((n) => n > 0).length).toBeGreaterThan(3);
    for (const strategy of ['monthly', 'probe'] as const) {
      const result = await compute(plan, strategy);
      expect(result.rows.map((r) => r.users)).toEqual(expected);
    }
  });

  it('coverage: days without rows are reported, empty months are flagged, the current month is partial', async () => {
    const plan = planMau({ kind: 'months', from: '2023-10', to: '2025-01' }, [], NOW);
    const result = await compute(plan);
    const byMonth = new Map(result.rows.map((r) => [r.period, r]));
    expect(byMonth.get('2024-06')?.coverage).toEqual({ days: 30, daysWithData: 27 });
    expect(byMonth.get('2024-02')?.coverage).toEqual({ days: 29, daysWithData: 29 });
    expect(byMonth.get('2023-11')?.coverage).toEqual({
      days: 30,
      daysWithData: oracle.daysWithData(Date.UTC(2023, 10, 1), Date.UTC(2023, 11, 1)),
    });
    expect(byMonth.get('2023-10')).toMatchObject({ users: 0, coverage: { days: 31, daysWithData: 0 } });
    // January 2025 is counted up to today (the 7th): 7 days, all with data.
    expect(byMonth.get('2025-01')).toMatchObject({ partial: true, coverage: { days: 7, daysWithData: 7 } });
    expect(result.warnings).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^2023-10: no user_daily_visits rows at all/),
        expect.stringMatching(/^2024-06: 3 of 30 days have no user_daily_visits rows/),
        expect.stringMatching(/^2023-11: 19 of 30 days/),
      ]),
    );
    expect(result.notes).toContain('2025-01 is not over yet: counted up to now.');
    expect(DATA_START).toBe(Date.UTC(2023, 10, 20));
  });

  it('exclusions, alone and together, match the oracle for both strategies', async () => {
    const combos: MauExclusion[][] = [...MAU_EXCLUSIONS.map((e) => [e]), [...MAU_EXCLUSIONS]];
    for (const exclude of combos) {
      const plan = planMau({ kind: 'months', from: '2024-10', to: '2025-01' }, exclude, NOW);
      for (const strategy of ['monthly', 'probe'] as const) {
        const result = await compute(plan, strategy);
        const expected =
          plan.kind === 'months'
            ? plan.months.map((m) => oracle.visitors(m.startMs, m.endMs, plan.exclusions).size)
            : [];
        expect(
          result.rows.map((r) => r.users),
          `${exclude.join(',')} ${strategy}`,
        ).toEqual(expected);
        expect(result.rows[0].excludes).toEqual(['support', ...[...exclude].sort()]);
      }
    }
    // Each flag removes exactly its users; '' is not an appservice; deleted users cannot be excluded.
    const nov = [Date.UTC(2024, 10, 1), Date.UTC(2024, 11, 1)] as const;
    const base = oracle.visitors(...nov);
    const diff = (e: MauExclusion) => [...base].filter((u) => !oracle.visitors(...nov, ['support', e]).has(u));
    expect(diff('bots')).toEqual([U.bot]);
    expect(diff('guests')).toEqual([U.guest]);
    expect(diff('appservice')).toEqual([U.bridged]);
    expect(diff('deactivated')).toEqual([U.deactivated]);
    expect(base.has(U.emptyAppservice) && base.has(U.deletedWithVisits)).toBe(true);
  });

  it("NOT EXISTS stays right where the runbook's NOT IN breaks (a support user with a NULL name)", async () => {
    await admin.query('BEGIN');
    try {
      await admin.query("INSERT INTO users (name, user_type) VALUES (NULL, 'support')");
      expect(await runbook(RUNBOOK_MONTH)).toBe(0);
      const session: SqlSession = { query: async (sql, params) => (await admin.query(sql, params)).rows };
      const plan = planMau({ kind: 'months', from: '2024-11', to: '2024-11' }, [], NOW);
      const result = await computeMau(session, plan, { nowMs: NOW });
      expect(result.rows[0].users).toBe(oracle.visitors(Date.UTC(2024, 10, 1), Date.UTC(2024, 11, 1)).size);
      expect(result.rows[0].users).toBeGreaterThan(0);
    } finally {
      await admin.query('ROLLBACK');
    }
  });
});

describe('current MAU', () => {
  it('equals the runbook query verbatim on its own example day (7 January 2025 → 1733616000000)', async () => {
    const plan = planMau({ kind: 'current' }, [], NOW);
    expect(plan).toMatchObject({ kind: 'current', today: true, dayMs: Date.UTC(2025, 0, 7) });
    const result = await compute(plan);
    const ess = result.rows.find((r) => r.metric === 'ess');
    const expected = await runbook(RUNBOOK_CURRENT_USER_IPS);
    expect(ess).toMatchObject({ users: expected, source: 'user_ips', fromMs: CUTOFF, period: '2025-01-07' });
    const users = oracle.ipUsers(CUTOFF);
    expect(expected).toBe(users.size);
    // On the cut-off: counted; 1 ms before: not. Seen only in user_ips (deleted or not): counted.
    expect(users.has(U.cutoffIn) && !users.has(U.cutoffOut)).toBe(true);
    expect(users.has(U.ipOnly) && users.has(U.ghost) && !users.has(U.support2)).toBe(true);
  });

  it("shows Synapse's phone-home and MAU-table figures, equal to Synapse's own queries", async () => {
    const result = await compute(planMau({ kind: 'current' }, [], NOW));
    const since = NOW - 30 * DAY;
    const phoneHome = result.rows.find((r) => r.metric === 'synapse-phone-home');
    expect(phoneHome).toMatchObject({ users: oracle.phoneHome(since), excludes: [], fromMs: since, toMs: NOW });
    const table = result.rows.find((r) => r.metric === 'synapse-mau-table');
    expect(table?.users).toBe(oracle.mauTable());
    expect(table?.users).toBe(
      await runbook(
        "SELECT count(*) FROM monthly_active_users m LEFT JOIN users u ON m.user_id = u.name WHERE u.appservice_id IS NULL OR u.appservice_id = ''",
      ),
    );
    expect(Object.keys(result.definitions).sort()).toEqual(['ess', 'synapse-mau-table', 'synapse-phone-home']);
    expect(result.definitions['synapse-phone-home']).toMatch(/Excludes nobody/);
    expect(result.definitions.ess).toMatch(/pruned after user_ips_max_age/);
  });

  it('with exclusions matches the oracle', async () => {
    const plan = planMau({ kind: 'current' }, ['bots', 'guests', 'deactivated', 'appservice'], NOW);
    const result = await compute(plan);
    expect(result.rows.find((r) => r.metric === 'ess')?.users).toBe(oracle.ipUsers(CUTOFF, plan.exclusions).size);
    const loose = await compute(planMau({ kind: 'current' }, [], NOW));
    expect(loose.rows[0].users - result.rows[0].users).toBe(4);
  });

  it('--at a past day counts user_daily_visits over the 30 days up to the end of that day', async () => {
    for (const at of ['2024-03-01', '2024-06-15', '2025-01-01']) {
      const plan = planMau({ kind: 'current', at }, ['bots'], NOW);
      const result = await compute(plan);
      const day = Date.parse(`${at}T00:00:00Z`);
      const from = day - 30 * DAY;
      expect(result.rows).toHaveLength(1);
      expect(result.rows[0]).toMatchObject({
        metric: 'ess',
        source: 'user_daily_visits',
        fromMs: from,
        toMs: day + DAY,
        users: oracle.visitors(from, day + DAY, ['support', 'bots']).size,
      });
    }
    const gap = await compute(planMau({ kind: 'current', at: '2024-06-15' }, [], NOW));
    expect(gap.warnings[0]).toMatch(/^3 of the 31 days from 2024-05-16 to 2024-06-15 have no user_daily_visits rows/);
  });

  it("the same cut-off logic holds on any day: runbook query 1 with that day's epoch", async () => {
    for (const day of [Date.UTC(2025, 0, 1), Date.UTC(2024, 11, 20)]) {
      const cutoff = day - 30 * DAY;
      const nowMs = day + 10 * 3_600_000;
      const result = await withSession('mau', (s) => computeMau(s, planMau({ kind: 'current' }, [], nowMs), { nowMs }));
      expect(result.rows[0].users).toBe(await runbook(runbookCurrent(cutoff)));
    }
  });
});

describe('the connection is read-only and bounded', () => {
  it('a write inside the report transaction is refused by the server', async () => {
    const error = await withSession('mau', (s) => s.query("INSERT INTO users (name) VALUES ('@x:test.local')")).catch(
      (e: unknown) => e,
    );
    expect((error as { code?: string }).code).toBe('25006');
    expect((await admin.query("SELECT count(*)::int AS n FROM users WHERE name = '@x:test.local'")).rows[0].n).toBe(0);
  });

  it('a statement over the timeout is cancelled with an actionable error', async () => {
    const conn = await openPostgres({ kind: 'url', url: srv.url('mau') }, { applicationName: 'ess mau test' });
    try {
      const error = await readOnlyTransaction(conn, { statementTimeoutMs: 100 }, (s) =>
        s.query('SELECT pg_sleep(2)'),
      ).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(EssError);
      expect((error as EssError).code).toBe('STATEMENT_TIMEOUT');
      expect((error as EssError).next.join(' ')).toMatch(/--statement-timeout/);
    } finally {
      await conn.close();
    }
  });
});

describe('runMau over --database-url', () => {
  it('returns the typed result, with the endpoint but never the password', async () => {
    await admin.query("CREATE ROLE mau_reader LOGIN PASSWORD 's3cret-pw'");
    await admin.query('GRANT SELECT ON ALL TABLES IN SCHEMA public TO mau_reader');
    const url = `postgres://mau_reader:s3cret-pw@${srv.server.host}:${srv.server.port}/mau`;
    const lines: string[] = [];
    const reporter = {
      info: (m: string) => lines.push(m),
      warn: (m: string) => lines.push(m),
      debug() {},
      progress() {},
    };
    const result = await runMau(
      {
        namespace: 'ess',
        release: 'ess',
        request: { kind: 'months', from: '2024-11', to: '2024-12' },
        exclude: ['bots'],
        databaseUrl: url,
        statementTimeoutMs: 30_000,
      },
      { reporter, now: () => NOW },
    );
    expect(result.database).toEqual({
      via: 'url',
      address: `${srv.server.host}:${srv.server.port}`,
      database: 'mau',
      user: 'mau_reader',
    });
    expect(result.rows.map((r) => r.users)).toEqual([
      oracle.visitors(Date.UTC(2024, 10, 1), Date.UTC(2024, 11, 1), ['support', 'bots']).size,
      oracle.visitors(Date.UTC(2024, 11, 1), Date.UTC(2025, 0, 1), ['support', 'bots']).size,
    ]);
    expect(result).toMatchObject({ kind: 'months', exclude: ['bots'], generatedAt: new Date(NOW).toISOString() });
    expect(JSON.stringify(result) + lines.join('\n')).not.toContain('s3cret-pw');
  });

  it('an empty Synapse database: zeros, no Synapse MAU-table figure, and warnings instead of silence', async () => {
    const empty = await srv.createDatabase('mau_empty');
    await empty.query(SYNAPSE_DDL);
    const current = await compute(planMau({ kind: 'current' }, [], NOW), undefined, 'mau_empty');
    expect(current.rows.map((r) => [r.metric, r.users])).toEqual([
      ['ess', 0],
      ['synapse-phone-home', 0],
    ]);
    expect(current.notes.join('\n')).toMatch(/monthly_active_users is empty/);
    const months = await compute(
      planMau({ kind: 'months', from: '2024-01', to: '2024-12' }, [], NOW),
      'probe',
      'mau_empty',
    );
    expect(months.rows.every((r) => r.users === 0)).toBe(true);
    expect(months.warnings).toEqual([
      '2024-01..2024-12: no user_daily_visits rows at all; 0 means "no data", not "no users".',
    ]);
  });

  it('a database that is not Synapse is refused with exit code 4', async () => {
    await srv.createDatabase('not_synapse');
    const error = await compute(planMau({ kind: 'current' }, [], NOW), undefined, 'not_synapse').catch(
      (e: unknown) => e,
    );
    expect(error).toMatchObject({ code: 'NOT_SYNAPSE_DATABASE', exitCode: 4 });
  });
});

describe.skipIf(!hasShared)('against the real Synapse v94 schema (../shared fixtures)', () => {
  it('every query runs on a database built from synapse-v94-fresh.schema.sql', async () => {
    const client = await srv.createDatabase('synapse_v94');
    const schema = path.join(sharedDir, 'fixtures/synapse-schema/generated/synapse-v94-fresh.schema.sql');
    execFileSync(
      path.join(srv.server.binDir, 'psql'),
      ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', schema, srv.url('synapse_v94')],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    await loadDataset(client, data, false);
    for (const strategy of ['monthly', 'probe'] as const) {
      const plan = planMau({ kind: 'months', from: '2024-01', to: '2024-12' }, [...MAU_EXCLUSIONS], NOW);
      const result = await compute(plan, strategy, 'synapse_v94');
      expect(result.rows.map((r) => r.users)).toEqual(
        monthRange(parseMonth('2024-01'), parseMonth('2024-12')).map(
          (m) => oracle.visitors(m.startMs, m.endMs, ['support', ...MAU_EXCLUSIONS]).size,
        ),
      );
    }
    const current = await compute(planMau({ kind: 'current' }, [], NOW), undefined, 'synapse_v94');
    expect(current.rows[0].users).toBe(await runbook(RUNBOOK_CURRENT_USER_IPS, client));
    expect(monthOf(NOW).label).toBe('2025-01');
  });
});
