/**
 * A deterministic MAU dataset with every edge case the report must get right, plus an oracle that counts it in
 * plain TypeScript (independently of any SQL). Loaded into a fresh database on a real PostgreSQL by
 * {@link loadDataset}.
 */
import type pg from 'pg';

export const DAY = 86_400_000;
/** Fixed "now": the runbook's own example day (run on 2025-01-07 → cut-off 2024-12-08 = 1733616000000). */
export const NOW = Date.UTC(2025, 0, 7, 13, 45, 0);
/** 00:00 UTC 30 days before NOW's day: the runbook's literal. */
export const CUTOFF = 1733616000000;
/** First day with user_daily_visits rows; the days of GAP have none (Synapse "down"). */
export const DATA_START = Date.UTC(2023, 10, 20);
export const GAP = [Date.UTC(2024, 5, 10), Date.UTC(2024, 5, 11), Date.UTC(2024, 5, 12)];
const SERVER = 'test.local';

/** The columns of `users` the report reads (the rest keep their defaults). */
export interface UserDef {
  name: string;
  userType?: string | null;
  isGuest?: number;
  appserviceId?: string | null;
  deactivated?: number;
  /** false: the user id appears in activity tables but has no `users` row (deleted since). */
  inUsers?: boolean;
}

export interface Visit {
  userId: string;
  deviceId: string | null;
  ts: number;
}

export interface IpRow {
  userId: string;
  token: string;
  deviceId: string | null;
  ip: string;
  lastSeen: number;
}

export interface Dataset {
  users: UserDef[];
  visits: Visit[];
  ips: IpRow[];
  mau: { userId: string; ts: number }[];
}

/** Names of the special users, for assertions. */
export const U = {
  support1: `@support1:${SERVER}`,
  support2: `@support2:${SERVER}`,
  bot: `@bot1:${SERVER}`,
  guest: `@guest1:${SERVER}`,
  bridged: `@irc_alice:${SERVER}`,
  emptyAppservice: `@emptyas:${SERVER}`,
  deactivated: `@gone1:${SERVER}`,
  custom: `@custom1:${SERVER}`,
  deletedWithVisits: `@deleted1:${SERVER}`,
  ipOnly: `@iponly1:${SERVER}`,
  ghost: `@ghost1:${SERVER}`,
  leap: `@leap:${SERVER}`,
  nye2023: `@nye2023:${SERVER}`,
  ny2024: `@ny2024:${SERVER}`,
  nye2024: `@nye2024:${SERVER}`,
  ny2025: `@ny2025:${SERVER}`,
  lastMs: `@edge_last_ms:${SERVER}`,
  firstMs: `@edge_first_ms:${SERVER}`,
  cutoffIn: `@cutoff_in:${SERVER}`,
  cutoffOut: `@cutoff_out:${SERVER}`,
  phoneHomeIn: `@phonehome_in:${SERVER}`,
  phoneHomeOut: `@phonehome_out:${SERVER}`,
  danglingMau: `@mau_deleted:${SERVER}`,
} as const;

/** mulberry32: small deterministic PRNG. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Builds the dataset. Deterministic: the same rows on every run. */
export function buildDataset(): Dataset {
  const rand = rng(20250107);
  const users: UserDef[] = [];
  const visits: Visit[] = [];
  const ips: IpRow[] = [];
  const today = Math.floor(NOW / DAY) * DAY;
  const days: number[] = [];
  for (let d = DATA_START; d <= today; d += DAY) if (!GAP.includes(d)) days.push(d);

  const active = (userId: string, p: number, maxDevices: number) => {
    let last: number | undefined;
    for (const d of days) {
      if (rand() >= p) continue;
      const devices = 1 + Math.floor(rand() * maxDevices);
      for (let k = 1; k <= devices; k++) visits.push({ userId, deviceId: `DEV${k}`, ts: d });
      // Synapse inserts rows with a NULL device_id again on every run: duplicates must not count twice.
      if (rand() < 0.05) visits.push({ userId, deviceId: null, ts: d }, { userId, deviceId: null, ts: d });
      last = d;
    }
    if (last !== undefined) {
      // Several sessions (token, ip) per user; the newest carries the last visit.
      ips.push({ userId, token: `syt_${userId}_a`, deviceId: 'DEV1', ip: '10.0.0.1', lastSeen: last + 3_600_000 });
      ips.push({
        userId,
        token: `syt_${userId}_b`,
        deviceId: 'DEV2',
        ip: '10.0.0.2',
        lastSeen: last + Math.floor(rand() * DAY),
      });
    }
  };

  for (let i = 1; i <= 30; i++) {
    const name = `@user${String(i).padStart(2, '0')}:${SERVER}`;
    users.push({ name });
    active(name, 0.03 + (i / 30) * 0.8, 3);
  }
  const special: UserDef[] = [
    { name: U.support1, userType: 'support' },
    { name: U.support2, userType: 'support' },
    { name: U.bot, userType: 'bot' },
    { name: U.guest, isGuest: 1 },
    { name: U.bridged, appserviceId: 'irc' },
    { name: U.emptyAppservice, appserviceId: '' },
    { name: U.deactivated, deactivated: 1 },
    { name: U.custom, userType: 'custom' },
    { name: U.deletedWithVisits, inUsers: false },
    { name: U.ipOnly },
    { name: U.ghost, inUsers: false },
    { name: U.leap },
    { name: U.nye2023 },
    { name: U.ny2024 },
    { name: U.nye2024 },
    { name: U.ny2025 },
    { name: U.lastMs },
    { name: U.firstMs },
    { name: U.cutoffIn },
    { name: U.cutoffOut },
    { name: U.phoneHomeIn },
    { name: U.phoneHomeOut },
  ];
  users.push(...special);
  for (const name of [U.support1, U.bot, U.guest, U.bridged, U.emptyAppservice, U.deactivated, U.custom]) {
    active(name, 0.5, 2);
  }
  active(U.deletedWithVisits, 0.4, 1);
  ips.push({ userId: U.support2, token: 't_s2', deviceId: 'D', ip: '10.0.0.9', lastSeen: NOW - 2 * DAY });
  // Seen only in user_ips (today, before Synapse's 5-minute user_daily_visits job ran): one in users, one deleted.
  ips.push({ userId: U.ipOnly, token: 't_ipo', deviceId: 'D', ip: '10.0.0.3', lastSeen: NOW - 60_000 });
  ips.push({ userId: U.ghost, token: 't_gh', deviceId: null, ip: '10.0.0.4', lastSeen: NOW - 5 * DAY });

  const at = (userId: string, ts: number, devices = 1) => {
    for (let k = 1; k <= devices; k++) visits.push({ userId, deviceId: `DEV${k}`, ts });
  };
  at(U.leap, Date.UTC(2024, 1, 29), 2);
  at(U.nye2023, Date.UTC(2023, 11, 31));
  at(U.ny2024, Date.UTC(2024, 0, 1));
  at(U.nye2024, Date.UTC(2024, 11, 31), 3);
  at(U.ny2025, Date.UTC(2025, 0, 1));
  // 23:59:59.999 on the last day of November (not a value Synapse writes, but a range must still get it right)
  // and 00:00:00.000 on December 1st.
  at(U.lastMs, Date.UTC(2024, 11, 1) - 1);
  at(U.firstMs, Date.UTC(2024, 11, 1));
  // user_ips exactly at the runbook's cut-off (counted) and 1 ms before it (not counted).
  ips.push({ userId: U.cutoffIn, token: 't_ci', deviceId: 'D', ip: '10.0.1.1', lastSeen: CUTOFF });
  ips.push({ userId: U.cutoffOut, token: 't_co', deviceId: 'D', ip: '10.0.1.2', lastSeen: CUTOFF - 1 });
  // Phone-home counts last_seen > now - 30 days, strictly.
  const since = NOW - 30 * DAY;
  ips.push({ userId: U.phoneHomeIn, token: 't_pi', deviceId: 'D', ip: '10.0.1.3', lastSeen: since + 1 });
  ips.push({ userId: U.phoneHomeOut, token: 't_po', deviceId: 'D', ip: '10.0.1.4', lastSeen: since });

  // monthly_active_users as Synapse fills it under mau_stats_only: no guests or support users, bots included,
  // plus a dangling row of a deleted user and appservice rows that the count leaves out.
  const mau: Dataset['mau'] = [];
  const byUser = new Map<string, number>();
  for (const row of ips) byUser.set(row.userId, Math.max(byUser.get(row.userId) ?? 0, row.lastSeen));
  for (const [userId, ts] of byUser) {
    const def = users.find((u) => u.name === userId);
    if (!def || def.isGuest || def.userType === 'support' || ts < since) continue;
    mau.push({ userId, ts });
  }
  mau.push({ userId: U.danglingMau, ts: NOW - DAY });
  return { users, visits, ips, mau };
}

/** The four tables as Synapse v94 creates them (synapse-v94-fresh.schema.sql), with their indexes. */
export const SYNAPSE_DDL = `
CREATE TABLE users (
    name text, password_hash text, creation_ts bigint, admin smallint DEFAULT 0 NOT NULL, upgrade_ts bigint,
    is_guest smallint DEFAULT 0 NOT NULL, appservice_id text, consent_version text, consent_server_notice_sent text,
    user_type text, deactivated smallint DEFAULT 0 NOT NULL, shadow_banned boolean, consent_ts bigint,
    approved boolean, locked boolean DEFAULT false NOT NULL, suspended boolean DEFAULT false NOT NULL
);
ALTER TABLE users ADD CONSTRAINT users_name_key UNIQUE (name);
CREATE INDEX users_creation_ts ON users USING btree (creation_ts);
CREATE TABLE user_ips (
    user_id text NOT NULL, access_token text NOT NULL, device_id text, ip text NOT NULL, user_agent text NOT NULL,
    last_seen bigint NOT NULL
);
CREATE INDEX user_ips_device_id ON user_ips USING btree (user_id, device_id, last_seen);
CREATE INDEX user_ips_last_seen ON user_ips USING btree (user_id, last_seen);
CREATE INDEX user_ips_last_seen_only ON user_ips USING btree (last_seen);
CREATE UNIQUE INDEX user_ips_user_token_ip_unique_index ON user_ips USING btree (user_id, access_token, ip);
CREATE TABLE user_daily_visits (user_id text NOT NULL, device_id text, "timestamp" bigint NOT NULL, user_agent text);
CREATE INDEX user_daily_visits_ts_idx ON user_daily_visits USING btree ("timestamp");
CREATE INDEX user_daily_visits_uts_idx ON user_daily_visits USING btree (user_id, "timestamp");
CREATE TABLE monthly_active_users (user_id text NOT NULL, "timestamp" bigint NOT NULL);
CREATE INDEX monthly_active_users_time_stamp ON monthly_active_users USING btree ("timestamp");
CREATE UNIQUE INDEX monthly_active_users_users ON monthly_active_users USING btree (user_id);
`;

/** Creates the tables (when `ddl`) and inserts the dataset, one statement per table. */
export async function loadDataset(client: pg.Client, data: Dataset, ddl = true): Promise<void> {
  if (ddl) await client.query(SYNAPSE_DDL);
  const inUsers = data.users.filter((u) => u.inUsers !== false);
  await client.query(
    `INSERT INTO users (name, creation_ts, user_type, is_guest, appservice_id, deactivated)
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::smallint[], $5::text[], $6::smallint[])`,
    [
      inUsers.map((u) => u.name),
      inUsers.map(() => Math.floor(DATA_START / 1000) - 86_400),
      inUsers.map((u) => u.userType ?? null),
      inUsers.map((u) => u.isGuest ?? 0),
      inUsers.map((u) => (u.appserviceId === undefined ? null : u.appserviceId)),
      inUsers.map((u) => u.deactivated ?? 0),
    ],
  );
  await client.query(
    `INSERT INTO user_daily_visits (user_id, device_id, "timestamp", user_agent)
     SELECT u, d, t, 'Element/1.11 (Linux)' FROM unnest($1::text[], $2::text[], $3::bigint[]) AS x(u, d, t)`,
    [data.visits.map((v) => v.userId), data.visits.map((v) => v.deviceId), data.visits.map((v) => v.ts)],
  );
  await client.query(
    `INSERT INTO user_ips (user_id, access_token, device_id, ip, user_agent, last_seen)
     SELECT u, t, d, i, 'Mozilla/5.0', l FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
       AS x(u, t, d, i, l)`,
    [
      data.ips.map((r) => r.userId),
      data.ips.map((r) => r.token),
      data.ips.map((r) => r.deviceId),
      data.ips.map((r) => r.ip),
      data.ips.map((r) => r.lastSeen),
    ],
  );
  await client.query(
    `INSERT INTO monthly_active_users (user_id, "timestamp") SELECT * FROM unnest($1::text[], $2::bigint[])`,
    [data.mau.map((r) => r.userId), data.mau.map((r) => r.ts)],
  );
  await client.query('ANALYZE');
}

export type OracleExclusion = 'support' | 'appservice' | 'bots' | 'deactivated' | 'guests';

/** The oracle: the same definitions as the report, in plain TypeScript over the in-memory rows. */
export class Oracle {
  private readonly byName: Map<string, UserDef>;

  constructor(private readonly data: Dataset) {
    this.byName = new Map(data.users.filter((u) => u.inUsers !== false).map((u) => [u.name, u]));
  }

  excluded(userId: string, exclusions: readonly OracleExclusion[]): boolean {
    const u = this.byName.get(userId);
    if (!u) return false;
    return exclusions.some(
      (e) =>
        (e === 'support' && u.userType === 'support') ||
        (e === 'bots' && u.userType === 'bot') ||
        (e === 'guests' && (u.isGuest ?? 0) !== 0) ||
        (e === 'deactivated' && (u.deactivated ?? 0) !== 0) ||
        (e === 'appservice' && u.appserviceId !== undefined && u.appserviceId !== null && u.appserviceId !== ''),
    );
  }

  /** Users with a user_daily_visits row in [from, to). */
  visitors(from: number, to: number, exclusions: readonly OracleExclusion[] = ['support']): Set<string> {
    return new Set(
      this.data.visits
        .filter((v) => v.ts >= from && v.ts < to && !this.excluded(v.userId, exclusions))
        .map((v) => v.userId),
    );
  }

  /** Users with a user_ips row seen at or after `from`. */
  ipUsers(from: number, exclusions: readonly OracleExclusion[] = ['support']): Set<string> {
    return new Set(
      this.data.ips.filter((r) => r.lastSeen >= from && !this.excluded(r.userId, exclusions)).map((r) => r.userId),
    );
  }

  /** Synapse's phone-home count: last_seen strictly after `since`, nobody excluded. */
  phoneHome(since: number): number {
    return new Set(this.data.ips.filter((r) => r.lastSeen > since).map((r) => r.userId)).size;
  }

  /** Synapse's monthly_active_users count: rows whose user is unknown or not an appservice user. */
  mauTable(): number {
    return this.data.mau.filter((r) => {
      const u = this.byName.get(r.userId);
      return !u || u.appserviceId === undefined || u.appserviceId === null || u.appserviceId === '';
    }).length;
  }

  /** Days in [from, to) that have at least one user_daily_visits row. */
  daysWithData(from: number, to: number): number {
    return new Set(this.data.visits.filter((v) => v.ts >= from && v.ts < to).map((v) => Math.floor(v.ts / DAY))).size;
  }
}
