// `ess mau` on 10M generated user_daily_visits rows (real PostgreSQL 15, the sandbox's server settings):
//   - a 12-month --from/--to report (one statement) against the runbook's retrospective query run 12 times;
//   - a single --month against the runbook query once.
// Both sides run in this process, interleaved, in the same session settings (jit off, as ess sets it); medians of
// MAU_BENCH_ROUNDS rounds (default 3). Counts must match. Targets: range ≥ 5× faster, single month ≤ 1.1×. A
// "floor" case reads the year's rows once and computes nothing: no row-reading strategy can beat it.
// Env: MAU_BENCH_ROWS (default 10000000), MAU_BENCH_ROUNDS, MAU_BENCH_DIR (keep/reuse the generated database there),
// MAU_BENCH_LAYOUT=time|user (physical row order: appended day by day as Synapse does, or clustered by user),
// MAU_BENCH_PROFILE=typical|dense (see below), MAU_BENCH_INDEX=1 (also measure with a (timestamp, user_id) index).
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { openPostgres, readOnlyTransaction } from '../src/lib/postgres/connect.js';
import { startPostgres } from '../src/sandbox/postgres.js';
import { computeMau, type MonthsStrategy, planMau } from '../src/services/mau/report.js';
import { median, report } from './lib.js';

const ROWS = Number(process.env.MAU_BENCH_ROWS ?? 10_000_000);
const ROUNDS = Number(process.env.MAU_BENCH_ROUNDS ?? 3);
const LAYOUT = process.env.MAU_BENCH_LAYOUT === 'user' ? 'user' : 'time';
const YEAR = 2024;
const FROM = Date.UTC(YEAR, 0, 1);
const DAYS = 366;
const NOW = Date.UTC(YEAR + 1, 0, 15);
const SINGLE = { label: `${YEAR}-06`, start: Date.UTC(YEAR, 5, 1), end: Date.UTC(YEAR, 6, 1) };

/** The runbook's retrospective query, verbatim except for the two epochs. */
function runbook(start: number, end: number): string {
  return `SELECT COUNT(*) FROM (
SELECT
user_id,
MAX(timestamp) AS timestamp
FROM user_daily_visits
WHERE
timestamp >= ${start} AND
timestamp < ${end} AND
user_id NOT IN (
SELECT name
FROM users
WHERE user_type = 'support'
)
GROUP BY user_id
) AS temp;`;
}

// Data profiles. typical: per user an activity class (daily 60 %, weekly 25 %, rare 15 %), 1-3 devices, and for
// 30 % a join or leave date inside the year (~24 rows per user and month). dense: everyone on 90 % of days with
// 3-5 devices (~110 rows per user and month), where the index probes (probe) win most.
// Deterministic (hashint4), generated server-side.
const PROFILE = process.env.MAU_BENCH_PROFILE === 'dense' ? 'dense' : 'typical';
const r = (expr: string) => `((hashint4(${expr}) & 2147483647)::float8 / 2147483647)`;
const ACTIVITY =
  PROFILE === 'dense'
    ? '0.9'
    : `CASE WHEN ${r('u * 11')} < 0.6 THEN 0.75 WHEN ${r('u * 11')} < 0.85 THEN 0.2 ELSE 0.03 END`;
const DEVICES =
  PROFILE === 'dense'
    ? `3 + floor(${r('x.u * 13')} * 3)::int`
    : `CASE WHEN ${r('x.u * 13')} < 0.4 THEN 1 WHEN ${r('x.u * 13')} < 0.8 THEN 2 ELSE 3 END`;
const visitsSql = (users: number, sample: number) => `
SELECT '@user' || lpad(x.u::text, 6, '0') || ':bench.localhost', 'DEVICE' || dv,
       ${FROM}::bigint + d::bigint * 86400000, 'Element/1.11 (Linux)'
FROM generate_series(0, ${DAYS - 1}) d
CROSS JOIN LATERAL (
  SELECT u FROM generate_series(1, ${users}) u
  WHERE u % ${sample} = 0
    AND (${r('u * 3')} >= 0.3 OR (CASE WHEN ${r('u * 5')} < 0.5 THEN d >= ${r('u * 7')} * ${DAYS} ELSE d <= ${r('u * 7')} * ${DAYS} END))
    AND ${r('u * 7919 + d * 104729')} < ${ACTIVITY}
  OFFSET 0 -- keeps the day loop outermost, so rows are inserted day by day like Synapse does
) x
CROSS JOIN LATERAL generate_series(1, ${DEVICES}) dv`;

async function generate(client: pg.Client): Promise<{ users: number; rows: number; seconds: number }> {
  const t0 = performance.now();
  await client.query(`
    CREATE TABLE users (name text, password_hash text, creation_ts bigint, admin smallint DEFAULT 0 NOT NULL,
      upgrade_ts bigint, is_guest smallint DEFAULT 0 NOT NULL, appservice_id text, consent_version text,
      consent_server_notice_sent text, user_type text, deactivated smallint DEFAULT 0 NOT NULL, shadow_banned boolean,
      consent_ts bigint, approved boolean, locked boolean DEFAULT false NOT NULL, suspended boolean DEFAULT false NOT NULL);
    CREATE TABLE user_ips (user_id text NOT NULL, access_token text NOT NULL, device_id text, ip text NOT NULL,
      user_agent text NOT NULL, last_seen bigint NOT NULL);
    CREATE TABLE user_daily_visits (user_id text NOT NULL, device_id text, "timestamp" bigint NOT NULL, user_agent text);
    CREATE TABLE monthly_active_users (user_id text NOT NULL, "timestamp" bigint NOT NULL);`);
  // Calibrate the number of users on a 1 % sample so that the table gets ~ROWS rows.
  const probeUsers = 40_000;
  const sample = Number((await client.query(`SELECT count(*) AS n FROM (${visitsSql(probeUsers, 100)}) s`)).rows[0].n);
  const users = Math.max(100, Math.round((probeUsers * ROWS) / Math.max(1, sample * 100)));
  await client.query(`
    INSERT INTO users (name, creation_ts, user_type)
    SELECT '@user' || lpad(u::text, 6, '0') || ':bench.localhost', ${FROM / 1000 - 86_400},
           CASE WHEN u % 200 = 0 THEN 'support' WHEN u % 97 = 0 THEN 'bot' END
    FROM generate_series(1, ${users}) u`);
  await client.query(
    `INSERT INTO user_daily_visits ${visitsSql(users, 1)}${LAYOUT === 'user' ? ' ORDER BY 1, 3' : ''}`,
  );
  await client.query('ALTER TABLE users ADD CONSTRAINT users_name_key UNIQUE (name)');
  await client.query('CREATE INDEX user_daily_visits_ts_idx ON user_daily_visits USING btree ("timestamp")');
  await client.query('CREATE INDEX user_daily_visits_uts_idx ON user_daily_visits USING btree (user_id, "timestamp")');
  await client.query('CREATE TABLE bench_done (rows bigint, users int)');
  const rows = Number((await client.query('SELECT count(*) AS n FROM user_daily_visits')).rows[0].n);
  await client.query('INSERT INTO bench_done VALUES ($1, $2)', [rows, users]);
  // Autovacuum does this on a live server (append-only tables are vacuumed since PostgreSQL 13).
  await client.query('VACUUM ANALYZE');
  return { users, rows, seconds: (performance.now() - t0) / 1000 };
}

async function main(): Promise<void> {
  const keep = process.env.MAU_BENCH_DIR;
  const dir = keep ? path.resolve(keep) : await mkdtemp(path.join(os.tmpdir(), 'ess-mau-bench-'));
  await mkdir(dir, { recursive: true });
  await chmod(dir, 0o755);
  const server = await startPostgres({ dataDir: path.join(dir, 'pgdata') });
  const cleanup = async () => {
    await server.stop();
    if (!keep) await rm(dir, { recursive: true, force: true });
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    const url = `postgres://${server.superuser}@${server.host}:${server.port}/mau_bench`;
    const admin = new pg.Client({ connectionString: url.replace(/mau_bench$/, 'postgres') });
    await admin.connect();
    const exists = (await admin.query("SELECT 1 FROM pg_database WHERE datname = 'mau_bench'")).rowCount === 1;
    if (!exists) await admin.query('CREATE DATABASE mau_bench');
    await admin.end();
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    const done = await client.query("SELECT * FROM pg_tables WHERE tablename = 'bench_done'");
    let data: { users: number; rows: number; seconds?: number };
    if (done.rowCount === 1) {
      const row = (await client.query('SELECT rows, users FROM bench_done')).rows[0];
      data = { rows: Number(row.rows), users: Number(row.users) };
      console.error(`reusing ${data.rows} rows in ${dir}`);
    } else {
      console.error(`generating ~${ROWS} user_daily_visits rows (${PROFILE} profile, ${LAYOUT} order)…`);
      data = await generate(client);
      console.error(`generated ${data.rows} rows for ${data.users} users in ${data.seconds?.toFixed(0)} s`);
    }
    await client.query('SET jit = off');
    const correlation = (
      await client.query(
        "SELECT correlation FROM pg_stats WHERE tablename = 'user_daily_visits' AND attname = 'timestamp'",
      )
    ).rows[0]?.correlation;

    const months = Array.from({ length: 12 }, (_, m) => [Date.UTC(YEAR, m, 1), Date.UTC(YEAR, m + 1, 1)] as const);
    // ess's own path (read-only transaction, schema check, planner statistics, coverage) on one open connection,
    // like the runbook side, so connection set-up is counted on neither.
    const conn = await openPostgres({ kind: 'url', url }, { applicationName: 'ess mau bench' });
    const ess = async (from: string, to: string, strategy: MonthsStrategy = 'auto') => {
      const plan = planMau({ kind: 'months', from, to }, [], NOW);
      const result = await readOnlyTransaction(conn, { statementTimeoutMs: 3_600_000 }, (s) =>
        computeMau(s, plan, { nowMs: NOW, monthsStrategy: strategy }),
      );
      return result.rows.map((row) => row.users);
    };
    const cases: Record<string, () => Promise<number[]>> = {
      'runbook × 12': async () => {
        const out: number[] = [];
        for (const [s, e] of months) out.push(Number((await client.query(runbook(s, e))).rows[0].count));
        return out;
      },
      'ess --from/--to (auto)': () => ess(`${YEAR}-01`, `${YEAR}-12`),
      'runbook, one month': async () => [Number((await client.query(runbook(SINGLE.start, SINGLE.end))).rows[0].count)],
      'ess --month': () => ess(SINGLE.label, SINGLE.label),
      'ess range, monthly': () => ess(`${YEAR}-01`, `${YEAR}-12`, 'monthly'),
      'ess range, probe': () => ess(`${YEAR}-01`, `${YEAR}-12`, 'probe'),
      // Not a MAU: reads every row of the year once (best plan the planner finds, parallel included) and computes
      // nothing. Any strategy that reads the rows costs at least this; it bounds what a scan can gain over the runbook.
      'floor: read the year once': async () => [
        Number(
          (
            await client.query(
              `SELECT count(user_id) AS n FROM user_daily_visits WHERE "timestamp" >= ${months[0][0]} AND "timestamp" < ${months[11][1]}`,
            )
          ).rows[0].n,
        ),
      ],
    };
    const measure = async (names: string[]) => {
      const times: Record<string, number[]> = {};
      const results: Record<string, number[]> = {};
      // Single months are short and noisy: more samples, alternating with the runbook.
      const order = names.filter((name) => !/one month|--month/.test(name));
      const singles = names.some((n) => n === 'ess --month')
        ? Array.from({ length: 5 }, () => ['runbook, one month', 'ess --month']).flat()
        : [];
      for (let round = 0; round <= ROUNDS; round++) {
        for (const name of [...order, ...singles]) {
          const t = performance.now();
          const out = await cases[name]();
          // Round 0 warms the caches and is not timed.
          if (round > 0) {
            times[name] ??= [];
            times[name].push(performance.now() - t);
          }
          results[name] = out;
        }
      }
      return { times, results };
    };
    const { times, results } = await measure(Object.keys(cases));
    for (const name of ['ess --from/--to (auto)', 'ess range, monthly', 'ess range, probe']) {
      if (JSON.stringify(results[name]) !== JSON.stringify(results['runbook × 12'])) {
        throw new Error(`${name} counted ${results[name]} but the runbook ${results['runbook × 12']}`);
      }
    }
    if (results['ess --month'][0] !== results['runbook, one month'][0]) throw new Error('single month differs');

    const med = (name: string) => median(times[name]);
    const rangeRatio = med('runbook × 12') / med('ess --from/--to (auto)');
    const singleRatio = med('ess --month') / med('runbook, one month');
    const scanCeiling = med('runbook × 12') / med('floor: read the year once');
    const rows = Object.keys(cases).map((name) => ({
      case: name,
      medianMs: Math.round(med(name)),
      minMs: Math.round(Math.min(...times[name])),
      maxMs: Math.round(Math.max(...times[name])),
    }));
    // Optional: the covering index the docs suggest, to show what it changes for both sides.
    let withTsUserIndex: Record<string, number> | undefined;
    if (process.env.MAU_BENCH_INDEX === '1') {
      await client.query('CREATE INDEX bench_ts_user_idx ON user_daily_visits ("timestamp", user_id)');
      await client.query('VACUUM ANALYZE user_daily_visits');
      const indexed = await measure(['runbook × 12', 'ess --from/--to (auto)', 'runbook, one month', 'ess --month']);
      withTsUserIndex = Object.fromEntries(
        Object.entries(indexed.times).map(([name, list]) => [name, Math.round(median(list))]),
      );
      await client.query('DROP INDEX bench_ts_user_idx');
      console.table(withTsUserIndex);
    }
    const peakRssBytes = process.resourceUsage().maxRSS * 1024;
    report(`mau-${PROFILE}-${LAYOUT}`, rows, {
      withTsUserIndex,
      visitRows: data.rows,
      users: data.users,
      layout: LAYOUT,
      profile: PROFILE,
      rowsPerUserMonth: data.rows / (data.users * 12),
      timestampCorrelation: correlation,
      rounds: ROUNDS,
      monthlyUsers: results['runbook × 12'],
      rangeSpeedup: rangeRatio,
      // The best speed-up any row-reading strategy could reach in this run (runbook × 12 / reading the rows once).
      scanCeiling,
      singleMonthRatio: singleRatio,
      targets: { rangeSpeedupAtLeast: 5, singleMonthRatioAtMost: 1.1 },
      met: { range: rangeRatio >= 5, singleMonth: singleRatio <= 1.1 },
      peakRssBytes,
      loadAverage: os.loadavg(),
      cpus: os.cpus().length,
      postgres: server.version,
    });
    console.log(
      `rows ${data.rows}, users ${data.users}, profile ${PROFILE}, layout ${LAYOUT} (timestamp correlation ${Number(correlation).toFixed(2)}), ` +
        `peak RSS ${(peakRssBytes / 1048576).toFixed(0)} MiB, load average ${os.loadavg()[0].toFixed(1)} on ${os.cpus().length} CPUs`,
    );
    console.log(
      `range: ${rangeRatio.toFixed(2)}× faster than the runbook × 12 (target ≥ 5: ${rangeRatio >= 5 ? 'met' : 'NOT met'}); ` +
        `single month: ${singleRatio.toFixed(2)}× the runbook (target ≤ 1.1: ${singleRatio <= 1.1 ? 'met' : 'NOT met'}); ` +
        `reading the year's rows once, computing nothing, is ${scanCeiling.toFixed(2)}× faster than the runbook × 12`,
    );
    await client.end();
    await conn.close();
  } finally {
    await cleanup();
  }
}

await main();
