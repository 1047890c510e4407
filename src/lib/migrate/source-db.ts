/**
 * The old Synapse database on the old host: facts read with SQL (pg driver) and the dump made with the local
 * `pg_dump`. Credentials go through the libpq environment, never argv.
 */
import { spawn } from 'node:child_process';
import { stat } from 'node:fs/promises';
import pg from 'pg';
import { ExternalToolError, InterruptedError, PreconditionError } from '../errors.js';
import { libpqEnv, type PostgresSettings } from './homeserver.js';

export interface SourceFacts {
  database: string;
  serverVersion: string;
  databaseBytes: number;
  schemaVersion?: number;
  schemaCompatVersion?: number;
  users: number;
  /** Server names in users.name with counts, most users first. */
  domains: { domain: string; users: number }[];
  /** Other sessions connected to the database (a running Synapse holds several). */
  otherSessions: { application: string; user: string; count: number }[];
  /** Estimated rows per table (pg_class.reltuples; -1 = never analysed). */
  tables: { name: string; rows: number }[];
}

/** Connects to the source database and reads the facts the export and its manifest need. */
export async function readSourceFacts(settings: PostgresSettings): Promise<SourceFacts> {
  const client = new pg.Client({
    host: settings.host,
    port: settings.port,
    user: settings.user,
    password: settings.password,
    database: settings.database,
    ssl:
      settings.sslmode && !['disable', 'allow', 'prefer'].includes(settings.sslmode)
        ? { rejectUnauthorized: settings.sslmode === 'verify-full' }
        : undefined,
    connectionTimeoutMillis: 15_000,
  });
  try {
    await client.connect();
  } catch (error) {
    throw new PreconditionError(`Cannot connect to the Synapse database: ${(error as Error).message}`, {
      code: 'SOURCE_DB_UNREACHABLE',
      next: [
        'Check the database settings in homeserver.yaml (database.args), or pass --database-url postgres://USER:PASSWORD@HOST:5432/DB',
        'Run ess migrate export on a host that can reach the database',
      ],
    });
  }
  try {
    await client.query('SET default_transaction_read_only = on');
    const one = async <T>(sql: string): Promise<T | undefined> => (await client.query(sql)).rows[0] as T | undefined;
    const basics = await one<{ db: string; version: string; bytes: string }>(
      "SELECT current_database() AS db, current_setting('server_version') AS version, pg_database_size(current_database())::text AS bytes",
    );
    const has = async (table: string) =>
      Boolean((await one<{ t: string | null }>(`SELECT to_regclass('public.${table}')::text AS t`))?.t);
    let schemaVersion: number | undefined;
    let schemaCompatVersion: number | undefined;
    if (await has('schema_version')) {
      schemaVersion = (await one<{ version: number }>('SELECT version FROM schema_version LIMIT 1'))?.version;
    }
    if (await has('schema_compat_version')) {
      schemaCompatVersion = (
        await one<{ compat_version: number }>('SELECT compat_version FROM schema_compat_version LIMIT 1')
      )?.compat_version;
    }
    let domains: SourceFacts['domains'] = [];
    if (await has('users')) {
      const rows = await client.query<{ domain: string; users: string }>(
        "SELECT substring(name from position(':' in name) + 1) AS domain, count(*)::text AS users FROM users GROUP BY 1 ORDER BY 2 DESC, 1",
      );
      domains = rows.rows.map((r) => ({ domain: r.domain, users: Number(r.users) }));
    }
    const sessions = await client.query<{ application: string; user: string; count: string }>(
      `SELECT coalesce(application_name, '') AS application, coalesce(usename::text, '') AS "user", count(*)::text AS count
         FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() GROUP BY 1, 2 ORDER BY 3 DESC`,
    );
    const tables = await client.query<{ name: string; rows: string }>(
      `SELECT n.nspname || '.' || c.relname AS name, greatest(c.reltuples, 0)::bigint::text AS rows
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`,
    );
    return {
      tables: tables.rows.map((r) => ({ name: r.name, rows: Number(r.rows) })),
      database: basics?.db ?? settings.database ?? '',
      serverVersion: basics?.version ?? '',
      databaseBytes: Number(basics?.bytes ?? 0),
      schemaVersion,
      schemaCompatVersion,
      users: domains.reduce((n, d) => n + d.users, 0),
      domains,
      otherSessions: sessions.rows.map((r) => ({ application: r.application, user: r.user, count: Number(r.count) })),
    };
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** `pg_dump --version` of the local binary, e.g. "pg_dump (PostgreSQL) 15.8". */
export async function localToolVersion(binary: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, ['--version'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString('utf8');
    });
    child.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') {
        reject(
          new PreconditionError(`${binary} was not found on this host.`, {
            code: 'PG_DUMP_MISSING',
            next: [
              "Install the PostgreSQL client tools of your server's major version (e.g. apt install postgresql-client-15)",
              'Or pass the binary with --pg-dump /usr/lib/postgresql/VERSION/bin/pg_dump',
            ],
          }),
        );
      } else reject(error);
    });
    child.on('close', (code) => {
      if (code === 0) resolve(out.trim());
      else reject(new ExternalToolError(binary, `exit code ${code}`, out));
    });
  });
}

export interface LocalDumpOptions {
  binary: string;
  settings: PostgresSettings;
  output: string;
  excludeTableData: string[];
  signal?: AbortSignal;
  onBytes?: (bytes: number) => void;
}

/**
 * Runs the local `pg_dump -Fc -O` into `output` (a file, so pg_dump records data offsets in the TOC). Reports the
 * growing file size while it runs. Kills pg_dump when `signal` aborts.
 */
export async function runLocalPgDump(options: LocalDumpOptions): Promise<{ bytes: number; argv: string[] }> {
  const argv = ['-Fc', '-O', ...options.excludeTableData.map((t) => `--exclude-table-data=${t}`), '-f', options.output];
  const env = { ...process.env, ...libpqEnv(options.settings) };
  return new Promise((resolve, reject) => {
    const child = spawn(options.binary, argv, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => {
      stderr = (stderr + c.toString('utf8')).slice(-64 * 1024);
    });
    const timer = setInterval(() => {
      stat(options.output)
        .then((s) => options.onBytes?.(s.size))
        .catch(() => undefined);
    }, 1000);
    const onAbort = () => child.kill('SIGTERM');
    options.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (error) => {
      clearInterval(timer);
      reject(error);
    });
    child.on('close', async (code, signal) => {
      clearInterval(timer);
      options.signal?.removeEventListener('abort', onAbort);
      if (options.signal?.aborted) return reject(new InterruptedError('a signal'));
      if (code !== 0) return reject(new ExternalToolError('pg_dump', signal ?? `exit code ${code}`, stderr));
      const { size } = await stat(options.output);
      options.onBytes?.(size);
      resolve({ bytes: size, argv: ['pg_dump', ...argv] });
    });
  });
}
