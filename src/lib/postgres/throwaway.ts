/**
 * Throwaway PostgreSQL databases for restore tests (`ess backup verify --restore-test`): create a database with a
 * random `ess_verify_…` name, restore a `pg_dump -Fc` stream into it, count the rows of every table, drop it.
 *
 * Two servers: the cluster's own Postgres pod (pg_restore runs in the pod, so its version always matches the
 * server that made the dump; the dump is streamed over exec by a fixed byte count, which works on exec v4), or any
 * server given as a `postgres://` URL with a local pg_restore.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants as fsConstants, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, type Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ClientConfig } from 'pg';
import { EssError, ExitCode, ExternalToolError, PreconditionError } from '../errors.js';
import type { ExecTarget, KubeClient } from '../kube/client.js';
import { type PodPostgres, psqlInPod } from './in-pod.js';
import { shellJoin } from './pod-tools.js';

/** Name prefix of every throwaway database (so a leftover one is easy to recognise and drop). */
export const THROWAWAY_PREFIX = 'ess_verify_';

/**
 * One row per ordinary table (partitions included, partitioned parents not) outside the system schemas: `schema.table` and its exact row count.
 * A single statement (query_to_xml runs one count per table), so it works through `psql -c` as well as `pg`; the
 * same definition `ess backup` uses for the manifest's counts.
 */
export const COUNT_ROWS_SQL = `SELECT n.nspname || '.' || c.relname AS name,
  (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text AS rows
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('information_schema') AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1`;

/** pg_restore options for a restore test: no roles or grants are needed in the throwaway database. */
export const RESTORE_TEST_ARGS = ['--no-owner', '--no-privileges', '--exit-on-error', '--single-transaction'];

/** A temporary database; always {@link drop} it (finally). */
export interface ThrowawayDatabase {
  readonly name: string;
  /** Restores a `pg_dump -Fc` stream of exactly `sizeBytes` bytes. Rejects when pg_restore fails. */
  restore(dump: Readable, sizeBytes: number, options?: { signal?: AbortSignal }): Promise<void>;
  /** Exact row count of every table, by `schema.table`. */
  countRows(): Promise<Map<string, number>>;
  /** Drops the database (terminating leftover sessions). Safe to call twice. */
  drop(): Promise<void>;
}

/** A PostgreSQL server that can host throwaway databases. */
export interface ThrowawayServer {
  /** Where the databases go, for messages (never includes a password). */
  readonly description: string;
  /** Major version of the pg_restore that will read the dumps. */
  restoreToolMajor(): Promise<number>;
  /** Creates an empty database named `ess_verify_<random>`. */
  create(): Promise<ThrowawayDatabase>;
}

/** A random throwaway database name. */
export function throwawayName(): string {
  return `${THROWAWAY_PREFIX}${randomBytes(6).toString('hex')}`;
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

function parseCounts(rows: { name: string; rows: string | number | null }[]): Map<string, number> {
  return new Map(rows.map((row) => [row.name, Number(row.rows ?? 0)]));
}

function majorOf(versionText: string, tool: string): number {
  const match = /\(PostgreSQL\)\s+(\d+)/.exec(versionText) ?? /(\d+)(?:\.\d+)?/.exec(versionText);
  if (!match) throw new ExternalToolError(tool, 'unparseable --version', versionText);
  return Number(match[1]);
}

/**
 * Runs `argv` in a pod with exactly `sizeBytes` of `input` on its stdin, v4-safe like pod-tools' streamIntoPod (the
 * remote side reads a fixed byte count: `head -c N | argv`). Differs in failure handling, which a restore test
 * needs because its input is an archive member that errors when its SHA-256 does not match: an input error or an
 * abort cuts the exec and is reported as the cause, and the stdin pipeline's rejection is always handled (a bare
 * `pipeline` promise awaited only after the exec would reject unhandled and crash the process).
 */
async function feedIntoPod(
  kube: KubeClient,
  target: ExecTarget,
  argv: string[],
  input: Readable,
  sizeBytes: number,
  signal?: AbortSignal,
): Promise<void> {
  let sent = 0;
  // The input's own failure is the cause to report (exec then only says that reading stdin failed).
  const inputError = () => (input.errored as Error | null) ?? undefined;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      sent += chunk.length;
      callback(null, chunk);
    },
  });
  const feed = new PassThrough({ highWaterMark: 1024 * 1024 });
  const pumping = pipeline(input, counter, feed).catch(() => undefined);
  try {
    const result = await kube.exec(target, ['sh', '-c', `head -c ${sizeBytes} | ${shellJoin(argv)}`], {
      stdin: feed,
      signal,
    });
    const failed = inputError();
    if (failed) throw failed;
    if (result.exitCode !== 0) {
      throw new ExternalToolError(argv[0]!, `exit code ${result.exitCode}`, result.stderrTail);
    }
    if (sent < sizeBytes)
      throw new ExternalToolError(argv[0]!, 'input ended early', `sent ${sent} of ${sizeBytes} bytes`);
  } catch (error) {
    throw inputError() ?? error;
  } finally {
    feed.destroy();
    await pumping;
  }
}

/** Throwaway databases on the cluster's Postgres pod, restored by the pod's own pg_restore over exec. */
export function podThrowawayServer(kube: KubeClient, pg: PodPostgres): ThrowawayServer {
  const target = { namespace: pg.namespace, pod: pg.pod, container: pg.container };
  return {
    description: `the Postgres pod ${pg.namespace}/${pg.pod}`,
    async restoreToolMajor() {
      const [[line] = []] = await psqlInPod(kube, pg, 'SHOW server_version');
      return majorOf(line ?? '', 'postgres');
    },
    async create() {
      const name = throwawayName();
      await psqlInPod(kube, pg, `CREATE DATABASE ${quoteIdent(name)} TEMPLATE template0`);
      let dropped = false;
      return {
        name,
        async restore(dump, sizeBytes, options = {}) {
          const argv = ['pg_restore', '-U', pg.superuser, '-d', name, ...RESTORE_TEST_ARGS];
          await feedIntoPod(kube, target, argv, dump, sizeBytes, options.signal);
        },
        async countRows() {
          const rows = await psqlInPod(kube, pg, COUNT_ROWS_SQL.replace(/\n/g, ' '), name);
          return parseCounts(rows.map(([table = '', count = '0']) => ({ name: table, rows: count })));
        },
        async drop() {
          if (dropped) return;
          await psqlInPod(kube, pg, `DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
          dropped = true;
        },
      };
    },
  };
}

/**
 * The local pg_restore to use: the newest /usr/lib/postgresql/<major>/bin/pg_restore (Debian/Ubuntu layout), else
 * `pg_restore` from PATH.
 */
export function localPgRestore(): string {
  const base = '/usr/lib/postgresql';
  try {
    const majors = readdirSync(base)
      .filter((d) => /^\d+$/.test(d))
      .map(Number)
      .sort((a, b) => b - a);
    for (const major of majors) {
      const candidate = join(base, String(major), 'bin', 'pg_restore');
      try {
        accessSync(candidate, fsConstants.X_OK);
        return candidate;
      } catch {
        // try the next one
      }
    }
  } catch {
    // not a Debian layout
  }
  return 'pg_restore';
}

/** libpq environment for a URL: the password travels in PGPASSWORD, never in argv. */
function libpqEnv(url: URL): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  if (url.hostname) env.PGHOST = decodeURIComponent(url.hostname.replace(/^\[|\]$/g, ''));
  if (url.port) env.PGPORT = url.port;
  if (url.username) env.PGUSER = decodeURIComponent(url.username);
  if (url.password) env.PGPASSWORD = decodeURIComponent(url.password);
  const sslmode = url.searchParams.get('sslmode');
  if (sslmode) env.PGSSLMODE = sslmode;
  return env;
}

function parseServerUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new PreconditionError('The restore-test URL is not a valid postgres:// URL.', {
      code: 'BAD_DATABASE_URL',
      next: ['Use postgres://USER:PASSWORD@HOST:PORT/postgres'],
    });
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new PreconditionError(`The restore-test URL must start with postgres://, not ${url.protocol}//.`, {
      code: 'BAD_DATABASE_URL',
      next: ['Use postgres://USER:PASSWORD@HOST:PORT/postgres'],
    });
  }
  return url;
}

async function runCapture(command: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString('utf8');
    });
    child.stderr.on('data', (c: Buffer) => {
      out += c.toString('utf8');
    });
    child.on('error', (error) =>
      reject(
        new PreconditionError(`Cannot run ${command}: ${error.message}.`, {
          code: 'TOOL_MISSING',
          next: ['Install the PostgreSQL client tools, or run the restore test in the cluster (omit the URL)'],
        }),
      ),
    );
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new ExternalToolError(command, code ?? -1, out))));
  });
}

/**
 * Throwaway databases on the server at `url` (the URL's database is only used to create and drop them), restored
 * with a local pg_restore (`pgRestore`, default {@link localPgRestore}).
 */
export function urlThrowawayServer(urlText: string, options: { pgRestore?: string } = {}): ThrowawayServer {
  const url = parseServerUrl(urlText);
  const pgRestore = options.pgRestore ?? localPgRestore();
  const env = libpqEnv(url);
  const config = (database?: string): ClientConfig => {
    const u = new URL(url.href);
    if (database) u.pathname = `/${database}`;
    return { connectionString: u.href, application_name: 'ess backup verify' };
  };
  async function withClient<T>(database: string | undefined, fn: (c: import('pg').Client) => Promise<T>): Promise<T> {
    const { default: pg } = await import('pg');
    const client = new pg.Client(config(database));
    client.on('error', () => {});
    try {
      await client.connect();
    } catch (error) {
      throw new EssError(`Cannot connect to the restore-test server ${url.host}: ${(error as Error).message}`, {
        code: 'RESTORE_TEST_CONNECT',
        // Nothing was judged: "could not verify" (4), not "the backup is bad" (1).
        exitCode: ExitCode.PRECONDITION,
        next: ['Check the URL, the password and that the server accepts connections from here'],
      });
    }
    try {
      return await fn(client);
    } finally {
      await client.end().catch(() => {});
    }
  }
  return {
    description: `the PostgreSQL server at ${url.host}`,
    async restoreToolMajor() {
      return majorOf(await runCapture(pgRestore, ['--version']), 'pg_restore');
    },
    async create() {
      const name = throwawayName();
      await withClient(undefined, (c) => c.query(`CREATE DATABASE ${quoteIdent(name)} TEMPLATE template0`));
      let dropped = false;
      return {
        name,
        async restore(dump, _sizeBytes, restoreOptions = {}) {
          const child = spawn(pgRestore, ['-d', name, ...RESTORE_TEST_ARGS], {
            stdio: ['pipe', 'ignore', 'pipe'],
            env: { ...process.env, ...env, PGDATABASE: name },
          });
          let stderr = '';
          child.stderr.on('data', (c: Buffer) => {
            stderr = (stderr + c.toString('utf8')).slice(-65536);
          });
          const exited = new Promise<number>((resolve, reject) => {
            child.on('error', reject);
            child.on('close', (code, signal) => resolve(code ?? (signal ? 128 : -1)));
          });
          const onAbort = () => child.kill('SIGTERM');
          restoreOptions.signal?.addEventListener('abort', onAbort, { once: true });
          try {
            // pg_restore stops reading when it fails: the broken pipe is reported through its exit status.
            const fed = pipeline(dump, child.stdin, { signal: restoreOptions.signal }).catch((e: unknown) => e);
            const code = await exited;
            const feedError = await fed;
            if (code !== 0) throw new ExternalToolError('pg_restore', `exit code ${code}`, stderr);
            if (feedError) throw feedError;
          } finally {
            restoreOptions.signal?.removeEventListener('abort', onAbort);
          }
        },
        async countRows() {
          return withClient(name, async (c) => parseCounts((await c.query(COUNT_ROWS_SQL)).rows));
        },
        async drop() {
          if (dropped) return;
          await withClient(undefined, (c) => c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`));
          dropped = true;
        },
      };
    },
  };
}
