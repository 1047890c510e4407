/**
 * The three queries of the ESS Pro runbook "Calculate monthly active users", verbatim (including their example
 * epochs and comments), and a helper that swaps in other epochs. The tests compare `ess mau` with these.
 */

/** Query 1: current MAU from user_ips, cut-off 8 December 2024 (for a run on 7 January 2025). */
export const RUNBOOK_CURRENT_USER_IPS = `SELECT COUNT(*) FROM (
SELECT user_id
FROM user_ips
WHERE
last_seen >= 1733616000000 AND -- Sunday, 8 December 2024 00:00:00 GMT
user_id NOT IN (
SELECT name
FROM users
WHERE user_type = 'support'
)
GROUP BY user_id
) AS temp;`;

/** Query 2: "for reference, this is equal to" — the same window from user_daily_visits. */
export const RUNBOOK_CURRENT_DAILY_VISITS = `SELECT COUNT(*) FROM (
SELECT
user_id,
MAX(timestamp) AS timestamp
FROM user_daily_visits
WHERE
timestamp >= 1733616000000 AND -- Sunday, 8 December 2024 00:00:00 GMT
user_id NOT IN (
SELECT name
FROM users
WHERE user_type = 'support'
)
GROUP BY user_id
) AS temp;`;

/** Query 3: retrospective statistics for November 2024. */
export const RUNBOOK_MONTH = `SELECT COUNT(*) FROM (
SELECT
user_id,
MAX(timestamp) AS timestamp
FROM user_daily_visits
WHERE
timestamp >= 1730419200000 AND -- Friday, 1 November 2024 00:00:00 GMT
timestamp < 1733011200000 AND -- Sunday, 1 December 2024 00:00:00 GMT
user_id NOT IN (
SELECT name
FROM users
WHERE user_type = 'support'
)
GROUP BY user_id
) AS temp;`;

/** Query 1 with another cut-off (00:00 UTC, ms). */
export function runbookCurrent(cutoffMs: number): string {
  return RUNBOOK_CURRENT_USER_IPS.replace('1733616000000', String(cutoffMs));
}

/** Query 3 for the month [startMs, endMs): the two epochs are swapped in on their own lines. */
export function runbookMonth(startMs: number, endMs: number): string {
  return RUNBOOK_MONTH.replace(/^timestamp >= \d+/m, `timestamp >= ${startMs}`).replace(
    /^timestamp < \d+/m,
    `timestamp < ${endMs}`,
  );
}
