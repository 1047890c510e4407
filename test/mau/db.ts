/**
 * A real PostgreSQL server for the MAU tests (the sandbox's startPostgres in a temporary directory), with helpers
 * to create databases. `stop()` stops the server and removes the directory.
 */
import { execFile } from 'node:child_process';
import { chmod, chown, mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { type RunningPostgres, startPostgres } from '../../src/sandbox/postgres.js';

export interface TestServer {
  server: RunningPostgres;
  /** postgres://postgres@127.0.0.1:PORT/<database> */
  url(database: string): string;
  /** A connected superuser client (closed by stop()). */
  connect(database: string): Promise<pg.Client>;
  createDatabase(name: string): Promise<pg.Client>;
  /** Turns on TLS with a fresh self-signed certificate (CN=localhost); returns the certificate's path. */
  enableTls(): Promise<string>;
  stop(): Promise<void>;
}

export async function startTestServer(): Promise<TestServer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ess-mau-'));
  // PostgreSQL runs as the postgres OS user when we are root: it must be able to enter the directory.
  await chmod(dir, 0o755);
  const server = await startPostgres({ dataDir: path.join(dir, 'pgdata') });
  const clients: pg.Client[] = [];
  const url = (database: string) => `postgres://${server.superuser}@${server.host}:${server.port}/${database}`;
  const connect = async (database: string) => {
    const client = new pg.Client({ connectionString: url(database) });
    await client.connect();
    clients.push(client);
    return client;
  };
  return {
    server,
    url,
    connect,
    async createDatabase(name) {
      const admin = await connect('postgres');
      await admin.query(`CREATE DATABASE ${name}`);
      return connect(name);
    },
    async enableTls() {
      const cert = path.join(server.dataDir, 'server.crt');
      const key = path.join(server.dataDir, 'server.key');
      await promisify(execFile)('openssl', [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '2',
        '-subj',
        '/CN=localhost',
        '-keyout',
        key,
        '-out',
        cert,
      ]);
      // The server refuses a key that others can read, or that it does not own.
      const owner = await stat(server.dataDir);
      await chmod(key, 0o600);
      await chown(key, owner.uid, owner.gid);
      await chown(cert, owner.uid, owner.gid);
      const admin = await connect('postgres');
      await admin.query('ALTER SYSTEM SET ssl = on');
      await admin.query('SELECT pg_reload_conf()');
      return cert;
    },
    async stop() {
      for (const c of clients) await c.end().catch(() => {});
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
