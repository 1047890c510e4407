/**
 * The Synapse media store of the seeded install, laid out as `synapse/media/filepath.py` does
 * (synapse-database.md §11) under `<mediaDir>/media_store/`, with matching rows in local_media_repository,
 * local_media_repository_thumbnails, remote_media_cache and remote_media_cache_thumbnails.
 *
 * File contents are an AES-256-CTR keystream keyed by the file's path: reproducible, incompressible like real
 * JPEG/MP4 data, and streamed to disk in 64 KiB chunks (never held whole in memory). Sizes add up to about
 * opts.mediaMb MiB (70 % local uploads and their thumbnails, 20 % remote cache, 10 % URL previews). As root,
 * the files are chowned to 10091:10091, the uid/gid Synapse runs as in the chart.
 */
import { spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import type { SeedOptions, SeedSummary } from '../types.js';
import { DAY_MS, LETTERS, Rng } from './common.js';

/** Counts and bytes of the seeded media store. */
export type MediaSummary = SeedSummary['media'];

const CHUNK = 64 * 1024;
const ZEROES = Buffer.alloc(CHUNK);

/** Writes `size` deterministic bytes to `file`; returns the sha256 (hex) of what was written. */
async function writeFile(file: string, size: number): Promise<string> {
  await mkdir(path.dirname(file), { recursive: true });
  const key = createHash('sha256')
    .update(`media-content:${file.split('/media_store/').pop()}`)
    .digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const hash = createHash('sha256');
  const out = createWriteStream(file);
  const finished = new Promise<void>((resolve, reject) => {
    out.once('finish', resolve);
    out.once('error', reject);
  });
  let left = size;
  while (left > 0) {
    const n = Math.min(CHUNK, left);
    const chunk = cipher.update(n === CHUNK ? ZEROES : ZEROES.subarray(0, n));
    hash.update(chunk);
    left -= n;
    if (!out.write(chunk)) {
      await new Promise<void>((resolve, reject) => {
        const onErr = (e: Error) => reject(e);
        out.once('error', onErr);
        out.once('drain', () => {
          out.off('error', onErr);
          resolve();
        });
      });
    }
  }
  out.end();
  await finished;
  return hash.digest('hex');
}

function idPath(id: string): string[] {
  return [id.slice(0, 2), id.slice(2, 4), id.slice(4)];
}

interface Thumb {
  w: number;
  h: number;
  type: string;
  method: 'crop' | 'scale';
  size: number;
}

function thumbName(t: Thumb): string {
  const [top, sub] = t.type.split('/');
  return `${t.w}-${t.h}-${top}-${sub}-${t.method}`;
}

function thumbsFor(rng: Rng, mediaType: string): Thumb[] {
  if (!mediaType.startsWith('image/')) return [];
  const type = mediaType === 'image/png' ? 'image/png' : 'image/jpeg';
  const thumbs: Thumb[] = [
    { w: 32, h: 32, type, method: 'crop', size: rng.int(900, 4000) },
    { w: 96, h: 96, type, method: 'crop', size: rng.int(3000, 12_000) },
  ];
  if (rng.next() < 0.7) thumbs.push({ w: 320, h: 240, type, method: 'scale', size: rng.int(12_000, 45_000) });
  if (rng.next() < 0.3) thumbs.push({ w: 640, h: 480, type, method: 'scale', size: rng.int(40_000, 120_000) });
  return thumbs;
}

const KINDS: { type: string; ext: string; min: number; max: number; weight: number }[] = [
  { type: 'image/jpeg', ext: 'jpg', min: 40_000, max: 1_500_000, weight: 55 },
  { type: 'image/png', ext: 'png', min: 5_000, max: 300_000, weight: 20 },
  { type: 'video/mp4', ext: 'mp4', min: 1_000_000, max: 6_000_000, weight: 10 },
  { type: 'application/pdf', ext: 'pdf', min: 50_000, max: 2_000_000, weight: 10 },
  { type: 'text/plain', ext: 'txt', min: 200, max: 20_000, weight: 5 },
];

function pickKind(rng: Rng) {
  let x = rng.next() * 100;
  for (const k of KINDS) {
    x -= k.weight;
    if (x < 0) return k;
  }
  return KINDS[0];
}

/** Runs async jobs with bounded concurrency. */
async function pool<T>(items: T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++];
      await fn(item);
    }
  });
  await Promise.all(workers);
}

async function insertRows(c: pg.Client, table: string, columns: string[], rows: unknown[][]): Promise<void> {
  const batch = Math.max(1, Math.floor(30_000 / columns.length));
  for (let off = 0; off < rows.length; off += batch) {
    const part = rows.slice(off, off + batch);
    const params: unknown[] = [];
    const tuples = part.map((r) => `(${r.map((v) => `$${params.push(v)}`).join(', ')})`);
    await c.query(`INSERT INTO ${table} (${columns.join(', ')}) VALUES ${tuples.join(', ')}`, params);
  }
}

interface FileJob {
  file: string;
  size: number;
  onHash?: (sha: string) => void;
}

/**
 * Writes the media store and its rows. Returns counts and bytes. Rows for a table missing from a loaded schema
 * file are skipped (recorded in `skipped`).
 */
export async function seedMedia(
  c: pg.Client,
  opts: SeedOptions,
  mediaDir: string,
  log: (l: string) => void,
  skipped: string[],
): Promise<MediaSummary> {
  const t0 = Date.now();
  const store = path.join(mediaDir, 'media_store');
  await mkdir(store, { recursive: true });
  const summary: MediaSummary = {
    localFiles: 0,
    localThumbnails: 0,
    remoteFiles: 0,
    remoteThumbnails: 0,
    urlCacheFiles: 0,
    urlCacheThumbnails: 0,
    files: 0,
    bytes: 0,
  };
  const budget = Math.floor(Math.max(0, opts.mediaMb) * 1024 * 1024);
  if (budget === 0) return summary;

  const rng = new Rng(`media:${opts.namespace}:${opts.release}`);
  const uploaders = (
    await c.query(
      `SELECT name FROM users WHERE is_guest = 0 AND deactivated = 0 AND COALESCE(appservice_id, '') = ''
       ORDER BY name LIMIT 500`,
    )
  ).rows.map((r: { name: string }) => r.name);
  if (uploaders.length === 0) uploaders.push(`@admin1:${opts.serverName}`);
  const now = opts.nowMs;
  const jobs: FileJob[] = [];
  const localRows: unknown[][] = [];
  const localThumbRows: unknown[][] = [];
  const remoteRows: unknown[][] = [];
  const remoteThumbRows: unknown[][] = [];
  const id24 = () => rng.string(24, LETTERS);
  const add = (file: string, size: number, onHash?: (sha: string) => void) => {
    jobs.push({ file, size, onHash });
    summary.files++;
    summary.bytes += size;
  };

  // Local uploads (≈70 %).
  let spent = 0;
  const localBudget = Math.floor(budget * 0.7);
  let n = 0;
  while (spent < localBudget) {
    const kind = pickKind(rng);
    const size = Math.max(200, Math.min(rng.int(kind.min, kind.max), localBudget - spent));
    const id = id24();
    const created = now - rng.int(0, 300) * DAY_MS - rng.int(0, DAY_MS - 1);
    const row: unknown[] = [
      id,
      kind.type,
      size,
      created,
      `${kind.type.startsWith('image/') ? 'IMG' : 'file'}_${new Date(created).toISOString().slice(0, 10).replace(/-/g, '')}_${n}.${kind.ext}`,
      uploaders[n % uploaders.length],
      n === 3 ? `@admin1:${opts.serverName}` : null,
      null,
      created + rng.int(0, 30) * DAY_MS,
      false,
      created > now - 200 * DAY_MS,
      null,
    ];
    localRows.push(row);
    add(path.join(store, 'local_content', ...idPath(id)), size, (sha) => {
      row[11] = sha;
    });
    spent += size;
    summary.localFiles++;
    for (const t of thumbsFor(rng, kind.type)) {
      if (spent + t.size > localBudget + 200_000) break;
      localThumbRows.push([id, t.w, t.h, t.type, t.method, t.size]);
      add(path.join(store, 'local_thumbnails', ...idPath(id), thumbName(t)), t.size);
      spent += t.size;
      summary.localThumbnails++;
    }
    n++;
  }

  // Remote media cache (≈20 %): stored under filesystem_id, not the remote media_id.
  const origins = ['matrix.org', 'mozilla.org', 'element.io', 'kde.org'];
  const remoteBudget = Math.floor(budget * 0.2);
  spent = 0;
  n = 0;
  while (spent < remoteBudget) {
    const kind = pickKind(rng);
    const size = Math.max(200, Math.min(rng.int(kind.min, Math.min(kind.max, 800_000)), remoteBudget - spent));
    const origin = origins[n % origins.length];
    const mediaId = rng.string(24, LETTERS);
    const fsid = id24();
    const created = now - rng.int(0, 200) * DAY_MS;
    const row: unknown[] = [
      origin,
      mediaId,
      kind.type,
      created,
      `remote_${n}.${kind.ext}`,
      size,
      fsid,
      created + DAY_MS,
      null,
      true,
      null,
    ];
    remoteRows.push(row);
    add(path.join(store, 'remote_content', origin, ...idPath(fsid)), size, (sha) => {
      row[10] = sha;
    });
    spent += size;
    summary.remoteFiles++;
    const t = thumbsFor(rng, kind.type)[0];
    if (t) {
      remoteThumbRows.push([origin, mediaId, t.w, t.h, t.method, t.type, t.size, fsid]);
      add(path.join(store, 'remote_thumbnail', origin, ...idPath(fsid), thumbName(t)), t.size);
      spent += t.size;
      summary.remoteThumbnails++;
    }
    n++;
  }

  // URL previews (the rest): ids `YYYY-MM-DD_<16 letters>`, stored by date.
  const urlBudget = budget - Math.floor(budget * 0.7) - Math.floor(budget * 0.2);
  spent = 0;
  n = 0;
  while (spent < urlBudget) {
    const created = now - rng.int(0, 60) * DAY_MS;
    const date = new Date(created).toISOString().slice(0, 10);
    const id = `${date}_${rng.string(16, LETTERS)}`;
    const isImage = rng.next() < 0.6;
    const type = isImage ? 'image/jpeg' : 'text/html';
    const size = Math.max(200, Math.min(rng.int(2_000, 250_000), urlBudget - spent));
    const row: unknown[] = [
      id,
      type,
      size,
      created,
      null,
      uploaders[n % uploaders.length],
      null,
      `https://example.org/article/${n}`,
      created,
      false,
      false,
      null,
    ];
    localRows.push(row);
    add(path.join(store, 'url_cache', date, id.slice(11)), size, (sha) => {
      row[11] = sha;
    });
    spent += size;
    summary.urlCacheFiles++;
    if (isImage) {
      const t: Thumb = { w: 320, h: 240, type: 'image/jpeg', method: 'scale', size: rng.int(5_000, 30_000) };
      localThumbRows.push([id, t.w, t.h, t.type, t.method, t.size]);
      add(path.join(store, 'url_cache_thumbnails', date, id.slice(11), thumbName(t)), t.size);
      spent += t.size;
      summary.urlCacheThumbnails++;
    }
    n++;
  }

  await pool(jobs, 4, async (j) => {
    const sha = await writeFile(j.file, j.size);
    j.onHash?.(sha);
  });
  log(`seed: wrote ${summary.files} media files, ${summary.bytes} bytes (${Date.now() - t0} ms)`);

  const tables: [string, string[], unknown[][]][] = [
    [
      'local_media_repository',
      [
        'media_id',
        'media_type',
        'media_length',
        'created_ts',
        'upload_name',
        'user_id',
        'quarantined_by',
        'url_cache',
        'last_access_ts',
        'safe_from_quarantine',
        'authenticated',
        'sha256',
      ],
      localRows,
    ],
    [
      'local_media_repository_thumbnails',
      ['media_id', 'thumbnail_width', 'thumbnail_height', 'thumbnail_type', 'thumbnail_method', 'thumbnail_length'],
      localThumbRows,
    ],
    [
      'remote_media_cache',
      [
        'media_origin',
        'media_id',
        'media_type',
        'created_ts',
        'upload_name',
        'media_length',
        'filesystem_id',
        'last_access_ts',
        'quarantined_by',
        'authenticated',
        'sha256',
      ],
      remoteRows,
    ],
    [
      'remote_media_cache_thumbnails',
      [
        'media_origin',
        'media_id',
        'thumbnail_width',
        'thumbnail_height',
        'thumbnail_method',
        'thumbnail_type',
        'thumbnail_length',
        'filesystem_id',
      ],
      remoteThumbRows,
    ],
  ];
  for (const [table, cols, rows] of tables) {
    try {
      await c.query('BEGIN');
      await insertRows(c, table, cols, rows);
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK');
      if (!opts.synapseSchemaFile) throw err;
      skipped.push(`${table}: ${(err as Error).message}`);
    }
  }
  // Some users' avatars point at their uploaded PNGs.
  await c
    .query(
      `UPDATE profiles p SET avatar_url = 'mxc://' || $1 || '/' || m.media_id
       FROM (SELECT DISTINCT ON (user_id) user_id, media_id FROM local_media_repository
             WHERE media_type = 'image/png' AND url_cache IS NULL ORDER BY user_id, created_ts) m
       WHERE p.full_user_id = m.user_id`,
      [opts.serverName],
    )
    .catch((err: Error) => skipped.push(`profiles avatar_url: ${err.message}`));

  if (typeof process.getuid === 'function' && process.getuid() === 0) {
    await new Promise<void>((resolve, reject) => {
      const child = spawn('chown', ['-R', '10091:10091', store], { stdio: 'ignore' });
      child.once('error', reject);
      child.once('close', (code) =>
        code === 0 ? resolve() : reject(new Error(`chown -R 10091:10091 ${store} failed (${code})`)),
      );
    });
  }
  return summary;
}

/** Media counts from the database (for a reused sandbox). */
export async function summariseMedia(c: pg.Client): Promise<MediaSummary> {
  const q = async (sql: string): Promise<{ n: number; b: number }> => {
    try {
      const r = await c.query(sql);
      return { n: Number(r.rows[0].n), b: Number(r.rows[0].b ?? 0) };
    } catch {
      return { n: 0, b: 0 };
    }
  };
  const local = await q('SELECT count(*) n, sum(media_length) b FROM local_media_repository WHERE url_cache IS NULL');
  const url = await q('SELECT count(*) n, sum(media_length) b FROM local_media_repository WHERE url_cache IS NOT NULL');
  const lt = await q(
    `SELECT count(*) FILTER (WHERE m.url_cache IS NULL) n, count(*) FILTER (WHERE m.url_cache IS NOT NULL) b
     FROM local_media_repository_thumbnails t JOIN local_media_repository m USING (media_id)`,
  );
  const ltBytes = await q('SELECT count(*) n, sum(thumbnail_length) b FROM local_media_repository_thumbnails');
  const remote = await q('SELECT count(*) n, sum(media_length) b FROM remote_media_cache');
  const rt = await q('SELECT count(*) n, sum(thumbnail_length) b FROM remote_media_cache_thumbnails');
  const files = local.n + url.n + ltBytes.n + remote.n + rt.n;
  return {
    localFiles: local.n,
    localThumbnails: lt.n,
    remoteFiles: remote.n,
    remoteThumbnails: rt.n,
    urlCacheFiles: url.n,
    urlCacheThumbnails: lt.b,
    files,
    bytes: local.b + url.b + ltBytes.b + remote.b + rt.b,
  };
}
