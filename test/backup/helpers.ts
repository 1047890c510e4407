/** Shared helpers of the `ess backup` tests: archives on disk, database facts, workload state in the sandbox. */
import { execFileSync } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { expect } from 'vitest';
import type { BackupManifest } from '../../src/lib/archive/manifest.js';
import type { Sandbox } from '../../src/sandbox/index.js';
import { RBS, STOPPED_BY, workloads } from '../lifecycle/helpers.js';

export { allReady, waitFor, workloads } from '../lifecycle/helpers.js';

/** Synapse and MAS workloads of the seeded matrix-stack deployment (what a backup stops). */
export const WRITERS = [
  'ess-synapse-main',
  'ess-synapse-event-persist',
  'ess-synapse-fed-sender',
  'ess-synapse-synchrotron',
  'ess-matrix-authentication-service',
];

/** Replica counts of every workload, by name. */
export function replicaCounts(sandbox: Sandbox): Map<string, number> {
  return new Map([...workloads(sandbox)].map(([name, w]) => [name, w.replicas]));
}

/** Every workload is at `before`'s count, ready, and carries no ess annotation. */
export function expectWorkloadsBack(sandbox: Sandbox, before: Map<string, number>): void {
  for (const [name, w] of workloads(sandbox)) {
    expect(w.replicas, name).toBe(before.get(name));
    expect(w.ready, `${name} ready`).toBe(before.get(name));
    expect(w.annotations[RBS], `${name} ${RBS}`).toBeUndefined();
    expect(w.annotations[STOPPED_BY], `${name} ${STOPPED_BY}`).toBeUndefined();
  }
}

/** Archive files (complete-looking names) and leftovers (.partial) in a directory. */
export async function archivesIn(dir: string): Promise<{ archives: string[]; partial: string[] }> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return {
    archives: names.filter((n) => /^ess-backup_.*\.tar(\.age)?$/.test(n)).sort(),
    partial: names.filter((n) => n.endsWith('.partial')),
  };
}

/** Extracts a plain archive with the system tar (as a human would) and checks it with sha256sum. */
export function extractArchive(archive: string, into: string): void {
  execFileSync('tar', ['-xf', archive, '-C', into]);
  execFileSync('sha256sum', ['-c', '--strict', '--quiet', 'checksums.sha256'], { cwd: into });
}

export async function readManifestFile(dir: string): Promise<BackupManifest> {
  return JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as BackupManifest;
}

/** `pg_restore -l` of a dump file (the local PostgreSQL 15 tools, same major as the sandbox server). */
export function restoreList(sandbox: Sandbox, dump: string): string {
  return execFileSync(join(sandbox.postgres.binDir, 'pg_restore'), ['-l', dump], { encoding: 'utf8' });
}

/** A client of one database of the sandbox's PostgreSQL (superuser). */
export async function connectDb(sandbox: Sandbox, database: string): Promise<pg.Client> {
  const url = new URL(sandbox.postgres.url);
  url.pathname = `/${database}`;
  const client = new pg.Client({ connectionString: url.toString() });
  await client.connect();
  return client;
}

/** Exact row counts of every user table (`schema.table` → rows). */
export async function tableCounts(sandbox: Sandbox, database: string): Promise<Map<string, number>> {
  const client = await connectDb(sandbox, database);
  try {
    const tables = await client.query<{ name: string; schema: string; table: string }>(
      `SELECT n.nspname AS schema, c.relname AS table FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'`,
    );
    const counts = new Map<string, number>();
    for (const t of tables.rows) {
      const r = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM "${t.schema}"."${t.table}"`);
      counts.set(`${t.schema}.${t.table}`, Number(r.rows[0]!.n));
    }
    return counts;
  } finally {
    await client.end();
  }
}

/** Runs the backup command line in a form that reads well in failure messages. */
export function describeRun(result: { code: number | null; stderr: string }): string {
  return `exit ${result.code}\n${result.stderr.slice(-3000)}`;
}

/** Runs the built CLI with stdout going to a file (binary-safe, for `-o -`); resolves with exit code and stderr. */
export async function runCliToFile(args: string[], file: string): Promise<{ code: number | null; stderr: string }> {
  const { spawn } = await import('node:child_process');
  const { createWriteStream } = await import('node:fs');
  const { repoRoot } = await import('../helpers/cli.js');
  return new Promise((resolvePromise, reject) => {
    const out = createWriteStream(file);
    const child = spawn(process.execPath, [join(repoRoot, 'bin', 'run.js'), ...args], {
      cwd: repoRoot,
      env: { ...process.env, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const err: Buffer[] = [];
    child.stdout.pipe(out);
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => {
      out.end(() => resolvePromise({ code, stderr: Buffer.concat(err).toString('utf8') }));
    });
  });
}
