/**
 * Database contents of the seeded install: the roles and databases `configure-dbs.sh` creates, a Synapse-shaped
 * schema (or a given schema file), and data generated server-side with INSERT … SELECT over generate_series()
 * so that large sizes (hundreds of thousands of users, gigabytes of events) stay fast. Everything is derived
 * from the options (no randomness), so a run with the same options produces the same rows.
 *
 * Users by index i (1-based; every kind exists from 7 users up): 1–2 admin, then support, bot, guest,
 * appservice and deactivated users at fixed strides, the rest normal. The first normal users after index 7 are
 * "edge" users that carry the hand-made activity edge cases instead of the regular visit pattern (see
 * {@link EDGE_CASES}).
 */
import { spawn } from 'node:child_process';
import pg from 'pg';
import type { PostgresInfo, SeedOptions, SeedSummary } from '../types.js';
import {
  DAY_MS,
  databasePasswords,
  LETTERS,
  Rng,
  SYNAPSE_SCHEMA_COMPAT_VERSION,
  SYNAPSE_SCHEMA_VERSION,
} from './common.js';
import { MAS_MIGRATIONS, MAS_SCHEMA_PARTS, MAS_TABLES } from './mas-schema.js';
import { type MediaSummary, seedMedia, summariseMedia } from './media.js';
import {
  APPLIED_DELTAS,
  PENDING_BACKGROUND_UPDATES,
  STANDALONE_SEQUENCES,
  SYNAPSE_SCHEMA_PARTS,
} from './synapse-schema.js';

export type { SeedSummary } from '../types.js';

/** Names of the databases and roles (ess-deployment.md §4.4). */
export const SYNAPSE_DB = 'synapse';
/** Owner role of the Synapse database. */
export const SYNAPSE_ROLE = 'synapse_user';
/** The MAS database. */
export const MAS_DB = 'matrixauthenticationservice';
/** Owner role of the MAS database. */
export const MAS_ROLE = 'matrixauthenticationservice_user';

/** Tables whose row counts the summary reports. */
export const SYNAPSE_SEEDED_TABLES: readonly string[] = [
  'users',
  'profiles',
  'devices',
  'e2e_device_keys_json',
  'e2e_one_time_keys_json',
  'e2e_fallback_keys_json',
  'access_tokens',
  'user_ips',
  'user_daily_visits',
  'monthly_active_users',
  'rooms',
  'events',
  'event_json',
  'room_memberships',
  'current_state_events',
  'local_current_membership',
  'event_forward_extremities',
  'state_groups',
  'state_groups_state',
  'event_to_state_groups',
  'local_media_repository',
  'local_media_repository_thumbnails',
  'remote_media_cache',
  'remote_media_cache_thumbnails',
  'server_keys_json',
  'server_signature_keys',
  'applied_schema_deltas',
  'background_updates',
  'scheduled_tasks',
];

/** Human description of the hand-made activity edge cases (for test authors). */
export const EDGE_CASES: readonly string[] = [
  'edge user 1: user_daily_visits at 00:00:00.000 UTC of the last day of the previous month and of the first day of the current month',
  'edge user 2: user_daily_visits at 23:59:59.999 UTC before the current month starts (not a canonical Synapse value) and at 00:00:00.000 of the previous month start',
  'edge user 3: user_daily_visits on the leap day 2024-02-29 and on 2024-03-01 (when before now)',
  'edge user 4: user_daily_visits on Dec 31 and Jan 1 around the most recent new year',
  'edge user 5: exactly two user_daily_visits 30 days apart (not r30-retained: the test is strictly greater)',
  'edge user 6: a user_daily_visits row with NULL device_id and an "unknown" client (curl) today; user_ips with NULL device_id',
  'user seen (user_ips) 29 days ago only, and one seen 31 days ago only',
  'user_ips rows at the current month start 00:00:00.000 and 1 ms before, when within the last 28 days',
  'user ids in user_ips that are not in users (deleted users); one dangling monthly_active_users row for a deleted user',
];

const USER_AGENTS = [
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.0.0 Safari/537.36',
  'Element/1.11.85 (Android 14; Google Pixel 8; Flavour GooglePlay; MatrixAndroidSdk2 1.6.10)',
  'Element X/25.08.2 (iPhone16,2; iOS 18.6; Scale/3.00)',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Element/1.11.108 Chrome/130.0.6723.137 Electron/33.2.1 Safari/537.36',
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:131.0) Gecko/20100101 Firefox/131.0',
  'Element/1.6.34 (iPad13,4; iOS 17.5; Scale/2.00)',
];

function lit(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

function checkServerName(s: string): void {
  if (!/^[A-Za-z0-9.\-:[\]]+$/.test(s)) throw new Error(`seed: invalid server name ${JSON.stringify(s)}`);
}

/** SQL for the user kind of index `i`. */
const KIND_SQL = `CASE
  WHEN i <= 2 THEN 'admin'
  WHEN i = 3 OR i % 97 = 3 THEN 'support'
  WHEN i = 4 OR i % 41 = 4 THEN 'bot'
  WHEN i = 5 OR i % 31 = 5 THEN 'guest'
  WHEN i = 6 OR i % 19 = 6 THEN 'appservice'
  WHEN i = 7 OR i % 23 = 7 THEN 'deactivated'
  ELSE 'normal' END`;

/** SQL for the localpart of index `i` with kind `kind`. */
const LOCALPART_SQL = `CASE kind
  WHEN 'admin' THEN 'admin' || i
  WHEN 'support' THEN 'support' || i
  WHEN 'bot' THEN 'bot-' || i
  WHEN 'guest' THEN (1000 + i)::text
  WHEN 'appservice' THEN CASE WHEN i % 2 = 0 THEN '_whatsapp_' || (447700900000 + i) ELSE '_telegram_' || (1000000 + i) END
  ELSE 'user' || lpad(i::text, 6, '0') END`;

/** SQL: device id number `d` of user `i` (10 upper-case letters, as Synapse makes them). */
const DEVICE_SQL = `translate(upper(substr(md5('dev:' || i || ':' || d), 1, 10)), '0123456789', 'GHIJKLMNOP')`;

/** SQL: the MAS compat access token of device `d` of user `i` (also recorded in user_ips). */
const TOKEN_SQL = `'mct_' || substr(md5('tok:' || i || ':' || d), 1, 30) || '_' || substr(md5('chk:' || i || ':' || d), 1, 6)`;

/** SQL: an unpadded base64 string of `n` characters derived from `seed` (md5 blocks: cheap per row). */
function b64(seedSql: string, n: number): string {
  const blocks = Math.ceil((n * 6 - 5) / 8 / 16);
  const hex = Array.from({ length: blocks }, (_, k) => `md5(${seedSql} || ':${k}')`).join(' || ');
  return `substr(translate(encode(decode(${hex}, 'hex'), 'base64'), E'\\n=', ''), 1, ${n})`;
}

function uaSql(expr: string): string {
  return `(ARRAY[${USER_AGENTS.map(lit).join(',')}])[1 + ((${expr}) % ${USER_AGENTS.length})]`;
}

async function connect(pgi: PostgresInfo, user: string, database: string): Promise<pg.Client> {
  const c = new pg.Client({ host: pgi.host, port: pgi.port, user, database });
  c.on('error', () => {});
  await c.connect();
  return c;
}

async function ensureRole(admin: pg.Client, role: string, password: string): Promise<void> {
  const exists = await admin.query('SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1', [role]);
  const verb = exists.rowCount ? 'ALTER' : 'CREATE';
  await admin.query(`${verb} ROLE ${role} LOGIN PASSWORD ${lit(password)}`);
}

async function ensureDatabase(admin: pg.Client, db: string, owner: string): Promise<boolean> {
  const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [db]);
  if (exists.rowCount) return false;
  await admin.query(`CREATE DATABASE ${db} OWNER ${owner} ENCODING 'UTF8' LOCALE 'C' TEMPLATE template0`);
  return true;
}

async function hasTable(c: pg.Client, table: string): Promise<boolean> {
  const r = await c.query('SELECT to_regclass($1) IS NOT NULL AS ok', [`public.${table}`]);
  return Boolean(r.rows[0]?.ok);
}

function runPsqlFile(pgi: PostgresInfo, user: string, db: string, file: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      `${pgi.binDir}/psql`,
      ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', pgi.host, '-p', String(pgi.port), '-U', user, '-d', db, '-f', file],
      { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PGOPTIONS: '-c client_min_messages=warning' } },
    );
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.once('error', reject);
    child.once('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`psql -f ${file} failed (${code}): ${err.trim()}`)),
    );
  });
}

interface Ctx {
  c: pg.Client;
  opts: SeedOptions;
  server: string;
  nowMs: number;
  log: (l: string) => void;
  skipped: string[];
  builtin: boolean;
}

/** Runs a data step; against a loaded schema file a step that does not fit is skipped and recorded. */
async function step(ctx: Ctx, name: string, sql: string | string[]): Promise<void> {
  const stmts = Array.isArray(sql) ? sql : [sql];
  const t = Date.now();
  if (ctx.builtin) {
    for (const s of stmts) await ctx.c.query(s);
  } else {
    await ctx.c.query('SAVEPOINT seed_step');
    try {
      for (const s of stmts) await ctx.c.query(s);
      await ctx.c.query('RELEASE SAVEPOINT seed_step');
    } catch (err) {
      await ctx.c.query('ROLLBACK TO SAVEPOINT seed_step');
      ctx.skipped.push(`${name}: ${(err as Error).message}`);
      ctx.log(`seed: skipped ${name}: ${(err as Error).message}`);
      return;
    }
  }
  ctx.log(`seed: ${name} (${Date.now() - t} ms)`);
}

function dayStart(ms: number): number {
  return Math.floor(ms / DAY_MS) * DAY_MS;
}

function monthStart(ms: number, deltaMonths = 0): number {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + deltaMonths, 1);
}

/** Users, profiles, devices, keys, tokens. */
function userSteps(ctx: Ctx): [string, string | string[]][] {
  const U = Math.max(0, Math.floor(ctx.opts.users));
  const nowS = Math.floor(ctx.nowMs / 1000);
  const S = lit(ctx.server);
  const recent = Math.max(1, Math.floor(U / 100));
  return [
    [
      'seed_users',
      [
        `CREATE TEMP TABLE seed_users AS
         SELECT i, kind, lp, '@' || lp || ':' || ${S} AS mxid,
           CASE WHEN kind IN ('deactivated', 'appservice') THEN 0 WHEN kind = 'guest' THEN 1 ELSE 1 + i % 3 END AS ndev,
           CASE WHEN kind = 'appservice' THEN false WHEN kind = 'deactivated' THEN i % 2 = 1 ELSE i % 5 <> 0 END AS active,
           CASE WHEN i > ${U} - ${recent} THEN ${nowS}::bigint - (${U} - i + 1)::bigint * 600
                ELSE ${nowS}::bigint - 730 * 86400 + ((i - 1)::bigint * 728 * 86400) / GREATEST(${U}, 1) END AS created_s,
           false AS edge
         FROM (SELECT i, kind, ${LOCALPART_SQL} AS lp FROM (SELECT i, ${KIND_SQL} AS kind FROM generate_series(1, ${U}) i) k) l`,
        // The first six normal users after index 7 carry the edge cases.
        `UPDATE seed_users SET edge = true, active = false, ndev = 1
         WHERE i IN (SELECT i FROM seed_users WHERE kind = 'normal' AND i > 7 ORDER BY i LIMIT 6)`,
        'CREATE INDEX ON seed_users (i)',
        `CREATE TEMP TABLE seed_devices AS
         SELECT u.i, u.mxid, u.kind, u.active, u.edge, u.created_s, d, ${DEVICE_SQL} AS device_id, ${TOKEN_SQL} AS token
         FROM seed_users u, generate_series(1, u.ndev) d`,
      ],
    ],
    [
      'users',
      [
        `INSERT INTO users (name, password_hash, creation_ts, admin, upgrade_ts, is_guest, appservice_id, consent_version,
           consent_server_notice_sent, user_type, deactivated, shadow_banned, consent_ts, approved, locked, suspended)
         SELECT mxid,
           CASE WHEN kind IN ('admin', 'normal', 'bot', 'support') AND i % 4 <> 1
                THEN '$2b$12$' || substr(translate(${b64("'pw:' || i", 53)}, '+', '.'), 1, 53) END,
           created_s, (kind = 'admin')::int, CASE WHEN kind = 'normal' AND i % 29 = 0 THEN created_s + 86400 END,
           (kind = 'guest')::int,
           CASE WHEN kind = 'appservice' THEN CASE WHEN i % 2 = 0 THEN 'whatsapp' ELSE 'telegram' END
                WHEN kind = 'normal' AND i % 53 = 11 THEN '' END,
           NULL, NULL,
           CASE kind WHEN 'support' THEN 'support' WHEN 'bot' THEN 'bot' END,
           (kind = 'deactivated')::int, CASE WHEN kind = 'normal' AND i % 61 = 13 THEN true ELSE false END,
           NULL, true, false, false
         FROM seed_users ORDER BY i`,
      ],
    ],
    [
      'profiles',
      `INSERT INTO profiles (user_id, displayname, avatar_url, full_user_id)
       SELECT lp, CASE WHEN kind = 'deactivated' THEN NULL WHEN kind = 'guest' THEN NULL ELSE initcap(replace(lp, '-', ' ')) END,
         NULL, mxid
       FROM seed_users WHERE kind <> 'appservice' ORDER BY i`,
    ],
    [
      'devices',
      `INSERT INTO devices (user_id, device_id, display_name, last_seen, ip, user_agent, hidden)
       SELECT mxid, device_id,
         (ARRAY['Element Web', 'Element Android', 'Element X iOS', 'Element Desktop', 'Firefox'])[1 + (i + d) % 5],
         CASE WHEN active THEN ${ctx.nowMs} - ((i::bigint * 7919 + d * 104729) % (${27 * DAY_MS})) - 3600000
              ELSE GREATEST(created_s * 1000, ${ctx.nowMs} - ${120 * DAY_MS} - (i::bigint * 7919) % (${200 * DAY_MS})) END,
         '198.51.100.' || (1 + (i + d) % 250), ${uaSql('i + d')}, false
       FROM seed_devices ORDER BY i, d`,
    ],
    [
      'e2e_device_keys_json',
      `INSERT INTO e2e_device_keys_json (user_id, device_id, ts_added_ms, key_json)
       SELECT mxid, device_id, created_s * 1000 + d * 60000,
         '{"algorithms":["m.olm.v1.curve25519-aes-sha2","m.megolm.v1.aes-sha2"],"device_id":"' || device_id ||
         '","keys":{"curve25519:' || device_id || '":"' || substr(t.ct, 1 + (i + d) % 100, 43) ||
         '","ed25519:' || device_id || '":"' || substr(t2.ct, 1 + (i * 3 + d) % 100, 43) ||
         '"},"signatures":{"' || mxid || '":{"ed25519:' || device_id || '":"' || substr(t.ct, 101, 86) ||
         '"}},"user_id":"' || mxid || '"}'
       FROM seed_devices
       JOIN seed_text t ON t.id = (i * 3 + d) % ${TEXTS}
       JOIN seed_text t2 ON t2.id = (i * 7 + d * 5) % ${TEXTS}`,
    ],
    [
      'e2e_one_time_keys_json',
      `INSERT INTO e2e_one_time_keys_json (user_id, device_id, algorithm, key_id, ts_added_ms, key_json)
       SELECT mxid, device_id, 'signed_curve25519', 'AAAAA' || chr(64 + k), created_s * 1000 + d * 60000 + k,
         '{"key":"' || substr(t.ct, 1 + (i + k * 5) % 100, 43) || '","signatures":{"' || mxid || '":{"ed25519:' || device_id ||
           '":"' || substr(t2.ct, 1 + (i + d) % 100, 86) || '"}}}'
       FROM seed_devices CROSS JOIN generate_series(1, 8) k
       JOIN seed_text t ON t.id = (i * 8 + d * 3 + k) % ${TEXTS}
       JOIN seed_text t2 ON t2.id = (i * 5 + d) % ${TEXTS}`,
    ],
    [
      'e2e_fallback_keys_json',
      `INSERT INTO e2e_fallback_keys_json (user_id, device_id, algorithm, key_id, key_json, used)
       SELECT mxid, device_id, 'signed_curve25519', 'AAAAAQ',
         '{"key":"' || substr(t.ct, 1 + (i + d) % 150, 43) || '","fallback":true}', (i + d) % 7 = 0
       FROM seed_devices JOIN seed_text t ON t.id = (i * 11 + d) % ${TEXTS}`,
    ],
    [
      'access_tokens',
      `INSERT INTO access_tokens (id, user_id, device_id, token, valid_until_ms, puppets_user_id, last_validated, refresh_token_id, used)
       SELECT row_number() OVER (ORDER BY i, d), mxid, device_id,
         'syt_' || rtrim(encode(convert_to(split_part(substr(mxid, 2), ':', 1), 'UTF8'), 'base64'), '=') || '_' ||
           substr(translate(${b64("'at:' || i || ':' || d", 20)}, '+/', 'xy'), 1, 20) || '_' || substr(md5('atc:' || i), 1, 6),
         NULL, NULL, ${ctx.nowMs} - 86400000, NULL, NULL
       FROM seed_devices WHERE kind = 'admin'`,
    ],
  ];
}

/** user_ips, user_daily_visits, monthly_active_users and the edge cases. */
function activitySteps(ctx: Ctx): [string, string | string[]][] {
  const now = ctx.nowMs;
  const today = dayStart(now);
  const m0 = monthStart(now);
  const mPrev = monthStart(now, -1);
  const y0 = Date.UTC(new Date(now).getUTCFullYear(), 0, 1);
  const leap = Date.UTC(2024, 1, 29);
  const S = lit(ctx.server);
  const U = Math.max(0, Math.floor(ctx.opts.users));
  const gone = Math.max(1, Math.floor(U / 100));
  const edge = (n: number) => `(SELECT mxid FROM seed_users WHERE edge ORDER BY i OFFSET ${n - 1} LIMIT 1)`;
  const edgeDev = (n: number) => `(SELECT device_id FROM seed_devices WHERE mxid = ${edge(n)} LIMIT 1)`;
  const udvEdges: string[] = [];
  const addUdv = (n: number, ts: number, device: string = edgeDev(n), ua = USER_AGENTS[0]) =>
    udvEdges.push(`SELECT ${edge(n)} AS mxid, ${device} AS device_id, ${ts}::bigint AS ts, ${lit(ua)} AS ua`);
  addUdv(1, m0 - DAY_MS);
  addUdv(1, m0);
  addUdv(2, m0 - 1);
  addUdv(2, mPrev);
  if (leap + DAY_MS <= now) {
    addUdv(3, leap);
    addUdv(3, leap + DAY_MS);
  }
  addUdv(4, y0 - DAY_MS);
  addUdv(4, y0);
  addUdv(5, today - 40 * DAY_MS);
  addUdv(5, today - 10 * DAY_MS);
  addUdv(6, today, 'NULL', 'curl/8.4.0');
  const ipEdges: string[] = [
    // Seen 29 days ago only (phone-home counts it; a live server would have pruned it at 28 days) and 31 days ago.
    `SELECT mxid, token, device_id, '192.0.2.29', ${lit(USER_AGENTS[1])}, ${now - 29 * DAY_MS}::bigint FROM seed_devices WHERE mxid = ${edge(1)}`,
    `SELECT mxid, token, device_id, '192.0.2.31', ${lit(USER_AGENTS[1])}, ${now - 31 * DAY_MS}::bigint FROM seed_devices WHERE mxid = ${edge(2)}`,
    `SELECT mxid, token, NULL, '192.0.2.6', 'curl/8.4.0', ${now - 2 * 3600_000}::bigint FROM seed_devices WHERE mxid = ${edge(6)}`,
  ];
  if (now - m0 < 28 * DAY_MS) {
    ipEdges.push(
      `SELECT mxid, token, device_id, '192.0.2.100', ${lit(USER_AGENTS[0])}, ${m0}::bigint FROM seed_devices WHERE mxid = ${edge(3)}`,
      `SELECT mxid, token, device_id, '192.0.2.99', ${lit(USER_AGENTS[0])}, ${m0 - 1}::bigint FROM seed_devices WHERE mxid = ${edge(4)}`,
    );
  }
  return [
    [
      'user_ips',
      [
        `INSERT INTO user_ips (user_id, access_token, device_id, ip, user_agent, last_seen)
         SELECT mxid, token, device_id, '198.51.100.' || (1 + (i + d) % 250), ${uaSql('i + d')},
           ${now} - ((i::bigint * 7919 + d * 104729) % (${27 * DAY_MS})) - 3600000
         FROM seed_devices WHERE active ORDER BY i, d`,
        // A second network for every third device, seen earlier.
        `INSERT INTO user_ips (user_id, access_token, device_id, ip, user_agent, last_seen)
         SELECT mxid, token, device_id, '203.0.113.' || (1 + (i * 3 + d) % 250), ${uaSql('i + d')},
           ${now} - ((i::bigint * 7919 + d * 104729) % (${27 * DAY_MS})) - 5 * 3600000
         FROM seed_devices WHERE active AND (i + d) % 3 = 0 ORDER BY i, d`,
        // Users deleted since: present in user_ips, absent from users.
        `INSERT INTO user_ips (user_id, access_token, device_id, ip, user_agent, last_seen)
         SELECT '@gone' || g || ':' || ${S}, 'mct_' || substr(md5('gone:' || g), 1, 30) || '_' || substr(md5('gonec:' || g), 1, 6),
           translate(upper(substr(md5('gonedev:' || g), 1, 10)), '0123456789', 'GHIJKLMNOP'),
           '198.51.100.' || (1 + g % 250), ${lit(USER_AGENTS[0])}, ${now} - (g % 20)::bigint * ${DAY_MS} - 7200000
         FROM generate_series(1, ${gone}) g`,
        `INSERT INTO user_ips (user_id, access_token, device_id, ip, user_agent, last_seen)
         ${ipEdges.join(' UNION ALL ')}`,
      ],
    ],
    [
      'user_daily_visits',
      [
        // Regular visits over ~14 months: one row per (user, device, UTC day); guests and appservice users never
        // appear (Synapse leaves them out), bots, support and deactivated users do.
        `INSERT INTO user_daily_visits (user_id, device_id, "timestamp", user_agent)
         SELECT mxid, device_id, ${today}::bigint - day::bigint * ${DAY_MS}, ${uaSql('i + d')}
         FROM (
           SELECT s.*, day FROM seed_devices s, generate_series((17 - s.i % 17) % 17, 425, 17) day WHERE s.d = 1
           UNION ALL
           SELECT s.*, day FROM seed_devices s, generate_series((51 - s.i % 51) % 51, 425, 51) day WHERE s.d = 2
           UNION ALL
           SELECT s.*, day FROM seed_devices s, generate_series((5 - s.i % 5) % 5, 27, 5) day
           WHERE s.d = 1 AND s.active AND (day + s.i) % 17 <> 0
         ) v
         WHERE NOT edge AND kind NOT IN ('guest', 'appservice')
           AND ${today}::bigint - day::bigint * ${DAY_MS} >= created_s * 1000 - ${DAY_MS}`,
        `INSERT INTO user_daily_visits (user_id, device_id, "timestamp", user_agent)
         SELECT * FROM (${udvEdges.join(' UNION ALL ')}) e WHERE e.mxid IS NOT NULL`,
      ],
    ],
    [
      'monthly_active_users',
      [
        // mau_stats_only: everyone seen in the last 30 days except guests, support and appservice users.
        `INSERT INTO monthly_active_users (user_id, "timestamp")
         SELECT ip.user_id, max(ip.last_seen) FROM user_ips ip
         JOIN users u ON u.name = ip.user_id
         WHERE ip.last_seen > ${now - 30 * DAY_MS} AND u.is_guest = 0 AND u.user_type IS DISTINCT FROM 'support'
           AND (u.appservice_id IS NULL OR u.appservice_id = '')
         GROUP BY ip.user_id`,
        `INSERT INTO monthly_active_users (user_id, "timestamp") VALUES ('@gone1:' || ${S}, ${now - 2 * DAY_MS})
         ON CONFLICT DO NOTHING`,
      ],
    ],
  ];
}

const LOREM_WORDS =
  'the meeting notes are in the shared folder please review them before lunch tomorrow we can discuss the release plan and the new onboarding flow for the team thanks for the update sounds good to me I will check the logs and get back to you shortly did anyone see the alert from the database last night yes it was a disk space warning on the media volume we should clean up old remote media soon'.split(
    ' ',
  );

const TEXTS = 512;
const B64_ALPHABET = `${LETTERS}0123456789+/`;

/**
 * Temp tables of message bodies and ciphertexts joined by id: far cheaper per row than cutting substrings out
 * of one large literal.
 */
async function loadTextTables(ctx: Ctx): Promise<void> {
  const rng = new Rng(`texts:${ctx.opts.namespace}:${ctx.opts.release}`);
  const bodies: string[] = [];
  const ciphers: string[] = [];
  for (let k = 0; k < TEXTS; k++) {
    const len = 12 + Math.floor(rng.next() ** 2 * 240);
    let b = '';
    while (b.length < len) b += `${rng.pick(LOREM_WORDS)} `;
    bodies.push(b.trim());
    ciphers.push(rng.string(200 + Math.floor(rng.next() ** 2 * 700), B64_ALPHABET));
  }
  await ctx.c.query('CREATE TEMP TABLE seed_text (id int PRIMARY KEY, body text, ct text)');
  await ctx.c.query(
    'INSERT INTO seed_text (id, body, ct) SELECT g - 1, ($1::text[])[g], ($2::text[])[g] FROM generate_series(1, $3::int) g',
    [bodies, ciphers, TEXTS],
  );
}

/**
 * SQL: an event id (`$` + 43 characters of the base64url alphabet) for stream ordering `seq`, from three 64-bit
 * hashes: far cheaper per row than md5 and, for the row counts seeded, collision-free in practice.
 */
function eventIdSql(seq: string, salt = 0): string {
  const h = (k: number) => `lpad(to_hex(hashint8extended(${seq}, ${salt * 10 + k})), 16, '0')`;
  return `'$' || translate(substr(${h(1)} || ${h(2)} || ${h(3)}, 1, 43), '0123456789', 'GHIJKLMNOP')`;
}

/** SQL expressions describing one event, for {@link eventJsonSql}. */
interface EventExprs {
  eventId: string;
  roomId: string;
  type: string;
  sender: string;
  depth: string;
  ts: string;
  createId: string;
  prevId: string;
  stateKey: string;
  membership: string;
  r: string;
  /** seed_text aliases for the body/ciphertext and two more random strings. */
  t: string;
  t2: string;
  t3: string;
}

/**
 * SQL for the event JSON, assembled by concatenation: every interpolated value is made of JSON-safe characters
 * (ids, base64, plain words, numbers), and json_build_object costs catalog lookups per argument and row.
 */
function eventJsonSql(e: EventExprs, server: string): string {
  // || rather than concat(): a NULL part makes the whole document NULL, which the NOT NULL column rejects loudly.
  const content = `CASE ${e.type}
      WHEN 'm.room.create' THEN '{"room_version":"10","creator":"' || ${e.sender} || '"}'
      WHEN 'm.room.member' THEN '{"membership":"' || ${e.membership} || '","displayname":"' || split_part(substr(${e.sender}, 2), ':', 1) || '"}'
      WHEN 'm.room.power_levels' THEN '{"users":{"' || ${e.sender} || '":100},"users_default":0,"events_default":0,"state_default":50,"ban":50,"kick":50,"redact":50,"invite":0}'
      WHEN 'm.room.join_rules' THEN '{"join_rule":"' || CASE WHEN ${e.r} % 3 = 0 THEN 'public' ELSE 'invite' END || '"}'
      WHEN 'm.room.history_visibility' THEN '{"history_visibility":"shared"}'
      WHEN 'm.room.name' THEN '{"name":"Room ' || ${e.r} || '"}'
      WHEN 'm.room.encryption' THEN '{"algorithm":"m.megolm.v1.aes-sha2"}'
      WHEN 'm.room.encrypted' THEN '{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"' || ${e.t}.ct ||
        '","device_id":"GHIJKLMNOP","sender_key":"' || substr(${e.t2}.ct, 1, 43) || '","session_id":"' || substr(${e.t3}.ct, 1, 43) || '"}'
      ELSE '{"msgtype":"m.text","body":"' || ${e.t}.body || '"}'
    END`;
  return `'{"auth_events":[' || CASE WHEN ${e.depth} = 1 THEN '' ELSE '"' || ${e.createId} || '"' END ||
    '],"prev_events":[' || CASE WHEN ${e.depth} = 1 THEN '' ELSE '"' || ${e.prevId} || '"' END ||
    '],"type":"' || ${e.type} || '","room_id":"' || ${e.roomId} || '","sender":"' || ${e.sender} || '","content":' || ${content} ||
    ',"depth":' || ${e.depth} || ',"origin_server_ts":' || ${e.ts} ||
    ',"hashes":{"sha256":"' || substr(${e.t3}.ct, 44, 43) || '"},"signatures":{"' || ${lit(server)} || '":{"ed25519:1":"' ||
    substr(${e.t2}.ct, 44, 86) || '"}},"unsigned":{"age_ts":' || ${e.ts} || '}' ||
    CASE WHEN ${e.stateKey} IS NULL THEN '' ELSE ',"state_key":"' || ${e.stateKey} || '"' END || '}'`;
}

/**
 * Rooms, events, memberships, current state and state groups. Room set-up and joins come first (a small table
 * ordered with window functions); the messages, which are the bulk, get their stream ordering, depth and
 * previous event by arithmetic (round k, poster p: so = S + (k-1)·NM + p), so millions of events are generated
 * without sorting them.
 */
function roomSteps(ctx: Ctx): [string, string | string[]][] {
  const U = Math.max(0, Math.floor(ctx.opts.users));
  const NR = Math.max(3, Math.ceil(U / 10));
  const per = Math.max(0, Math.floor(ctx.opts.eventsPerUser ?? 20));
  const half = Math.ceil(per / 2);
  const now = ctx.nowMs;
  const S = lit(ctx.server);
  const persister = lit(`${ctx.opts.release}-synapse-event-persist-0`);
  // Messages span from 340 days ago to an hour ago.
  const msgStart = now - 340 * DAY_MS;
  const msgSpan = 340 * DAY_MS - 3_600_000;
  const kq = '(SELECT * FROM seed_k)';
  // The message of round k by poster p (joined with its room info ri and the constants c).
  const msg = {
    so: 'c.s + (k - 1) * c.nm + p.idx',
    depth: 'ri.d0 + (k - 1) * ri.size + p.j',
    prevSo: `CASE WHEN p.j > 1 THEN c.s + (k - 1) * c.nm + p.idx - 1
                  WHEN k > 1 THEN c.s + (k - 2) * c.nm + ri.first_idx + ri.size - 1
                  ELSE ri.last_so END`,
    ts: `${msgStart}::bigint + ((k - 1) * c.nm + p.idx) * ${msgSpan}::bigint / GREATEST(c.m, 1)`,
  };
  const msgFrom = `FROM ${kq} c CROSS JOIN generate_series(1, ${half}) k
       JOIN seed_posters p ON true
       JOIN seed_roominfo ri ON ri.r = p.r`;
  return [
    [
      'rooms',
      [
        `CREATE TEMP TABLE seed_rooms AS
         SELECT r, '!' || translate(substr(md5('room:' || r), 1, 18), '0123456789', 'ghijklmnop') || ':' || ${S} AS room_id,
           r % 2 = 0 AS encrypted, r % 3 = 0 AS public,
           ${now} - ${400 * DAY_MS} + (r::bigint * 3600000) % (${30 * DAY_MS}) AS created_ms
         FROM generate_series(1, ${NR}) r`,
        // Memberships: every local user (half of the guests) joins two rooms.
        `CREATE TEMP TABLE seed_members AS
         SELECT DISTINCT ON (r, u.i) r, u.i, u.mxid, u.lp, u.kind
         FROM seed_users u
         CROSS JOIN LATERAL (VALUES (1 + u.i % ${NR}), (1 + (u.i * 7 + 3) % ${NR})) v(r)
         WHERE u.kind <> 'guest' OR u.i % 2 = 1`,
        `CREATE TEMP TABLE seed_creators AS
         SELECT DISTINCT ON (r) r, mxid FROM seed_members WHERE kind IN ('admin', 'normal') ORDER BY r, i`,
        `DELETE FROM seed_rooms WHERE r NOT IN (SELECT r FROM seed_creators)`,
        `DELETE FROM seed_members WHERE r NOT IN (SELECT r FROM seed_creators)`,
        `INSERT INTO rooms (room_id, is_public, creator, room_version, has_auth_chain_index)
         SELECT room_id, public, c.mxid, '10', true FROM seed_rooms JOIN seed_creators c USING (r) ORDER BY r`,
      ],
    ],
    [
      'room state events',
      [
        // Room set-up by the creator, then the other members join.
        `CREATE TEMP TABLE seed_st0 AS
         SELECT r, p AS prio, 0::bigint AS ord, t AS type, c.mxid AS sender,
           CASE WHEN t = 'm.room.member' THEN c.mxid ELSE '' END AS state_key, created_ms + p * 1000 AS ts,
           CASE WHEN t = 'm.room.member' THEN 'join' END AS membership
         FROM seed_rooms JOIN seed_creators c USING (r)
         CROSS JOIN LATERAL (VALUES (1, 'm.room.create'), (2, 'm.room.member'), (3, 'm.room.power_levels'),
           (4, 'm.room.join_rules'), (5, 'm.room.history_visibility'), (6, 'm.room.name'), (7, 'm.room.encryption')) s(p, t)
         WHERE t <> 'm.room.encryption' OR encrypted
         UNION ALL
         SELECT m.r, 10, m.i, 'm.room.member', m.mxid, m.mxid,
           sr.created_ms + 3600000 + (m.i::bigint * 7919) % ${20 * DAY_MS}, 'join'
         FROM seed_members m JOIN seed_rooms sr USING (r) JOIN seed_creators c USING (r) WHERE m.mxid <> c.mxid`,
        `CREATE TEMP TABLE seed_state AS
         SELECT y.*, lag(y.event_id) OVER (PARTITION BY y.r ORDER BY y.so) AS prev_id
         FROM (
           SELECT x.*, ${eventIdSql('x.so')} AS event_id
           FROM (
             SELECT e.*, sr.room_id,
               row_number() OVER (ORDER BY e.ts, e.r, e.prio, e.ord) AS so,
               row_number() OVER (PARTITION BY e.r ORDER BY e.ts, e.prio, e.ord) AS depth
             FROM seed_st0 e JOIN seed_rooms sr USING (r)
           ) x
           OFFSET 0
         ) y`,
        // Posters (everyone but deactivated users) with a dense index ordered by room, and per-room facts.
        `CREATE TEMP TABLE seed_posters AS
         SELECT r, i, mxid, row_number() OVER (ORDER BY r, i) AS idx, row_number() OVER (PARTITION BY r ORDER BY i) AS j
         FROM seed_members WHERE kind <> 'deactivated'`,
        'CREATE INDEX ON seed_posters (r, mxid)',
        `CREATE TEMP TABLE seed_k AS
         SELECT (SELECT count(*) FROM seed_state) AS s, (SELECT count(*) FROM seed_posters) AS nm,
           (SELECT count(*) FROM seed_posters) * ${half} AS m`,
        `CREATE TEMP TABLE seed_roominfo AS
         SELECT sr.r, sr.room_id, sr.encrypted, st.d0, st.last_so, st.create_so, st.create_id,
           COALESCE(pp.size, 0) AS size, pp.first_idx, st.last_state_id
         FROM seed_rooms sr
         JOIN (SELECT r, max(depth) AS d0, max(so) AS last_so, min(so) AS create_so,
                 (array_agg(event_id ORDER BY so))[1] AS create_id, (array_agg(event_id ORDER BY so DESC))[1] AS last_state_id
               FROM seed_state GROUP BY r) st USING (r)
         LEFT JOIN (SELECT r, count(*) AS size, min(idx) AS first_idx FROM seed_posters GROUP BY r) pp USING (r)`,
        'CREATE UNIQUE INDEX ON seed_roominfo (r)',
        // Deactivated members leave after all messages.
        `CREATE TEMP TABLE seed_leaves AS
         SELECT x.*, ${eventIdSql('x.so')} AS event_id, ${eventIdSql('x.prev_so')} AS prev_id
         FROM (
           SELECT m.r, m.i, m.mxid, ri.room_id, ri.create_id,
             c.s + c.m + row_number() OVER (ORDER BY m.r, m.i) AS so,
             ri.d0 + ${half} * ri.size + row_number() OVER (PARTITION BY m.r ORDER BY m.i) AS depth,
             ${now - 5 * DAY_MS}::bigint - m.i AS ts,
             CASE WHEN row_number() OVER (PARTITION BY m.r ORDER BY m.i) > 1 THEN c.s + c.m + row_number() OVER (ORDER BY m.r, m.i) - 1
                  WHEN ri.size > 0 AND ${half} > 0 THEN c.s + (${half} - 1) * c.nm + ri.first_idx + ri.size - 1
                  ELSE ri.last_so END AS prev_so
           FROM seed_members m JOIN seed_roominfo ri USING (r) CROSS JOIN ${kq} c
           WHERE m.kind = 'deactivated'
         ) x`,
      ],
    ],
    [
      'events',
      [
        `INSERT INTO events (topological_ordering, event_id, type, room_id, content, unrecognized_keys, processed, outlier,
           depth, origin_server_ts, received_ts, sender, contains_url, instance_name, stream_ordering, state_key, rejection_reason)
         SELECT depth, event_id, type, room_id, NULL, NULL, true, false, depth, ts, ts + 40 + so % 200, sender, false,
           ${persister}, so, state_key, NULL
         FROM seed_state ORDER BY so`,
        `INSERT INTO events (topological_ordering, event_id, type, room_id, content, unrecognized_keys, processed, outlier,
           depth, origin_server_ts, received_ts, sender, contains_url, instance_name, stream_ordering, state_key, rejection_reason)
         SELECT ${msg.depth}, ${eventIdSql(msg.so)}, CASE WHEN ri.encrypted THEN 'm.room.encrypted' ELSE 'm.room.message' END,
           ri.room_id, NULL, NULL, true, false, ${msg.depth}, ${msg.ts}, ${msg.ts} + 40 + p.idx % 200, p.mxid, false,
           ${persister}, ${msg.so}, NULL, NULL
         ${msgFrom}`,
        `INSERT INTO events (topological_ordering, event_id, type, room_id, content, unrecognized_keys, processed, outlier,
           depth, origin_server_ts, received_ts, sender, contains_url, instance_name, stream_ordering, state_key, rejection_reason)
         SELECT depth, event_id, 'm.room.member', room_id, NULL, NULL, true, false, depth, ts, ts + 40, mxid, false,
           ${persister}, so, mxid, NULL
         FROM seed_leaves ORDER BY so`,
      ],
    ],
    [
      'event_json',
      [
        `INSERT INTO event_json (event_id, room_id, internal_metadata, json, format_version)
         SELECT e.event_id, e.room_id, '{}',
           ${eventJsonSql(
             {
               eventId: 'e.event_id',
               roomId: 'e.room_id',
               type: 'e.type',
               sender: 'e.sender',
               depth: 'e.depth',
               ts: 'e.ts',
               createId: 'ri.create_id',
               prevId: 'e.prev_id',
               stateKey: 'e.state_key',
               membership: 'e.membership',
               r: 'e.r',
               t: 't',
               t2: 't2',
               t3: 't3',
             },
             ctx.server,
           )}, 3
         FROM seed_state e
         JOIN seed_roominfo ri ON ri.r = e.r
         JOIN seed_text t ON t.id = 0
         JOIN seed_text t2 ON t2.id = (e.so % ${TEXTS})::int
         JOIN seed_text t3 ON t3.id = (e.so * 7 + e.r) % ${TEXTS}
         ORDER BY e.so`,
        `INSERT INTO event_json (event_id, room_id, internal_metadata, json, format_version)
         SELECT ${eventIdSql(msg.so)}, ri.room_id, '{"txn_id":"m' || ${msg.ts} || '.' || k || '"}',
           ${eventJsonSql(
             {
               eventId: '',
               roomId: 'ri.room_id',
               type: "CASE WHEN ri.encrypted THEN 'm.room.encrypted' ELSE 'm.room.message' END",
               sender: 'p.mxid',
               depth: `(${msg.depth})`,
               ts: `(${msg.ts})`,
               createId: 'ri.create_id',
               prevId: eventIdSql(`(${msg.prevSo})`),
               stateKey: 'NULL',
               membership: 'NULL',
               r: 'p.r',
               t: 't',
               t2: 't2',
               t3: 't3',
             },
             ctx.server,
           )}, 3
         ${msgFrom}
         JOIN seed_text t ON t.id = (p.i * 131 + k * 17) % ${TEXTS}
         JOIN seed_text t2 ON t2.id = (p.idx % ${TEXTS})::int
         JOIN seed_text t3 ON t3.id = ((p.idx * 7 + k) % ${TEXTS})::int`,
        `INSERT INTO event_json (event_id, room_id, internal_metadata, json, format_version)
         SELECT l.event_id, l.room_id, '{}',
           ${eventJsonSql(
             {
               eventId: 'l.event_id',
               roomId: 'l.room_id',
               type: "'m.room.member'",
               sender: 'l.mxid',
               depth: 'l.depth',
               ts: 'l.ts',
               createId: 'l.create_id',
               prevId: 'l.prev_id',
               stateKey: 'l.mxid',
               membership: "'leave'",
               r: 'l.r',
               t: 't',
               t2: 't',
               t3: 't',
             },
             ctx.server,
           )}, 3
         FROM seed_leaves l JOIN seed_text t ON t.id = (l.so % ${TEXTS})::int
         ORDER BY l.so`,
      ],
    ],
    [
      'room_memberships',
      `INSERT INTO room_memberships (event_id, user_id, sender, room_id, membership, forgotten, display_name, avatar_url,
         event_stream_ordering, participant)
       SELECT e.event_id, e.state_key, e.sender, e.room_id, e.membership, 0, split_part(substr(e.sender, 2), ':', 1), NULL, e.so,
         EXISTS (SELECT 1 FROM seed_posters p WHERE p.r = e.r AND p.mxid = e.sender)
       FROM (SELECT r, event_id, state_key, sender, room_id, membership, so FROM seed_state WHERE type = 'm.room.member'
             UNION ALL SELECT r, event_id, mxid, mxid, room_id, 'leave', so FROM seed_leaves) e
       ORDER BY e.so`,
    ],
    [
      'current state',
      [
        `CREATE TEMP TABLE seed_current AS
         SELECT DISTINCT ON (r, type, state_key) r, room_id, type, state_key, membership, so, event_id
         FROM (SELECT r, room_id, type, state_key, membership, so, event_id FROM seed_state
               UNION ALL SELECT r, room_id, 'm.room.member', mxid, 'leave', so, event_id FROM seed_leaves) s
         ORDER BY r, type, state_key, so DESC`,
        `INSERT INTO current_state_events (event_id, room_id, type, state_key, membership, event_stream_ordering)
         SELECT event_id, room_id, type, state_key, membership, so FROM seed_current ORDER BY so`,
        `INSERT INTO local_current_membership (room_id, user_id, event_id, membership, event_stream_ordering)
         SELECT room_id, state_key, event_id, membership, so FROM seed_current WHERE type = 'm.room.member' ORDER BY so`,
        // The newest event of each room: its last leave, else its last message, else its last state event.
        `INSERT INTO event_forward_extremities (event_id, room_id)
         SELECT COALESCE(l.event_id,
           CASE WHEN ri.size > 0 AND ${half} > 0 THEN ${eventIdSql(`(c.s + (${half} - 1) * c.nm + ri.first_idx + ri.size - 1)`)} END,
           ri.last_state_id), ri.room_id
         FROM seed_roominfo ri CROSS JOIN ${kq} c
         LEFT JOIN (SELECT DISTINCT ON (r) r, event_id FROM seed_leaves ORDER BY r, so DESC) l ON l.r = ri.r
         ORDER BY ri.r`,
      ],
    ],
    [
      'state groups',
      [
        `INSERT INTO state_groups (id, room_id, event_id)
         SELECT DISTINCT ON (r) r, room_id, event_id FROM seed_current ORDER BY r, so DESC`,
        `INSERT INTO state_groups_state (state_group, room_id, type, state_key, event_id)
         SELECT r, room_id, type, state_key, event_id FROM seed_current ORDER BY r, type, state_key`,
        `INSERT INTO event_to_state_groups (event_id, state_group)
         SELECT event_id, r FROM seed_state UNION ALL SELECT event_id, r FROM seed_leaves`,
        `INSERT INTO event_to_state_groups (event_id, state_group) SELECT ${eventIdSql(msg.so)}, p.r ${msgFrom}`,
      ],
    ],
  ];
}

/** Bookkeeping rows of a v94 database built fresh. */
function bookkeepingSteps(ctx: Ctx): [string, string[]][] {
  const now = ctx.nowMs;
  const values = (rows: string[]) => rows.join(', ');
  const steps: [string, string[]][] = [];
  if (ctx.builtin) {
    steps.push([
      'schema bookkeeping',
      [
        `INSERT INTO schema_version ("lock", version, upgraded) VALUES ('X', ${SYNAPSE_SCHEMA_VERSION}, true)`,
        `INSERT INTO schema_compat_version ("lock", compat_version) VALUES ('X', ${SYNAPSE_SCHEMA_COMPAT_VERSION})`,
        `INSERT INTO applied_schema_deltas (version, file) VALUES ${values(APPLIED_DELTAS.map(([v, f]) => `(${v}, ${lit(f)})`))}`,
        `INSERT INTO background_updates (update_name, progress_json, depends_on, ordering) VALUES ${values(
          PENDING_BACKGROUND_UPDATES.map(([n, p, d, o]) => `(${lit(n)}, ${lit(p)}, ${d ? lit(d) : 'NULL'}, ${o})`),
        )}`,
        `INSERT INTO scheduled_tasks (id, action, status, "timestamp", resource_id, params, result, error)
         VALUES (${lit(new Rng(`task:${ctx.server}`).string(16))}, 'delete_old_otks', 'scheduled', ${now - 3600_000}, NULL, '{}', NULL, NULL)`,
      ],
    ]);
  } else {
    // A schema-only file has no bookkeeping rows; fill them only when empty.
    steps.push([
      'schema bookkeeping',
      [
        `INSERT INTO schema_version ("lock", version, upgraded)
         SELECT 'X', ${SYNAPSE_SCHEMA_VERSION}, true WHERE NOT EXISTS (SELECT 1 FROM schema_version)`,
        `INSERT INTO schema_compat_version ("lock", compat_version)
         SELECT 'X', ${SYNAPSE_SCHEMA_COMPAT_VERSION} WHERE NOT EXISTS (SELECT 1 FROM schema_compat_version)`,
      ],
    ]);
  }
  const keyJson = (origin: string, k: number) =>
    lit(
      JSON.stringify({
        server_name: origin,
        valid_until_ts: now + 7 * DAY_MS,
        verify_keys: { [`ed25519:a_${k}`]: { key: new Rng(`${origin}:${k}`).string(43, `${LETTERS}0123456789+/`) } },
      }),
    );
  const origins = ['matrix.org', 'mozilla.org', 'element.io'];
  steps.push([
    'server keys',
    [
      `INSERT INTO server_keys_json (server_name, key_id, from_server, ts_added_ms, ts_valid_until_ms, key_json) VALUES ${values(
        origins.map(
          (o, k) =>
            `(${lit(o)}, 'ed25519:a_${k}', ${lit(o)}, ${now - DAY_MS}, ${now + 7 * DAY_MS}, convert_to(${keyJson(o, k)}, 'UTF8'))`,
        ),
      )}`,
      `INSERT INTO server_signature_keys (server_name, key_id, from_server, ts_added_ms, verify_key, ts_valid_until_ms) VALUES ${values(
        origins.map(
          (o, k) =>
            `(${lit(o)}, 'ed25519:a_${k}', ${lit(o)}, ${now - DAY_MS}, sha256(convert_to(${lit(o)}, 'UTF8')), ${now + 7 * DAY_MS})`,
        ),
      )}`,
    ],
  ]);
  const R = ctx.opts.release;
  steps.push([
    'instances and stream positions',
    [
      `INSERT INTO instance_map (instance_name) VALUES ('master'), (${lit(`${R}-synapse-event-persist-0`)}), (${lit(`${R}-synapse-fed-sender-0`)})`,
      `INSERT INTO stream_positions (stream_name, instance_name, stream_id)
       SELECT 'events', ${lit(`${R}-synapse-event-persist-0`)}, COALESCE(max(stream_ordering), 1) FROM events`,
    ],
  ]);
  return steps;
}

/** Adds large encrypted events to the first room until the database reaches opts.dbMb. */
async function padToSize(ctx: Ctx): Promise<void> {
  const target = Math.floor((ctx.opts.dbMb ?? 0) * 1024 * 1024);
  if (target <= 0) return;
  const rng = new Rng(`pad:${ctx.opts.namespace}`);
  await ctx.c.query('CREATE TEMP TABLE seed_pad_text (id int PRIMARY KEY, ct text)');
  await ctx.c.query('INSERT INTO seed_pad_text SELECT g - 1, ($1::text[])[g] FROM generate_series(1, 256) g', [
    Array.from({ length: 256 }, () => rng.string(1400 + rng.int(0, 500), B64_ALPHABET)),
  ]);
  for (let round = 0; round < 500; round++) {
    const size = Number((await ctx.c.query('SELECT pg_database_size(current_database()) AS s')).rows[0].s);
    if (size >= target) break;
    const n = Math.min(200_000, Math.max(1000, Math.ceil((target - size) / 2800)));
    const base = await ctx.c.query(
      `SELECT (SELECT room_id FROM rooms ORDER BY room_id LIMIT 1) AS room_id,
         (SELECT COALESCE(max(stream_ordering), 0) FROM events) AS so,
         (SELECT name FROM users WHERE admin = 1 ORDER BY name LIMIT 1) AS sender`,
    );
    const row = base.rows[0];
    if (!row?.room_id || !row.sender) return;
    const depth = Number(
      (await ctx.c.query('SELECT COALESCE(max(depth), 0) AS d FROM events WHERE room_id = $1', [row.room_id])).rows[0]
        .d,
    );
    const so = Number(row.so);
    const t = Date.now();
    await ctx.c.query('BEGIN');
    await ctx.c.query(
      `CREATE TEMP TABLE seed_pad ON COMMIT DROP AS
       SELECT k, ${so} + k AS so, ${depth} + k AS depth, ${ctx.nowMs - 30 * DAY_MS} + k::bigint * 10 AS ts,
         ${eventIdSql(`(${so} + k)::bigint`, 1)} AS event_id
       FROM generate_series(1, ${n}) k`,
    );
    await ctx.c.query(
      `INSERT INTO events (topological_ordering, event_id, type, room_id, processed, outlier, depth, origin_server_ts, received_ts,
         sender, contains_url, instance_name, stream_ordering)
       SELECT depth, event_id, 'm.room.encrypted', $1, true, false, depth, ts, ts + 50, $2, false, 'master', so FROM seed_pad`,
      [row.room_id, row.sender],
    );
    await ctx.c.query(
      `INSERT INTO event_json (event_id, room_id, internal_metadata, json, format_version)
       SELECT p.event_id, $1, '{}', json_build_object('type', 'm.room.encrypted', 'room_id', $1::text, 'sender', $2::text,
         'content', json_build_object('algorithm', 'm.megolm.v1.aes-sha2', 'ciphertext', t.ct, 'session_id', substr(t.ct, 1, 43)),
         'depth', p.depth, 'origin_server_ts', p.ts, 'prev_events', json_build_array(), 'auth_events', json_build_array())::text, 3
       FROM seed_pad p JOIN seed_pad_text t ON t.id = (p.k * 7) % 256`,
      [row.room_id, row.sender],
    );
    await ctx.c.query('COMMIT');
    ctx.log(`seed: padding round ${round}: ${n} events (${Date.now() - t} ms)`);
  }
}

async function fixSequences(ctx: Ctx): Promise<void> {
  await ctx.c.query('BEGIN');
  const values: Record<string, string> = {
    events_stream_seq: 'SELECT max(stream_ordering) FROM events',
    state_group_id_seq: 'SELECT max(id) FROM state_groups',
    user_id_seq:
      "SELECT max(split_part(substr(name, 2), ':', 1)::bigint) FROM users WHERE is_guest = 1 AND split_part(substr(name, 2), ':', 1) ~ '^[0-9]+$'",
    device_lists_sequence: 'SELECT count(*) FROM devices',
  };
  for (const [seq, q] of Object.entries(values)) {
    if (!STANDALONE_SEQUENCES.includes(seq)) continue;
    await step(ctx, `setval ${seq}`, `SELECT setval(${lit(seq)}, v) FROM (${q}) AS x(v) WHERE v > 0`);
  }
  await ctx.c.query('COMMIT');
}

async function seedMas(pgi: PostgresInfo, opts: SeedOptions, log: (l: string) => void): Promise<void> {
  const c = await connect(pgi, MAS_ROLE, MAS_DB);
  try {
    const t = Date.now();
    const U = Math.max(0, Math.floor(opts.users));
    const S = lit(opts.serverName);
    const installed = opts.nowMs - 90 * DAY_MS;
    await c.query('BEGIN');
    await c.query(MAS_SCHEMA_PARTS.tables);
    await c.query(
      "SET work_mem = '128MB'; SET temp_buffers = '256MB'; SET maintenance_work_mem = '256MB'; SET jit = off",
    );
    for (const [version, description] of MAS_MIGRATIONS) {
      const checksum = Buffer.from(new Rng(`sqlx:${version}`).string(48, LETTERS), 'latin1');
      await c.query(
        'INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) VALUES ($1, $2, $3, true, $4, $5)',
        [version, description, new Date(installed), checksum, 1_000_000 + (version % 9_000_000)],
      );
    }
    const uuid = (seed: string) => `md5(${seed})::uuid`;
    await c.query(
      `CREATE TEMP TABLE mas_seed AS
       SELECT i, kind, lp,
         CASE WHEN kind IN ('deactivated', 'appservice') THEN 0 WHEN kind = 'guest' THEN 1 ELSE 1 + i % 3 END AS ndev,
         CASE WHEN kind = 'appservice' THEN false WHEN kind = 'deactivated' THEN i % 2 = 1 ELSE i % 5 <> 0 END AS active
       FROM (SELECT i, kind, ${LOCALPART_SQL} AS lp FROM (SELECT i, ${KIND_SQL} AS kind FROM generate_series(1, ${U}) i) k) l
       WHERE kind NOT IN ('appservice', 'guest')`,
    );
    // Same edge users as in the synapse database (one device each).
    await c.query(
      `UPDATE mas_seed SET ndev = 1, active = false
       WHERE i IN (SELECT i FROM mas_seed WHERE kind = 'normal' AND i > 7 ORDER BY i LIMIT 6)`,
    );
    const nowTs = `to_timestamp(${opts.nowMs / 1000})`;
    await c.query(
      `INSERT INTO users (user_id, username, created_at, locked_at, can_request_admin, is_guest, deactivated_at)
       SELECT ${uuid("'mas-user:' || i")}, lp, ${nowTs} - interval '730 days' + (i::bigint * 728 * 86400 / GREATEST(${U}, 1)) * interval '1 second',
         NULL, kind = 'admin', false, CASE WHEN kind = 'deactivated' THEN ${nowTs} - interval '5 days' END
       FROM mas_seed ORDER BY i`,
    );
    await c.query(
      `INSERT INTO user_emails (user_email_id, user_id, email, created_at)
       SELECT ${uuid("'mas-email:' || i")}, ${uuid("'mas-user:' || i")}, lp || '@' || ${S}, ${nowTs} - interval '700 days'
       FROM mas_seed WHERE kind IN ('admin', 'normal', 'support') ORDER BY i`,
    );
    await c.query(
      `INSERT INTO user_sessions (user_session_id, user_id, created_at, finished_at, user_agent, last_active_at, last_active_ip)
       SELECT ${uuid("'mas-sess:' || i")}, ${uuid("'mas-user:' || i")}, ${nowTs} - interval '60 days', NULL, ${uaSql('i')},
         ${nowTs} - (i % 20) * interval '1 day', ('198.51.100.' || (1 + i % 250))::inet
       FROM mas_seed WHERE active ORDER BY i`,
    );
    await c.query(
      `INSERT INTO compat_sessions (compat_session_id, user_id, device_id, created_at, finished_at, is_synapse_admin,
         last_active_at, last_active_ip, user_session_id, user_agent, human_name)
       SELECT ${uuid("'mas-compat:' || i || ':' || d")}, ${uuid("'mas-user:' || i")}, ${DEVICE_SQL},
         ${nowTs} - interval '90 days', NULL, kind = 'admin', ${nowTs} - (i % 27) * interval '1 day',
         ('198.51.100.' || (1 + (i + d) % 250))::inet, CASE WHEN active THEN ${uuid("'mas-sess:' || i")} END,
         ${uaSql('i + d')}, 'Element on ' || (ARRAY['Linux', 'Android', 'iOS', 'macOS', 'Windows'])[1 + (i + d) % 5]
       FROM mas_seed, generate_series(1, ndev) d ORDER BY i, d`,
    );
    await c.query(
      `INSERT INTO compat_access_tokens (compat_access_token_id, compat_session_id, access_token, created_at, expires_at)
       SELECT ${uuid("'mas-cat:' || i || ':' || d")}, ${uuid("'mas-compat:' || i || ':' || d")}, ${TOKEN_SQL},
         ${nowTs} - interval '30 days', NULL
       FROM mas_seed, generate_series(1, ndev) d ORDER BY i, d`,
    );
    await c.query(
      `INSERT INTO oauth2_clients (oauth2_client_id, encrypted_client_secret, grant_type_authorization_code, grant_type_refresh_token,
         client_name, client_uri, token_endpoint_auth_method, created_at, is_static, redirect_uris, application_type)
       VALUES
         ('01f9a0b6-1d6e-4b5c-9a3e-3c0d5b9e7a01', NULL, true, true, 'Element', 'https://chat.' || ${S}, 'none', ${nowTs} - interval '90 days', false,
          ARRAY['https://chat.' || ${S} || '/'], 'web'),
         ('01f9a0b6-1d6e-4b5c-9a3e-3c0d5b9e7a02', NULL, true, true, 'Element Admin', 'https://admin.' || ${S}, 'none', ${nowTs} - interval '90 days', false,
          ARRAY['https://admin.' || ${S} || '/'], 'web'),
         ('01f9a0b6-1d6e-4b5c-9a3e-3c0d5b9e7a03', 'v1:' || md5('client-secret'), false, false, 'synapse', NULL, 'client_secret_basic', NULL, true,
          '{}', NULL)`,
    );
    await c.query(
      `INSERT INTO oauth2_sessions (oauth2_session_id, user_session_id, oauth2_client_id, created_at, finished_at, user_id, scope_list,
         last_active_at, last_active_ip, user_agent, human_name)
       SELECT ${uuid("'mas-oauth:' || i")}, ${uuid("'mas-sess:' || i")}, '01f9a0b6-1d6e-4b5c-9a3e-3c0d5b9e7a01', ${nowTs} - interval '20 days', NULL,
         ${uuid("'mas-user:' || i")},
         ARRAY['urn:matrix:org.matrix.msc2967.client:api:*', 'urn:matrix:org.matrix.msc2967.client:device:' || substr(md5('oauthdev:' || i), 1, 10)],
         ${nowTs} - (i % 10) * interval '1 day', ('198.51.100.' || (1 + i % 250))::inet, ${uaSql('i')}, NULL
       FROM mas_seed WHERE active AND i % 4 = 0 ORDER BY i`,
    );
    await c.query(MAS_SCHEMA_PARTS.post);
    await c.query('COMMIT');
    await c.query('ANALYZE');
    log(`seed: MAS database (${Date.now() - t} ms)`);
  } catch (err) {
    await c.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    await c.end();
  }
}

async function countRows(c: pg.Client, tables: readonly string[], prefix = ''): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of tables) {
    if (!(await hasTable(c, t))) continue;
    const r = await c.query(`SELECT count(*)::bigint AS n FROM ${t}`);
    out[`${prefix}${t}`] = Number(r.rows[0].n);
  }
  return out;
}

async function userSummary(c: pg.Client): Promise<SeedSummary['users']> {
  const r = await c.query(`
    WITH k AS (
      SELECT CASE
        WHEN COALESCE(appservice_id, '') <> '' THEN 'appservice'
        WHEN is_guest = 1 THEN 'guest'
        WHEN deactivated = 1 THEN 'deactivated'
        WHEN user_type = 'support' THEN 'support'
        WHEN user_type = 'bot' THEN 'bot'
        WHEN admin = 1 THEN 'admin'
        ELSE 'normal' END AS kind
      FROM users)
    SELECT kind, count(*)::int AS n FROM k GROUP BY kind`);
  const by: Record<string, number> = {};
  for (const row of r.rows) by[row.kind] = row.n;
  const ipOnly = (await hasTable(c, 'user_ips'))
    ? Number(
        (
          await c.query(
            'SELECT count(DISTINCT user_id)::int AS n FROM user_ips ip WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.name = ip.user_id)',
          )
        ).rows[0].n,
      )
    : 0;
  const kinds = ['normal', 'admin', 'support', 'bot', 'guest', 'appservice', 'deactivated'] as const;
  const total = kinds.reduce((s, k) => s + (by[k] ?? 0), 0);
  return {
    total,
    normal: by.normal ?? 0,
    admin: by.admin ?? 0,
    support: by.support ?? 0,
    bot: by.bot ?? 0,
    guest: by.guest ?? 0,
    appservice: by.appservice ?? 0,
    deactivated: by.deactivated ?? 0,
    ipOnly,
  };
}

/**
 * Creates the roles and databases (as `configure-dbs.sh` does), the Synapse and MAS schemas, and generated data
 * plus media files under `<mediaDir>/media_store`. If the Synapse database already holds a schema (a restarted
 * sandbox), nothing is generated: role passwords are re-synced (as the chart's `postgres-ess-updater` sidecar
 * does on every pod start) and the summary describes what is there.
 */
export async function seedData(
  pgi: PostgresInfo,
  opts: SeedOptions,
  dirs: { mediaDir: string },
  log: (l: string) => void = () => {},
): Promise<SeedSummary> {
  checkServerName(opts.serverName);
  const pw = databasePasswords(opts);
  const admin = await connect(pgi, pgi.superuser, 'postgres');
  let synapseCreated: boolean;
  let masCreated: boolean;
  try {
    await admin.query(`ALTER ROLE ${pgi.superuser} PASSWORD ${lit(pw.admin)}`);
    await ensureRole(admin, MAS_ROLE, pw.mas);
    await ensureRole(admin, SYNAPSE_ROLE, pw.synapse);
    // The operator flavour's Postgres image is bootstrapped with POSTGRES_USER=synapse_user: its superuser.
    if (opts.flavour === 'operator') await admin.query(`ALTER ROLE ${SYNAPSE_ROLE} SUPERUSER`);
    masCreated = await ensureDatabase(admin, MAS_DB, MAS_ROLE);
    synapseCreated = await ensureDatabase(admin, SYNAPSE_DB, SYNAPSE_ROLE);
  } finally {
    await admin.end();
  }

  const c = await connect(pgi, SYNAPSE_ROLE, SYNAPSE_DB);
  const ctx: Ctx = {
    c,
    opts,
    server: opts.serverName,
    nowMs: opts.nowMs,
    log,
    skipped: [],
    builtin: !opts.synapseSchemaFile,
  };
  let reused = false;
  let media: MediaSummary;
  try {
    // Bulk-load settings for this session only (the sorts and temp tables of the generators stay in memory).
    await c.query(
      "SET work_mem = '128MB'; SET temp_buffers = '256MB'; SET maintenance_work_mem = '256MB'; SET jit = off; SET synchronous_commit = off",
    );
    reused = !synapseCreated && (await hasTable(c, 'schema_version'));
    if (!reused) {
      const t0 = Date.now();
      if (opts.synapseSchemaFile) {
        await runPsqlFile(pgi, SYNAPSE_ROLE, SYNAPSE_DB, opts.synapseSchemaFile);
        log(`seed: loaded ${opts.synapseSchemaFile} (${Date.now() - t0} ms)`);
      }
      await c.query('BEGIN');
      if (!opts.synapseSchemaFile) await c.query(SYNAPSE_SCHEMA_PARTS.tables);
      await loadTextTables(ctx);
      for (const [name, sql] of [
        ...bookkeepingSteps(ctx),
        ...userSteps(ctx),
        ...activitySteps(ctx),
        ...roomSteps(ctx),
      ]) {
        await step(ctx, name, sql);
      }
      if (!opts.synapseSchemaFile)
        await step(ctx, 'constraints, indexes, foreign keys, triggers', SYNAPSE_SCHEMA_PARTS.post);
      await c.query('COMMIT');
      // The generators' temp tables count towards pg_database_size until dropped.
      await c.query('DISCARD TEMP');
      await padToSize(ctx);
      await c.query('DISCARD TEMP');
      media = await seedMedia(c, opts, dirs.mediaDir, log, ctx.skipped);
      await fixSequences(ctx);
      await c.query('ANALYZE');
      log(`seed: synapse database done (${Date.now() - t0} ms)`);
    } else {
      log('seed: synapse database exists; keeping its data');
      media = await summariseMedia(c);
    }
  } catch (err) {
    await c.query('ROLLBACK').catch(() => {});
    await c.end();
    throw err;
  }

  try {
    if (
      masCreated ||
      !(await (async () => {
        const m = await connect(pgi, MAS_ROLE, MAS_DB);
        try {
          return await hasTable(m, '_sqlx_migrations');
        } finally {
          await m.end();
        }
      })())
    ) {
      await seedMas(pgi, opts, log);
    }
    const sv = (await hasTable(c, 'schema_version'))
      ? (await c.query('SELECT version FROM schema_version LIMIT 1')).rows[0]?.version
      : undefined;
    const cv = (await hasTable(c, 'schema_compat_version'))
      ? (await c.query('SELECT compat_version FROM schema_compat_version LIMIT 1')).rows[0]?.compat_version
      : undefined;
    const tables = await countRows(c, SYNAPSE_SEEDED_TABLES);
    const m = await connect(pgi, MAS_ROLE, MAS_DB);
    let masTables: Record<string, number>;
    let masBytes: number;
    try {
      masTables = await countRows(m, MAS_TABLES, 'mas.');
      masBytes = Number((await m.query('SELECT pg_database_size(current_database()) AS s')).rows[0].s);
    } finally {
      await m.end();
    }
    const synBytes = Number((await c.query('SELECT pg_database_size(current_database()) AS s')).rows[0].s);
    return {
      serverName: opts.serverName,
      reused,
      schemaVersion: Number(sv ?? 0),
      schemaCompatVersion: Number(cv ?? 0),
      schemaSource: opts.synapseSchemaFile ? 'file' : 'builtin',
      databases: { synapse: SYNAPSE_DB, mas: MAS_DB },
      roles: { synapse: SYNAPSE_ROLE, mas: MAS_ROLE },
      tables: { ...tables, ...masTables },
      users: (await hasTable(c, 'users'))
        ? await userSummary(c)
        : { total: 0, normal: 0, admin: 0, support: 0, bot: 0, guest: 0, appservice: 0, deactivated: 0, ipOnly: 0 },
      media,
      dbBytes: { synapse: synBytes, mas: masBytes },
      skipped: ctx.skipped,
    };
  } finally {
    await c.end();
  }
}
