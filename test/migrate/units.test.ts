/**
 * The pure and local parts of migrate: tar writing and indexing (checked against GNU tar), input recognition,
 * homeserver.yaml, signing keys, schema comparison, media listings.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import MigrateImport from '../../src/commands/migrate/import.js';
import { ExitCode, PreconditionError } from '../../src/lib/errors.js';
import { classify, sniffInput } from '../../src/lib/migrate/file-kind.js';
import { readHomeserverConfig, settingsFromUrl } from '../../src/lib/migrate/homeserver.js';
import { isValidMediaPath, listMediaDir, listMediaTarFile } from '../../src/lib/migrate/media.js';
import { checkSchema } from '../../src/lib/migrate/schema-check.js';
import { isRotatedByInitSecrets, parseSigningKey } from '../../src/lib/migrate/signing-key.js';
import { indexTar } from '../../src/lib/migrate/tar-index.js';
import { packTar, type TarFileEntry, tarSize } from '../../src/lib/migrate/tar-write.js';
import type { Reporter } from '../../src/lib/output/log.js';
import { collectIdentity, openImportSource } from '../../src/services/migrate/import-source.js';
import { missingFiles, uploadEntries } from '../../src/services/migrate/media-upload.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'ess-migrate-units-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function writeStream(stream: Readable, file: string): Promise<number> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  const buf = Buffer.concat(chunks);
  writeFileSync(file, buf);
  return buf.length;
}

describe('tar writer and index', () => {
  const long = `remote_content/${'a'.repeat(60)}.example.org/ab/cd/${'x'.repeat(120)}`;
  const entries: TarFileEntry[] = [
    { name: 'local_content', size: 0, mtime: 1_700_000_000, type: 'directory', uid: 10091, gid: 10091 },
    {
      name: 'local_content/ab/cd/efghij',
      size: 5,
      mtime: 1_700_000_000,
      uid: 10091,
      gid: 10091,
      open: () => Readable.from([Buffer.from('hello')]),
    },
    { name: 'empty', size: 0, mtime: 1_700_000_000 },
    { name: long, size: 1000, mtime: 1_700_000_000, open: () => Readable.from([Buffer.alloc(1000, 7)]) },
  ];

  it('writes exactly tarSize bytes that GNU tar extracts, and indexes them back', async () => {
    const file = path.join(dir, 'a.tar');
    const written = await writeStream(packTar(entries), file);
    expect(written).toBe(tarSize(entries));
    const out = path.join(dir, 'x');
    mkdirSync(out);
    execFileSync('tar', ['-x', '-f', file, '-C', out]);
    expect(readFileSync(path.join(out, 'local_content/ab/cd/efghij'), 'utf8')).toBe('hello');
    expect(statSync(path.join(out, long)).size).toBe(1000);
    const listed = execFileSync('tar', ['-t', '-v', '--numeric-owner', '-f', file], { encoding: 'utf8' });
    expect(listed).toMatch(/10091\/10091 .* local_content\/ab\/cd\/efghij/);
    const index = await indexTar(file);
    expect(index.map((m) => [m.name, m.type, m.size])).toEqual([
      ['local_content/', 'directory', 0],
      ['local_content/ab/cd/efghij', 'file', 5],
      ['empty', 'file', 0],
      [long, 'file', 1000],
    ]);
    expect(
      readFileSync(file)
        .subarray(index[1]!.offset, index[1]!.offset + 5)
        .toString(),
    ).toBe('hello');
  });

  it('indexes tars written by GNU tar (long names) and refuses a truncated one', async () => {
    const src = path.join(dir, 'store');
    mkdirSync(path.join(src, 'local_content', 'ab', 'cd'), { recursive: true });
    mkdirSync(path.join(src, 'remote_content', 'matrix.org', 'zz'), { recursive: true });
    writeFileSync(path.join(src, 'local_content', 'ab', 'cd', 'efgh'), 'media');
    writeFileSync(path.join(src, 'remote_content', 'matrix.org', 'zz', 'y'.repeat(150)), 'cache');
    const gnu = path.join(dir, 'gnu.tar');
    execFileSync('tar', ['-c', '-f', gnu, '-C', src, '.']);
    const listing = await listMediaTarFile(gnu, { includeCaches: false });
    expect(listing.files.map((f) => f.path)).toEqual(['local_content/ab/cd/efgh']);
    expect(listing.skippedCaches).toEqual({ files: 1, bytes: 5 });
    const withCaches = await listMediaTarFile(gnu, { includeCaches: true });
    expect(withCaches.files.map((f) => f.path)).toContain(`remote_content/matrix.org/zz/${'y'.repeat(150)}`);
    // A tar of the directory itself (media_store/...) is recognised too.
    const nested = path.join(dir, 'nested.tar');
    execFileSync('tar', ['-c', '-f', nested, '-C', dir, 'store']);
    expect((await listMediaTarFile(nested, { includeCaches: false })).files.map((f) => f.path)).toEqual([
      'local_content/ab/cd/efgh',
    ]);
    const cut = path.join(dir, 'cut.tar');
    writeFileSync(cut, readFileSync(gnu).subarray(0, 1024 + 100));
    await expect(indexTar(cut)).rejects.toThrow(/truncated/);
  });

  it('lists a media directory without the caches and plans a resumable upload', async () => {
    const listing = await listMediaDir(path.join(dir, 'store'), { includeCaches: false });
    expect(listing.files.map((f) => [f.path, f.size])).toEqual([['local_content/ab/cd/efgh', 5]]);
    expect(listing.skippedCaches.files).toBe(1);
    const remote = new Map([['local_content/ab/cd/efgh', 5]]);
    expect(missingFiles(listing, remote).send).toEqual([]);
    expect(missingFiles(listing, new Map([['local_content/ab/cd/efgh', 2]])).send).toHaveLength(1);
    const planned = uploadEntries(listing.files);
    expect(planned.map((e) => [e.name, e.type ?? 'file', e.uid])).toEqual([
      ['local_content', 'directory', 10091],
      ['local_content/ab', 'directory', 10091],
      ['local_content/ab/cd', 'directory', 10091],
      ['local_content/ab/cd/efgh', 'file', 10091],
    ]);
    expect(isValidMediaPath('local_content/ab/cd/efgh')).toBe(true);
    expect(isValidMediaPath('local_content/../../etc/passwd')).toBe(false);
    expect(isValidMediaPath('local_content/a b')).toBe(false);
  });
});

describe('input recognition', () => {
  it('tells dumps, SQL, SQLite, gzip and tars apart', async () => {
    expect(classify(Buffer.from('PGDMP\x01\x0e\x00'))).toBe('pg-custom');
    expect(classify(Buffer.from('--\n-- PostgreSQL database dump\n--\n'))).toBe('plain-sql');
    expect(classify(Buffer.from('SQLite format 3\0rest'))).toBe('sqlite');
    expect(classify(Buffer.from([0x1f, 0x8b, 8, 0]))).toBe('gzip');
    expect(classify(Buffer.alloc(0))).toBe('empty');
    expect(classify(Buffer.from('random bytes \0\0'))).toBe('unknown');
    const tarFile = path.join(dir, 'manifest-first.tar');
    await writeStream(
      packTar([{ name: 'manifest.json', size: 2, mtime: 0, open: () => Readable.from([Buffer.from('{}')]) }]),
      tarFile,
    );
    expect((await sniffInput(tarFile)).kind).toBe('bundle');
    expect((await sniffInput(path.join(dir, 'gnu.tar'))).kind).toBe('tar');
  });
});

describe('homeserver.yaml', () => {
  it('reads database, secrets (inline and _path), signing key, media, pepper and login setup', async () => {
    const conf = path.join(dir, 'conf');
    mkdirSync(conf);
    writeFileSync(path.join(conf, 'reg.secret'), 'from-file\n');
    writeFileSync(
      path.join(conf, 'homeserver.yaml'),
      [
        'server_name: example.org',
        'database:',
        '  name: psycopg2',
        '  args: {user: synapse, password: "p@ss", dbname: synapse, host: db, port: 5433}',
        'signing_key_path: example.org.signing.key',
        'macaroon_secret_key: mac',
        'registration_shared_secret_path: reg.secret',
        'media_store_path: /var/lib/synapse/media_store',
        'password_config: {pepper: salty}',
        'oidc_providers: [{idp_id: google}]',
      ].join('\n'),
    );
    const { config, warnings } = await readHomeserverConfig(path.join(conf, 'homeserver.yaml'));
    expect(warnings).toEqual([]);
    expect(config).toMatchObject({
      serverName: 'example.org',
      database: {
        engine: 'postgres',
        settings: { user: 'synapse', password: 'p@ss', database: 'synapse', host: 'db', port: 5433 },
      },
      signingKeyPath: path.join(conf, 'example.org.signing.key'),
      secrets: { macaroonSecretKey: 'mac', registrationSharedSecret: 'from-file' },
      mediaStorePath: '/var/lib/synapse/media_store',
      pepper: true,
      passwordLogin: true,
      sso: ['oidc'],
      delegatedToMas: false,
    });
    writeFileSync(
      path.join(conf, 'sqlite.yaml'),
      'server_name: x\ndatabase: {name: sqlite3, args: {database: homeserver.db}}\n',
    );
    expect((await readHomeserverConfig(path.join(conf, 'sqlite.yaml'))).config.database).toEqual({
      engine: 'sqlite',
      path: path.join(conf, 'homeserver.db'),
    });
    expect(settingsFromUrl('postgres://u:p%40ss@h:6543/db?sslmode=require')).toEqual({
      host: 'h',
      port: 6543,
      user: 'u',
      password: 'p@ss',
      database: 'db',
      sslmode: 'require',
    });
    expect(() => settingsFromUrl('sqlite:///x.db')).toThrow(/synapse_port_db|SQLite/);
  });

  it('parses signing keys and spots the id-0 keys the chart rotates', () => {
    const seed = Buffer.alloc(32, 1).toString('base64').replace(/=+$/, '');
    const key = parseSigningKey(`ed25519 a_AbCd ${seed}\n`, 'k');
    expect(key.keyId).toBe('a_AbCd');
    expect(isRotatedByInitSecrets(key)).toBe(false);
    expect(isRotatedByInitSecrets(parseSigningKey(`ed25519 0 ${seed}`, 'k'))).toBe(true);
    expect(() => parseSigningKey('not a key', 'k')).toThrow(/not a Synapse signing key/);
    expect(() => parseSigningKey('ed25519 a AAAA', 'k')).toThrow(/not 32/);
  });
});

describe('schema comparison', () => {
  const dump = (version: number, compat: number, deltas: string[] = []) => ({
    version,
    compatVersion: compat,
    upgraded: true,
    appliedDeltas: deltas,
  });

  it('accepts the same or an older schema and refuses a newer one', () => {
    expect(checkSchema(dump(94, 84), { synapseVersion: 'v1.157.1' })).toMatchObject({
      ok: true,
      kind: 'same',
      targetVersion: 94,
    });
    expect(checkSchema(dump(88, 84), { synapseVersion: 'v1.157.1' })).toMatchObject({ ok: true, kind: 'upgrade' });
    expect(checkSchema(dump(94, 84), { synapseVersion: 'v1.140.0' })).toMatchObject({
      ok: false,
      code: 'SCHEMA_TOO_NEW',
      targetVersion: 92,
    });
    const tooNew = checkSchema(dump(99, 95), { synapseVersion: 'v1.157.1' });
    expect(tooNew).toMatchObject({ ok: false, code: 'SCHEMA_TOO_NEW' });
    expect(tooNew.ok ? '' : tooNew.next.join()).toMatch(/old Synapse/);
  });

  it('refuses a dump with deltas the live database of the same version does not have', () => {
    const live = { synapseVersion: 'v1.157.1', liveVersion: 94, liveDeltas: ['94/01_a.sql', '94/02_b.sql'] };
    expect(checkSchema(dump(94, 84, ['93/x.sql', '94/01_a.sql']), live)).toMatchObject({ ok: true });
    expect(checkSchema(dump(94, 84, ['94/01_a.sql', '94/09_new.sql']), live)).toMatchObject({
      ok: false,
      code: 'SCHEMA_TOO_NEW',
    });
    // A live database without deltas at its version (schema-only load) cannot vouch for them: not refused.
    expect(checkSchema(dump(94, 84, ['94/09_new.sql']), { ...live, liveDeltas: ['93/x.sql'] })).toMatchObject({
      ok: true,
    });
  });

  it('uses the live database when the image version is unknown', () => {
    expect(checkSchema(dump(94, 84), { synapseVersion: 'latest', liveVersion: 94 })).toMatchObject({
      ok: true,
      targetVersion: 94,
    });
    expect(checkSchema(dump(94, 84), {})).toMatchObject({ ok: false, code: 'SCHEMA_UNKNOWN' });
  });
});

describe('import input and flag errors', () => {
  const quiet = { info() {}, warn() {}, debug() {}, progress() {} } as unknown as Reporter;

  it('names the missing file and the flag to fix, with exit 4', async () => {
    const missing = path.join(dir, 'nonexistent');
    await expect(openImportSource(`${missing}.dump`, quiet)).rejects.toMatchObject({
      exitCode: ExitCode.PRECONDITION,
      message: expect.stringMatching(/nonexistent\.dump: no such file/),
      next: expect.arrayContaining([expect.stringMatching(/first argument of ess migrate import/)]),
    });
    for (const [options, flag] of [
      [{ homeserverConfig: missing }, '--homeserver-config'],
      [{ signingKey: missing }, '--signing-key'],
    ] as const) {
      const attempt = collectIdentity(options, undefined);
      await expect(attempt).rejects.toBeInstanceOf(PreconditionError);
      await expect(attempt).rejects.toMatchObject({
        message: expect.stringContaining(`${missing} (${flag}): no such file`),
        next: expect.arrayContaining([expect.stringContaining(`with ${flag}`)]),
      });
    }
  });

  it('takes --timeout as a Go duration, or a bare integer as seconds', async () => {
    const parse = (input: string) => MigrateImport.flags.timeout.parse(input, {} as never, {} as never);
    await expect(parse('10m')).resolves.toBe(600_000);
    await expect(parse('1h30m')).resolves.toBe(5_400_000);
    await expect(parse('600')).resolves.toBe(600_000);
    await expect(parse('0')).rejects.toThrow(/duration/);
    await expect(parse('ten')).rejects.toThrow(/duration/);
    await expect(parse('ten')).rejects.toMatchObject({ exitCode: 2, code: 'USAGE' });
  });
});
