/**
 * Everything `ess migrate import` must refuse before it changes anything: a wrong server name, a newer schema, a
 * plain-SQL dump, a truncated dump, a SQLite file, a bundle with a bad checksum; and no confirmation. After all of
 * them the ESS database, the workloads and the lock are exactly as before. Needs `npm run build`.
 */
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  ftruncateSync,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUNDLE } from '../../src/lib/migrate/bundle.js';
import { indexTar } from '../../src/lib/migrate/tar-index.js';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import { runCli, sandboxFlags } from '../helpers/cli.js';
import { clusterState, copyDatabase, dumpDatabase, fingerprint, sql } from './helpers.js';

describe('ess migrate import refuses bad input before touching anything', () => {
  let sandbox: Sandbox;
  let dir: string;
  let good: string;
  let before: { db: Record<string, string>; state: ReturnType<typeof clusterState> };

  const importJson = async (file: string, extra: string[] = ['--yes']) => {
    const result = await runCli(['migrate', 'import', file, ...sandboxFlags(sandbox), '--json', ...extra]);
    return { ...result, body: JSON.parse(result.stdout || '{}') };
  };

  beforeAll(async () => {
    sandbox = await startSandbox({ users: 20, mediaMb: 1 });
    dir = mkdtempSync(path.join(os.tmpdir(), 'ess-migrate-refusals-'));
    good = path.join(dir, 'good.dump');
    dumpDatabase(sandbox, 'synapse', good);
    before = { db: await fingerprint(sandbox, 'synapse'), state: clusterState(sandbox) };
  });

  afterAll(async () => {
    await sandbox?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a dump of another server name', async () => {
    await copyDatabase(sandbox, 'other');
    await sql(sandbox, 'other', "UPDATE users SET name = replace(name, ':ess.localhost', ':old.example.org')");
    const file = path.join(dir, 'other.dump');
    dumpDatabase(sandbox, 'other', file);
    const r = await importJson(file);
    expect(r.code, r.stderr).toBe(4);
    expect(r.body.error.code).toBe('SERVER_NAME_MISMATCH');
    expect(r.body.error.message).toMatch(/old\.example\.org.*ess\.localhost/);
  });

  it('refuses a dump from a newer Synapse', async () => {
    await copyDatabase(sandbox, 'newer');
    await sql(
      sandbox,
      'newer',
      'UPDATE schema_version SET version = 99; UPDATE schema_compat_version SET compat_version = 95',
    );
    const file = path.join(dir, 'newer.dump');
    dumpDatabase(sandbox, 'newer', file);
    const r = await importJson(file);
    expect(r.code, r.stderr).toBe(4);
    expect(r.body.error.code).toBe('SCHEMA_TOO_NEW');
    expect(r.body.error.next.join('\n')).toMatch(/old Synapse/);
  });

  it('refuses a plain-SQL dump, a truncated dump, a damaged dump and a SQLite file', async () => {
    const plain = path.join(dir, 'plain.sql');
    execFileSync(path.join(sandbox.postgres.binDir, 'pg_dump'), [
      '-h',
      sandbox.postgres.host,
      '-p',
      String(sandbox.postgres.port),
      '-U',
      'postgres',
      '-d',
      'synapse',
      '-Fp',
      '-f',
      plain,
    ]);
    const p = await importJson(plain);
    expect(p.code).toBe(4);
    expect(p.body.error.code).toBe('INPUT_NOT_A_DUMP');
    expect(p.body.error.message).toMatch(/plain SQL/);

    const cut = path.join(dir, 'cut.dump');
    writeFileSync(cut, '');
    execFileSync('cp', [good, cut]);
    const fd = openSync(cut, 'r+');
    ftruncateSync(fd, Math.floor(statSync(good).size * 0.6));
    closeSync(fd);
    const t = await importJson(cut);
    expect(t.code).toBe(4);
    expect(t.body.error.code).toBe('DUMP_TRUNCATED');

    // 4 bytes damaged in the middle, as a bad copy would: every block header is intact, only decompressing finds it.
    const damaged = path.join(dir, 'damaged.dump');
    execFileSync('cp', [good, damaged]);
    const dfd = openSync(damaged, 'r+');
    const at = Math.floor(statSync(good).size * 0.5);
    const bytes = Buffer.alloc(4);
    readSync(dfd, bytes, 0, 4, at);
    for (let i = 0; i < 4; i++) bytes[i] = (bytes[i] as number) ^ 0xa5;
    writeSync(dfd, bytes, 0, 4, at);
    closeSync(dfd);
    const d = await importJson(damaged);
    expect(d.code, d.stderr).toBe(4);
    expect(d.body.error.code).toMatch(/^DUMP_(CORRUPT|TRUNCATED)$/);
    expect(d.body.error.message).toMatch(/Nothing was changed/);

    const sqlite = path.join(dir, 'homeserver.db');
    execFileSync('python3', [
      '-c',
      'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute("CREATE TABLE users (name TEXT)"); c.commit()',
      sqlite,
    ]);
    const s = await importJson(sqlite);
    expect(s.code).toBe(4);
    expect(s.body.error.code).toBe('SQLITE_UNSUPPORTED');
    expect(s.body.error.next.join('\n')).toMatch(/synapse_port_db/);
  });

  it('refuses a bundle with a bad checksum', async () => {
    const bundle = path.join(dir, 'bundle.tar');
    const exp = await runCli([
      'migrate',
      'export',
      '--database-url',
      `postgres://postgres@${sandbox.postgres.host}:${sandbox.postgres.port}/synapse`,
      '--no-media',
      '-o',
      bundle,
      '--json',
    ]);
    expect(exp.code, exp.stderr).toBe(0);
    // Flip one byte in the middle of the dump member.
    const member = (await indexTar(bundle)).find((m) => m.name === BUNDLE.dump)!;
    const fd = openSync(bundle, 'r+');
    const at = member.offset + Math.floor(member.size / 2);
    const byte = Buffer.alloc(1);
    readSync(fd, byte, 0, 1, at);
    byte[0] = (byte[0] as number) ^ 0xff;
    writeSync(fd, byte, 0, 1, at);
    closeSync(fd);
    const r = await importJson(bundle);
    expect(r.code, r.stderr).toBe(4);
    expect(r.body.error.code).toBe('BUNDLE_INVALID');
    expect(r.body.error.message).toMatch(/SHA-256/);
  });

  it('needs --yes without a TTY, and --dry-run only prints the plan', async () => {
    const r = await importJson(good, []);
    expect(r.code).toBe(4);
    expect(r.body.error.code).toBe('CONFIRMATION_REQUIRED');
    const dry = await runCli(['migrate', 'import', good, ...sandboxFlags(sandbox), '--dry-run', '--no-media']);
    expect([0, 3]).toContain(dry.code);
    expect(dry.stdout).toMatch(/Plan \(dry run: nothing was changed\)/);
    expect(dry.stdout).toMatch(/ERASE database synapse/);
  });

  it('left the database, the workloads and the lock exactly as they were', async () => {
    expect(await fingerprint(sandbox, 'synapse')).toEqual(before.db);
    expect(clusterState(sandbox)).toEqual(before.state);
  });
});
