import { execFileSync } from 'node:child_process';
import { createHash, createHmac, createPrivateKey, pbkdf2Sync } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type {
  V1ConfigMap,
  V1Deployment,
  V1Ingress,
  V1Job,
  V1PersistentVolume,
  V1PersistentVolumeClaim,
  V1Service,
  V1StatefulSet,
} from '@kubernetes/client-node';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { type RunningPostgres, startPostgres } from '../../src/sandbox/postgres.js';
import {
  DEPENDENT_CRS,
  databasePasswords,
  decodeReleaseData,
  seedData,
  seedLayout,
  seedObjects,
} from '../../src/sandbox/seed/index.js';
import { STANDALONE_SEQUENCES, SYNAPSE_SCHEMA_SQL } from '../../src/sandbox/seed/synapse-schema.js';
import type { KubeObject, SeedOptions, SeedSummary } from '../../src/sandbox/types.js';

const NOW = Date.parse('2026-01-15T12:00:00Z');
const DAY = 86_400_000;
const FIXTURES = path.resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../shared/fixtures');
const V94_SCHEMA = path.join(FIXTURES, 'synapse-schema/generated/synapse-v94-fresh.schema.sql');
const isRoot = process.getuid?.() === 0;

const base: SeedOptions = {
  namespace: 'ess',
  release: 'ess',
  flavour: 'matrix-stack',
  serverName: 'ess.localhost',
  users: 60,
  mediaMb: 2,
  nowMs: NOW,
};

let tmp: string;
let server: RunningPostgres;
let summary: SeedSummary;
let mediaDir: string;
const clients: pg.Client[] = [];

async function db(database: string, user = 'postgres'): Promise<pg.Client> {
  const c = new pg.Client({ host: server.host, port: server.port, user, database });
  await c.connect();
  clients.push(c);
  return c;
}

async function one<T = Record<string, unknown>>(c: pg.Client, sql: string, params: unknown[] = []): Promise<T> {
  return (await c.query(sql, params)).rows[0] as T;
}

function byKind(objs: KubeObject[], kind: string, name: string): KubeObject {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`missing ${kind}/${name}`);
  return o;
}

/** The object seen through a client-node model type (the seed produces API JSON). */
function typed<T>(objs: KubeObject[], kind: string, name: string): T {
  return byKind(objs, kind, name) as unknown as T;
}

interface ReleaseJson {
  name: string;
  namespace: string;
  version: number;
  info: { status: string; description: string; last_deployed: string; deleted: string };
  chart: { metadata: { name: string; version: string; apiVersion: string } };
  config: Record<string, unknown>;
  manifest: string;
}

function release(o: KubeObject): ReleaseJson {
  return decodeReleaseData((o.data as { release: string }).release) as unknown as ReleaseJson;
}

function cmData(objs: KubeObject[], name: string, key: string): string {
  return typed<V1ConfigMap>(objs, 'ConfigMap', name).data?.[key] ?? '';
}

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

beforeAll(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'ess-seed-test-'));
  chmodSync(tmp, 0o755);
  mediaDir = path.join(tmp, 'volumes/ess/ess-synapse-media');
  server = await startPostgres({ dataDir: path.join(tmp, 'volumes/ess/ess-postgres-data/pgdata') });
  summary = await seedData(server, base, { mediaDir });
});

afterAll(async () => {
  for (const c of clients) await c.end().catch(() => {});
  await server?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('startPostgres', () => {
  it('runs a real PostgreSQL 15+ on 127.0.0.1, as the postgres OS user when root', async () => {
    const c = await db('postgres');
    const v = await one<{ server_version_num: string }>(c, 'SHOW server_version_num');
    expect(Number(v.server_version_num)).toBeGreaterThanOrEqual(150000);
    expect(server.version.split('.')[0]).toBe(String(Math.floor(Number(v.server_version_num) / 10000)));
    expect((await one<{ a: string }>(c, 'SELECT inet_server_addr()::text AS a')).a).toMatch(/^127\.0\.0\.1/);
    expect((await one<{ fsync: string }>(c, 'SHOW fsync')).fsync).toBe('off');
    expect(existsSync(path.join(server.binDir, 'pg_dump'))).toBe(true);
    if (isRoot) {
      const pgUid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
      const status = readFileSync(`/proc/${server.pid}/status`, 'utf8');
      expect(status).toMatch(new RegExp(`^Uid:\\s+${pgUid}\\b`, 'm'));
      expect(statSync(server.dataDir).uid).toBe(pgUid);
    }
  });
});

describe('seedData', () => {
  it('creates the roles and databases configure-dbs.sh makes, with the Secret passwords', async () => {
    const c = await db('postgres');
    const rows = (
      await c.query(
        `SELECT d.datname, r.rolname AS owner, pg_encoding_to_char(d.encoding) AS enc, d.datcollate, d.datctype
         FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname IN ('synapse', 'matrixauthenticationservice')
         ORDER BY 1`,
      )
    ).rows;
    expect(rows).toEqual([
      {
        datname: 'matrixauthenticationservice',
        owner: 'matrixauthenticationservice_user',
        enc: 'UTF8',
        datcollate: 'C',
        datctype: 'C',
      },
      { datname: 'synapse', owner: 'synapse_user', enc: 'UTF8', datcollate: 'C', datctype: 'C' },
    ]);
    const pw = databasePasswords(base);
    for (const [role, password] of [
      ['synapse_user', pw.synapse],
      ['matrixauthenticationservice_user', pw.mas],
      ['postgres', pw.admin],
    ]) {
      const r = await one<{ rolpassword: string; rolcanlogin: boolean }>(
        c,
        'SELECT rolpassword, rolcanlogin FROM pg_authid WHERE rolname = $1',
        [role],
      );
      expect(r.rolcanlogin).toBe(true);
      // SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>: recompute StoredKey from the expected password.
      const m = /^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):/.exec(r.rolpassword);
      expect(m).not.toBeNull();
      const salted = pbkdf2Sync(password, Buffer.from(m![2], 'base64'), Number(m![1]), 32, 'sha256');
      const stored = createHash('sha256')
        .update(createHmac('sha256', salted).update('Client Key').digest())
        .digest('base64');
      expect(stored).toBe(m![3]);
    }
  });

  it('builds a v94 Synapse schema with the real bookkeeping, sequences, functions and triggers', async () => {
    const c = await db('synapse');
    expect(await one(c, 'SELECT "lock", version, upgraded FROM schema_version')).toEqual({
      lock: 'X',
      version: 94,
      upgraded: true,
    });
    expect(await one(c, 'SELECT compat_version FROM schema_compat_version')).toEqual({ compat_version: 84 });
    expect(summary).toMatchObject({
      schemaVersion: 94,
      schemaCompatVersion: 84,
      schemaSource: 'builtin',
      reused: false,
    });
    expect(Number((await one<{ n: string }>(c, 'SELECT count(*) n FROM applied_schema_deltas')).n)).toBeGreaterThan(10);
    const seqs = (
      await c.query(
        `SELECT c.relname FROM pg_class c WHERE c.relkind = 'S' AND c.relnamespace = 'public'::regnamespace
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))`,
      )
    ).rows.map((r) => r.relname);
    expect(seqs.sort()).toEqual([...STANDALONE_SEQUENCES].sort());
    const fns = (
      await c.query(`SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace ORDER BY 1`)
    ).rows.map((r) => r.proname);
    expect(fns).toEqual([
      'check_event_stream_ordering',
      'check_partial_state_events',
      'delete_read_write_lock_parent',
      'upsert_read_write_lock_parent',
    ]);
    const owners = (await c.query(`SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'`)).rows;
    expect(owners).toEqual([{ tableowner: 'synapse_user' }]);
    const unlogged = (
      await c.query(`SELECT relname FROM pg_class WHERE relpersistence = 'u' AND relkind = 'r' ORDER BY 1`)
    ).rows.map((r) => r.relname);
    expect(unlogged).toEqual(['worker_read_write_locks', 'worker_read_write_locks_mode']);
    // The trigger really guards event_stream_ordering.
    await expect(
      c.query(
        `INSERT INTO room_memberships (event_id, user_id, sender, room_id, membership, event_stream_ordering)
         SELECT event_id, sender, sender, room_id, 'join', stream_ordering + 1000000 FROM events LIMIT 1`,
      ),
    ).rejects.toThrow(/event_stream_ordering/);
    const seq = await one<{ last_value: string; max: string }>(
      c,
      'SELECT (SELECT last_value FROM events_stream_seq) AS last_value, (SELECT max(stream_ordering) FROM events) AS max',
    );
    expect(seq.last_value).toBe(seq.max);
  });

  it('seeds users of every kind with Synapse semantics (creation_ts in seconds)', async () => {
    const c = await db('synapse');
    expect(summary.users.total).toBe(60);
    for (const k of ['normal', 'admin', 'support', 'bot', 'guest', 'appservice', 'deactivated', 'ipOnly'] as const) {
      expect(summary.users[k], k).toBeGreaterThan(0);
    }
    const r = await one<Record<string, string>>(
      c,
      `SELECT count(*) FILTER (WHERE user_type = 'support') support, count(*) FILTER (WHERE user_type = 'bot') bot,
         count(*) FILTER (WHERE is_guest = 1) guest, count(*) FILTER (WHERE appservice_id IN ('whatsapp', 'telegram')) appservice,
         count(*) FILTER (WHERE deactivated = 1) deactivated, count(*) FILTER (WHERE admin = 1) admin,
         max(creation_ts) max_ts, count(*) FILTER (WHERE name NOT LIKE '%:ess.localhost') foreign_users
       FROM users`,
    );
    expect(Number(r.support)).toBe(summary.users.support);
    expect(Number(r.guest)).toBe(summary.users.guest);
    expect(Number(r.appservice)).toBe(summary.users.appservice);
    expect(Number(r.foreign_users)).toBe(0);
    expect(Number(r.max_ts)).toBeLessThanOrEqual(NOW / 1000);
    expect(Number(r.max_ts)).toBeGreaterThan(NOW / 1000 - 86400);
    const guest = await one<{ name: string }>(c, 'SELECT name FROM users WHERE is_guest = 1 LIMIT 1');
    expect(guest.name).toMatch(/^@\d+:ess\.localhost$/);
    // The server name is recoverable the way Synapse checks it.
    const domains = (await c.query(`SELECT DISTINCT substring(name from position(':' in name) + 1) AS d FROM users`))
      .rows;
    expect(domains).toEqual([{ d: 'ess.localhost' }]);
  });

  it('seeds devices with one-time keys, fallback keys and MAS compat sessions for the same devices', async () => {
    const c = await db('synapse');
    const otk = await one<{ devices: string; otks: string; per: string }>(
      c,
      `SELECT (SELECT count(*) FROM devices) devices, (SELECT count(*) FROM e2e_one_time_keys_json) otks,
         (SELECT max(n) FROM (SELECT count(*) n FROM e2e_one_time_keys_json GROUP BY user_id, device_id) x) per`,
    );
    expect(Number(otk.devices)).toBeGreaterThan(0);
    expect(Number(otk.otks)).toBe(Number(otk.devices) * 8);
    expect(
      JSON.parse((await one<{ key_json: string }>(c, 'SELECT key_json FROM e2e_one_time_keys_json LIMIT 1')).key_json),
    ).toHaveProperty('key');
    // MAS has no guests: every other Synapse device is a MAS compat session.
    const devices = (
      await c.query(
        'SELECT d.user_id, d.device_id FROM devices d JOIN users u ON u.name = d.user_id WHERE u.is_guest = 0',
      )
    ).rows.map((r) => `${r.user_id.split(':')[0].slice(1)}/${r.device_id}`);
    const m = await db('matrixauthenticationservice');
    const compat = (
      await m.query('SELECT u.username, s.device_id FROM compat_sessions s JOIN users u USING (user_id) ORDER BY 1, 2')
    ).rows.map((r) => `${r.username}/${r.device_id}`);
    expect(compat.sort()).toEqual(devices.sort());
    // The token a device used (user_ips) is the one MAS holds for its compat session.
    const tok = await one<{ access_token: string; user_id: string; device_id: string }>(
      c,
      `SELECT access_token, user_id, device_id FROM user_ips i JOIN users u ON u.name = i.user_id
       WHERE device_id IS NOT NULL AND u.is_guest = 0 ORDER BY user_id LIMIT 1`,
    );
    const mt = await one<{ device_id: string }>(
      m,
      'SELECT s.device_id FROM compat_access_tokens t JOIN compat_sessions s USING (compat_session_id) WHERE t.access_token = $1',
      [tok.access_token],
    );
    expect(mt?.device_id).toBe(tok.device_id);
    expect(summary.tables['mas._sqlx_migrations']).toBeGreaterThan(0);
    expect(
      (await one<{ extname: string }>(m, `SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'`)).extname,
    ).toBe('pg_trgm');
  });

  it('seeds activity with month-boundary, leap-day, new-year and retention edge cases', async () => {
    const c = await db('synapse');
    const d = new Date(NOW);
    const m0 = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
    const mPrev = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - 1, 1);
    const y0 = Date.UTC(d.getUTCFullYear(), 0, 1);
    const has = async (ts: number) =>
      Number((await one<{ n: string }>(c, 'SELECT count(*) n FROM user_daily_visits WHERE "timestamp" = $1', [ts])).n);
    for (const ts of [m0 - DAY, m0, m0 - 1, mPrev, Date.UTC(2024, 1, 29), Date.UTC(2024, 2, 1), y0 - DAY, y0]) {
      expect(await has(ts), new Date(ts).toISOString()).toBeGreaterThan(0);
    }
    const span = await one<{ min: string; max: string; nulldev: string; curl: string }>(
      c,
      `SELECT min("timestamp") min, max("timestamp") max, count(*) FILTER (WHERE device_id IS NULL) nulldev,
         count(*) FILTER (WHERE user_agent LIKE 'curl/%') curl FROM user_daily_visits WHERE "timestamp" > ${Date.UTC(2024, 5, 1)}`,
    );
    expect(NOW - Number(span.min)).toBeGreaterThan(13 * 30 * DAY);
    expect(Number(span.max)).toBeLessThanOrEqual(NOW);
    expect(Number(span.nulldev)).toBeGreaterThan(0);
    expect(Number(span.curl)).toBeGreaterThan(0);
    // One user's visits exactly 30 days apart (not r30-retained).
    const r30 = await one<{ n: string }>(
      c,
      `SELECT count(*) n FROM (SELECT user_id FROM user_daily_visits GROUP BY user_id HAVING count(*) = 2 AND max("timestamp") - min("timestamp") = ${30 * DAY}) x`,
    );
    expect(Number(r30.n)).toBeGreaterThan(0);
    // Guests and appservice users never appear in user_daily_visits.
    const bad = await one<{ n: string }>(
      c,
      `SELECT count(*) n FROM user_daily_visits v JOIN users u ON u.name = v.user_id WHERE u.is_guest = 1 OR COALESCE(u.appservice_id, '') <> ''`,
    );
    expect(Number(bad.n)).toBe(0);
    const ips = await one<Record<string, string>>(
      c,
      `SELECT count(*) FILTER (WHERE last_seen = ${NOW - 29 * DAY}) d29, count(*) FILTER (WHERE last_seen = ${NOW - 31 * DAY}) d31,
         count(DISTINCT user_id) FILTER (WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.name = user_id)) gone,
         count(*) FILTER (WHERE last_seen > ${NOW - 28 * DAY}) recent, max(last_seen) newest FROM user_ips`,
    );
    expect(Number(ips.d29)).toBeGreaterThan(0);
    expect(Number(ips.d31)).toBeGreaterThan(0);
    expect(Number(ips.gone)).toBe(summary.users.ipOnly);
    expect(Number(ips.newest)).toBeLessThanOrEqual(NOW);
    // monthly_active_users: no guests/support/appservice, plus one dangling row for a deleted user.
    const mau = await one<Record<string, string>>(
      c,
      `SELECT count(*) FILTER (WHERE u.name IS NULL) dangling,
         count(*) FILTER (WHERE u.is_guest = 1 OR u.user_type = 'support' OR COALESCE(u.appservice_id, '') <> '') excluded,
         count(*) FILTER (WHERE u.user_type = 'bot') bots
       FROM monthly_active_users m LEFT JOIN users u ON u.name = m.user_id`,
    );
    expect(Number(mau.dangling)).toBe(1);
    expect(Number(mau.excluded)).toBe(0);
    expect(Number(mau.bots)).toBeGreaterThan(0);
  });

  it('seeds rooms and events whose tables agree with each other', async () => {
    const c = await db('synapse');
    const r = await one<Record<string, string>>(
      c,
      `SELECT (SELECT count(*) FROM events) events, (SELECT count(*) FROM event_json) json,
         (SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM event_json j WHERE j.event_id = e.event_id)) missing,
         (SELECT count(*) FROM room_memberships m JOIN events e ON e.event_id = m.event_id AND e.stream_ordering = m.event_stream_ordering) rm_ok,
         (SELECT count(*) FROM room_memberships) rm,
         (SELECT count(*) FROM rooms) rooms, (SELECT count(DISTINCT room_id) FROM current_state_events WHERE type = 'm.room.create') creates`,
    );
    expect(Number(r.events)).toBeGreaterThan(60 * 10);
    expect(r.json).toBe(r.events);
    expect(r.missing).toBe('0');
    expect(r.rm_ok).toBe(r.rm);
    expect(r.creates).toBe(r.rooms);
    // The DAG is a chain per room: prev_events points at the event one deeper in the same room.
    const dag = await one<Record<string, string>>(
      c,
      `SELECT count(*) FILTER (WHERE e.depth > 1 AND p.event_id IS NULL) broken,
         count(*) - count(DISTINCT (e.room_id, e.depth)) dup_depth, max(e.stream_ordering) - count(*) gaps,
         count(*) FILTER (WHERE j.json::json->'auth_events'->>0 IS DISTINCT FROM c.event_id AND e.depth > 1) bad_auth
       FROM events e JOIN event_json j USING (event_id)
       LEFT JOIN events p ON p.event_id = j.json::json->'prev_events'->>0 AND p.room_id = e.room_id AND p.depth = e.depth - 1
       LEFT JOIN current_state_events c ON c.room_id = e.room_id AND c.type = 'm.room.create'`,
    );
    expect(dag).toEqual({ broken: '0', dup_depth: '0', gaps: '0', bad_auth: '0' });
    const ext = await one<{ n: string }>(
      c,
      `SELECT count(*) n FROM event_forward_extremities f JOIN events e USING (event_id)
       WHERE e.depth = (SELECT max(depth) FROM events x WHERE x.room_id = e.room_id)`,
    );
    expect(ext.n).toBe(r.rooms);
    const ev = await one<{ json: string; event_id: string }>(
      c,
      `SELECT j.json, j.event_id FROM event_json j JOIN events e USING (event_id) WHERE e.type = 'm.room.member' LIMIT 1`,
    );
    const parsed = JSON.parse(ev.json);
    expect(parsed).toMatchObject({ type: 'm.room.member', content: { membership: expect.any(String) } });
    expect(parsed.state_key).toMatch(/^@/);
    expect(ev.event_id).toMatch(/^\$[A-Za-z0-9_-]{43}$/);
  });

  it('writes the media store files that the media rows describe', async () => {
    const c = await db('synapse');
    const store = path.join(mediaDir, 'media_store');
    const files = walk(store);
    expect(files.length).toBe(summary.media.files);
    const totalBytes = files.reduce((s, f) => s + statSync(f).size, 0);
    expect(totalBytes).toBe(summary.media.bytes);
    expect(totalBytes).toBeGreaterThan(1.5 * 1024 * 1024);
    expect(totalBytes).toBeLessThan(2.6 * 1024 * 1024);
    const expected: { file: string; size: number; sha?: string }[] = [];
    const split = (id: string) => [id.slice(0, 2), id.slice(2, 4), id.slice(4)];
    for (const m of (await c.query('SELECT media_id, media_length, url_cache, sha256 FROM local_media_repository'))
      .rows) {
      expect(m.media_id).toMatch(m.url_cache ? /^\d{4}-\d\d-\d\d_[A-Za-z]{16}$/ : /^[A-Za-z]{24}$/);
      const file = m.url_cache
        ? path.join(store, 'url_cache', m.media_id.slice(0, 10), m.media_id.slice(11))
        : path.join(store, 'local_content', ...split(m.media_id));
      expected.push({ file, size: m.media_length, sha: m.sha256 });
    }
    for (const t of (
      await c.query(
        `SELECT t.*, m.url_cache FROM local_media_repository_thumbnails t JOIN local_media_repository m USING (media_id)`,
      )
    ).rows) {
      const name = `${t.thumbnail_width}-${t.thumbnail_height}-${t.thumbnail_type.replace('/', '-')}-${t.thumbnail_method}`;
      const dir = t.url_cache
        ? path.join(store, 'url_cache_thumbnails', t.media_id.slice(0, 10), t.media_id.slice(11))
        : path.join(store, 'local_thumbnails', ...split(t.media_id));
      expected.push({ file: path.join(dir, name), size: t.thumbnail_length });
    }
    for (const m of (await c.query('SELECT * FROM remote_media_cache')).rows) {
      expect(m.filesystem_id).toMatch(/^[A-Za-z]{24}$/);
      expected.push({
        file: path.join(store, 'remote_content', m.media_origin, ...split(m.filesystem_id)),
        size: m.media_length,
        sha: m.sha256,
      });
    }
    for (const t of (await c.query('SELECT * FROM remote_media_cache_thumbnails')).rows) {
      const name = `${t.thumbnail_width}-${t.thumbnail_height}-${t.thumbnail_type.replace('/', '-')}-${t.thumbnail_method}`;
      expected.push({
        file: path.join(store, 'remote_thumbnail', t.media_origin, ...split(t.filesystem_id), name),
        size: t.thumbnail_length,
      });
    }
    expect(expected.map((e) => e.file).sort()).toEqual([...files].sort());
    for (const e of expected) {
      const st = statSync(e.file);
      expect(st.size, e.file).toBe(e.size);
      if (e.sha) expect(createHash('sha256').update(readFileSync(e.file)).digest('hex')).toBe(e.sha);
      if (isRoot) expect(st.uid).toBe(10091);
    }
    expect(summary.media.localFiles).toBeGreaterThan(0);
    expect(summary.media.remoteFiles).toBeGreaterThan(0);
    expect(summary.media.urlCacheFiles).toBeGreaterThan(0);
  });

  it('keeps the data when the server restarts on the same data directory, and re-syncs passwords', async () => {
    for (const c of clients.splice(0)) await c.end();
    const dataDir = server.dataDir;
    await server.stop();
    server = await startPostgres({ dataDir });
    const c = await db('synapse');
    await c.query("ALTER ROLE synapse_user PASSWORD 'changed-by-a-restore'");
    const before = await one<{ n: string }>(c, 'SELECT count(*) n FROM events');
    const again = await seedData(server, base, { mediaDir });
    expect(again.reused).toBe(true);
    expect(again.tables.events).toBe(Number(before.n));
    expect(again.users).toEqual(summary.users);
    expect(again.media.files).toBe(summary.media.files);
    expect(walk(path.join(mediaDir, 'media_store')).length).toBe(summary.media.files);
    const admin = await db('postgres');
    const pw = await one<{ rolpassword: string }>(
      admin,
      `SELECT rolpassword FROM pg_authid WHERE rolname = 'synapse_user'`,
    );
    const m = /^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):/.exec(pw.rolpassword)!;
    const salted = pbkdf2Sync(databasePasswords(base).synapse, Buffer.from(m[2], 'base64'), Number(m[1]), 32, 'sha256');
    expect(
      createHash('sha256').update(createHmac('sha256', salted).update('Client Key').digest()).digest('base64'),
    ).toBe(m[3]);
  });
});

describe('seedObjects (matrix-stack)', () => {
  const objs = seedObjects(base);
  const secret = (name: string) => byKind(objs, 'Secret', name);

  it('puts namespaces first and gives every object a uid', () => {
    expect(objs[0]).toMatchObject({ kind: 'Namespace', metadata: { name: 'ess' } });
    for (const o of objs) expect(o.metadata.uid, `${o.kind}/${o.metadata.name}`).toMatch(/^[0-9a-f-]{36}$/);
    expect(new Set(objs.map((o) => o.metadata.uid)).size).toBe(objs.length);
  });

  it('has the ess-generated Secret with every key in the right format', () => {
    const s = secret('ess-generated');
    expect(s.metadata.labels).toEqual({
      'app.kubernetes.io/managed-by': 'matrix-tools-init-secrets',
      'app.kubernetes.io/part-of': 'matrix-stack',
      'app.kubernetes.io/component': 'matrix-tools',
      'app.kubernetes.io/name': 'init-secrets',
      'app.kubernetes.io/instance': 'ess-init-secrets',
      'app.kubernetes.io/version': '0.8.1',
    });
    const data = Object.fromEntries(
      Object.entries(s.data as Record<string, string>).map(([k, v]) => [k, Buffer.from(v, 'base64')]),
    );
    const rand32 = /^[A-Za-z0-9]{32}$/;
    for (const k of [
      'SYNAPSE_MACAROON',
      'SYNAPSE_REGISTRATION_SHARED_SECRET',
      'POSTGRES_ADMIN_PASSWORD',
      'POSTGRES_SYNAPSE_PASSWORD',
      'POSTGRES_MATRIX_AUTHENTICATION_SERVICE_PASSWORD',
      'MAS_SYNAPSE_SHARED_SECRET',
      'ELEMENT_CALL_LIVEKIT_SECRET',
    ]) {
      expect(data[k]?.toString(), k).toMatch(rand32);
    }
    expect(data.SYNAPSE_SIGNING_KEY.toString()).toMatch(/^ed25519 1 [A-Za-z0-9+/]{43}$/);
    expect(YAML.parse(data.SYNAPSE_EXTRA.toString())).toEqual({});
    expect(data.MAS_ENCRYPTION_SECRET.toString()).toMatch(/^[0-9a-f]{64}$/);
    const rsa = createPrivateKey({ key: data.MAS_RSA_PRIVATE_KEY, format: 'der', type: 'pkcs1' });
    expect(rsa.asymmetricKeyType).toBe('rsa');
    expect(rsa.asymmetricKeyDetails?.modulusLength).toBe(4096);
    const ec = createPrivateKey({ key: data.MAS_ECDSA_PRIME256V1_PRIVATE_KEY, format: 'der', type: 'sec1' });
    expect(ec.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    const pw = databasePasswords(base);
    expect(data.POSTGRES_SYNAPSE_PASSWORD.toString()).toBe(pw.synapse);
    expect(data.POSTGRES_MATRIX_AUTHENTICATION_SERVICE_PASSWORD.toString()).toBe(pw.mas);
  });

  it('labels and selects workloads like the chart', () => {
    const workloads = objs.filter((o) => o.kind === 'StatefulSet' || o.kind === 'Deployment');
    expect(workloads.map((w) => `${w.kind}/${w.metadata.name}`).sort()).toEqual(
      [
        'Deployment/ess-element-admin',
        'Deployment/ess-element-web',
        'Deployment/ess-haproxy',
        'Deployment/ess-matrix-authentication-service',
        'Deployment/ess-matrix-rtc-authorisation-service',
        'Deployment/ess-matrix-rtc-sfu',
        'Deployment/ess-redis',
        'StatefulSet/ess-postgres',
        'StatefulSet/ess-synapse-event-persist',
        'StatefulSet/ess-synapse-fed-sender',
        'StatefulSet/ess-synapse-main',
        'StatefulSet/ess-synapse-synchrotron',
      ].sort(),
    );
    for (const w of workloads) {
      const spec = w.spec as {
        selector: { matchLabels: Record<string, string> };
        template: { metadata: { labels: Record<string, string> } };
      };
      const labels = w.metadata.labels ?? {};
      expect(labels['helm.sh/chart']).toBe('matrix-stack-26.8.1');
      expect(labels['app.kubernetes.io/instance']).not.toBe('ess');
      expect(spec.template.metadata.labels['helm.sh/chart']).toBeUndefined();
      for (const [k, v] of Object.entries(spec.selector.matchLabels)) expect(spec.template.metadata.labels[k]).toBe(v);
    }
    const persist = byKind(objs, 'StatefulSet', 'ess-synapse-event-persist');
    expect(persist.metadata.labels?.['app.kubernetes.io/instance']).toBe('ess-synapse-event-persister');
    const main = typed<V1StatefulSet>(objs, 'StatefulSet', 'ess-synapse-main').spec;
    expect(main?.podManagementPolicy).toBe('Parallel');
    expect(main?.template.metadata?.labels?.['k8s.element.io/synapse-instance']).toBe('ess-synapse');
    expect(main?.template.spec?.containers[0].name).toBe('synapse');
    // Only main mounts the media PVC; workers get a memory emptyDir at /media.
    const mediaVol = (sts: string) =>
      typed<V1StatefulSet>(objs, 'StatefulSet', sts).spec?.template.spec?.volumes?.find((v) => v.name === 'media');
    expect(mediaVol('ess-synapse-main')?.persistentVolumeClaim?.claimName).toBe('ess-synapse-media');
    expect(mediaVol('ess-synapse-synchrotron')?.emptyDir).toEqual({ medium: 'Memory' });
    const pgSts = typed<V1StatefulSet>(objs, 'StatefulSet', 'ess-postgres').spec;
    expect(pgSts?.podManagementPolicy).toBe('OrderedReady');
    const pgc = pgSts?.template.spec?.containers ?? [];
    expect(pgc.map((x) => x.name)).toEqual(['postgres', 'postgres-ess-updater', 'postgres-exporter']);
    expect(pgc[0].image).toBe(`docker.io/postgres:${server.version.split('.')[0]}-alpine`);
    expect(pgc[0].env).toContainEqual({ name: 'PGDATA', value: '/var/lib/postgres/data/pgdata' });
    expect(pgc[0].volumeMounts).toContainEqual({ name: 'database', mountPath: '/var/lib/postgres/data' });
    expect(pgSts?.template.spec?.volumes).toContainEqual({
      name: 'database',
      persistentVolumeClaim: { claimName: 'ess-postgres-data' },
    });
    // Service ess-synapse is HAProxy, not Synapse.
    const svc = byKind(objs, 'Service', 'ess-synapse');
    expect((svc as unknown as V1Service).spec?.selector).toEqual({ 'app.kubernetes.io/instance': 'ess-haproxy' });
    expect(svc.metadata.labels?.['app.kubernetes.io/component']).toBe('matrix-stack-ingress');
    expect(seedLayout(base)).toMatchObject({
      postgresClaim: 'ess-postgres-data',
      mediaClaim: 'ess-synapse-media',
      mediaPod: 'ess-synapse-main-0',
    });
  });

  it('binds the PVCs to PVs and carries the config a tool reads', () => {
    for (const name of ['ess-postgres-data', 'ess-synapse-media']) {
      const pvc = byKind(objs, 'PersistentVolumeClaim', name);
      expect(pvc.status).toMatchObject({ phase: 'Bound', capacity: { storage: '10Gi' } });
      expect(pvc.metadata.annotations?.['helm.sh/resource-policy']).toBe('keep');
      const pv = typed<V1PersistentVolume>(
        objs,
        'PersistentVolume',
        (pvc as unknown as V1PersistentVolumeClaim).spec?.volumeName ?? '',
      );
      expect(pv.spec?.claimRef).toMatchObject({ name, namespace: 'ess', uid: pvc.metadata.uid });
    }
    expect(
      byKind(objs, 'PersistentVolumeClaim', 'ess-synapse-media').metadata.labels?.['app.kubernetes.io/instance'],
    ).toBe('ess-synapse');
    const cm = YAML.parse(cmData(objs, 'ess-synapse', '04-homeserver-overrides.yaml'));
    expect(cm).toMatchObject({
      server_name: 'ess.localhost',
      media_store_path: '/media/media_store',
      database: {
        name: 'psycopg2',
        args: { user: 'synapse_user', dbname: 'synapse', host: 'ess-postgres.ess.svc.cluster.local.', port: 5432 },
      },
    });
    const mas = YAML.parse(cmData(objs, 'ess-matrix-authentication-service', 'mas-config-overrides.yaml'));
    expect(mas.database).toMatchObject({
      username: 'matrixauthenticationservice_user',
      database: 'matrixauthenticationservice',
    });
    expect(mas.matrix.homeserver).toBe('ess.localhost');
    const ew = JSON.parse(cmData(objs, 'ess-element-web', 'config.json'));
    expect(ew.default_server_config['m.homeserver'].server_name).toBe('ess.localhost');
    expect(typed<V1Ingress>(objs, 'Ingress', 'ess-well-known').spec?.rules?.[0].host).toBe('ess.localhost');
    const markers = byKind(objs, 'ConfigMap', 'ess-markers');
    expect(markers.metadata.labels?.['app.kubernetes.io/managed-by']).toBe('matrix-tools-deployment-markers');
    expect(markers.data).toEqual({ MATRIX_STACK_MSC3861: 'delegated_auth' });
    expect(objs.some((o) => o.kind === 'Secret' && o.metadata.name === 'ess-postgres')).toBe(false);
  });

  it('leaves the completed hook Jobs and their pods, which also match component=matrix-server', () => {
    for (const name of [
      'ess-init-secrets',
      'ess-deployment-markers-pre',
      'ess-deployment-markers-post',
      'ess-synapse-check-config',
    ]) {
      const job = byKind(objs, 'Job', name);
      expect(job.metadata.annotations?.['helm.sh/hook']).toMatch(/(pre|post)-install/);
      expect((job as unknown as V1Job).status?.succeeded).toBe(1);
    }
    expect(byKind(objs, 'Job', 'ess-init-secrets').metadata.labels).toMatchObject({
      'app.kubernetes.io/component': 'matrix-tools',
      'app.kubernetes.io/name': 'init-secrets',
      'app.kubernetes.io/instance': 'ess-init-secrets',
    });
    const pods = objs.filter(
      (o) => o.kind === 'Pod' && o.metadata.labels?.['app.kubernetes.io/component'] === 'matrix-server',
    );
    expect(pods).toHaveLength(1);
    expect(pods[0].metadata.labels?.['k8s.element.io/synapse-instance']).toBe('ess-synapse-check-config');
    expect(pods[0].status).toMatchObject({ phase: 'Succeeded' });
  });

  it('stores Helm release records exactly as Helm 3 encodes them', () => {
    const releases = objs.filter((o) => o.kind === 'Secret' && o.metadata.labels?.owner === 'helm');
    expect(releases.map((r) => r.metadata.name)).toEqual([
      'sh.helm.release.v1.ess.v1',
      'sh.helm.release.v1.ess.v2',
      'sh.helm.release.v1.ess.v3',
    ]);
    for (const r of releases) {
      expect(r.type).toBe('helm.sh/release.v1');
      const api = (r.data as { release: string }).release;
      expect(api.startsWith('SDRzSUFBQUFBQUFDL')).toBe(true);
      const inner = Buffer.from(api, 'base64').toString();
      expect(inner.startsWith('H4sIAAAAAAAC/')).toBe(true);
      expect(Buffer.from(inner, 'base64').subarray(0, 10).toString('hex')).toBe('1f8b08000000000002ff');
      const rel = release(r);
      expect(rel.info.status).toBe(r.metadata.labels?.status);
      expect(String(rel.version)).toBe(r.metadata.labels?.version);
      expect(rel).toMatchObject({
        name: 'ess',
        namespace: 'ess',
        config: { serverName: 'ess.localhost' },
        chart: { metadata: { name: 'matrix-stack', apiVersion: 'v2' } },
      });
      expect(rel.info.deleted).toBe('');
      expect(Number(r.metadata.labels?.modifiedAt)).toBeGreaterThanOrEqual(Number(r.metadata.labels?.createdAt));
    }
    const current = release(releases[2]);
    expect(current.chart.metadata.version).toBe('26.8.1');
    const docs = YAML.parseAllDocuments(current.manifest).map((d) => d.toJSON());
    const main = docs.find((d) => d?.kind === 'StatefulSet' && d.metadata.name === 'ess-synapse-main');
    expect(main.spec.replicas).toBe(1);
    expect(main.metadata.labels['helm.sh/chart']).toBe('matrix-stack-26.8.1');
    expect(current.manifest).toMatch(/# Source: matrix-stack\/templates\/synapse\/synapse_statefulset\.yaml/);
    expect(docs.some((d) => d?.kind === 'Job')).toBe(false);
  });

  it('with stuckRelease seeds the runbook history 6-15 and the cluster state of revision 13', () => {
    const stuck = seedObjects({ ...base, stuckRelease: true });
    const revs = stuck
      .filter((o) => o.kind === 'Secret' && o.metadata.labels?.owner === 'helm')
      .map((r) => ({
        labels: r.metadata.labels!,
        rel: release(r),
      }));
    expect(revs.map((r) => [r.rel.version, r.rel.info.status, r.rel.chart.metadata.version])).toEqual([
      [6, 'superseded', '0.7.5'],
      [7, 'superseded', '0.8.1'],
      [8, 'superseded', '0.9.1'],
      [9, 'failed', '0.11.3'],
      [10, 'superseded', '0.11.3'],
      [11, 'superseded', '0.11.4'],
      [12, 'superseded', '0.11.5'],
      [13, 'deployed', '0.12.0'],
      [14, 'failed', '25.4.2'],
      [15, 'pending-upgrade', '25.4.2'],
    ]);
    for (const r of revs) expect(r.labels.status).toBe(r.rel.info.status);
    const last = revs[9];
    expect(last.rel.info.description).toBe('Preparing upgrade');
    expect(revs[8].rel.info.description).toMatch(/^Upgrade "ess" failed: pre-upgrade hooks failed/);
    expect(NOW - Date.parse(last.rel.info.last_deployed)).toBeGreaterThan(15 * 60_000);
    expect(NOW - Number(last.labels.modifiedAt) * 1000).toBeGreaterThan(15 * 60_000);
    const sts = stuck.filter((o) => o.kind === 'StatefulSet');
    for (const s of sts) expect(s.metadata.labels?.['helm.sh/chart']).toBe('matrix-stack-0.12.0');
    // Charts before 25.6.0 used the long worker names and the -hook suffix on check-config.
    expect(sts.map((s) => s.metadata.name)).toContain('ess-synapse-event-persister');
    const check = byKind(stuck, 'Job', 'ess-synapse-check-config-hook');
    expect((check as unknown as V1Job).status?.conditions?.some((c) => c.type === 'Failed')).toBe(true);
    // A recent "now" moves the whole history back so revision 15 is still old enough.
    const early = seedObjects({ ...base, stuckRelease: true, nowMs: Date.parse('2025-05-21T15:00:00Z') });
    const r15 = early.find((o) => o.metadata.name === 'sh.helm.release.v1.ess.v15')!;
    const rel15 = release(r15);
    expect(Date.parse('2025-05-21T15:00:00Z') - Date.parse(rel15.info.last_deployed)).toBeGreaterThanOrEqual(
      20 * 60_000 - 1000,
    );
  });

  it('with mediaWorker moves the media PVC to the media-repository worker', () => {
    const o = seedObjects({ ...base, mediaWorker: true });
    const vol = (sts: string) =>
      typed<V1StatefulSet>(o, 'StatefulSet', sts).spec?.template.spec?.volumes?.find((v) => v.name === 'media');
    expect(vol('ess-synapse-media-repo')?.persistentVolumeClaim?.claimName).toBe('ess-synapse-media');
    expect(vol('ess-synapse-main')?.emptyDir).toEqual({ medium: 'Memory' });
    expect(byKind(o, 'StatefulSet', 'ess-synapse-media-repo').metadata.labels?.['app.kubernetes.io/instance']).toBe(
      'ess-synapse-media-repository',
    );
    expect(seedLayout({ ...base, mediaWorker: true }).mediaPod).toBe('ess-synapse-media-repo-0');
  });
});

describe('seedObjects (operator)', () => {
  const opts: SeedOptions = { ...base, flavour: 'operator', namespace: 'element-onprem' };
  const objs = seedObjects(opts);

  it('seeds the operator, the ElementDeployment and its dependent custom resources', () => {
    expect(
      objs
        .filter((o) => o.kind === 'Namespace')
        .map((o) => o.metadata.name)
        .sort(),
    ).toEqual(['element-onprem', 'operator-onprem']);
    const op = byKind(objs, 'Deployment', 'element-operator-controller-manager');
    expect(op.metadata.namespace).toBe('operator-onprem');
    expect((op as unknown as V1Deployment).spec?.replicas).toBe(1);
    const ed = byKind(objs, 'ElementDeployment', 'first-element-deployment');
    expect(ed.apiVersion).toBe('matrix.element.io/v1alpha1');
    const keys = Object.keys((ed.status as { dependentCRs: Record<string, unknown> }).dependentCRs).sort();
    expect(keys).toEqual([
      'ElementWeb/first-element-deployment',
      'Hookshot/first-element-deployment',
      'Integrator/first-element-deployment',
      'MatrixAuthenticationService/first-element-deployment',
      'Synapse/first-element-deployment',
      'SynapseAdminUI/first-element-deployment',
      'SynapseUser/first-element-deployment-adminuser-donotdelete',
      'SynapseUser/first-element-deployment-telemetry-donotdelete',
      'WellKnownDelegation/first-element-deployment',
    ]);
    expect([...DEPENDENT_CRS].sort()).toEqual(keys);
    for (const key of keys) {
      const [kind, name] = key.split('/');
      const cr = byKind(objs, kind, name);
      expect(cr.metadata.namespace).toBe('element-onprem');
      expect(cr.metadata.ownerReferences?.[0]).toMatchObject({ kind: 'ElementDeployment', uid: ed.metadata.uid });
    }
  });

  it('seeds workloads owned by their CR, and an unowned installer PostgreSQL', () => {
    const synapseCr = byKind(objs, 'Synapse', 'first-element-deployment');
    const sts = byKind(objs, 'StatefulSet', 'first-element-deployment-synapse-main');
    expect(sts.metadata.ownerReferences?.[0]).toMatchObject({
      kind: 'Synapse',
      name: 'first-element-deployment',
      uid: synapseCr.metadata.uid,
    });
    const vols = (sts as unknown as V1StatefulSet).spec?.template.spec?.volumes;
    expect(vols).toContainEqual({
      name: 'media',
      persistentVolumeClaim: { claimName: 'first-element-deployment-synapse-media' },
    });
    const web = byKind(objs, 'Deployment', 'first-element-deployment-element-web');
    expect(web.metadata.ownerReferences?.[0]).toMatchObject({
      kind: 'ElementWeb',
      uid: byKind(objs, 'ElementWeb', 'first-element-deployment').metadata.uid,
    });
    const pgSts = byKind(objs, 'StatefulSet', 'synapse-postgres');
    expect(pgSts.metadata.ownerReferences).toBeUndefined();
    const c = (pgSts as unknown as V1StatefulSet).spec?.template.spec?.containers[0];
    expect(c?.name).toBe('postgres');
    expect(c?.env).toContainEqual({ name: 'POSTGRES_USER', value: 'synapse_user' });
    expect(c?.env).toContainEqual({ name: 'POSTGRES_DB', value: 'synapse' });
    expect(byKind(objs, 'PersistentVolumeClaim', 'first-element-deployment-synapse-media').status).toMatchObject({
      phase: 'Bound',
    });
    expect(seedLayout(opts)).toMatchObject({
      postgresPod: 'synapse-postgres-0',
      postgresClaim: 'synapse-postgres-data',
      mediaClaim: 'first-element-deployment-synapse-media',
    });
  });
});

describe.skipIf(!existsSync(V94_SCHEMA))(
  `against the real Synapse v94 schema (fixtures)${existsSync(V94_SCHEMA) ? '' : ` (SKIPPED: ${V94_SCHEMA} is missing; it is in ../shared)`}`,
  () => {
    let other: RunningPostgres;
    let otherDir: string;

    beforeAll(async () => {
      otherDir = mkdtempSync(path.join(os.tmpdir(), 'ess-seed-fixture-'));
      chmodSync(otherDir, 0o755);
      other = await startPostgres({ dataDir: path.join(otherDir, 'pgdata') });
    });

    afterAll(async () => {
      await other?.stop();
      if (otherDir) rmSync(otherDir, { recursive: true, force: true });
    });

    it('seeds a loaded schema file completely (every column the seed writes exists there)', async () => {
      const s = await seedData(
        other,
        { ...base, users: 30, mediaMb: 1, synapseSchemaFile: V94_SCHEMA },
        { mediaDir: path.join(otherDir, 'media') },
      );
      expect(s.schemaSource).toBe('file');
      expect(s.skipped).toEqual([]);
      expect(s.schemaVersion).toBe(94);
      expect(s.tables.e2e_one_time_keys_json).toBeGreaterThan(0);
      expect(s.tables.user_daily_visits).toBeGreaterThan(0);
      expect(s.tables.events).toBeGreaterThan(0);
      const c = new pg.Client({ host: other.host, port: other.port, user: 'postgres', database: 'synapse' });
      await c.connect();
      try {
        // 173-table real schema, not ours.
        expect(
          Number((await one<{ n: string }>(c, `SELECT count(*) n FROM pg_tables WHERE schemaname = 'public'`)).n),
        ).toBeGreaterThan(150);
        // Our own schema's tables and columns are a subset of the real one, with the same types.
        await c.query('CREATE SCHEMA mine');
        await c.query('SET search_path = mine');
        await c.query(SYNAPSE_SCHEMA_SQL);
        const diff = await c.query(
          `SELECT m.table_name, m.column_name, m.data_type, r.data_type AS real_type
         FROM information_schema.columns m
         LEFT JOIN information_schema.columns r ON r.table_schema = 'public' AND r.table_name = m.table_name AND r.column_name = m.column_name
         WHERE m.table_schema = 'mine' AND (r.data_type IS NULL OR r.data_type <> m.data_type OR r.is_nullable <> m.is_nullable)`,
        );
        expect(diff.rows).toEqual([]);
      } finally {
        await c.end();
      }
    });
  },
);

describe('seedData with dbMb', () => {
  let other: RunningPostgres;
  let otherDir: string;

  beforeAll(async () => {
    otherDir = mkdtempSync(path.join(os.tmpdir(), 'ess-seed-size-'));
    chmodSync(otherDir, 0o755);
    other = await startPostgres({ dataDir: path.join(otherDir, 'pgdata') });
  });

  afterAll(async () => {
    await other?.stop();
    if (otherDir) rmSync(otherDir, { recursive: true, force: true });
  });

  it('grows the synapse database to dbMb with padding events', async () => {
    const s = await seedData(
      other,
      { ...base, users: 20, mediaMb: 0, dbMb: 40 },
      { mediaDir: path.join(otherDir, 'media') },
    );
    expect(s.dbBytes.synapse).toBeGreaterThanOrEqual(40 * 1024 * 1024);
    expect(s.dbBytes.synapse).toBeLessThan(80 * 1024 * 1024);
    expect(s.tables.events).toBe(s.tables.event_json);
    expect(s.media.files).toBe(0);
  });
});
