/**
 * Steps 4–6 of a restore, all inside the Postgres pod (the tools there match the server): drop the databases and
 * the roles the backup holds, re-create the roles from the `pg_dumpall --globals-only` dump, create each database
 * as the chart does, pg_restore each dump, empty e2e_one_time_keys_json, and put the role passwords back in line
 * with the chart's Secrets. SQL that carries passwords goes over stdin, never in argv.
 */
import { Readable, Writable } from 'node:stream';
import type { ManifestDatabase } from '../../lib/archive/manifest.js';
import {
  DATABASE_PASSWORD_SOURCES,
  type DatabaseComponent,
  names,
  postgresSecretName,
} from '../../lib/deployment/components.js';
import { ExternalToolError, PreconditionError } from '../../lib/errors.js';
import type { ExecTarget, KubeClient } from '../../lib/kube/client.js';
import type { Secret } from '../../lib/kube/types.js';
import { ONE_TIME_KEYS_TABLE } from '../../lib/migrate/dump-facts.js';
import { lineSink } from '../../lib/migrate/pod-ops.js';
import { type PodPostgres, psqlInPod } from '../../lib/postgres/in-pod.js';
import { COUNT_ROWS_SQL } from '../../lib/postgres/throwaway.js';
import { sendIntoPod } from './into-pod.js';

/** Session settings for pg_restore: faster index builds; durability is moot until the restore completed. */
export const RESTORE_PGOPTIONS = '-c maintenance_work_mem=256MB -c synchronous_commit=off';

/** A SQL identifier, always quoted. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** A SQL string literal. */
export function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

function target(pg: PodPostgres): ExecTarget {
  return { namespace: pg.namespace, pod: pg.pod, container: pg.container };
}

/** Parses a role name as pg_dumpall writes it (bare or double-quoted). */
function parseRoleToken(token: string): string | undefined {
  if (/^[a-z_][a-z0-9_$]*$/.test(token)) return token;
  const quoted = /^"((?:[^"]|"")+)"$/.exec(token);
  return quoted ? quoted[1]!.replace(/""/g, '"') : undefined;
}

/** The roles script derived from `postgres/globals.sql`. */
export interface GlobalsScript {
  sql: Buffer;
  /** Roles the dump creates, minus the superuser ess connects as. */
  roles: string[];
}

/**
 * Turns a `pg_dumpall --globals-only` dump into a script that runs cleanly with ON_ERROR_STOP on a server that
 * already has some of the roles: `CREATE ROLE x;` becomes "create unless it exists" (the following `ALTER ROLE`
 * sets attributes and password exactly), and statements about the superuser ess connects as are left out (its
 * password and attributes belong to the target installation).
 */
export function globalsScript(globals: Buffer, superuser: string): GlobalsScript {
  const roles: string[] = [];
  const out: string[] = [];
  for (const line of globals.toString('utf8').split('\n')) {
    const create = /^CREATE ROLE (.+);$/.exec(line);
    if (create) {
      const role = parseRoleToken(create[1]!);
      if (role === undefined || role.includes('$')) {
        throw new PreconditionError(`The roles dump has a role name ess cannot handle: ${create[1]}.`, {
          code: 'GLOBALS_UNSUPPORTED',
          next: ['Restore the roles by hand (postgres/globals.sql in the archive), then use --only with the rest'],
        });
      }
      if (role === superuser) continue;
      roles.push(role);
      out.push(`DO $ess$BEGIN CREATE ROLE ${quoteIdent(role)}; EXCEPTION WHEN duplicate_object THEN NULL; END$ess$;`);
      continue;
    }
    const alter = /^ALTER ROLE (\S+) /.exec(line);
    if (alter && parseRoleToken(alter[1]!) === superuser) continue;
    out.push(line);
  }
  return { sql: Buffer.from(out.join('\n')), roles };
}

/** SQL that drops `roles` where possible (a role still owning objects elsewhere is kept and re-used). */
export function dropRolesSql(roles: readonly string[]): string {
  if (roles.length === 0) return 'SELECT 1';
  const list = roles.map(quoteLiteral).join(', ');
  return (
    `DO $ess$DECLARE r text; BEGIN FOREACH r IN ARRAY ARRAY[${list}]::text[] LOOP ` +
    `BEGIN EXECUTE format('DROP ROLE IF EXISTS %I', r); ` +
    `EXCEPTION WHEN dependent_objects_still_exist OR object_in_use THEN RAISE NOTICE 'kept role %', r; END; ` +
    'END LOOP; END$ess$'
  );
}

/** SQL creating a database the way the chart's configure-dbs.sh does (UTF8, C locale, template0). */
export function createDatabaseSql(database: string, owner: string): string {
  return `CREATE DATABASE ${quoteIdent(database)} OWNER ${quoteIdent(owner)} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`;
}

/** Runs a SQL script in the pod from stdin (v4-safe: the byte count is known). */
export async function runSqlScript(
  kube: KubeClient,
  pg: PodPostgres,
  sql: Buffer,
  database = 'postgres',
  signal?: AbortSignal,
): Promise<void> {
  const quiet = new Writable({ write: (_chunk, _enc, cb) => cb() });
  await sendIntoPod(
    kube,
    target(pg),
    ['psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-U', pg.superuser, '-d', database],
    Readable.from([sql]),
    sql.length,
    { signal, stdout: quiet },
  );
}

/** Terminates sessions and drops the databases (if they exist). */
export async function dropDatabases(kube: KubeClient, pg: PodPostgres, databases: readonly string[]): Promise<void> {
  for (const db of databases) await psqlInPod(kube, pg, `DROP DATABASE IF EXISTS ${quoteIdent(db)} WITH (FORCE)`);
}

/** How a dump reaches pg_restore. */
export type RestoreMethod = 'staged' | 'stream';

/** argv of pg_restore into `database` (reading `file`, or stdin when undefined). */
export function pgRestoreArgv(
  pg: PodPostgres,
  options: { database: string; jobs: number; file?: string; owner?: string },
): string[] {
  const argv = ['env', `PGOPTIONS=${RESTORE_PGOPTIONS}`, 'pg_restore', '-U', pg.superuser, '-d', options.database];
  argv.push('--exit-on-error', '--no-password');
  // Without the roles dump the dump's owners may not exist here: make everything the target owner's.
  if (options.owner) argv.push('--no-owner', `--role=${options.owner}`);
  if (options.file) {
    if (options.jobs > 1) argv.push(`--jobs=${options.jobs}`);
    argv.push(options.file);
  }
  return argv;
}

/** Keeps pg_restore's error lines for the message (it is quiet otherwise). */
function errorLines(): { sink: Writable; text: () => string } {
  const lines: string[] = [];
  const sink = lineSink((line) => {
    if (line.trim().length === 0) return;
    lines.push(line);
    if (lines.length > 40) lines.shift();
  });
  return { sink, text: () => lines.join('\n') };
}

/** pg_restore from a file staged in the pod. */
export async function restoreFromFile(
  kube: KubeClient,
  pg: PodPostgres,
  options: { database: string; jobs: number; file: string; owner?: string; signal?: AbortSignal },
): Promise<void> {
  const errors = errorLines();
  const result = await kube.exec(target(pg), pgRestoreArgv(pg, options), {
    stderr: errors.sink,
    signal: options.signal,
  });
  if (result.exitCode !== 0) {
    throw new ExternalToolError('pg_restore', `exit code ${result.exitCode}`, errors.text() || result.stderrTail);
  }
}

/** pg_restore reading the dump from stdin (one job). */
export async function restoreFromStream(
  kube: KubeClient,
  pg: PodPostgres,
  input: Readable,
  size: number,
  options: { database: string; owner?: string; signal?: AbortSignal; onBytes?: (n: number) => void },
): Promise<void> {
  await sendIntoPod(kube, target(pg), pgRestoreArgv(pg, { ...options, jobs: 1 }), input, size, {
    signal: options.signal,
    onBytes: options.onBytes,
  });
}

/** Empties e2e_one_time_keys_json when the table exists (Synapse's docs: never restore one-time keys). */
export async function truncateOneTimeKeys(kube: KubeClient, pg: PodPostgres, database: string): Promise<boolean> {
  const [[exists] = ['f']] = await psqlInPod(
    kube,
    pg,
    `SELECT to_regclass(${quoteLiteral(`public.${ONE_TIME_KEYS_TABLE}`)}) IS NOT NULL`,
    database,
  );
  if (exists !== 't') return false;
  await psqlInPod(kube, pg, `TRUNCATE public.${quoteIdent(ONE_TIME_KEYS_TABLE)}`, database);
  return true;
}

/** Exact row count of every table of a database, by `schema.table`. */
export async function countRows(kube: KubeClient, pg: PodPostgres, database: string): Promise<Map<string, number>> {
  const rows = await psqlInPod(kube, pg, COUNT_ROWS_SQL.replace(/\n/g, ' '), database);
  return new Map(rows.map(([name = '', count = '0']) => [name, Number(count)]));
}

/** Size of the databases that exist (name → bytes); missing ones are absent. */
export async function databaseSizes(
  kube: KubeClient,
  pg: PodPostgres,
  databases: readonly string[],
): Promise<Map<string, number>> {
  if (databases.length === 0) return new Map();
  const rows = await psqlInPod(
    kube,
    pg,
    `SELECT datname, pg_database_size(datname) FROM pg_database WHERE datname IN (${databases.map(quoteLiteral).join(', ')})`,
  );
  return new Map(rows.map(([name = '', bytes = '0']) => [name, Number(bytes)]));
}

/** Current owner of a database, or undefined when it does not exist. */
export async function databaseOwner(kube: KubeClient, pg: PodPostgres, database: string): Promise<string | undefined> {
  const [[owner] = []] = await psqlInPod(
    kube,
    pg,
    `SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = ${quoteLiteral(database)}`,
  );
  return owner;
}

/** Which of `roles` exist. */
export async function existingRoles(kube: KubeClient, pg: PodPostgres, roles: readonly string[]): Promise<Set<string>> {
  if (roles.length === 0) return new Set();
  const rows = await psqlInPod(
    kube,
    pg,
    `SELECT rolname FROM pg_roles WHERE rolname IN (${roles.map(quoteLiteral).join(', ')})`,
  );
  return new Set(rows.map(([r = '']) => r));
}

/** The manifest database's component, as the chart's password table knows it. */
export function passwordComponent(db: ManifestDatabase): DatabaseComponent | undefined {
  return db.component === 'synapse' || db.component === 'mas' ? db.component : undefined;
}

/**
 * Sets a role's password to what the chart's Secrets say, like the chart's postgres-ess-updater sidecar does on
 * every Postgres start: `<R>-postgres` (inline values) first, then `<R>-generated` (or the legacy
 * `<R>-init-secrets`). Returns false when no Secret holds one (e.g. the password comes from a user Secret).
 */
export async function resyncRolePassword(
  kube: KubeClient,
  pg: PodPostgres,
  options: { release: string; component: DatabaseComponent; role: string; signal?: AbortSignal },
): Promise<boolean> {
  const secrets: Record<'postgres' | 'generated', string[]> = {
    postgres: [postgresSecretName(options.release)],
    generated: [names.generatedSecret(options.release), names.legacyGeneratedSecret(options.release)],
  };
  for (const source of DATABASE_PASSWORD_SOURCES[options.component]) {
    for (const name of secrets[source.secret]) {
      const secret = await kube.get<Secret>('Secret', pg.namespace, name);
      const value = secret?.data?.[source.key];
      if (value === undefined) continue;
      const password = Buffer.from(value, 'base64').toString('utf8');
      const sql = Buffer.from(`ALTER ROLE ${quoteIdent(options.role)} WITH PASSWORD ${quoteLiteral(password)};\n`);
      await runSqlScript(kube, pg, sql, 'postgres', options.signal);
      return true;
    }
  }
  return false;
}
