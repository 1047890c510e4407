/**
 * A real PostgreSQL server for the MAU tests (the sandbox's startPostgres in a temporary directory), with helpers
 * to create databases. `stop()` stops the server and removes the directory.
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { type RunningPostgres, startPostgres } from '../../src/sandbox/postgres.js';

export interface TestServer {
  server: RunningPostgres;
  /** postgres://postgres@127.0.0.1:PORT/<database> */
  url(database: string): string;
  /** A connected superuser client (closed by stop()). */
  connect(database: string): Promise<pg.Client>;
  createDatabase(name: string): Promise<pg.Client>;
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
    async stop() {
      for (const c of clients) await c.end().catch(() => {});
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
