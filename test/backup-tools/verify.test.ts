/**
 * `ess backup verify` without a restore test: the built CLI (`npm run build` first) on archives written by the
 * archive library, intact and damaged on disk (flipped bytes, truncation, a deleted parent, wrong keys), on a local
 * directory and on S3 (s3rver); plus the service's own checks (media index, dump headers, row comparison).
 */
import { readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import S3rver from 's3rver';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgeKeyPair } from '../../src/lib/crypto/age.js';
import { silentReporter } from '../../src/lib/output/log.js';
import { LocalDirStore } from '../../src/lib/storage/local-dir.js';
import { MemoryStore } from '../../src/lib/storage/memory.js';
import { S3Store } from '../../src/lib/storage/s3.js';
import { type VerifyResult, verifyBackup } from '../../src/services/backup/verify.js';
import { compareRowCounts } from '../../src/services/backup/verify-checks.js';
import { resolveArchiveLocation } from '../../src/services/backup/verify-source.js';
import { runCli } from '../helpers/cli.js';
import {
  bytesOf,
  copyFile,
  DEFAULT_MEDIA,
  fakeDump,
  flipByte,
  offsetOf,
  parseJson,
  removeDir,
  tempDir,
  truncateFile,
  writeTestBackup,
  writeText,
} from './helpers.js';

const day = (n: number) => new Date(Date.UTC(2025, 2, n, 2, 0, 0));
let work: string;
let dir: string;
let store: LocalDirStore;
let full: string;

beforeAll(async () => {
  work = await tempDir();
  dir = join(work, 'backups');
  store = new LocalDirStore(dir);
  full = await writeTestBackup(store, { createdAt: day(1) }, work);
});

afterAll(async () => {
  await removeDir(work);
});

async function verifyCli(args: string[], env?: NodeJS.ProcessEnv) {
  const run = await runCli(['backup', 'verify', ...args, '--json'], { env });
  const json = parseJson<VerifyResult & { error?: { code: string; exitCode: number } }>(run.stdout);
  return { ...run, json };
}

/** A damaged copy of the full backup, next to it under another (valid) archive name. */
async function damagedCopy(createdDay: number, damage: (path: string) => Promise<void>): Promise<string> {
  const name = full.replace('20250301T020000Z', `202503${String(createdDay).padStart(2, '0')}T020000Z`);
  await copyFile(join(dir, full), join(dir, name));
  await damage(join(dir, name));
  return join(dir, name);
}

describe('ess backup verify: archive checks', () => {
  it('Given an intact archive, when verified by path, then every member checks out (exit 0)', async () => {
    const run = await verifyCli([join(dir, full)]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.json).toMatchObject({ ok: true, archive: full, encrypted: false, problems: [], parents: [] });
    // media index, globals, one dump, two media files
    expect(run.json.members).toBe(5);
    expect(run.json.backup).toMatchObject({ serverName: 'example.com', databases: ['synapse'], mediaFiles: 2 });
    expect(run.json.databases).toEqual([
      { database: 'synapse', member: 'postgres/synapse.dump', dumpFormat: '1.14', restored: false },
    ]);
    const text = await runCli(['backup', 'verify', full, '-o', dir]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/Result:\s+OK/);
  });

  it('Given one flipped byte in a dump, in a media file, or a truncated archive, when verified, then it FAILS with exit 1', async () => {
    const dumpBytes = fakeDump(150_000, 5).subarray(5000, 5032);
    const inDump = await damagedCopy(2, async (p) => flipByte(p, (await offsetOf(p, dumpBytes)) + 7));
    const inMedia = await damagedCopy(3, async (p) =>
      flipByte(p, (await offsetOf(p, DEFAULT_MEDIA['local_content/ab/cd/efghijklmnop']!.subarray(100, 132))) + 3),
    );
    const half = await damagedCopy(4, async (p) => truncateFile(p, Math.floor((await stat(p)).size / 2)));
    const noEnd = await damagedCopy(5, async (p) => truncateFile(p, (await stat(p)).size - 1024));

    const dump = await verifyCli([inDump]);
    expect(dump.code).toBe(1);
    expect(dump.json.ok).toBe(false);
    expect(dump.json.problems[0]).toMatchObject({ code: 'ARCHIVE_CORRUPT' });
    expect(dump.json.problems[0]!.message).toContain('postgres/synapse.dump');
    expect(dump.stderr).toContain('FAILED verification');

    const media = await verifyCli([inMedia]);
    expect(media.code).toBe(1);
    expect(media.json.problems[0]!.message).toContain('media/local_content/ab/cd/efghijklmnop');

    for (const path of [half, noEnd]) {
      const cut = await verifyCli([path]);
      expect(cut.code, path).toBe(1);
      expect(cut.json.problems[0]!.code).toBe('ARCHIVE_TRUNCATED');
    }
  });

  it('Given an incremental backup, when verified with and without its parent, then a missing parent FAILS', async () => {
    const parent = await writeTestBackup(store, { createdAt: day(10) }, work);
    const incr = await writeTestBackup(
      store,
      {
        createdAt: day(11),
        parent: { name: parent, createdAt: day(10), inherited: { 'local_content/zz/older': 77 } },
        media: { 'local_content/new/file': bytesOf(500, 9) },
      },
      work,
    );
    const ok = await verifyCli([join(dir, incr)]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.json.parents).toEqual([{ name: parent, present: true, intact: true }]);
    expect(ok.json.backup).toMatchObject({ incremental: true, parent });

    // A damaged parent: verify fails the incremental backup as a restore would refuse it, and names the parent.
    const media = DEFAULT_MEDIA['local_content/ab/cd/efghijklmnop']!.subarray(100, 132);
    const pristine = await readFile(join(dir, parent));
    await flipByte(join(dir, parent), (await offsetOf(join(dir, parent), media)) + 3);
    const damaged = await verifyCli([join(dir, incr)]);
    expect(damaged.code).toBe(1);
    expect(damaged.json.parents).toEqual([{ name: parent, present: true, intact: false }]);
    expect(damaged.json.problems).toEqual([expect.objectContaining({ code: 'PARENT_DAMAGED' })]);
    expect(damaged.json.problems[0]!.message).toContain(`the parent ${parent} is damaged`);
    const shallow = await verifyCli([join(dir, incr), '--skip-parents']);
    expect(shallow.code, shallow.stderr).toBe(0);
    expect(shallow.json.parents).toEqual([{ name: parent, present: true }]);
    expect(shallow.stderr).toMatch(/not read \(--skip-parents\)/);
    await writeFile(join(dir, parent), pristine);

    await unlink(join(dir, parent));
    const missing = await verifyCli([join(dir, incr)]);
    expect(missing.code).toBe(1);
    expect(missing.json.parents).toEqual([{ name: parent, present: false }]);
    expect(missing.json.problems).toEqual([expect.objectContaining({ code: 'PARENT_MISSING' })]);
  });

  it('Given encrypted archives, when verified with the right key, no key, a wrong key or damage, then exit 0, 4, 4 and 1', async () => {
    const keys = generateAgeKeyPair();
    const identityFile = join(work, 'key.txt');
    await writeText(identityFile, `# test key\n${keys.identity}\n`);
    const byKey = await writeTestBackup(
      store,
      { createdAt: day(20), encryption: { recipients: [keys.recipient] } },
      work,
    );
    const passFile = join(work, 'pass.txt');
    await writeText(passFile, 'correct horse\n');
    const wrongFile = join(work, 'wrong.txt');
    await writeText(wrongFile, 'battery staple\n');
    const byPass = await writeTestBackup(
      store,
      { createdAt: day(21), encryption: { passphrase: 'correct horse', scryptWorkFactor: 10 } },
      work,
    );

    const ok = await verifyCli([join(dir, byKey), '-i', identityFile]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.json).toMatchObject({ ok: true, encrypted: true, members: 5 });
    const okPass = await verifyCli([join(dir, byPass), '--passphrase-file', passFile]);
    expect(okPass.code, okPass.stderr).toBe(0);

    const noKey = await verifyCli([join(dir, byKey)]);
    expect(noKey.code).toBe(4);
    expect(noKey.json.error).toMatchObject({ code: 'ARCHIVE_ENCRYPTED' });
    const wrong = await verifyCli([join(dir, byPass), '--passphrase-file', wrongFile]);
    expect(wrong.code).toBe(4);
    expect(wrong.json.error!.code).toMatch(/^AGE_/);

    const size = (await stat(join(dir, byKey))).size;
    await flipByte(join(dir, byKey), Math.floor(size / 2));
    const damaged = await verifyCli([join(dir, byKey), '-i', identityFile]);
    expect(damaged.code).toBe(1);
    expect(damaged.json.problems[0]!.code).toBe('AGE_PAYLOAD_INVALID');
  });

  it('Given a name that is not there, or no archive argument, when verified, then exit 4 or 2', async () => {
    const missing = await verifyCli([join(dir, 'ess-backup_example.com_20200101T000000Z.tar')]);
    expect(missing.code).toBe(4);
    expect(missing.json.error).toMatchObject({ code: 'BACKUP_NOT_FOUND' });
    const bad = await runCli(['backup', 'verify', 'not a name!', '-o', dir]);
    expect(bad.code).toBe(2);
  });

  it('Given an archive on S3, when verified by s3:// URL, then it streams from the bucket and checks out', async () => {
    const s3 = new S3rver({
      port: 0,
      address: '127.0.0.1',
      silent: true,
      directory: join(work, 's3'),
      configureBuckets: [{ name: 'backups' }],
    });
    const { port } = await s3.run();
    try {
      const endpoint = `http://127.0.0.1:${port}`;
      const remote = new S3Store({
        url: 's3://backups/ess',
        endpoint,
        credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
      });
      const name = await writeTestBackup(remote, { createdAt: day(1) }, work);
      await remote.close();
      const env = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' };
      const run = await verifyCli([`s3://backups/ess/${name}`, '--s3-endpoint', endpoint], env);
      expect(run.code, run.stderr).toBe(0);
      expect(run.json).toMatchObject({ ok: true, location: `s3://backups/ess/${name}`, members: 5 });
    } finally {
      await s3.close();
    }
  });
});

describe('verify service checks', () => {
  it('Given a media index promising a file the archive lacks, when verified, then MEDIA_MISMATCH', async () => {
    const memory = new MemoryStore('verify');
    const name = await writeTestBackup(
      memory,
      { createdAt: day(1), phantomMedia: { 'local_content/ph/an/tom': 12 } },
      work,
    );
    const result = await verifyBackup(
      { location: { store: memory, name, display: name } },
      { reporter: silentReporter },
    );
    expect(result.ok).toBe(false);
    expect(result.problems.map((p) => p.code)).toEqual(['MEDIA_MISMATCH']);
    expect(result.problems[0]!.message).toContain('do not match the media index');
  });

  it('Given a database member that is not a pg_dump custom archive, when verified, then DUMP_INVALID', async () => {
    const memory = new MemoryStore('verify-dump');
    const name = await writeTestBackup(
      memory,
      { createdAt: day(1), dumps: [{ database: 'synapse', data: Buffer.from('-- plain SQL\n'), tables: [] }] },
      work,
    );
    const result = await verifyBackup(
      { location: { store: memory, name, display: name } },
      { reporter: silentReporter },
    );
    expect(result.problems).toEqual([{ code: 'DUMP_INVALID', message: expect.stringContaining('no PGDMP header') }]);
  });

  it('Given restored counts, when compared, then excluded tables must be empty and estimates are not compared', () => {
    const db = {
      name: 'synapse',
      component: 'synapse' as const,
      member: 'postgres/synapse.dump',
      sizeBytes: 1,
      rowCounts: 'exact' as const,
      tables: [
        { name: 'public.events', rows: 5 },
        { name: 'public.users', rows: 2 },
        { name: 'public.e2e_one_time_keys_json', rows: 40 },
        { name: 'public.gone', rows: 1 },
      ],
      excludedTableData: ['e2e_one_time_keys_json'],
    };
    const restored = new Map([
      ['public.events', 5],
      ['public.users', 3],
      ['public.e2e_one_time_keys_json', 0],
      ['public.extra', 9],
    ]);
    expect(compareRowCounts(db, restored)).toEqual({
      compared: 3,
      mismatches: [{ table: 'public.users', expected: 2, actual: 3 }],
      missingTables: ['public.gone'],
      extraTables: ['public.extra'],
    });
    restored.set('public.e2e_one_time_keys_json', 4);
    expect(compareRowCounts(db, restored).mismatches).toContainEqual({
      table: 'public.e2e_one_time_keys_json',
      expected: 0,
      actual: 4,
    });
    expect(compareRowCounts({ ...db, rowCounts: 'estimate' }, restored)).toMatchObject({
      compared: 0,
      skipped: expect.any(String),
    });
  });

  it('Given archive arguments, when resolved, then paths, bare names and s3:// URLs map to the right store', () => {
    const byPath = resolveArchiveLocation('/srv/b/ess-backup_x_20250301T020000Z.tar', {});
    expect(byPath.store.location).toBe('/srv/b');
    expect(byPath.name).toBe('ess-backup_x_20250301T020000Z.tar');
    expect(resolveArchiveLocation('ess-backup_x_20250301T020000Z.tar', { output: '/srv/c' }).store.location).toBe(
      '/srv/c',
    );
    const s3 = resolveArchiveLocation('s3://bucket/a/b/ess-backup_x_20250301T020000Z.tar', {});
    expect(s3.store.location).toBe('s3://bucket/a/b');
    expect(resolveArchiveLocation('ess-backup_x.tar', { s3: 's3://bucket/p' }).store.location).toBe('s3://bucket/p');
    expect(() => resolveArchiveLocation('a/b.tar', { s3: 's3://bucket/p' })).toThrow(/object name only/);
    expect(() => resolveArchiveLocation('-', {})).toThrow();
  });
});
