/**
 * `ess backup list` and `ess backup prune` through the built CLI (`npm run build` first), on a local directory and
 * on S3 (s3rver), with archives written by the archive library.
 */
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import S3rver from 's3rver';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalDirStore } from '../../src/lib/storage/local-dir.js';
import { S3Store } from '../../src/lib/storage/s3.js';
import type { ListBackupsResult } from '../../src/services/backup/list.js';
import type { PruneResult } from '../../src/services/backup/prune.js';
import { runCli } from '../helpers/cli.js';
import { parseJson, removeDir, tempDir, testBackupName, writeTestBackup } from './helpers.js';

const day = (n: number) => new Date(Date.UTC(2025, 2, n, 2, 0, 0));
const BUCKET = 'backups';

let work: string;
let s3rver: S3rver;
let endpoint: string;
/** Object keys s3rver served with GET (downloads). */
const downloads: string[] = [];
const s3Env = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };

beforeAll(async () => {
  work = await tempDir();
  s3rver = new S3rver({
    port: 0,
    address: '127.0.0.1',
    silent: true,
    directory: join(work, 's3'),
    configureBuckets: [{ name: BUCKET }],
  });
  s3rver.middleware.unshift(async (ctx, next) => {
    if (ctx.method === 'GET' && ctx.path.split('/').filter(Boolean).length > 1) downloads.push(ctx.path);
    await next();
  });
  const { port } = await s3rver.run();
  endpoint = `http://127.0.0.1:${port}`;
});

afterAll(async () => {
  await s3rver?.close();
  await removeDir(work);
});

/** A chain at one destination: full (1st) ← incr (2nd) ← incr (3rd); an older full (0th, other server too). */
async function seedChain(store: LocalDirStore | S3Store, spool: string) {
  const full = await writeTestBackup(store, { createdAt: day(1) }, spool);
  const incr1 = await writeTestBackup(
    store,
    { createdAt: day(2), parent: { name: full, createdAt: day(1), inherited: { 'local_content/aa/old': 10 } } },
    spool,
  );
  const incr2 = await writeTestBackup(
    store,
    {
      createdAt: day(3),
      parent: { name: incr1, createdAt: day(2), inherited: { 'local_content/aa/old': 10 } },
      encryption: { passphrase: 'correct horse', scryptWorkFactor: 10 },
    },
    spool,
  );
  const older = await writeTestBackup(store, { createdAt: day(0) }, spool);
  const other = await writeTestBackup(store, { createdAt: day(0), serverName: 'other.example.org' }, spool);
  return { full, incr1, incr2, older, other };
}

describe('ess backup list', () => {
  it('Given a local directory with a chain, other servers, junk and a partial file, when listed, then the table and --json describe every backup newest first', async () => {
    const dir = join(work, 'local-list');
    const store = new LocalDirStore(dir);
    const names = await seedChain(store, work);
    const orphan = testBackupName({
      createdAt: day(5),
      parent: { name: 'x', createdAt: day(4), inherited: {} },
    });
    await writeFile(join(dir, orphan), 'not really an archive');
    await writeFile(join(dir, 'notes.txt'), 'hello');
    await writeFile(join(dir, `${testBackupName({ createdAt: day(9) })}.partial`), 'half');

    const json = await runCli(['backup', 'list', '-o', dir, '--json']);
    expect(json.code, json.stderr).toBe(0);
    const result = parseJson<ListBackupsResult>(json.stdout);
    expect(result.backups.map((b) => b.name)).toEqual([
      orphan,
      names.incr2,
      names.incr1,
      names.full,
      names.other,
      names.older,
    ]);
    const byName = new Map(result.backups.map((b) => [b.name, b]));
    expect(byName.get(names.incr2)).toMatchObject({
      server: 'example.com',
      encrypted: true,
      incremental: true,
      parent: names.incr1,
      parentPresent: true,
      createdAt: day(3).toISOString(),
    });
    expect(byName.get(names.full)).toMatchObject({ encrypted: false, incremental: false });
    expect(byName.get(names.full)!.size).toBeGreaterThan(150_000);
    expect(byName.get(orphan)).toMatchObject({ incremental: true, parentPresent: false });
    expect(result.ignored).toEqual(['notes.txt']);
    expect(result.warnings.join('\n')).toContain(orphan);

    const text = await runCli(['backup', 'list', '-o', dir]);
    expect(text.code, text.stderr).toBe(0);
    for (const header of ['NAME', 'DATE (UTC)', 'SIZE', 'SERVER', 'ENCRYPTED', 'PARENT']) {
      expect(text.stdout).toContain(header);
    }
    const incr2Line = text.stdout.split('\n').find((l) => l.includes(names.incr2))!;
    expect(incr2Line).toContain('2025-03-03 02:00:00Z');
    expect(incr2Line).toContain('yes');
    expect(incr2Line).toContain(names.incr1);
    expect(text.stdout.split('\n').find((l) => l.includes(orphan))).toContain('MISSING');
    expect(text.stderr).toContain('is missing');

    const filtered = parseJson<ListBackupsResult>(
      (await runCli(['backup', 'list', '-o', dir, '--server', 'other.example.org', '--json'])).stdout,
    );
    expect(filtered.backups.map((b) => b.name)).toEqual([names.other]);

    const empty = await runCli(['backup', 'list', '-o', join(work, 'does-not-exist')]);
    expect(empty.code).toBe(0);
    expect(empty.stdout).toContain('No backups at');
  });

  it('Given backups on S3, when listed, then they are listed from names and sizes without downloading any archive', async () => {
    const store = new S3Store({
      url: `s3://${BUCKET}/ess/list`,
      endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    });
    const names = await seedChain(store, work);
    const sizes = new Map((await store.list()).map((o) => [o.name, o.size]));
    await store.close();
    downloads.length = 0;
    const run = await runCli(
      ['backup', 'list', '--s3', `s3://${BUCKET}/ess/list`, '--s3-endpoint', endpoint, '--json'],
      {
        env: s3Env,
      },
    );
    expect(run.code, run.stderr).toBe(0);
    const result = parseJson<ListBackupsResult>(run.stdout);
    expect(result.location).toBe(`s3://${BUCKET}/ess/list`);
    expect(result.backups.map((b) => b.name)).toEqual([names.incr2, names.incr1, names.full, names.other, names.older]);
    for (const b of result.backups) expect(b.size).toBe(sizes.get(b.name));
    expect(result.backups[0]).toMatchObject({ encrypted: true, parent: names.incr1, parentPresent: true });
    expect(downloads).toEqual([]);
  });

  it('Given -o and --s3 together, when listed, then it is a usage error (exit 2)', async () => {
    const run = await runCli(['backup', 'list', '-o', work, '--s3', 's3://b/p']);
    expect(run.code).toBe(2);
  });

  it('Given -o naming a file, when listed or pruned, then it exits 4 with a next step, not as a bug', async () => {
    const file = join(work, 'afile');
    await writeFile(file, 'hi\n');
    for (const args of [
      ['backup', 'list', '-o', file],
      ['backup', 'prune', '-o', file, '--keep-last', '1', '--yes'],
      ['backup', 'list', '-o', join(file, 'sub'), '--json'],
    ]) {
      const run = await runCli(args);
      expect(run.code, `${args.join(' ')}\n${run.stderr}`).toBe(4);
      expect(run.stderr).toMatch(/Error: Cannot list the local backup directory .*ENOTDIR/);
      expect(run.stderr).toContain('Next steps:\n  - ');
      expect(run.stderr).toMatch(/is a file: pass a directory with -o\/--output/);
      expect(run.stderr).not.toMatch(/bug in ess/);
    }
  });
});

describe('ess backup prune', () => {
  it('Given a chain, when pruned with --keep-last 1 as a dry run and then for real, then only backups outside the kept chain are deleted', async () => {
    const dir = join(work, 'local-prune');
    const store = new LocalDirStore(dir);
    const names = await seedChain(store, work);
    await writeFile(join(dir, 'notes.txt'), 'keep me');
    const before = (await readdir(dir)).sort();

    const dry = await runCli(['backup', 'prune', '-o', dir, '--keep-last', '1', '--dry-run', '--json']);
    expect(dry.code, dry.stderr).toBe(0);
    const plan = parseJson<PruneResult>(dry.stdout);
    expect(plan.dryRun).toBe(true);
    expect(plan.deleted.map((o) => o.name)).toEqual([names.older]);
    expect(plan.kept.map((o) => o.name)).toEqual([names.incr2, names.incr1, names.full, names.other]);
    expect(plan.kept.find((o) => o.name === names.full)!.reasons).toEqual(['parent-of-kept']);
    expect(plan.kept.find((o) => o.name === names.other)!.reasons).toContain('newest');
    expect((await readdir(dir)).sort()).toEqual(before);

    const dryText = await runCli(['backup', 'prune', '-o', dir, '--keep-last', '1', '--dry-run']);
    expect(dryText.stdout).toContain('Would delete (1');
    expect(dryText.stdout).toContain('Dry run: nothing was deleted.');

    // No TTY and no --yes: refused before anything is deleted.
    const refused = await runCli(['backup', 'prune', '-o', dir, '--keep-last', '1']);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toContain('--yes');
    expect((await readdir(dir)).sort()).toEqual(before);

    const real = await runCli(['backup', 'prune', '-o', dir, '--keep-last', '1', '--yes', '--json']);
    expect(real.code, real.stderr).toBe(0);
    const done = parseJson<PruneResult>(real.stdout);
    expect(done.deleted.map((o) => o.name)).toEqual([names.older]);
    expect(done.freedBytes).toBeGreaterThan(0);
    expect((await readdir(dir)).sort()).toEqual(before.filter((n) => n !== names.older));
  });

  it('Given --keep-within shorter than every backup, when pruned, then the newest of each server and the parents of kept backups stay', async () => {
    const dir = join(work, 'local-prune-within');
    const store = new LocalDirStore(dir);
    const names = await seedChain(store, work);
    // The 3rd is the newest of example.com: kept, and with it its whole chain. Nothing is within 1 day of now.
    const run = await runCli(['backup', 'prune', '-o', dir, '--keep-within', '1d', '--yes', '--json']);
    expect(run.code, run.stderr).toBe(0);
    const result = parseJson<PruneResult>(run.stdout);
    expect(result.deleted.map((o) => o.name)).toEqual([names.older]);
    expect((await readdir(dir)).sort()).toEqual([names.other, names.full, names.incr1, names.incr2].sort());

    const bad = await runCli(['backup', 'prune', '-o', dir, '--keep-within', '30 days']);
    expect(bad.code).toBe(2);
    const none = await runCli(['backup', 'prune', '-o', dir, '--yes']);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('--keep-last');
  });

  it('Given backups on S3, when pruned, then the old full backup is deleted from the bucket', async () => {
    const url = `s3://${BUCKET}/ess/prune`;
    const store = new S3Store({
      url,
      endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    });
    const names = await seedChain(store, work);
    const run = await runCli(
      ['backup', 'prune', '--s3', url, '--s3-endpoint', endpoint, '--keep-last', '2', '--yes', '--json'],
      {
        env: s3Env,
      },
    );
    expect(run.code, run.stderr).toBe(0);
    expect(parseJson<PruneResult>(run.stdout).deleted.map((o) => o.name)).toEqual([names.older]);
    expect((await store.list()).map((o) => o.name).sort()).toEqual(
      [names.incr2, names.incr1, names.full, names.other].sort(),
    );
    await store.close();
  });
});
