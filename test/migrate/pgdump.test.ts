/**
 * The custom-format reader against dumps written by the real pg_dump of this machine, compared with what the real
 * pg_restore reads from the same files.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import {
  closeSync,
  copyFileSync,
  ftruncateSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyColumns, copyRows, decodeCopyField } from '../../src/lib/migrate/copy-text.js';
import { readDumpFacts } from '../../src/lib/migrate/dump-facts.js';
import {
  DumpFormatError,
  findTableData,
  openTableData,
  readDumpToc,
  tocList,
  verifyDataBlocks,
} from '../../src/lib/migrate/pgdump.js';
import { type RunningPostgres, startPostgres } from '../../src/sandbox/postgres.js';

let pg: RunningPostgres;
let dir: string;
let dumpFile: string;
let plainDump: string;
let pipeDump: string;

function psql(sql: string, db = 'src'): string {
  return execFileSync(
    path.join(pg.binDir, 'psql'),
    [
      '-h',
      pg.host,
      '-p',
      String(pg.port),
      '-U',
      'postgres',
      '-d',
      db,
      '-X',
      '-A',
      '-t',
      '-v',
      'ON_ERROR_STOP=1',
      '-c',
      sql,
    ],
    {
      encoding: 'utf8',
    },
  );
}

function pgDump(args: string[], out?: string): void {
  const argv = ['-h', pg.host, '-p', String(pg.port), '-U', 'postgres', '-d', 'src', ...args];
  if (out) execFileSync(path.join(pg.binDir, 'pg_dump'), [...argv, '-f', out]);
}

function pgRestore(args: string[]): string {
  return execFileSync(path.join(pg.binDir, 'pg_restore'), args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
}

const range = (file: string) => ({ path: file, length: statSync(file).size });

async function text(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'ess-pgdump-test-'));
  pg = await startPostgres({ dataDir: path.join(dir, 'pg', 'data') });
  psql('CREATE DATABASE src', 'postgres');
  psql(`
    CREATE TABLE users (name text NOT NULL, password_hash text, creation_ts bigint, is_guest smallint DEFAULT 0, appservice_id text, deactivated smallint DEFAULT 0);
    CREATE TABLE rooms (room_id text PRIMARY KEY, creator text);
    CREATE TABLE schema_version (lock char(1) DEFAULT 'X', version int NOT NULL, upgraded bool NOT NULL);
    CREATE TABLE schema_compat_version (lock char(1) DEFAULT 'X', compat_version int NOT NULL);
    CREATE TABLE applied_schema_deltas (version int NOT NULL, file text NOT NULL);
    CREATE TABLE e2e_one_time_keys_json (user_id text, key_json text);
    CREATE TABLE big (id bigint, payload text);
    INSERT INTO users SELECT '@user' || g || ':example.org', CASE WHEN g % 3 = 0 THEN NULL ELSE 'hash' || g END, 1700000000 + g, (g % 10 = 0)::int, NULL, 0 FROM generate_series(1, 500) g;
    INSERT INTO users VALUES (E'@tab\\tnew\\nline\\\\back:example.org', 'x', 1, 0, 'bridge', 0);
    INSERT INTO rooms SELECT '!room' || g || ':example.org', '@user1:example.org' FROM generate_series(1, 7) g;
    INSERT INTO schema_version VALUES ('X', 94, true);
    INSERT INTO schema_compat_version VALUES ('X', 84);
    INSERT INTO applied_schema_deltas VALUES (93, '93/01_a.sql'), (94, '94/01_b.sql');
    INSERT INTO e2e_one_time_keys_json SELECT 'u' || g, '{}' FROM generate_series(1, 50) g;
    INSERT INTO big SELECT g, md5(g::text) || repeat(md5((g * 7)::text), 20) FROM generate_series(1, 20000) g;
    CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
  `);
  dumpFile = path.join(dir, 'src.dump');
  pgDump(['-Fc', '-O'], dumpFile);
  plainDump = path.join(dir, 'src-z0.dump');
  pgDump(['-Fc', '-O', '-Z0'], plainDump);
  // Written to a pipe: no data offsets in the TOC.
  pipeDump = path.join(dir, 'src-pipe.dump');
  const out = spawnSync(
    path.join(pg.binDir, 'pg_dump'),
    ['-h', pg.host, '-p', String(pg.port), '-U', 'postgres', '-d', 'src', '-Fc', '-O'],
    {
      maxBuffer: 256 * 1024 * 1024,
    },
  );
  writeFileSync(pipeDump, out.stdout);
}, 60_000);

afterAll(async () => {
  await pg?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('custom-format reader', () => {
  it('lists the same TOC as pg_restore -l, for file, uncompressed and piped dumps', async () => {
    for (const file of [dumpFile, plainDump, pipeDump]) {
      const toc = await readDumpToc(range(file));
      const ours = tocList(toc)
        .split('\n')
        .filter((l) => l && !l.startsWith(';'));
      const theirs = pgRestore(['-l', file])
        .split('\n')
        .filter((l) => l && !l.startsWith(';'));
      expect(ours).toEqual(theirs);
    }
    const toc = await readDumpToc(range(dumpFile));
    expect(toc.header.compression).toBe('gzip');
    expect(toc.header.database).toBe('src');
    expect(toc.header.pgDumpVersion).toMatch(/^1[5-9]/);
    expect((await readDumpToc(range(plainDump))).header.compression).toBe('none');
    expect(
      (await readDumpToc(range(pipeDump))).entries.filter((e) => e.dataState === 'not-set').length,
    ).toBeGreaterThan(0);
  });

  it('streams a table exactly as pg_restore --data-only prints it', async () => {
    for (const file of [dumpFile, plainDump, pipeDump]) {
      const toc = await readDumpToc(range(file));
      for (const table of ['users', 'big']) {
        const ours = await text(openTableData(range(file), toc, findTableData(toc, table)!));
        const theirs = pgRestore(['--data-only', '-t', table, '-f', '-', file]);
        const copy = theirs.slice(theirs.indexOf('FROM stdin;\n') + 'FROM stdin;\n'.length);
        expect(ours.slice(0, ours.indexOf('\\.\n'))).toBe(copy.slice(0, copy.indexOf('\\.\n')));
      }
    }
  });

  it('decodes COPY rows, escapes included', async () => {
    const toc = await readDumpToc(range(dumpFile));
    const entry = findTableData(toc, 'users')!;
    expect(copyColumns(entry.copyStmt)).toEqual([
      'name',
      'password_hash',
      'creation_ts',
      'is_guest',
      'appservice_id',
      'deactivated',
    ]);
    const names: (string | null)[] = [];
    for await (const row of copyRows(openTableData(range(dumpFile), toc, entry))) names.push(row[0] ?? null);
    expect(names).toHaveLength(501);
    expect(names).toContain('@tab\tnew\nline\\back:example.org');
    expect(decodeCopyField('\\N')).toBeNull();
    expect(decodeCopyField('a\\101\\x42')).toBe('aAB');
  });

  it('reads the Synapse facts: server names, counts, schema, one-time keys', async () => {
    const toc = await readDumpToc(range(dumpFile));
    const facts = await readDumpFacts(range(dumpFile), toc);
    expect(facts.users).toMatchObject({ total: 501, guests: 50, appservice: 1 });
    expect(facts.users?.domains).toEqual([{ domain: 'example.org', users: 501 }]);
    // 500 generated users: a third have no hash, a tenth are guests (some overlap); the bridge user is appservice.
    const expectedWithPassword = Number(
      psql(
        'SELECT count(*) FROM users WHERE password_hash IS NOT NULL AND is_guest = 0 AND appservice_id IS NULL AND deactivated = 0',
      ),
    );
    expect(facts.users?.withPassword).toBe(expectedWithPassword);
    expect(facts.rooms).toBe(7);
    expect(facts.schema).toEqual({
      version: 94,
      upgraded: true,
      compatVersion: 84,
      appliedDeltas: ['93/93/01_a.sql', '94/94/01_b.sql'],
    });
    expect(facts.oneTimeKeyData).toBe(true);
    expect(facts.functions).toEqual(['f()']);
  });

  it('accepts complete dumps and refuses every truncation', async () => {
    for (const file of [dumpFile, plainDump, pipeDump]) {
      await expect(verifyDataBlocks(range(file), await readDumpToc(range(file)))).resolves.toMatchObject({ blocks: 7 });
    }
    const size = statSync(dumpFile).size;
    const cuts = [10, 200, Math.floor(size / 3), Math.floor(size / 2), size - 100, size - 1];
    for (const source of [dumpFile, pipeDump]) {
      for (const cut of cuts) {
        const file = path.join(dir, `cut-${cut}.dump`);
        copyFileSync(source, file);
        const fd = openSync(file, 'r+');
        ftruncateSync(fd, Math.min(cut, statSync(source).size - 1));
        closeSync(fd);
        const attempt = (async () => verifyDataBlocks(range(file), await readDumpToc(range(file))))();
        await expect(attempt, `${path.basename(source)} cut at ${cut}`).rejects.toBeInstanceOf(DumpFormatError);
        await expect(attempt).rejects.toMatchObject({ reason: 'truncated' });
      }
    }
  });

  it('with inflate, reads every block and refuses damaged bytes that only pg_restore would notice', async () => {
    for (const file of [dumpFile, plainDump, pipeDump]) {
      const progress: number[] = [];
      const toc = await readDumpToc(range(file));
      await expect(
        verifyDataBlocks(range(file), toc, { inflate: true, onProgress: (done) => progress.push(done) }),
      ).resolves.toMatchObject({ blocks: 7 });
      expect(progress.at(-1)).toBe(statSync(file).size);
    }
    // Damage 4 bytes inside the compressed data of `big` (a file dump, with offsets) and of the piped dump.
    for (const source of [dumpFile, pipeDump]) {
      const toc = await readDumpToc(range(source));
      const bigStart = source === dumpFile ? findTableData(toc, 'big')!.dataOffset! : toc.dataStart;
      for (const at of [bigStart + 2000, Math.floor(statSync(source).size * 0.6)]) {
        const file = path.join(dir, `damaged-${at}.dump`);
        copyFileSync(source, file);
        const fd = openSync(file, 'r+');
        const bytes = Buffer.alloc(4);
        readSync(fd, bytes, 0, 4, at);
        for (let i = 0; i < 4; i++) bytes[i] = (bytes[i] as number) ^ 0xa5;
        writeSync(fd, bytes, 0, 4, at);
        closeSync(fd);
        const damagedToc = await readDumpToc(range(file));
        if (source === dumpFile) {
          // The quick check (block headers and the end of the last block) cannot see this: it is what pg_restore
          // reported as "could not uncompress data" after the ESS database was erased.
          await expect(verifyDataBlocks(range(file), damagedToc)).resolves.toMatchObject({ blocks: 7 });
          expect(spawnSync(path.join(pg.binDir, 'pg_restore'), ['-f', '/dev/null', file]).status).not.toBe(0);
        }
        const attempt = verifyDataBlocks(range(file), damagedToc, { inflate: true });
        await expect(attempt, `${path.basename(source)} damaged at ${at}`).rejects.toBeInstanceOf(DumpFormatError);
        await expect(attempt).rejects.toMatchObject({ reason: expect.stringMatching(/corrupt|truncated/) });
      }
    }
  });

  it('refuses files that are not custom-format dumps', async () => {
    const sql = path.join(dir, 'plain.sql');
    pgDump(['-Fp'], sql);
    await expect(readDumpToc(range(sql))).rejects.toMatchObject({ reason: 'not-custom' });
    expect(readFileSync(sql, 'utf8')).toMatch(/PostgreSQL database dump/);
  });
});
