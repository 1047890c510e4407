/**
 * `ess backup verify --restore-test` against the sandbox (exec protocol v4 only, the harder case for streaming a
 * dump into a pod): real pg_dump archives of the sandbox databases are restored into throwaway databases in the
 * Postgres pod (and, with --restore-test-url, on the server directly), and row counts are compared with manifests
 * that are right, or deliberately wrong. Requires `npm run build`. (real-backup.test.ts does the same on exec v5
 * with archives made by `ess backup`.)
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COUNT_ROWS_SQL } from '../../src/lib/postgres/throwaway.js';
import { LocalDirStore } from '../../src/lib/storage/local-dir.js';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import type { VerifyResult } from '../../src/services/backup/verify.js';
import { runCli, sandboxFlags } from '../helpers/cli.js';
import {
  fakeDump,
  flipByte,
  offsetOf,
  parseJson,
  removeDir,
  type TestDump,
  tempDir,
  writeTestBackup,
} from './helpers.js';

const day = (n: number) => new Date(Date.UTC(2025, 2, n, 2, 0, 0));
let sb: Sandbox;
let work: string;
let store: LocalDirStore;
let dumps: TestDump[];

function dbUrl(database: string): string {
  const url = new URL(sb.postgres.url);
  url.pathname = `/${database}`;
  return url.href;
}

async function query<T extends Record<string, unknown>>(database: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: dbUrl(database) });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

async function throwawayDatabases(): Promise<string[]> {
  const rows = await query<{ datname: string }>(
    'postgres',
    `SELECT datname FROM pg_database WHERE datname LIKE 'ess\\_verify\\_%'`,
  );
  return rows.map((r) => r.datname);
}

/** A real custom-format dump of one sandbox database (local pg_dump, same major as the server) and its row counts. */
async function dumpDatabase(database: string, component: TestDump['component'], exclude: string[]): Promise<TestDump> {
  const path = join(work, `${database}.dump`);
  execFileSync(join(sb.postgres.binDir, 'pg_dump'), [
    '-Fc',
    '-Z6',
    ...exclude.map((t) => `--exclude-table-data=${t}`),
    '-f',
    path,
    '-d',
    dbUrl(database),
  ]);
  const counts = await query<{ name: string; rows: string }>(database, COUNT_ROWS_SQL);
  return {
    database,
    component,
    data: { path },
    tables: counts.map((c) => ({ name: c.name, rows: Number(c.rows) })),
    ...(exclude.length ? { excludedTableData: exclude } : {}),
  };
}

beforeAll(async () => {
  work = await tempDir();
  store = new LocalDirStore(join(work, 'backups'));
  sb = await startSandbox({
    users: 20,
    mediaMb: 1,
    execProtocol: 'v4-only',
    podStartDelayMs: 150,
    podStopDelayMs: 150,
  });
  dumps = [
    await dumpDatabase(sb.seed.databases.synapse, 'synapse', ['public.e2e_one_time_keys_json']),
    await dumpDatabase(sb.seed.databases.mas, 'mas', []),
  ];
});

afterAll(async () => {
  await sb?.stop();
  await removeDir(work);
});

async function verify(args: string[]) {
  const run = await runCli(['backup', 'verify', ...args, '--json', ...sandboxFlags(sb)]);
  return { ...run, json: parseJson<VerifyResult & { error?: { code: string } }>(run.stdout) };
}

describe('ess backup verify --restore-test (sandbox, exec v4)', () => {
  it('Given real dumps with matching counts, when restore-tested in the Postgres pod, then every table matches and the throwaway databases are gone', async () => {
    const synapse = dumps[0]!;
    expect(synapse.tables.find((t) => t.name === 'public.events')!.rows).toBeGreaterThan(0);
    // The manifest records the live count of the one-time keys; the dump leaves their data out.
    expect(synapse.tables.find((t) => t.name === 'public.e2e_one_time_keys_json')!.rows).toBeGreaterThan(0);
    const name = await writeTestBackup(store, { createdAt: day(1), dumps }, work);
    const run = await verify([join(store.dir, name), '--restore-test']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.json.ok).toBe(true);
    expect(run.json.restoreTest).toEqual({
      ran: true,
      server: `the Postgres pod ${sb.namespace}/${sb.layout.postgresPod}`,
    });
    expect(run.json.databases.map((d) => [d.database, d.restored, d.rows?.mismatches.length])).toEqual([
      [sb.seed.databases.synapse, true, 0],
      [sb.seed.databases.mas, true, 0],
    ]);
    expect(run.json.databases[0]!.rows!.compared).toBe(synapse.tables.length);
    expect(run.json.databases[0]!.throwawayDatabase).toMatch(/^ess_verify_[0-9a-f]{12}$/);
    expect(await throwawayDatabases()).toEqual([]);
  });

  it('Given a manifest whose counts do not match its dump, when restore-tested, then it FAILS naming the table (exit 1)', async () => {
    const tampered = dumps.map((d, i) =>
      i === 0
        ? { ...d, tables: d.tables.map((t) => (t.name === 'public.events' ? { ...t, rows: t.rows + 1 } : t)) }
        : d,
    );
    const name = await writeTestBackup(store, { createdAt: day(2), dumps: tampered }, work);
    const run = await verify([join(store.dir, name), '--restore-test']);
    expect(run.code).toBe(1);
    expect(run.json.problems).toEqual([
      { code: 'ROWS_MISMATCH', message: expect.stringContaining('table public.events restored') },
    ]);
    expect(run.stderr).toContain('FAILED verification');
    expect(await throwawayDatabases()).toEqual([]);

    // Without the restore test the same archive is intact: only restoring finds the mismatch.
    const plain = await verify([join(store.dir, name)]);
    expect(plain.code, plain.stderr).toBe(0);
  });

  it('Given a dump damaged inside the archive, when restore-tested, then the read fails, and nothing is left behind', async () => {
    const name = await writeTestBackup(store, { createdAt: day(3), dumps }, work);
    const path = join(store.dir, name);
    // A byte well inside the synapse dump member (its data follows the 512-byte tar header).
    const start = await offsetOf(path, Buffer.from('PGDMP'));
    await flipByte(path, start + 4000);
    const run = await verify([path, '--restore-test']);
    expect(run.code).toBe(1);
    // Only the damage is reported, not the failed restore it caused.
    expect(run.json.problems.map((p) => p.code)).toEqual(['ARCHIVE_CORRUPT']);
    expect(await throwawayDatabases()).toEqual([]);
  });

  it('Given --restore-test-url, when verified, then the local pg_restore restores on that server; a newer dump is refused (exit 4)', async () => {
    const good = await writeTestBackup(store, { createdAt: day(4), dumps }, work);
    const run = await verify([join(store.dir, good), '--restore-test-url', sb.postgres.url]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.json.restoreTest.server).toBe(`the PostgreSQL server at ${new URL(sb.postgres.url).host}`);
    expect(run.json.databases.every((d) => d.restored && d.rows!.mismatches.length === 0)).toBe(true);
    expect(await throwawayDatabases()).toEqual([]);

    const newer = await writeTestBackup(
      store,
      {
        createdAt: day(5),
        postgresVersion: '17.5',
        dumps: [{ database: 'synapse', data: fakeDump(2000), tables: [] }],
      },
      work,
    );
    const refused = await verify([join(store.dir, newer), '--restore-test-url', sb.postgres.url]);
    expect(refused.code).toBe(4);
    expect(refused.json.error).toMatchObject({ code: 'RESTORE_TEST_TOO_OLD' });

    // A restore-test server that is down says nothing about the backup: "could not verify" (4), not "bad" (1).
    const down = await verify([join(store.dir, good), '--restore-test-url', 'postgres://u:p@127.0.0.1:1/postgres']);
    expect(down.code, down.stderr).toBe(4);
    expect(down.json.error).toMatchObject({ code: 'RESTORE_TEST_CONNECT', exitCode: 4 });
  });

  it('Given SIGINT while a dump is being restored, when verified, then it exits 130 and drops the throwaway database', async () => {
    // A database big enough that its restore is still running when the signal arrives.
    await query('postgres', 'CREATE DATABASE bulk');
    await query('bulk', 'CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 400000) g');
    const bulk = await dumpDatabase('bulk', 'other', []);
    const name = await writeTestBackup(store, { createdAt: day(6), dumps: [bulk] }, work);
    let restoring!: () => void;
    const started = new Promise<void>((resolve) => {
      restoring = resolve;
    });
    const run = await runCli(['backup', 'verify', join(store.dir, name), '--restore-test', ...sandboxFlags(sb)], {
      onSpawn: (child) => {
        let seen = '';
        child.stderr?.on('data', (chunk: Buffer) => {
          seen += chunk.toString('utf8');
          if (seen.includes('Restoring bulk')) restoring();
        });
        void started.then(async () => {
          // Give pg_restore a moment to start writing, then interrupt.
          await new Promise((resolve) => setTimeout(resolve, 100));
          child.kill('SIGINT');
        });
      },
    });
    expect(run.code, run.stderr).toBe(130);
    expect(run.stderr).toContain('Interrupted by SIGINT');
    expect(await throwawayDatabases()).toEqual([]);
  });
});
