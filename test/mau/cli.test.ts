/**
 * `ess mau` as a user runs it: the built CLI (`node bin/run.js`, so `npm run build` must have run) against a real
 * PostgreSQL through --database-url / ESS_DATABASE_URL. Checks stdout formats, exit codes and error envelopes.
 */
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { buildDataset, loadDataset } from './dataset.js';
import { startTestServer, type TestServer } from './db.js';
import { RUNBOOK_MONTH, runbookMonth } from './runbook.js';

let srv: TestServer;
let admin: pg.Client;
let url: string;

beforeAll(async () => {
  srv = await startTestServer();
  admin = await srv.createDatabase('synapse');
  await loadDataset(admin, buildDataset());
  await admin.query("CREATE ROLE report LOGIN PASSWORD 'pw-Xy7%secret'");
  await admin.query('GRANT SELECT ON ALL TABLES IN SCHEMA public TO report');
  url = `postgres://report:${encodeURIComponent('pw-Xy7%secret')}@${srv.server.host}:${srv.server.port}/synapse`;
});

afterAll(async () => {
  await srv?.stop();
});

async function runbook(sql: string): Promise<number> {
  return Number((await admin.query<{ count: string }>(sql)).rows[0].count);
}

describe('ess mau --database-url', () => {
  it('sslmode has libpq semantics: prefer/disable work on a server without TLS, require fails clearly', async () => {
    const [prefer, disable, allow, require, verifyCa, bogus] = await Promise.all([
      runCli(['mau', '--database-url', `${url}?sslmode=prefer`, '--month', '2024-11', '--json']),
      runCli(['mau', '--database-url', `${url}?sslmode=disable`, '--month', '2024-11', '--json']),
      runCli(['mau', '--database-url', `${url}?sslmode=allow`, '--month', '2024-11', '--json']),
      runCli(['mau', '--database-url', `${url}?sslmode=require`, '--json']),
      runCli(['mau', '--database-url', `${url}?sslmode=verify-ca`, '--json']),
      runCli(['mau', '--database-url', `${url}?sslmode=sometimes`, '--json']),
    ]);
    for (const r of [prefer, disable, allow]) {
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).rows[0].users).toBe(await runbook(RUNBOOK_MONTH));
    }
    expect(require.code, require.stderr).toBe(1);
    expect(JSON.parse(require.stdout).error).toMatchObject({ code: 'DATABASE_TLS', exitCode: 1 });
    expect(JSON.parse(require.stdout).error.message).toMatch(/does not accept TLS/);
    expect(JSON.parse(require.stdout).error.next.join(' ')).toMatch(/sslmode=prefer/);
    expect(JSON.parse(verifyCa.stdout).error).toMatchObject({ code: 'BAD_DATABASE_URL', exitCode: 2 });
    expect(JSON.parse(verifyCa.stdout).error.message).toMatch(/sslrootcert/);
    expect(JSON.parse(bogus.stdout).error).toMatchObject({ code: 'BAD_DATABASE_URL', exitCode: 2 });
    for (const r of [prefer, disable, allow, require, verifyCa, bogus]) {
      expect(r.stderr).not.toMatch(/SECURITY WARNING|This is a bug in ess/);
      expect(r.stdout + r.stderr).not.toContain('pw-Xy7');
    }
  });

  it('sslmode against a TLS server with a self-signed certificate: require encrypts, verify-full verifies', async () => {
    const tls = await startTestServer();
    try {
      const tlsAdmin = await tls.createDatabase('synapse');
      await loadDataset(tlsAdmin, buildDataset());
      const cert = await tls.enableTls();
      const base = `postgres://${tls.server.superuser}@${tls.server.host}:${tls.server.port}/synapse`;
      const [require, prefer, verifyFull, verifyCa, withCa] = await Promise.all([
        runCli(['mau', '--database-url', `${base}?sslmode=require`, '--month', '2024-11', '--json']),
        runCli(['mau', '--database-url', `${base}?sslmode=prefer`, '--month', '2024-11', '--json']),
        runCli(['mau', '--database-url', `${base}?sslmode=verify-full`, '--json']),
        runCli([
          'mau',
          '--database-url',
          `${base}?sslmode=verify-ca&sslrootcert=${cert}`,
          '--month',
          '2024-11',
          '--json',
        ]),
        runCli([
          'mau',
          '--database-url',
          `${base.replace('127.0.0.1', 'localhost')}?sslmode=verify-full&sslrootcert=${cert}`,
          '--month',
          '2024-11',
          '--json',
        ]),
      ]);
      for (const r of [require, prefer, verifyCa, withCa]) {
        expect(r.code, r.stderr).toBe(0);
        expect(r.stderr).not.toMatch(/SECURITY WARNING/);
      }
      expect(verifyFull.code, verifyFull.stderr).toBe(1);
      expect(JSON.parse(verifyFull.stdout).error).toMatchObject({ code: 'DATABASE_TLS', exitCode: 1 });
      expect(JSON.parse(verifyFull.stdout).error.next.join(' ')).toMatch(/sslrootcert=PATH/);
    } finally {
      await tls.stop();
    }
  });

  it('--month --json: one JSON document equal to the runbook, progress on stderr, no password anywhere', async () => {
    const r = await runCli(['mau', '--database-url', url, '--month', '2024-11', '--json']);
    expect(r.code).toBe(0);
    const result = JSON.parse(r.stdout);
    expect(result.rows).toHaveLength(1);
    expect(result.rows[0]).toMatchObject({ period: '2024-11', metric: 'ess', source: 'user_daily_visits' });
    expect(result.rows[0].users).toBe(await runbook(RUNBOOK_MONTH));
    expect(result.database).toMatchObject({ via: 'url', user: 'report', database: 'synapse' });
    expect(r.stderr).toMatch(/Counting on report@127\.0\.0\.1:\d+\/synapse \(url\)/);
    expect(r.stdout + r.stderr).not.toContain('pw-Xy7');
  });

  it('--from/--to --csv via ESS_DATABASE_URL: CSV on stdout only, one line per month', async () => {
    const r = await runCli(['mau', '--from', '2024-11', '--to', '2025-01', '--csv'], {
      env: { ESS_DATABASE_URL: url },
    });
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\r\n');
    expect(lines[0]).toBe(
      'period,figure,users,source,from_utc,to_utc_excluded,excludes,days_with_data,days,partial,definition',
    );
    expect(lines.slice(1).map((l) => l.split(',').slice(0, 3))).toEqual([
      ['2024-11', 'ess', String(await runbook(runbookMonth(Date.UTC(2024, 10, 1), Date.UTC(2024, 11, 1))))],
      ['2024-12', 'ess', String(await runbook(runbookMonth(Date.UTC(2024, 11, 1), Date.UTC(2025, 0, 1))))],
      ['2025-01', 'ess', String(await runbook(runbookMonth(Date.UTC(2025, 0, 1), Date.UTC(2025, 1, 1))))],
    ]);
  });

  it('the table output names the definitions', async () => {
    const r = await runCli(['mau', '--database-url', url, '--month', '2024-02', '--exclude', 'bots,guests']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/2024-02 .*ESS runbook/);
    expect(r.stdout).toMatch(/Definitions:\n {2}ESS runbook: .*Excludes support users, bots and guests/);
  });

  it('usage errors exit 2 with a JSON error envelope (validation, --csv with --json, flag parser)', async () => {
    const cases: [string[], string][] = [
      [['--month', '2024-13'], 'BAD_FLAG'],
      [['--from', '2024-05', '--to', '2024-01'], 'BAD_FLAG'],
      [['--month', '2024-01', '--csv'], 'BAD_FLAG'],
      [['--exclude', 'robots'], 'USAGE'],
      [['--month', '2024-01', '--at', '2024-01-05'], 'USAGE'],
    ];
    const results = await Promise.all(cases.map(([args]) => runCli(['mau', '--database-url', url, '--json', ...args])));
    for (const [i, r] of results.entries()) {
      expect(r.code, cases[i][0].join(' ')).toBe(2);
      expect(JSON.parse(r.stdout).error).toMatchObject({ code: cases[i][1], exitCode: 2 });
    }
  });

  it('an unreachable server → exit 1; a missing or non-Synapse database → exit 4', async () => {
    const base = `${srv.server.host}:${srv.server.port}`;
    const [refused, noDb, mas] = await Promise.all([
      runCli(['mau', '--database-url', 'postgres://x@127.0.0.1:1/synapse', '--json']),
      runCli(['mau', '--database-url', `postgres://report:x@${base}/nope`, '--json']),
      runCli(['mau', '--database-url', `postgres://postgres@${base}/postgres`, '--json']),
    ]);
    expect(refused.code).toBe(1);
    expect(JSON.parse(refused.stdout).error.code).toBe('DATABASE_UNREACHABLE');
    expect(noDb.code).toBe(4);
    expect(JSON.parse(noDb.stdout).error.code).toBe('DATABASE_NOT_FOUND');
    expect(mas.code).toBe(4);
    expect(JSON.parse(mas.stdout).error.code).toBe('NOT_SYNAPSE_DATABASE');
  });
});
