/** Shared helpers of the migrate tests: SQL on the sandbox's real PostgreSQL, table fingerprints, cluster state. */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import pg from 'pg';
import type { Sandbox } from '../../src/sandbox/index.js';
import type { KubeObject } from '../../src/sandbox/types.js';

/** Runs SQL (one or more statements) in a database of the sandbox and returns the rows of the last one. */
export async function sql<T extends Record<string, unknown> = Record<string, unknown>>(
  sandbox: Sandbox,
  database: string,
  text: string,
): Promise<T[]> {
  const client = new pg.Client({
    host: sandbox.postgres.host,
    port: sandbox.postgres.port,
    user: 'postgres',
    database,
  });
  await client.connect();
  try {
    const res = await client.query(text);
    const last = Array.isArray(res) ? res.at(-1) : res;
    return (last?.rows ?? []) as T[];
  } finally {
    await client.end();
  }
}

/** A copy of the sandbox's synapse database (the "old server"), made from it as a template. */
export async function copyDatabase(sandbox: Sandbox, name: string, from = 'synapse'): Promise<void> {
  await sql(sandbox, 'postgres', `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  await sql(sandbox, 'postgres', `CREATE DATABASE "${name}" TEMPLATE "${from}"`);
}

/** md5 over every row of every public table (sorted), per table. */
export async function fingerprint(sandbox: Sandbox, database: string): Promise<Record<string, string>> {
  const tables = await sql<{ t: string }>(
    sandbox,
    database,
    "SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
  );
  const out: Record<string, string> = {};
  for (const { t } of tables) {
    const [row] = await sql<{ h: string }>(
      sandbox,
      database,
      `SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) AS h FROM "${t}" x`,
    );
    out[t] = row?.h ?? '';
  }
  return out;
}

/** pg_dump -Fc -O of a sandbox database into `file` with the sandbox's own tools. */
export function dumpDatabase(sandbox: Sandbox, database: string, file: string, extra: string[] = []): void {
  execFileSync(path.join(sandbox.postgres.binDir, 'pg_dump'), [
    '-h',
    sandbox.postgres.host,
    '-p',
    String(sandbox.postgres.port),
    '-U',
    'postgres',
    '-d',
    database,
    '-Fc',
    '-O',
    ...extra,
    '-f',
    file,
  ]);
}

/** Replicas and ess annotations of the Synapse and MAS workloads, and whether the ess lock exists. */
export function clusterState(sandbox: Sandbox): {
  workloads: Record<string, { replicas: number; annotations: string[] }>;
  lock: boolean;
} {
  const workloads: Record<string, { replicas: number; annotations: string[] }> = {};
  for (const kind of ['StatefulSet', 'Deployment']) {
    for (const obj of sandbox.store.list(sandbox.store.resourceByKind(kind), sandbox.namespace)) {
      const o = obj as KubeObject & { spec?: { replicas?: number } };
      workloads[o.metadata.name] = {
        replicas: o.spec?.replicas ?? 1,
        annotations: Object.keys(o.metadata.annotations ?? {}).filter((k) => k.startsWith('ess.element.io/')),
      };
    }
  }
  const lock = sandbox.store.get(
    sandbox.store.resourceByKind('Lease'),
    sandbox.namespace,
    `${sandbox.release}-ess-lock`,
  );
  return { workloads, lock: Boolean(lock) };
}

/** The data of a Secret, decoded. */
export function secretData(
  sandbox: Sandbox,
  name: string,
): { data: Record<string, string>; labels: Record<string, string> } | undefined {
  const s = sandbox.store.get(sandbox.store.resourceByKind('Secret'), sandbox.namespace, name) as
    | (KubeObject & { data?: Record<string, string> })
    | undefined;
  if (!s) return undefined;
  return {
    data: Object.fromEntries(
      Object.entries(s.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]),
    ),
    labels: s.metadata.labels ?? {},
  };
}
