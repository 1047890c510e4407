/**
 * The sandbox's real PostgreSQL server: Debian's PostgreSQL (15 on the machine image) started from a data
 * directory that lives inside the sandbox state (the `ess-postgres-data` PVC directory), so a restarted sandbox
 * keeps its databases.
 *
 * Test-speed settings: fsync, synchronous_commit and full_page_writes are OFF and wal_level is minimal. A crash
 * of the machine can corrupt the sandbox's data directory; that is acceptable for a throw-away simulation and
 * makes seeding and restores several times faster.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chmod, chown, mkdir, readdir, readFile, stat } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import type { PostgresInfo } from './types.js';

const execFileP = promisify(execFile);

/** Options for {@link startPostgres}. */
export interface StartPostgresOptions {
  /** The cluster's data directory (PGDATA). Created and initialised when missing or empty; reused otherwise. */
  dataDir: string;
  /** TCP port on 127.0.0.1; 0 or unset picks a free one. */
  port?: number;
  /** Receives the server's log lines and the sandbox's own notes. */
  log?: (line: string) => void;
}

/** A running server plus the means to stop it. */
export type RunningPostgres = PostgresInfo & {
  /** Fast shutdown (`pg_ctl stop -m fast`); idempotent. */
  stop(): Promise<void>;
  /** The OS process id of the postmaster. */
  pid: number;
  /** The Unix socket directory (the server also listens on 127.0.0.1). */
  socketDir: string;
  dataDir: string;
};

interface OsUser {
  uid: number;
  gid: number;
}

const SERVER_BINARIES = ['initdb', 'postgres', 'pg_ctl'];
const MIN_MAJOR = 15;

function hasServerBinaries(dir: string): boolean {
  return SERVER_BINARIES.every((b) => existsSync(path.join(dir, b)));
}

/**
 * Finds the directory holding initdb/postgres/pg_ctl/pg_dump of PostgreSQL ≥ 15: `ESS_SANDBOX_PG_BIN`, else the
 * newest `/usr/lib/postgresql/<major>/bin`, else `pg_config --bindir`.
 */
export async function findPostgresBinDir(): Promise<string> {
  const fromEnv = process.env.ESS_SANDBOX_PG_BIN;
  if (fromEnv) {
    if (!hasServerBinaries(fromEnv)) {
      throw new Error(`ESS_SANDBOX_PG_BIN=${fromEnv} does not contain ${SERVER_BINARIES.join(', ')}`);
    }
    return fromEnv;
  }
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const majors = readdirSync(root)
      .filter((d) => /^\d+$/.test(d) && Number(d) >= MIN_MAJOR)
      .sort((a, b) => Number(b) - Number(a));
    for (const major of majors) {
      const dir = path.join(root, major, 'bin');
      if (hasServerBinaries(dir)) return dir;
    }
  }
  try {
    const { stdout } = await execFileP('pg_config', ['--bindir']);
    const dir = stdout.trim();
    if (dir && hasServerBinaries(dir)) return dir;
  } catch {
    // pg_config is optional (it comes with libpq-dev)
  }
  throw new Error(
    `no PostgreSQL >= ${MIN_MAJOR} server binaries found (looked in ESS_SANDBOX_PG_BIN, ${root}/*/bin, pg_config --bindir); ` +
      'install postgresql-15 or set ESS_SANDBOX_PG_BIN',
  );
}

async function lookupPostgresUser(): Promise<OsUser> {
  const uid = Number((await execFileP('id', ['-u', 'postgres'])).stdout.trim());
  const gid = Number((await execFileP('id', ['-g', 'postgres'])).stdout.trim());
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error('cannot resolve the postgres OS user');
  return { uid, gid };
}

/** Makes every ancestor of `dir` traversable by other users (adds o+x, never removes bits). */
async function makeAncestorsTraversable(dir: string, log: (l: string) => void): Promise<void> {
  let current = path.dirname(path.resolve(dir));
  while (true) {
    const st = await stat(current);
    if ((st.mode & 0o001) === 0) {
      const mode = (st.mode & 0o7777) | 0o055;
      await chmod(current, mode);
      log(`sandbox-postgres: chmod ${mode.toString(8)} ${current} so the postgres user can reach the data directory`);
    }
    const parent = path.dirname(current);
    if (parent === current) break;
    current = parent;
  }
}

async function freePort(): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => {
        if (addr && typeof addr === 'object') resolve(addr.port);
        else reject(new Error('no port'));
      });
    });
  });
}

function run(
  cmd: string,
  args: string[],
  opts: { user?: OsUser; env?: NodeJS.ProcessEnv; cwd?: string },
): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      uid: opts.user?.uid,
      gid: opts.user?.gid,
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => {
      output += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      output += d.toString();
    });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? 1, output }));
  });
}

async function isInitialised(dataDir: string): Promise<boolean> {
  if (!existsSync(dataDir)) return false;
  if (existsSync(path.join(dataDir, 'PG_VERSION'))) return true;
  const entries = await readdir(dataDir);
  if (entries.length === 0 || (entries.length === 1 && entries[0] === 'lost+found')) return false;
  throw new Error(`sandbox-postgres: ${dataDir} is not empty and holds no PostgreSQL cluster (no PG_VERSION)`);
}

/** Shell watchdog: runs postgres as its child and fast-stops it when our end of its stdin pipe closes. */
const WATCHDOG = `
"$@" &
pid=$!
while read -r _; do :; done
kill -INT "$pid" 2>/dev/null
wait "$pid"
`;

/**
 * Starts a real PostgreSQL server on 127.0.0.1 with the given data directory. As root, initdb and the server run
 * as the `postgres` OS user (the data directory is chowned to it and its ancestors made traversable); otherwise as
 * the current user. An existing cluster in `dataDir` is reused, so a restarted sandbox keeps its data. If the
 * Node process dies, a small shell watchdog holding a pipe to it stops the server (no orphan postmaster).
 */
export async function startPostgres(opts: StartPostgresOptions): Promise<RunningPostgres> {
  const log = opts.log ?? (() => {});
  const dataDir = path.resolve(opts.dataDir);
  const binDir = await findPostgresBinDir();
  const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const user = asRoot ? await lookupPostgresUser() : undefined;
  const env: NodeJS.ProcessEnv = { ...process.env, LC_ALL: 'C', LANG: 'C' };
  for (const k of Object.keys(env)) if (k.startsWith('PG')) delete env[k];

  await mkdir(path.dirname(dataDir), { recursive: true });
  if (user) await makeAncestorsTraversable(dataDir, log);

  // Unix sockets are limited to ~107 bytes of path; fall back to a short private directory when needed.
  let socketDir = path.join(path.dirname(dataDir), '.pg-socket');
  if (socketDir.length + '/.s.PGSQL.65535'.length > 100) {
    socketDir = path.join(os.tmpdir(), `ess-pgsock-${process.pid}-${Date.now().toString(36)}`);
  }
  await mkdir(socketDir, { recursive: true, mode: 0o755 });
  if (user) await chown(socketDir, user.uid, user.gid);

  if (!(await isInitialised(dataDir))) {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    if (user) await chown(dataDir, user.uid, user.gid);
    await chmod(dataDir, 0o700);
    log(`sandbox-postgres: initdb ${dataDir}`);
    const res = await run(
      path.join(binDir, 'initdb'),
      ['-D', dataDir, '-E', 'UTF8', '--locale=C', '--auth=trust', '-U', 'postgres', '--no-instructions'],
      { user, env, cwd: '/' },
    );
    if (res.code !== 0) throw new Error(`initdb failed (exit ${res.code}):\n${res.output}`);
  } else {
    log(`sandbox-postgres: reusing the cluster in ${dataDir}`);
    if (user) {
      const st = await stat(dataDir);
      if (st.uid !== user.uid) {
        await run('chown', ['-R', `${user.uid}:${user.gid}`, dataDir], {});
      }
    }
    await chmod(dataDir, 0o700);
    // A previous sandbox that was killed hard may have left its server running on this directory.
    const status = await run(path.join(binDir, 'pg_ctl'), ['status', '-D', dataDir], { user, env, cwd: '/' });
    if (status.code === 0) {
      log('sandbox-postgres: a server is still running on this data directory; stopping it first');
      await run(path.join(binDir, 'pg_ctl'), ['stop', '-D', dataDir, '-m', 'fast', '-w'], { user, env, cwd: '/' });
    }
  }

  const version = (await readFile(path.join(dataDir, 'PG_VERSION'), 'utf8')).trim();

  let lastError: Error | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = opts.port && opts.port > 0 ? opts.port : await freePort();
    try {
      return await launch({ binDir, dataDir, socketDir, port, user, env, log, majorFromDir: version });
    } catch (err) {
      lastError = err as Error;
      if (opts.port && opts.port > 0) break;
      if (!/could not bind|Address already in use/i.test(lastError.message)) break;
      log(`sandbox-postgres: port ${port} was taken, retrying`);
    }
  }
  throw lastError ?? new Error('sandbox-postgres: failed to start');
}

interface LaunchArgs {
  binDir: string;
  dataDir: string;
  socketDir: string;
  port: number;
  user?: OsUser;
  env: NodeJS.ProcessEnv;
  log: (l: string) => void;
  majorFromDir: string;
}

async function launch(a: LaunchArgs): Promise<RunningPostgres> {
  const settings: Record<string, string> = {
    listen_addresses: '127.0.0.1',
    port: String(a.port),
    unix_socket_directories: a.socketDir,
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    max_connections: '100',
    shared_buffers: '128MB',
    max_wal_size: '2GB',
    // No replication in the sandbox: minimal WAL lets bulk loads into tables created in the same transaction
    // skip WAL entirely.
    wal_level: 'minimal',
    max_wal_senders: '0',
    logging_collector: 'off',
    log_line_prefix: '%m [%p] ',
    log_min_messages: 'warning',
    log_checkpoints: 'off',
  };
  const args = ['-D', a.dataDir];
  for (const [k, v] of Object.entries(settings)) args.push('-c', `${k}=${v}`);

  const child: ChildProcess = spawn(
    '/bin/sh',
    ['-c', WATCHDOG, 'ess-sandbox-postgres', path.join(a.binDir, 'postgres'), ...args],
    {
      uid: a.user?.uid,
      gid: a.user?.gid,
      env: a.env,
      cwd: '/',
      // Own session: a Ctrl-C in the sandbox's terminal must not shut the server down behind the sandbox's back.
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  const recent: string[] = [];
  let exited = false;
  let exitCode: number | null = null;
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', (code) => {
      exited = true;
      exitCode = code;
      resolve();
    });
  });
  const onData = (d: Buffer) => {
    for (const line of d.toString().split('\n')) {
      if (!line) continue;
      recent.push(line);
      if (recent.length > 50) recent.shift();
      a.log(`postgres: ${line}`);
    }
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  // The watchdog must not keep our event loop alive, but its stdin pipe must stay open while we live.
  child.unref();
  for (const s of [child.stdin, child.stdout, child.stderr]) {
    (s as unknown as { unref?: () => void } | null)?.unref?.();
  }

  const superuser = 'postgres';
  const deadline = Date.now() + 60_000;
  let serverVersion = a.majorFromDir;
  while (true) {
    if (exited) {
      throw new Error(`postgres exited during startup (code ${exitCode}):\n${recent.join('\n')}`);
    }
    const client = new pg.Client({ host: '127.0.0.1', port: a.port, user: superuser, database: 'postgres' });
    client.on('error', () => {});
    try {
      await client.connect();
      const r = await client.query<{ server_version: string }>('SHOW server_version');
      serverVersion = r.rows[0]?.server_version.split(' ')[0] ?? serverVersion;
      await client.end();
      break;
    } catch (err) {
      await client.end().catch(() => {});
      if (Date.now() > deadline) {
        child.stdin?.end();
        throw new Error(`postgres did not become ready: ${(err as Error).message}\n${recent.join('\n')}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  const pidText = await readFile(path.join(a.dataDir, 'postmaster.pid'), 'utf8').catch(() => '');
  const pid = Number(pidText.split('\n')[0]) || child.pid || 0;
  a.log(`sandbox-postgres: PostgreSQL ${serverVersion} ready on 127.0.0.1:${a.port} (pid ${pid})`);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (!exited) {
        const res = await run(
          path.join(a.binDir, 'pg_ctl'),
          ['stop', '-D', a.dataDir, '-m', 'fast', '-w', '-t', '60'],
          {
            user: a.user,
            env: a.env,
            cwd: '/',
          },
        );
        if (res.code !== 0 && !exited) a.log(`sandbox-postgres: pg_ctl stop: ${res.output.trim()}`);
      }
      child.stdin?.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exitPromise;
      clearTimeout(timer);
    })();
    return stopping;
  };

  return {
    host: '127.0.0.1',
    port: a.port,
    binDir: a.binDir,
    superuser,
    url: `postgres://${superuser}@127.0.0.1:${a.port}/postgres`,
    version: serverVersion,
    pid,
    socketDir: a.socketDir,
    dataDir: a.dataDir,
    stop,
  };
}
