/**
 * `ess mau`: monthly active users, by the ESS runbook's definition and, where they exist, by Synapse's own.
 * Every number says which table it comes from, which window it covers and whom it leaves out.
 */
import { discoverDeployment } from '../../lib/deployment/discover.js';
import { EssError, ExitCode, PreconditionError } from '../../lib/errors.js';
import type { KubeClient } from '../../lib/kube/client.js';
import type { Reporter } from '../../lib/output/log.js';
import {
  openPostgres,
  type PgEndpoint,
  type PgTarget,
  readOnlyTransaction,
  resolveBundledTarget,
  type SqlSession,
} from '../../lib/postgres/connect.js';
import {
  CURRENT_WINDOW_DAYS,
  DAY_MS,
  dayLabel,
  isoUtc,
  type Month,
  monthOf,
  monthRange,
  parseDay,
  parseMonth,
  rollingWindow,
  utcMidnight,
} from './periods.js';
import {
  DAYS_WITH_VISITS,
  type ExclusionKey,
  monthsByMonth,
  monthsByProbe,
  PHONE_HOME_MAU,
  rangeFromDailyVisits,
  rollingFromUserIps,
  SCHEMA_CHECK,
  SYNAPSE_MAU_TABLE,
  SYNAPSE_MAU_TABLE_POPULATED,
  USER_IPS_OLDEST,
  VISITS_IN_RANGE_ESTIMATE,
  VISITS_STATISTICS,
} from './sql.js';

/** Optional exclusions (`--exclude`). Support users are always excluded, as in the runbook. */
export type MauExclusion = Exclude<ExclusionKey, 'support'>;
export const MAU_EXCLUSIONS: readonly MauExclusion[] = ['appservice', 'bots', 'deactivated', 'guests'];

/**
 * What to count: the rolling 30 days up to a day (default today), one calendar month, or calendar months
 * `from`..`to` (YYYY-MM; `to` defaults to the current month).
 */
export type MauRequest =
  | { kind: 'current'; at?: string }
  | { kind: 'month'; month: string }
  | { kind: 'months'; from: string; to?: string };

/** How monthly figures are computed; `auto` picks from planner statistics (see {@link chooseMonthsStrategy}). */
export type MonthsStrategy = 'auto' | 'monthly' | 'probe';

export interface MauOptions {
  namespace: string;
  release: string;
  request: MauRequest;
  exclude: readonly MauExclusion[];
  /** Connect here instead of to the bundled Postgres (no Kubernetes access needed then). */
  databaseUrl?: string;
  statementTimeoutMs: number;
  monthsStrategy?: MonthsStrategy;
}

export interface MauDeps {
  /** Needed only without databaseUrl. */
  kube?: () => Promise<KubeClient>;
  reporter: Reporter;
  now?: () => number;
  signal?: AbortSignal;
}

/** `ess` = the runbook's definition (with --exclude applied); the others are Synapse's own figures. */
export type MauMetric = 'ess' | 'synapse-mau-table' | 'synapse-phone-home';
export type MauSource = 'user_ips' | 'user_daily_visits' | 'monthly_active_users';

export interface MauRow {
  /** `YYYY-MM` for a calendar month, `YYYY-MM-DD` (the day of the report) for a rolling 30-day figure. */
  period: string;
  metric: MauMetric;
  users: number;
  source: MauSource;
  /** Window start (included) and end (excluded), ISO 8601 UTC and ms since the epoch. */
  from: string;
  to: string;
  fromMs: number;
  toMs: number;
  /** Whom the figure leaves out. */
  excludes: string[];
  /** Days of the window that have user_daily_visits rows (user_daily_visits figures only). */
  coverage?: { days: number; daysWithData: number };
  /** The window has not ended yet. */
  partial?: boolean;
}

export interface MauResult {
  kind: MauPlan['kind'];
  rows: MauRow[];
  /** One sentence per metric present in `rows`: what it counts. */
  definitions: Partial<Record<MauMetric, string>>;
  exclude: MauExclusion[];
  database: PgEndpoint;
  generatedAt: string;
  notes: string[];
  warnings: string[];
}

/** A validated request, in epoch milliseconds. */
export type MauPlan =
  | { kind: 'current'; dayMs: number; today: boolean; exclusions: ExclusionKey[] }
  | { kind: 'months'; months: Month[]; exclusions: ExclusionKey[] };

function usage(message: string, next: string[]): EssError {
  return new EssError(message, { exitCode: ExitCode.USAGE, code: 'BAD_FLAG', next });
}

/** Validates the request against the clock (no future days or months) and resolves it to epoch bounds. */
export function planMau(request: MauRequest, exclude: readonly MauExclusion[], nowMs: number): MauPlan {
  const exclusions: ExclusionKey[] = ['support', ...[...new Set(exclude)].sort()];
  const todayMs = utcMidnight(nowMs);
  if (request.kind === 'current') {
    const dayMs = request.at === undefined ? todayMs : parseDay(request.at);
    if (dayMs > todayMs) {
      throw usage(`--at ${dayLabel(dayMs)} is in the future (today is ${dayLabel(todayMs)} UTC).`, [
        'Pass today or an earlier day',
      ]);
    }
    return { kind: 'current', dayMs, today: dayMs === todayMs, exclusions };
  }
  const from = request.kind === 'month' ? parseMonth(request.month, '--month') : parseMonth(request.from, '--from');
  const to =
    request.kind === 'month' ? from : request.to === undefined ? monthOf(nowMs) : parseMonth(request.to, '--to');
  const current = monthOf(nowMs);
  for (const m of [from, to]) {
    if (m.startMs > current.startMs) {
      throw usage(`${m.label} is in the future (the current month is ${current.label}).`, [
        `Ask for ${current.label} or earlier`,
      ]);
    }
  }
  return { kind: 'months', months: monthRange(from, to), exclusions };
}

const SOURCE_NOTES = {
  userIpsPruned:
    'user_ips is pruned after user_ips_max_age (28 days by default), so a 30-day figure from it covers about 28 days.',
  visitsOnly:
    'user_daily_visits never has rows for guests or appservice users (Synapse leaves them out when it writes the table).',
};

function exclusionText(exclusions: readonly ExclusionKey[]): string {
  const words: Record<ExclusionKey, string> = {
    support: 'support users',
    appservice: 'appservice (bridged) users',
    bots: 'bots',
    deactivated: 'deactivated users',
    guests: 'guests',
  };
  const list = exclusions.map((k) => words[k]);
  const last = list.pop();
  return list.length ? `${list.join(', ')} and ${last}` : (last ?? 'nobody');
}

/** The sentence describing a metric as computed for this plan. */
export function definitionOf(metric: MauMetric, plan: MauPlan): string {
  const excluded = `Excludes ${exclusionText(plan.exclusions)} (as they are in the users table now).`;
  if (metric === 'synapse-mau-table') {
    return (
      "Synapse's own MAU (table monthly_active_users, filled because ESS sets mau_stats_only; the " +
      'synapse_admin_mau_current gauge): users seen in the last 30 days. Guests, support and trial users are never ' +
      'added and appservice users are left out when counting; bots and deactivated users count.'
    );
  }
  if (metric === 'synapse-phone-home') {
    return (
      "Synapse's phone-home monthly_active_users: distinct users in user_ips with last_seen in the last 30 days " +
      `to the millisecond. Excludes nobody. ${SOURCE_NOTES.userIpsPruned}`
    );
  }
  if (plan.kind === 'months') {
    return (
      "The ESS runbook's retrospective query: distinct users in user_daily_visits from 00:00 UTC on the 1st of the " +
      `month (included) to 00:00 UTC on the 1st of the next month (excluded). ${excluded} Calendar months can only ` +
      'come from user_daily_visits: user_ips keeps only the last visit of each session and is pruned after 28 days ' +
      `by default. ${SOURCE_NOTES.visitsOnly}`
    );
  }
  if (plan.today) {
    return (
      "The ESS runbook's current-MAU query: distinct users in user_ips with last_seen on or after 00:00 UTC " +
      `${CURRENT_WINDOW_DAYS} days ago. ${excluded} ${SOURCE_NOTES.userIpsPruned}`
    );
  }
  return (
    `The ESS runbook's current-MAU definition as of the end of a past day: distinct users in user_daily_visits from ` +
    `00:00 UTC ${CURRENT_WINDOW_DAYS} days before that day to the end of it. user_ips cannot answer for a past day ` +
    `(it keeps only each session's last visit and is pruned after 28 days). ${excluded} ${SOURCE_NOTES.visitsOnly}`
  );
}

function count(value: unknown): number {
  return value === null || value === undefined ? 0 : Number(value);
}

/** Planner estimates behind {@link chooseMonthsStrategy}. */
export interface VisitsEstimate {
  /** Estimated user_daily_visits rows in the whole range. */
  rangeRows: number;
  /** Estimated distinct user_id values in user_daily_visits (undefined before the first ANALYZE). */
  distinctUsers?: number;
}

/**
 * Rows per user and month above which the `probe` strategy beats `monthly`. bench/mau.bench.ts on PostgreSQL 15,
 * 10M rows, typical profile (24 rows per user-month): `probe` took 0.59× as long as `monthly` (2.5 s vs 4.3 s), so
 * one probe costs about as much as reading 14 rows; break-even ≈ 14-17.
 */
export const PROBE_COST_IN_ROWS = 16;

/**
 * Picks how to compute several months in one statement: `monthly` (the runbook's plan, once per month: the safe
 * default) or `probe` (one index probe per user and month, when users average more than {@link PROBE_COST_IN_ROWS} rows per month).
 */
export function chooseMonthsStrategy(estimate: VisitsEstimate, months: number): 'monthly' | 'probe' {
  if (months < 2 || estimate.distinctUsers === undefined || estimate.distinctUsers <= 0) return 'monthly';
  return estimate.rangeRows > estimate.distinctUsers * months * PROBE_COST_IN_ROWS ? 'probe' : 'monthly';
}

async function estimateVisits(session: SqlSession, fromMs: number, toMs: number): Promise<VisitsEstimate> {
  const [stats] = await session.query<{ reltuples: number | null; n_distinct: number | null }>(VISITS_STATISTICS);
  const [plan] = await session.query<{ 'QUERY PLAN': { Plan: { 'Plan Rows': number } }[] }>(VISITS_IN_RANGE_ESTIMATE, [
    fromMs,
    toMs,
  ]);
  const rangeRows = Number(plan?.['QUERY PLAN']?.[0]?.Plan?.['Plan Rows'] ?? 0);
  const nd = stats?.n_distinct === null || stats?.n_distinct === undefined ? undefined : Number(stats.n_distinct);
  const reltuples = Math.max(0, Number(stats?.reltuples ?? 0));
  return { rangeRows, distinctUsers: nd === undefined ? undefined : nd < 0 ? -nd * reltuples : nd };
}

async function checkSchema(session: SqlSession): Promise<void> {
  const [row] = await session.query<Record<string, boolean>>(SCHEMA_CHECK);
  const missing = Object.entries(row ?? {})
    .filter(([, present]) => !present)
    .map(([table]) => table);
  if (missing.length) {
    throw new PreconditionError(`This does not look like a Synapse database: table(s) ${missing.join(', ')} missing.`, {
      code: 'NOT_SYNAPSE_DATABASE',
      next: ['Point --database-url at the Synapse database (not the MAS one)'],
    });
  }
}

/** Groups month labels into runs of consecutive months (the input is in order). */
function consecutiveRuns(labels: string[]): string[][] {
  const runs: string[][] = [];
  for (const label of labels) {
    const run = runs.at(-1);
    const previous = run?.at(-1);
    if (run && previous && monthOf(parseMonth(previous).endMs).label === label) run.push(label);
    else runs.push([label]);
  }
  return runs;
}

type Computed = Pick<MauResult, 'rows' | 'definitions' | 'notes' | 'warnings'>;
type CurrentPlan = Extract<MauPlan, { kind: 'current' }>;
type MonthsPlan = Extract<MauPlan, { kind: 'months' }>;

/** Today: the runbook's user_ips query, plus Synapse's MAU-table and phone-home figures. */
async function currentToday(session: SqlSession, plan: CurrentPlan, now: number, out: Computed): Promise<void> {
  const { fromMs } = rollingWindow(plan.dayMs);
  const period = dayLabel(plan.dayMs);
  // No upper bound, as in the runbook.
  const [ess] = await session.query(rollingFromUserIps(plan.exclusions), [fromMs, Number.MAX_SAFE_INTEGER]);
  out.rows.push({
    period,
    metric: 'ess',
    users: count(ess?.users),
    source: 'user_ips',
    from: isoUtc(fromMs),
    to: isoUtc(now),
    fromMs,
    toMs: now,
    excludes: [...plan.exclusions],
  });
  const [oldest] = await session.query<{ oldest: string | null }>(USER_IPS_OLDEST);
  const oldestMs = oldest?.oldest === null || oldest?.oldest === undefined ? undefined : Number(oldest.oldest);
  if (oldestMs !== undefined && oldestMs > fromMs + DAY_MS) {
    out.notes.push(
      `user_ips reaches back only to ${isoUtc(oldestMs)}: the current figure covers ` +
        `${Math.round((now - oldestMs) / DAY_MS)} days, not ${CURRENT_WINDOW_DAYS}.`,
    );
  }
  const since = now - CURRENT_WINDOW_DAYS * DAY_MS;
  const rolling = { from: isoUtc(since), to: isoUtc(now), fromMs: since, toMs: now };
  const [populated] = await session.query<{ populated: boolean }>(SYNAPSE_MAU_TABLE_POPULATED);
  if (populated?.populated) {
    const [table] = await session.query(SYNAPSE_MAU_TABLE);
    out.rows.push({
      period,
      metric: 'synapse-mau-table',
      users: count(table?.users),
      source: 'monthly_active_users',
      ...rolling,
      excludes: ['guests', 'support', 'trial users', 'appservice'],
    });
  } else {
    out.notes.push(
      'monthly_active_users is empty: Synapse fills it only with mau_stats_only or limit_usage_by_mau (ESS sets ' +
        'mau_stats_only), so its own MAU figure is not shown.',
    );
  }
  const [phoneHome] = await session.query(PHONE_HOME_MAU, [since]);
  out.rows.push({
    period,
    metric: 'synapse-phone-home',
    users: count(phoneHome?.users),
    source: 'user_ips',
    ...rolling,
    excludes: [],
  });
}

/** A past day: the same 30-day window, from user_daily_visits (user_ips cannot answer for the past). */
async function currentPastDay(session: SqlSession, plan: CurrentPlan, out: Computed): Promise<void> {
  const { fromMs, toMs } = rollingWindow(plan.dayMs);
  const [ess] = await session.query(rangeFromDailyVisits(plan.exclusions), [fromMs, toMs]);
  const [cov] = await session.query(DAYS_WITH_VISITS, [fromMs, toMs]);
  const coverage = { days: count(cov?.days), daysWithData: count(cov?.days_with_data) };
  out.rows.push({
    period: dayLabel(plan.dayMs),
    metric: 'ess',
    users: count(ess?.users),
    source: 'user_daily_visits',
    from: isoUtc(fromMs),
    to: isoUtc(toMs),
    fromMs,
    toMs,
    excludes: [...plan.exclusions],
    coverage,
  });
  out.notes.push(`Synapse's own figures are rolling windows that end now; they are not shown for a past day.`);
  if (coverage.daysWithData < coverage.days) {
    out.warnings.push(
      `${coverage.days - coverage.daysWithData} of the ${coverage.days} days from ${dayLabel(fromMs)} to ` +
        `${dayLabel(plan.dayMs)} have no user_daily_visits rows (Synapse down, or before the table existed?): ` +
        'the count may be too low.',
    );
  }
}

/** Calendar months from user_daily_visits, all in one statement, with per-month coverage. */
async function months(
  session: SqlSession,
  plan: MonthsPlan,
  now: number,
  out: Computed,
  options: { reporter?: Reporter; monthsStrategy?: MonthsStrategy },
): Promise<void> {
  const first = plan.months[0];
  const last = plan.months[plan.months.length - 1];
  let strategy = options.monthsStrategy ?? 'auto';
  if (strategy === 'auto') {
    const estimate = plan.months.length > 1 ? await estimateVisits(session, first.startMs, last.endMs) : undefined;
    strategy = estimate ? chooseMonthsStrategy(estimate, plan.months.length) : 'monthly';
    options.reporter?.debug(
      `months strategy ${strategy}` +
        (estimate
          ? `: ~${Math.round(estimate.rangeRows)} rows, ~${Math.round(estimate.distinctUsers ?? 0)} users`
          : ''),
    );
  }
  const sql =
    strategy === 'probe'
      ? monthsByProbe(plan.exclusions, plan.months.length)
      : monthsByMonth(plan.exclusions, plan.months.length);
  const edges = [...plan.months.map((m) => m.startMs), last.endMs];
  const coverEnd = utcMidnight(now) + DAY_MS;
  const rows = await session.query<{ label: string; users: string; days: string; days_with_data: string }>(sql, [
    edges,
    plan.months.map((m) => m.label),
    coverEnd,
  ]);
  const empty: string[] = [];
  for (const [i, m] of plan.months.entries()) {
    const row = rows[i];
    const coverage = { days: count(row?.days), daysWithData: count(row?.days_with_data) };
    const partial = m.endMs > now;
    out.rows.push({
      period: m.label,
      metric: 'ess',
      users: count(row?.users),
      source: 'user_daily_visits',
      from: isoUtc(m.startMs),
      to: isoUtc(m.endMs),
      fromMs: m.startMs,
      toMs: m.endMs,
      excludes: [...plan.exclusions],
      coverage,
      ...(partial ? { partial } : {}),
    });
    if (partial) out.notes.push(`${m.label} is not over yet: counted up to now.`);
    if (coverage.daysWithData === 0) {
      empty.push(m.label);
    } else if (coverage.daysWithData < coverage.days) {
      out.warnings.push(
        `${m.label}: ${coverage.days - coverage.daysWithData} of ${coverage.days} days have no user_daily_visits rows ` +
          '(Synapse down, or before the table existed?): the count may be too low.',
      );
    }
  }
  for (const run of consecutiveRuns(empty)) {
    out.warnings.push(
      `${run.length > 1 ? `${run[0]}..${run[run.length - 1]}` : run[0]}: no user_daily_visits rows at all; ` +
        '0 means "no data", not "no users".',
    );
  }
}

/**
 * Computes the figures of a plan on a session inside a transaction (a read-only one: see runMau). Exported for the
 * correctness tests and the benchmark, which run it on a plain PostgreSQL database.
 */
export async function computeMau(
  session: SqlSession,
  plan: MauPlan,
  options: { nowMs: number; reporter?: Reporter; monthsStrategy?: MonthsStrategy },
): Promise<Computed> {
  await checkSchema(session);
  // The planner's row guesses for generate_series make these queries look expensive enough for JIT, whose
  // compilation then takes longer than the queries themselves. Local to the (read-only) transaction.
  await session.query('SET LOCAL jit = off');
  const out: Computed = { rows: [], definitions: {}, notes: [], warnings: [] };
  if (plan.kind === 'months') await months(session, plan, options.nowMs, out, options);
  else if (plan.today) await currentToday(session, plan, options.nowMs, out);
  else await currentPastDay(session, plan, out);
  for (const metric of new Set(out.rows.map((r) => r.metric))) out.definitions[metric] = definitionOf(metric, plan);
  return out;
}

/**
 * Runs the MAU report: validates the request, connects (bundled Postgres through a port-forward, or
 * `databaseUrl`), computes everything in one read-only transaction and returns the typed result.
 */
export async function runMau(options: MauOptions, deps: MauDeps): Promise<MauResult> {
  const now = deps.now ?? Date.now;
  const plan = planMau(options.request, options.exclude, now());
  let target: PgTarget;
  let kube: KubeClient | undefined;
  if (options.databaseUrl) {
    target = { kind: 'url', url: options.databaseUrl };
  } else {
    if (!deps.kube) throw new Error('runMau: a KubeClient is required without databaseUrl');
    kube = await deps.kube();
    const deployment = await discoverDeployment(kube, { namespace: options.namespace, release: options.release });
    target = await resolveBundledTarget(kube, deployment, 'synapse');
    if (!target.password) {
      deps.reporter.warn(
        `No password for ${target.user} found in the chart's Secrets or the Postgres container's environment; trying without one (loopback trust).`,
      );
    } else {
      deps.reporter.debug(`password of ${target.user} from ${target.passwordSource}`);
    }
  }
  const connection = await openPostgres(target, { kube, applicationName: 'ess mau', signal: deps.signal });
  const { endpoint } = connection;
  deps.reporter.info(`Counting on ${endpoint.user}@${endpoint.address}/${endpoint.database} (${endpoint.via}).`);
  try {
    const nowMs = now();
    const computed = await readOnlyTransaction(
      connection,
      { statementTimeoutMs: options.statementTimeoutMs, signal: deps.signal },
      (session) =>
        computeMau(session, plan, { nowMs, reporter: deps.reporter, monthsStrategy: options.monthsStrategy }),
    );
    return {
      kind: plan.kind,
      ...computed,
      exclude: [...new Set(options.exclude)].sort(),
      database: endpoint,
      generatedAt: new Date(nowMs).toISOString(),
    };
  } finally {
    await connection.close();
  }
}
