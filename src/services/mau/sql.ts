/**
 * The SQL of `ess mau`, as constants. Every statement is read-only. Values are always bind parameters; the only
 * text spliced into a statement is the fixed exclusion predicates below, chosen by key (never user input).
 *
 * Exclusions use `NOT EXISTS` rather than the runbook's `NOT IN (SELECT name FROM users …)`: `users.name` is
 * nullable, and a single NULL there would make `NOT IN` return no rows at all (synapse-database.md §5.6). On any
 * database without such a row the two give the same result.
 */

/** Who can be left out of the count. `support` is always left out (the runbook's definition). */
export type ExclusionKey = 'support' | 'appservice' | 'bots' | 'deactivated' | 'guests';

/** Predicates on `users u`, one per exclusion (Synapse column semantics: synapse-database.md §3). */
export const EXCLUSION_PREDICATES: Record<ExclusionKey, string> = {
  support: "u.user_type = 'support'",
  // Synapse stores native users with NULL, and sometimes '', in appservice_id.
  appservice: "(u.appservice_id IS NOT NULL AND u.appservice_id <> '')",
  bots: "u.user_type = 'bot'",
  deactivated: 'u.deactivated <> 0',
  guests: 'u.is_guest <> 0',
};

/** `NOT EXISTS` filter: true unless the user named by `column` exists in `users` and matches an exclusion. */
export function notExcluded(column: string, exclusions: readonly ExclusionKey[]): string {
  const keys = [...new Set(exclusions)].sort();
  if (keys.length === 0) return 'TRUE';
  const predicate = keys.map((k) => EXCLUSION_PREDICATES[k]).join(' OR ');
  return `NOT EXISTS (SELECT 1 FROM users u WHERE u.name = ${column} AND (${predicate}))`;
}

/** Which of the tables the report reads exist (a quick "is this a Synapse database" check). */
export const SCHEMA_CHECK = `
SELECT to_regclass('users') IS NOT NULL AS users,
       to_regclass('user_ips') IS NOT NULL AS user_ips,
       to_regclass('user_daily_visits') IS NOT NULL AS user_daily_visits,
       to_regclass('monthly_active_users') IS NOT NULL AS monthly_active_users`;

/**
 * Distinct users in `user_ips` seen in [$1, $2), after exclusions: the runbook's current-MAU query (with an upper
 * bound so that it can be asked about a past day).
 */
export function rollingFromUserIps(exclusions: readonly ExclusionKey[]): string {
  return `
SELECT count(*) AS users
FROM (
  SELECT DISTINCT i.user_id
  FROM user_ips i
  WHERE i.last_seen >= $1 AND i.last_seen < $2
) d
WHERE ${notExcluded('d.user_id', exclusions)}`;
}

/** Distinct users in `user_daily_visits` in [$1, $2), after exclusions: the runbook's second and third queries. */
export function rangeFromDailyVisits(exclusions: readonly ExclusionKey[]): string {
  return `
SELECT count(*) AS users
FROM (
  SELECT v.user_id
  FROM user_daily_visits v
  WHERE v."timestamp" >= $1 AND v."timestamp" < $2 AND ${notExcluded('v.user_id', exclusions)}
  GROUP BY v.user_id
) d`;
}

/** Synapse's phone-home `monthly_active_users` (metrics.py `count_monthly_users`), verbatim; $1 = now − 30 days. */
export const PHONE_HOME_MAU = `
SELECT COUNT(*) AS users FROM (
    SELECT user_id FROM user_ips
    WHERE last_seen > $1
    GROUP BY user_id
) u`;

/** Synapse's MAU-limit count (monthly_active_users.py `get_monthly_active_count`), verbatim. */
export const SYNAPSE_MAU_TABLE = `
SELECT COUNT(*) AS users
FROM monthly_active_users
    LEFT JOIN users
    ON monthly_active_users.user_id=users.name
WHERE (users.appservice_id IS NULL OR users.appservice_id = '')`;

/** Whether `monthly_active_users` has any row (it stays empty unless mau_stats_only or limit_usage_by_mau is on). */
export const SYNAPSE_MAU_TABLE_POPULATED = 'SELECT EXISTS (SELECT 1 FROM monthly_active_users) AS populated';

/** The oldest `user_ips.last_seen` (uses the `user_ips_last_seen_only` index): how far back user_ips reaches. */
export const USER_IPS_OLDEST = 'SELECT min(last_seen) AS oldest FROM user_ips';

/** Days with at least one `user_daily_visits` row in [$1, $2), probed day by day through the timestamp index. */
export const DAYS_WITH_VISITS = `
SELECT count(*) AS days,
       count(*) FILTER (WHERE EXISTS (
         SELECT 1 FROM user_daily_visits v WHERE v."timestamp" >= d AND v."timestamp" < d + 86400000
       )) AS days_with_data
FROM generate_series($1::bigint, $2::bigint - 1, 86400000) AS d`;

/**
 * Monthly figures for consecutive months, each in ONE statement. Parameters of every `months*` query:
 * $1 bigint[] month edges (N+1 values: each month's start, then the last month's end),
 * $2 text[] month labels (N), $3 bigint: coverage is counted only for days before it (the end of today).
 * Each returns one row per month: label, users, days (days counted for coverage), days_with_data.
 */
const MONTHS_CTE = `months AS (
  SELECT i AS bucket, ($2::text[])[i] AS label, ($1::bigint[])[i] AS start_ms, ($1::bigint[])[i + 1] AS end_ms
  FROM generate_subscripts($2::text[], 1) AS i
)`;

/**
 * Strategy `monthly`: one branch per month, each shaped like the runbook's retrospective query (an index range scan
 * over that month's rows, the exclusion applied per row, then grouped by user). That shape lets the planner choose
 * the runbook's own plans, parallel ones included, so a single month costs what the runbook query costs.
 */
export function monthsByMonth(exclusions: readonly ExclusionKey[], months: number): string {
  const branches = Array.from(
    { length: months },
    (_, i) => `  SELECT ${i + 1} AS bucket, (
    SELECT count(*) FROM (
      SELECT v.user_id FROM user_daily_visits v
      WHERE v."timestamp" >= ($1::bigint[])[${i + 1}] AND v."timestamp" < ($1::bigint[])[${i + 2}]
        AND ${notExcluded('v.user_id', exclusions)}
      GROUP BY v.user_id
    ) d
  ) AS users`,
  );
  return `
WITH ${MONTHS_CTE},
counts AS (
${branches.join('\n  UNION ALL\n')}
),
${COVERAGE_CTE}
${MONTHS_SELECT}`;
}

/**
 * Strategy `probe`: asks the `(user_id, timestamp)` index, for every user and every month, whether the user has a
 * row in that month (one index probe per user-month, answered from the index alone) instead of reading one row per
 * (user, device, day). The users come from a loose index scan of the same index (one probe per distinct user_id),
 * so users missing from `users` are counted like the runbook counts them. The months are separate EXISTS columns,
 * which PostgreSQL runs as cheap re-scans: about 4-5 µs per probe on PostgreSQL 15, against roughly 0.4 µs per row
 * for the runbook's plan, so this wins once users average more than about 12 rows per month.
 */
export function monthsByProbe(exclusions: readonly ExclusionKey[], months: number): string {
  const probes = Array.from(
    { length: months },
    (_, i) => `    EXISTS (
      SELECT 1 FROM user_daily_visits v
      WHERE v.user_id = s.user_id
        AND v."timestamp" >= ($1::bigint[])[${i + 1}] AND v."timestamp" < ($1::bigint[])[${i + 2}]
    )::int`,
  );
  return `
WITH RECURSIVE ${MONTHS_CTE},
-- Every distinct user_id of user_daily_visits, one index probe each (a "loose index scan").
seen(user_id) AS (
  SELECT min(user_id) FROM user_daily_visits
  UNION ALL
  SELECT (SELECT min(v.user_id) FROM user_daily_visits v WHERE v.user_id > s.user_id)
  FROM seen s
  WHERE s.user_id IS NOT NULL
),
-- MATERIALIZED: computed once per user, not once per (user, month) of the join below.
hits AS MATERIALIZED (
  SELECT ARRAY[
${probes.join(',\n')}
  ] AS hit
  FROM seen s
  WHERE s.user_id IS NOT NULL AND ${notExcluded('s.user_id', exclusions)}
),
counts AS (
  SELECT m.bucket, sum(h.hit[m.bucket]) AS users
  FROM hits h CROSS JOIN months m
  GROUP BY m.bucket
),
${COVERAGE_CTE}
${MONTHS_SELECT}`;
}

const COVERAGE_CTE = `coverage AS (
  SELECT m.bucket,
         count(d) AS days,
         count(d) FILTER (WHERE EXISTS (
           SELECT 1 FROM user_daily_visits v WHERE v."timestamp" >= d AND v."timestamp" < d + 86400000
         )) AS days_with_data
  FROM months m
  LEFT JOIN LATERAL generate_series(m.start_ms, LEAST(m.end_ms, $3::bigint) - 1, 86400000) AS d ON TRUE
  GROUP BY m.bucket
)`;

const MONTHS_SELECT = `SELECT m.label, COALESCE(c.users, 0) AS users, cv.days, cv.days_with_data
FROM months m
LEFT JOIN counts c ON c.bucket = m.bucket
LEFT JOIN coverage cv ON cv.bucket = m.bucket
ORDER BY m.bucket`;

/**
 * Planner statistics used to pick the months strategy: the table's estimated rows and estimated distinct users
 * (pg_stats; NULL before the table was ever analysed).
 */
export const VISITS_STATISTICS = `
SELECT (SELECT reltuples FROM pg_class WHERE oid = to_regclass('user_daily_visits'))::float8 AS reltuples,
       (SELECT n_distinct FROM pg_stats
         WHERE schemaname = current_schema() AND tablename = 'user_daily_visits' AND attname = 'user_id')::float8
         AS n_distinct`;

/** Estimated rows of user_daily_visits in [$1, $2) (the planner's estimate, from EXPLAIN). */
export const VISITS_IN_RANGE_ESTIMATE =
  'EXPLAIN (FORMAT JSON) SELECT 1 FROM user_daily_visits WHERE "timestamp" >= $1 AND "timestamp" < $2';
