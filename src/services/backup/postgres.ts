/**
 * The PostgreSQL side of `ess backup`: where the client tools run (inside the Postgres pod, or locally for an
 * external database), exported snapshots held open by a psql session, `pg_dump -Fc` into the spool, exact row
 * counts read from the same snapshot, and the completeness check of each spooled dump.
 */

import { spawn } from 'node:child_process';
import { delimiter, join } from 'node:path';
import { PassThrough, type Readable, Writable } from 'node:stream';
import type { Spool, SpooledFile } from '../../lib/archive/spool.js';
import { EssError, ExternalToolError } from '../../lib/errors.js';
import type { ExecIO, ExecResult, ExecTarget, KubeClient } from '../../lib/kube/client.js';
import { ExecStreamError } from '../../lib/kube/client.js';
import { libpqEnv, type PostgresSettings } from '../../lib/migrate/homeserver.js';
import { DumpFormatError, readDumpToc, verifyDataBlocks } from '../../lib/migrate/pgdump.js';
import { collect } from '../../lib/postgres/in-pod.js';
import { byteCounter, compressArg, compressionFor, type DumpCompression } from '../../lib/postgres/pod-tools.js';
import { THROWAWAY_PREFIX } from '../../lib/postgres/throwaway.js';

/**
 * Where the PostgreSQL client tools run. `pod`: `kubectl exec` into the bundled Postgres pod as the superuser, so
 * the tools always match the server. `local`: this host's tools against an external server (`--database-url`).
 */
export interface PgTools {
  readonly kind: 'pod' | 'local';
  /** For messages: `pod ess/ess-postgres-0` or `host db.example.com`. */
  readonly where: string;
  /** Connection arguments for one database (never a password). */
  connect(database: string): string[];
  /** Connection arguments for server-wide tools (pg_dumpall). */
  server(): string[];
  /** Runs a client tool (argv[0] is `psql`, `pg_dump`…) with the given streams. */
  run(argv: string[], io?: ExecIO): Promise<ExecResult>;
}

/** Tools inside the Postgres pod, as its superuser (peer/trust authentication inside the pod). */
export function podPgTools(
  kube: KubeClient,
  pod: { namespace: string; pod: string; container: string; superuser: string },
): PgTools {
  const target: ExecTarget = { namespace: pod.namespace, pod: pod.pod, container: pod.container };
  return {
    kind: 'pod',
    where: `pod ${pod.namespace}/${pod.pod}`,
    connect: (database) => ['-U', pod.superuser, '-d', database],
    server: () => ['-U', pod.superuser],
    run: (argv, io) => kube.exec(target, argv, io),
  };
}

/**
 * This host's client tools against `settings` (from `--database-url`; the password goes through PGPASSWORD, never
 * argv). `binDir` picks a directory of tools (e.g. /usr/lib/postgresql/17/bin); default: PATH.
 */
export function localPgTools(settings: PostgresSettings, binDir?: string): PgTools {
  const { PGDATABASE: _db, ...env } = libpqEnv(settings);
  return {
    kind: 'local',
    where: `host ${settings.host ?? 'localhost'}${settings.port ? `:${settings.port}` : ''}`,
    connect: (database) => ['-d', database],
    server: () => [],
    run: (argv, io = {}) => runLocal(binDir ? join(binDir, argv[0]!) : argv[0]!, argv.slice(1), env, io),
  };
}

const STDERR_TAIL = 64 * 1024;

function runLocal(command: string, args: string[], env: Record<string, string>, io: ExecIO): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    if (io.signal?.aborted) return reject(new ExecStreamError(`${command}: aborted`, ''));
    const child = spawn(command, args, {
      env: { ...process.env, PATH: process.env.PATH ?? ['/usr/bin', '/bin'].join(delimiter), ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    if (!io.stdin) child.stdin.end();
    let tail = '';
    let aborted = false;
    const onAbort = () => {
      aborted = true;
      child.kill('SIGTERM');
    };
    io.signal?.addEventListener('abort', onAbort, { once: true });
    child.stdin.on('error', () => {});
    if (io.stdin) io.stdin.pipe(child.stdin);
    child.stderr.on('data', (chunk: Buffer) => {
      io.stderr?.write(chunk);
      tail = (tail + chunk.toString('utf8')).slice(-STDERR_TAIL);
    });
    const stdoutDone = new Promise<void>((done) => {
      if (!io.stdout) {
        child.stdout.resume();
        child.stdout.on('end', done);
        return;
      }
      const out = io.stdout;
      child.stdout.on('data', (chunk: Buffer) => {
        if (!out.write(chunk)) {
          child.stdout.pause();
          out.once('drain', () => child.stdout.resume());
        }
      });
      child.stdout.on('end', done);
    });
    child.on('error', (error: NodeJS.ErrnoException) => {
      io.signal?.removeEventListener('abort', onAbort);
      reject(
        error.code === 'ENOENT'
          ? new EssError(`${command} was not found on this host.`, {
              code: 'PG_TOOLS_MISSING',
              next: ['Install the PostgreSQL client tools of the server’s major version, or pass --pg-bin-dir'],
            })
          : error,
      );
    });
    child.on('close', (code, signal) => {
      io.signal?.removeEventListener('abort', onAbort);
      io.stdin?.unpipe();
      if (aborted) return reject(new ExecStreamError(`${command}: aborted`, tail));
      void stdoutDone.then(() =>
        resolve({ exitCode: code ?? (signal ? 128 + 15 : 1), stderrTail: tail, protocol: 'local' }),
      );
    });
  });
}

function check(tool: string, result: ExecResult): void {
  if (result.exitCode !== 0) throw new ExternalToolError(tool, `exit code ${result.exitCode}`, result.stderrTail);
}

/** psql flags for machine-readable output: no psqlrc, quiet, unaligned, tuples only, tab-separated, stop on error. */
const PSQL_FLAGS = ['-X', '-q', '-A', '-t', '-F', '\t', '-v', 'ON_ERROR_STOP=1'];

/**
 * Runs SQL statements (one `-c` each, one session, so a transaction may span them) and returns the rows of all
 * result sets as string arrays. For small results only.
 */
export async function psqlRows(
  tools: PgTools,
  database: string,
  statements: string[],
  signal?: AbortSignal,
): Promise<string[][]> {
  const out = collect();
  const argv = ['psql', ...tools.connect(database), ...PSQL_FLAGS];
  for (const sql of statements) argv.push('-c', sql);
  check('psql', await tools.run(argv, { stdout: out.sink, signal }));
  return out
    .text()
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => line.split('\t'));
}

/**
 * Facts about the server: version and its databases (templates, `postgres` and the throwaway databases of a running
 * `ess backup verify --restore-test` left out).
 */
export interface ServerFacts {
  serverVersion: string;
  databases: { name: string; sizeBytes: number }[];
}

/** Reads the server version and every database with its size. */
export async function serverFacts(tools: PgTools, signal?: AbortSignal): Promise<ServerFacts> {
  const rows = await psqlRows(
    tools,
    'postgres',
    [
      `SELECT 'version', current_setting('server_version') UNION ALL
       SELECT datname, pg_database_size(datname)::text FROM pg_database
        WHERE NOT datistemplate AND datname <> 'postgres' AND datallowconn
          AND left(datname, ${THROWAWAY_PREFIX.length}) <> '${THROWAWAY_PREFIX}'`,
    ],
    signal,
  );
  const version = rows.find((r) => r[0] === 'version')?.[1] ?? '';
  return {
    serverVersion: version,
    databases: rows.filter((r) => r[0] !== 'version').map(([name, size]) => ({ name: name!, sizeBytes: Number(size) })),
  };
}

/** pg_dump's major version where the tools run. */
export async function pgDumpMajor(tools: PgTools, signal?: AbortSignal): Promise<number> {
  const out = collect(4096);
  check('pg_dump', await tools.run(['pg_dump', '--version'], { stdout: out.sink, signal }));
  const match = /\(PostgreSQL\)\s+(\d+)/.exec(out.text()) ?? /(\d+)(?:\.\d+)?/.exec(out.text());
  if (!match) throw new ExternalToolError('pg_dump', 'unparseable --version', out.text());
  return Number(match[1]);
}

/** An open transaction whose snapshot other sessions import; close it once every reader has started. */
export interface SnapshotHolder {
  database: string;
  /** The id pg_export_snapshot() returned, for `pg_dump --snapshot` and `SET TRANSACTION SNAPSHOT`. */
  snapshot: string;
  /** Ends the transaction and the psql session (`COMMIT; \q`, so no stdin half-close is needed). Idempotent. */
  close(): Promise<void>;
}

/** argv marker of the snapshot-holding psql session (visible in process lists and exec logs). */
export const SNAPSHOT_HOLDER_MARK = 'ess_role=snapshot-holder';

/**
 * Opens a long-lived psql session (stdin kept open) that starts a REPEATABLE READ READ ONLY transaction and exports
 * its snapshot. The snapshot stays valid until {@link SnapshotHolder.close}. Works on exec v4 and v5: the session
 * ends by `\q`, not by closing stdin.
 */
export async function exportSnapshot(
  tools: PgTools,
  database: string,
  options: { signal?: AbortSignal; timeoutMs?: number } = {},
): Promise<SnapshotHolder> {
  const stdin = new PassThrough();
  let text = '';
  let onLine: (() => void) | undefined;
  const stdout = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      if (text.length < 4096) text += chunk.toString('utf8');
      onLine?.();
      callback();
    },
  });
  const argv = ['psql', ...tools.connect(database), ...PSQL_FLAGS, '-v', SNAPSHOT_HOLDER_MARK];
  const session = tools.run(argv, { stdin, stdout, signal: options.signal });
  session.catch(() => {});
  stdin.write('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSELECT pg_export_snapshot();\n');
  const fail = (message: string, tail = '') =>
    new ExternalToolError('psql', message, tail, { code: 'SNAPSHOT_EXPORT_FAILED' });
  let timer: NodeJS.Timeout | undefined;
  try {
    const snapshot = await new Promise<string>((resolve, reject) => {
      const check = () => {
        const line = text.split('\n')[0];
        if (text.includes('\n') && line !== undefined) {
          const id = line.trim();
          if (/^[0-9A-F]+-[0-9A-F]+(-\d+)?$/i.test(id)) resolve(id);
          else reject(fail('unexpected pg_export_snapshot() output', text));
        }
      };
      onLine = check;
      timer = setTimeout(() => reject(fail('no snapshot id within the timeout')), options.timeoutMs ?? 60_000);
      session.then(
        (result) => reject(fail(`session ended (exit code ${result.exitCode}) before exporting`, result.stderrTail)),
        (error: unknown) => reject(error),
      );
      check();
    });
    let closing: Promise<void> | undefined;
    return {
      database,
      snapshot,
      close() {
        closing ??= (async () => {
          stdin.write('COMMIT;\n\\q\n');
          try {
            await Promise.race([
              session,
              new Promise((_, reject) => setTimeout(() => reject(new Error('psql did not quit')), 30_000).unref()),
            ]);
          } finally {
            stdin.destroy();
          }
        })();
        return closing;
      },
    };
  } catch (error) {
    stdin.write('ROLLBACK;\n\\q\n');
    stdin.destroy();
    throw error;
  } finally {
    clearTimeout(timer);
    onLine = undefined;
  }
}

/** What to dump and how. */
export interface DumpSpec {
  database: string;
  /** Archive member name (postgres/<db>.dump). */
  member: string;
  /** Import this exported snapshot (consistent with the other databases). */
  snapshot?: string;
  excludeTableData?: string[];
  compression: DumpCompression;
}

/** `pg_dump -Fc` argv for one database. */
export function pgDumpArgv(tools: PgTools, spec: DumpSpec): string[] {
  const argv = ['pg_dump', ...tools.connect(spec.database), '-Fc', compressArg(spec.compression)];
  if (spec.snapshot) argv.push(`--snapshot=${spec.snapshot}`);
  for (const table of spec.excludeTableData ?? []) argv.push(`--exclude-table-data=${table}`);
  return argv;
}

/** Re-exported so callers pick the compression from one place. */
export { compressionFor };

/**
 * Streams the stdout of `argv` into a spool file (hashed on the way) with backpressure. The tool must exit 0 and the
 * stream must end with an exit status (a cut exec stream rejects with ExecStreamError).
 */
export async function spoolToolOutput(
  tools: PgTools,
  spool: Spool,
  member: string,
  argv: string[],
  options: { signal?: AbortSignal; onBytes?: (total: number) => void } = {},
): Promise<SpooledFile> {
  // If the spool fails (e.g. disk full) the exec must stop too: its stdout would wait for a drain forever.
  const local = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, local.signal]) : local.signal;
  const counter = byteCounter(options.onBytes);
  const spooled = spool.add(member, counter as Readable, { signal: options.signal });
  let toolSettled = false;
  let spoolFailedFirst: unknown;
  spooled.catch((error: unknown) => {
    if (!toolSettled) spoolFailedFirst = error;
    local.abort(error);
  });
  try {
    const result = await tools.run(argv, { stdout: counter, signal });
    toolSettled = true;
    if (result.exitCode !== 0) {
      throw new ExternalToolError(argv[0]!, `exit code ${result.exitCode}`, result.stderrTail);
    }
    counter.end();
    return await spooled;
  } catch (error) {
    toolSettled = true;
    counter.destroy();
    await spooled.catch(() => {});
    if (spoolFailedFirst !== undefined) throw spoolFailedFirst;
    if (error instanceof ExecStreamError && !options.signal?.aborted) {
      throw new EssError(`${error.message} (${member} is incomplete).`, {
        code: 'DUMP_FAILED',
        cause: error,
        next: ['Check the Postgres pod and the connection to the cluster, then re-run ess backup'],
      });
    }
    throw error;
  }
}

/**
 * Checks a spooled `pg_dump -Fc` file is complete: a readable header and table of contents, and every data block the
 * TOC announces present to its last chunk (chunk headers only, no decompression; independent of the local
 * PostgreSQL version). Returns the TOC entries that hold table data (`schema.table`).
 */
export async function checkDumpComplete(
  file: SpooledFile,
  database: string,
): Promise<{ tableData: string[]; checked: boolean }> {
  try {
    const range = { path: file.path, length: file.size };
    const toc = await readDumpToc(range);
    await verifyDataBlocks(range, toc);
    return {
      tableData: toc.entries.filter((e) => e.desc === 'TABLE DATA').map((e) => `${e.namespace}.${e.tag}`),
      checked: true,
    };
  } catch (error) {
    // An archive version newer than this reader knows: pg_dump's exit status (checked) is all there is to go on.
    if (error instanceof DumpFormatError && error.reason === 'unsupported') return { tableData: [], checked: false };
    throw new EssError(`The dump of database ${database} is incomplete or damaged: ${(error as Error).message}.`, {
      code: 'DUMP_INCOMPLETE',
      cause: error,
      next: ['Re-run ess backup; if it keeps failing, check the Postgres pod (kubectl logs) and its disk'],
    });
  }
}

/** Row counts of every user table, read inside a REPEATABLE READ transaction that imports `snapshot`. */
export async function exactRowCounts(
  tools: PgTools,
  database: string,
  snapshot: string | undefined,
  signal?: AbortSignal,
): Promise<{ name: string; rows: number }[]> {
  const countAll = `SELECT n.nspname || '.' || c.relname,
      (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
   ORDER BY 1`;
  const statements = ['BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY'];
  if (snapshot) statements.push(`SET TRANSACTION SNAPSHOT '${snapshot.replace(/'/g, '')}'`);
  statements.push(countAll, 'COMMIT');
  const rows = await psqlRows(tools, database, statements, signal);
  return rows.map(([name, count]) => ({ name: name!, rows: Number(count) }));
}

/** Synapse's schema_version / schema_compat_version and MAS's newest sqlx migration, when those tables exist. */
export async function schemaVersions(
  tools: PgTools,
  database: string,
  tables: Set<string>,
  signal?: AbortSignal,
): Promise<{ schemaVersion?: number; schemaCompatVersion?: number; masMigration?: string }> {
  const select: string[] = [];
  if (tables.has('public.schema_version')) select.push(`SELECT 'schema', version::text FROM schema_version LIMIT 1`);
  if (tables.has('public.schema_compat_version')) {
    select.push(`SELECT 'compat', compat_version::text FROM schema_compat_version LIMIT 1`);
  }
  if (tables.has('public._sqlx_migrations')) {
    select.push(`SELECT 'mas', max(version)::text FROM _sqlx_migrations WHERE success`);
  }
  if (select.length === 0) return {};
  const rows = await psqlRows(tools, database, [select.map((s) => `(${s})`).join(' UNION ALL ')], signal);
  const value = (key: string) => rows.find((r) => r[0] === key)?.[1];
  const number = (text: string | undefined) => (text === undefined || text === '' ? undefined : Number(text));
  return {
    schemaVersion: number(value('schema')),
    schemaCompatVersion: number(value('compat')),
    masMigration: value('mas') || undefined,
  };
}
