/**
 * Pure parts of `ess mau`: calendar arithmetic, request validation, strategy choice, SQL building, renderers, and
 * credential resolution (the latter against a small in-memory fake KubeClient that only implements `get`).
 */
import { describe, expect, it } from 'vitest';
import type { Deployment } from '../../src/lib/deployment/model.js';
import { EssError } from '../../src/lib/errors.js';
import type { KubeClient } from '../../src/lib/kube/client.js';
import type { KubeObject, Secret } from '../../src/lib/kube/types.js';
import {
  connectionAttempts,
  describePgError,
  redactUrl,
  resolveBundledTarget,
  sslModeOf,
} from '../../src/lib/postgres/connect.js';
import { monthRange, parseDay, parseMonth, rollingWindow } from '../../src/services/mau/periods.js';
import { CSV_COLUMNS, renderMauCsv, renderMauText } from '../../src/services/mau/render.js';
import { chooseMonthsStrategy, definitionOf, type MauResult, planMau } from '../../src/services/mau/report.js';
import { notExcluded } from '../../src/services/mau/sql.js';

const NOW = Date.UTC(2025, 0, 7, 13, 45);

function usageError(fn: () => unknown): EssError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(EssError);
    expect((error as EssError).exitCode).toBe(2);
    return error as EssError;
  }
  throw new Error('expected a usage error');
}

describe('periods', () => {
  it('parses months into UTC bounds, [start, next start)', () => {
    expect(parseMonth('2024-11')).toEqual({ label: '2024-11', startMs: 1730419200000, endMs: 1733011200000 });
    expect(parseMonth('2024-12').endMs).toBe(Date.UTC(2025, 0, 1));
    for (const bad of ['2024-13', '2024-00', '2024-1', '24-01', '2024/01', '', '1969-12']) {
      expect(usageError(() => parseMonth(bad)).message).toMatch(/--month must be a month like 2024-11/);
    }
  });

  it('builds month ranges across years and leap Februaries', () => {
    const range = monthRange(parseMonth('2023-11'), parseMonth('2024-03'));
    expect(range.map((m) => m.label)).toEqual(['2023-11', '2023-12', '2024-01', '2024-02', '2024-03']);
    expect((range[3].endMs - range[3].startMs) / 86_400_000).toBe(29);
    expect(usageError(() => monthRange(parseMonth('2024-03'), parseMonth('2024-01'))).message).toMatch(/after/);
    expect(usageError(() => monthRange(parseMonth('1990-01'), parseMonth('2024-01'))).message).toMatch(/240/);
  });

  it('parses days strictly and computes the runbook window', () => {
    expect(parseDay('2024-02-29')).toBe(Date.UTC(2024, 1, 29));
    for (const bad of ['2023-02-29', '2024-02-30', '2024-2-1', 'yesterday']) usageError(() => parseDay(bad));
    // The runbook: run on 7 January 2025, use 8 December 2024 00:00 UTC.
    expect(rollingWindow(Date.UTC(2025, 0, 7))).toEqual({ fromMs: 1733616000000, toMs: Date.UTC(2025, 0, 8) });
  });
});

describe('planMau', () => {
  it('defaults: current = today; --from alone runs to the current month; exclusions are normalised', () => {
    expect(planMau({ kind: 'current' }, ['bots', 'bots'], NOW)).toEqual({
      kind: 'current',
      dayMs: Date.UTC(2025, 0, 7),
      today: true,
      exclusions: ['support', 'bots'],
    });
    const months = planMau({ kind: 'months', from: '2024-11' }, ['guests', 'appservice'], NOW);
    expect(months.kind === 'months' && months.months.map((m) => m.label)).toEqual(['2024-11', '2024-12', '2025-01']);
    expect(months.exclusions).toEqual(['support', 'appservice', 'guests']);
    expect(planMau({ kind: 'current', at: '2025-01-06' }, [], NOW)).toMatchObject({ today: false });
  });

  it('--month is one calendar month, and errors name the flag the user gave', () => {
    const plan = planMau({ kind: 'month', month: '2024-02' }, [], NOW);
    expect(plan.kind === 'months' && plan.months).toEqual([
      { label: '2024-02', startMs: Date.UTC(2024, 1, 1), endMs: Date.UTC(2024, 2, 1) },
    ]);
    expect(usageError(() => planMau({ kind: 'month', month: '2024-13' }, [], NOW)).message).toMatch(/^--month /);
    expect(usageError(() => planMau({ kind: 'months', from: 'x' }, [], NOW)).message).toMatch(/^--from /);
  });

  it('refuses the future', () => {
    expect(usageError(() => planMau({ kind: 'current', at: '2025-01-08' }, [], NOW)).message).toMatch(/future/);
    expect(usageError(() => planMau({ kind: 'months', from: '2025-02' }, [], NOW)).message).toMatch(/future/);
    expect(usageError(() => planMau({ kind: 'months', from: '2024-01', to: '2025-02' }, [], NOW)).message).toMatch(
      /2025-02 is in the future/,
    );
  });

  it('says which definition each figure uses', () => {
    const current = planMau({ kind: 'current' }, ['bots'], NOW);
    expect(definitionOf('ess', current)).toMatch(/user_ips.*Excludes support users and bots.*28 days/);
    expect(definitionOf('synapse-phone-home', current)).toMatch(/Excludes nobody/);
    expect(definitionOf('synapse-mau-table', current)).toMatch(/bots and deactivated users count/);
    const past = planMau({ kind: 'current', at: '2024-12-01' }, [], NOW);
    expect(definitionOf('ess', past)).toMatch(/user_daily_visits.*cannot answer for a past day/);
    const month = planMau({ kind: 'months', from: '2024-11', to: '2024-11' }, [], NOW);
    expect(definitionOf('ess', month)).toMatch(/1st of the month \(included\).*\(excluded\).*pruned after 28 days/);
  });
});

describe('strategy and SQL', () => {
  it('picks the months strategy from planner statistics', () => {
    const dense = { rangeRows: 10_000_000, distinctUsers: 5_000 };
    expect(chooseMonthsStrategy(dense, 1)).toBe('monthly');
    expect(chooseMonthsStrategy({ ...dense, distinctUsers: undefined }, 12)).toBe('monthly');
    // 10M rows / (5k users × 12 months) = 167 rows per user-month: the index probes win.
    expect(chooseMonthsStrategy(dense, 12)).toBe('probe');
    // 33 rows per user-month: still the probe (break-even about 17).
    expect(chooseMonthsStrategy({ ...dense, distinctUsers: 25_000 }, 12)).toBe('probe');
    // 8 rows per user-month: the runbook's own plan, month by month.
    expect(chooseMonthsStrategy({ ...dense, distinctUsers: 100_000 }, 12)).toBe('monthly');
  });

  it('builds the exclusion filter from fixed predicates only', () => {
    expect(notExcluded('d.user_id', [])).toBe('TRUE');
    expect(notExcluded('d.user_id', ['support', 'bots', 'support'])).toBe(
      "NOT EXISTS (SELECT 1 FROM users u WHERE u.name = d.user_id AND (u.user_type = 'bot' OR u.user_type = 'support'))",
    );
    expect(notExcluded('x', ['appservice'])).toContain("u.appservice_id <> ''");
  });
});

/** Minimal RFC 4180 parser for the assertions. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(field);
      field = '';
    } else if (c === '\r' && text[i + 1] === '\n') {
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
      i++;
    } else field += c;
  }
  return rows;
}

const sample: MauResult = {
  kind: 'months',
  rows: [
    {
      period: '2024-11',
      metric: 'ess',
      users: 1234,
      source: 'user_daily_visits',
      from: '2024-11-01T00:00:00.000Z',
      to: '2024-12-01T00:00:00.000Z',
      fromMs: 1730419200000,
      toMs: 1733011200000,
      excludes: ['support', 'bots'],
      coverage: { days: 30, daysWithData: 29 },
    },
  ],
  definitions: { ess: 'Distinct users, "quoted", with, commas' },
  exclude: ['bots'],
  database: { via: 'url', address: 'db:5432', database: 'synapse', user: 'synapse_user' },
  generatedAt: '2025-01-07T13:45:00.000Z',
  notes: ['a note'],
  warnings: [],
};

describe('renderers', () => {
  it('CSV: a header, RFC 4180 quoting, CRLF line ends', () => {
    const csv = renderMauCsv(sample);
    expect(csv.endsWith('\r\n')).toBe(true);
    const rows = parseCsv(csv);
    expect(rows[0]).toEqual([...CSV_COLUMNS]);
    expect(rows[1]).toEqual([
      '2024-11',
      'ess',
      '1234',
      'user_daily_visits',
      '2024-11-01T00:00:00.000Z',
      '2024-12-01T00:00:00.000Z',
      'support;bots',
      '29',
      '30',
      'false',
      'Distinct users, "quoted", with, commas',
    ]);
  });

  it('text: the table, the definitions and the notes', () => {
    const text = renderMauText(sample);
    expect(text).toMatch(/PERIOD.*FIGURE.*USERS.*SOURCE/);
    expect(text).toMatch(/2024-11.*ESS runbook.*1234.*user_daily_visits.*2024-11-01 → 2024-12-01.*29\/30/);
    expect(text).toContain('Definitions:\n  ESS runbook: Distinct users');
    expect(text).toContain('Notes:\n  - a note');
  });
});

describe('connection helpers', () => {
  it('redacts passwords in URLs', () => {
    expect(redactUrl('postgres://u:secret@h:5432/db?sslmode=require&password=x')).toBe(
      'postgres://u:***@h:5432/db?sslmode=require&password=***',
    );
  });

  it('maps pg errors to exit codes and next steps', () => {
    const endpoint = { via: 'url' as const, address: 'h:5432', database: 'synapse', user: 'u' };
    expect(describePgError({ code: '28P01', message: 'password authentication failed' }, endpoint)).toMatchObject({
      exitCode: 4,
      code: 'DATABASE_AUTH',
    });
    expect(describePgError({ code: '3D000', message: 'no db' }, endpoint)).toMatchObject({ exitCode: 4 });
    expect(describePgError({ code: 'ECONNREFUSED', message: 'refused' }, endpoint)).toMatchObject({
      exitCode: 1,
      code: 'DATABASE_UNREACHABLE',
    });
    expect(describePgError({ code: '57014', message: 'canceling statement' }, endpoint)?.next[0]).toMatch(
      /--statement-timeout/,
    );
    expect(describePgError(new TypeError('bug'), endpoint)).toBeUndefined();
  });
});

describe('resolveBundledTarget (in-memory fake KubeClient)', () => {
  const deployment = (generatedSecret?: string): Deployment => ({
    flavour: 'matrix-stack',
    namespace: 'ess',
    release: 'ess',
    workloads: [],
    warnings: [],
    generatedSecret,
    postgres: {
      mode: 'bundled',
      statefulSet: 'ess-postgres',
      pod: 'ess-postgres-0',
      container: 'postgres',
      superuser: 'postgres',
      databases: [{ component: 'synapse', name: 'synapse', owner: 'synapse_user' }],
    },
  });
  const fake = (secrets: Record<string, Record<string, string>>): KubeClient =>
    ({
      async get<T extends KubeObject>(_kind: string, _ns: string | undefined, name: string) {
        const data = secrets[name];
        if (!data) return undefined;
        const b64 = Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')]));
        return { metadata: { name }, data: b64 } as Secret as unknown as T;
      },
    }) as unknown as KubeClient;

  it('uses the generated Secret, and an inline essPasswords value first when there is one', async () => {
    const generated = { 'ess-generated': { POSTGRES_SYNAPSE_PASSWORD: 'gen-pw' } };
    expect(await resolveBundledTarget(fake(generated), deployment('ess-generated'), 'synapse')).toEqual({
      kind: 'pod',
      namespace: 'ess',
      release: 'ess',
      pod: 'ess-postgres-0',
      port: 5432,
      database: 'synapse',
      user: 'synapse_user',
      password: 'gen-pw',
      passwordSource: 'ess-generated/POSTGRES_SYNAPSE_PASSWORD',
    });
    const both = { ...generated, 'ess-postgres': { ESS_PASSWORD_SYNAPSE: 'inline-pw' } };
    expect((await resolveBundledTarget(fake(both), deployment('ess-generated'), 'synapse')).password).toBe('inline-pw');
    const legacy = { 'ess-init-secrets': { POSTGRES_SYNAPSE_PASSWORD: 'old-pw' } };
    expect((await resolveBundledTarget(fake(legacy), deployment('ess-init-secrets'), 'synapse')).password).toBe(
      'old-pw',
    );
    expect((await resolveBundledTarget(fake({}), deployment(), 'synapse')).password).toBeUndefined();
  });

  it('refuses a deployment whose Synapse database is external', async () => {
    const d = deployment();
    d.postgres = { mode: 'external', databases: [{ component: 'synapse', name: 'synapse', host: 'db.example' }] };
    await expect(resolveBundledTarget(fake({}), d, 'synapse')).rejects.toMatchObject({
      code: 'NO_BUNDLED_DATABASE',
      exitCode: 4,
    });
  });
});

describe('sslmode (libpq semantics)', () => {
  const url = 'postgres://u:p@db.example:5432/synapse';
  const modes = (u: string, env: NodeJS.ProcessEnv = {}) =>
    connectionAttempts(u, env).map((a) => [
      new URL(a).searchParams.get('sslmode'),
      new URL(a).searchParams.get('uselibpqcompat'),
    ]);

  it('defaults to prefer (TLS, then plain); $PGSSLMODE and ssl=true are honoured; the URL wins', () => {
    expect(sslModeOf(url, {})).toBe('prefer');
    expect(modes(url)).toEqual([
      ['require', 'true'],
      ['disable', 'true'],
    ]);
    expect(sslModeOf(url, { PGSSLMODE: 'verify-full' })).toBe('verify-full');
    expect(sslModeOf(`${url}?ssl=true`, {})).toBe('require');
    expect(sslModeOf(`${url}?sslmode=disable`, { PGSSLMODE: 'require' })).toBe('disable');
    expect(modes(`${url}?sslmode=allow`)).toEqual([
      ['disable', 'true'],
      ['require', 'true'],
    ]);
    expect(modes(`${url}?sslmode=require`)).toEqual([['require', 'true']]);
  });

  it('an unknown sslmode, or verify-ca without sslrootcert, is a usage error', () => {
    for (const u of [`${url}?sslmode=no-verify`, `${url}?sslmode=verify-ca`]) {
      expect(() => connectionAttempts(u, {})).toThrow(EssError);
      try {
        connectionAttempts(u, {});
      } catch (error) {
        expect(error).toMatchObject({ code: 'BAD_DATABASE_URL', exitCode: 2 });
      }
    }
  });
});
