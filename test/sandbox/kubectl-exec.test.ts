/**
 * The sandbox's exec and port-forward against REAL kubectl binaries: 1.27 (SPDY/3.1) and 1.33 (WebSocket v5,
 * the SPDY tunnel for port-forward, and its SPDY fallback against a 'v4-only' server). Skips a version whose
 * binary is not installed.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  createReadStream,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import { type RunningPostgres, startPostgres } from '../../src/sandbox/postgres.js';

const KUBECTL_DIR = '/usr/lib/google-cloud-sdk/bin';
const kubectl = (v: string): string => path.join(KUBECTL_DIR, `kubectl.${v}`);

let sandbox: Sandbox;
let workDir: string;
let fresh: RunningPostgres;
let freshDir: string;
let rows = 0;

beforeAll(async () => {
  // The fresh server that dumps are restored into starts while the sandbox seeds.
  freshDir = mkdtempSync(path.join(os.tmpdir(), 'ess-kubectl-fresh-'));
  chmodSync(freshDir, 0o755);
  const freshStarted = startPostgres({ dataDir: path.join(freshDir, 'data') });
  sandbox = await startSandbox({ users: 5, mediaMb: 1, eventsPerUser: 2 });
  fresh = await freshStarted;
  workDir = mkdtempSync(path.join(sandbox.stateDir, 'kubectl-test-'));
  chmodSync(workDir, 0o755);
  rows = sandbox.seed.tables.users ?? 0;
  expect(rows).toBeGreaterThan(0);
}, 120_000);

afterAll(async () => {
  await sandbox?.stop();
  await fresh?.stop();
  if (freshDir) rmSync(freshDir, { recursive: true, force: true });
});

function synapseUrl(): string {
  return sandbox.postgres.url.replace(/\/postgres$/, '/synapse');
}

interface Run {
  code: number | null;
  stderr: string;
}

/** Runs a kubectl binary with the sandbox kubeconfig; stdout goes to a file (streamed), stdin from a file. */
function runKubectl(
  bin: string,
  args: string[],
  opts: { stdoutFile: string; stdinFile?: string; timeoutMs?: number },
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const out = openSync(opts.stdoutFile, 'w');
    const child = spawn(bin, args, {
      env: { ...process.env, KUBECONFIG: sandbox.kubeconfigPath, HOME: workDir },
      stdio: [opts.stdinFile ? 'pipe' : 'ignore', out, 'pipe'],
    });
    closeSync(out);
    if (opts.stdinFile && child.stdin) createReadStream(opts.stdinFile).pipe(child.stdin);
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

/** Starts `kubectl port-forward` on a random local port; resolves with the port and a stop function. */
function portForward(
  bin: string,
  target: string,
  remotePort: number,
): Promise<{ port: number; stop: () => Promise<void> }> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, ['port-forward', target, `:${remotePort}`, '--address', '127.0.0.1'], {
      env: { ...process.env, KUBECONFIG: sandbox.kubeconfigPath, HOME: workDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let text = '';
    const stop = (): Promise<void> =>
      new Promise((done) => {
        if (child.exitCode !== null) return done();
        child.once('close', () => done());
        child.kill('SIGTERM');
      });
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`port-forward did not start: ${text}`));
    }, 20_000);
    const onData = (d: Buffer): void => {
      text += d.toString();
      const m = /Forwarding from 127\.0\.0\.1:(\d+) ->/.exec(text);
      if (m) {
        clearTimeout(timer);
        resolve({ port: Number(m[1]), stop });
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.on('error', reject);
  });
}

/** Empties the fresh server (every database and role but the superuser's), then restores the dump with psql. */
async function restoreIntoFreshServer(dumpFile: string): Promise<number> {
  const admin = new pg.Client({ host: fresh.host, port: fresh.port, user: 'postgres', database: 'postgres' });
  await admin.connect();
  try {
    const dbs = await admin.query(
      "select datname from pg_database where datname not in ('postgres', 'template0', 'template1')",
    );
    for (const { datname } of dbs.rows) await admin.query(`drop database "${datname}" with (force)`);
    const roles = await admin.query(
      "select rolname from pg_roles where rolname <> 'postgres' and rolname not like 'pg\\_%'",
    );
    for (const { rolname } of roles.rows) await admin.query(`drop role "${rolname}"`);
  } finally {
    await admin.end();
  }
  const restore = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
    const p = spawn(
      path.join(sandbox.postgres.binDir, 'psql'),
      ['-X', '-q', '-h', fresh.host, '-p', String(fresh.port), '-U', 'postgres', '-d', 'postgres', '-f', dumpFile],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stderr }));
  });
  expect(restore.code).toBe(0);
  // The only expected complaint: the superuser role exists already in a fresh cluster.
  expect(restore.stderr.replace(/.*role "postgres" already exists\n?/g, '')).toBe('');
  const db = new pg.Client({ host: fresh.host, port: fresh.port, user: 'postgres', database: 'synapse' });
  await db.connect();
  try {
    return Number((await db.query('select count(*) from users')).rows[0].count);
  } finally {
    await db.end();
  }
}

for (const version of ['1.27', '1.33']) {
  const bin = kubectl(version);
  const present = existsSync(bin);
  const label = present ? `kubectl ${version}` : `kubectl ${version} (SKIPPED: ${bin} is not installed)`;

  describe.skipIf(!present)(label, () => {
    it('`kubectl exec sts/ess-postgres -- pg_dumpall -U postgres` restores into a fresh PostgreSQL', async () => {
      const dump = path.join(workDir, `dump-${version}.sql`);
      const r = await runKubectl(bin, ['exec', 'sts/ess-postgres', '--', 'pg_dumpall', '-U', 'postgres'], {
        stdoutFile: dump,
      });
      expect(r.code).toBe(0);
      expect(r.stderr).toMatch(/Defaulted container "postgres" out of: postgres, /);
      expect(readFileSync(dump, 'utf8')).toContain('PostgreSQL database cluster dump complete');
      expect(await restoreIntoFreshServer(dump)).toBe(rows);
    });

    it('`kubectl exec -i` streams stdin to the command (sha256sum and psql)', async () => {
      const input = path.join(workDir, `stdin-${version}.bin`);
      const data = randomBytes(4 * 1024 * 1024);
      writeFileSync(input, data);
      const out = path.join(workDir, `sha-${version}.txt`);
      const r = await runKubectl(bin, ['exec', '-i', 'ess-postgres-0', '-c', 'postgres', '--', 'sha256sum'], {
        stdoutFile: out,
        stdinFile: input,
      });
      expect(r.code).toBe(0);
      expect(readFileSync(out, 'utf8').split(' ')[0]).toBe(createHash('sha256').update(data).digest('hex'));

      const table = `stdin_${version.replace('.', '_')}`;
      const sql = path.join(workDir, `stdin-${version}.sql`);
      writeFileSync(sql, `create table ${table} (i int);\ninsert into ${table} select generate_series(1, 777);\n`);
      const p = await runKubectl(
        bin,
        [
          'exec',
          '-i',
          'sts/ess-postgres',
          '-c',
          'postgres',
          '--',
          'psql',
          '-v',
          'ON_ERROR_STOP=1',
          '-U',
          'postgres',
          '-d',
          'synapse',
        ],
        {
          stdoutFile: path.join(workDir, `psql-${version}.txt`),
          stdinFile: sql,
        },
      );
      expect(p.code).toBe(0);
      const db = new pg.Client({ connectionString: synapseUrl() });
      await db.connect();
      const n = Number((await db.query(`select count(*) from ${table}`)).rows[0].count);
      await db.end();
      expect(n).toBe(777);
    });

    it('propagates exit codes and missing executables like a real cluster', async () => {
      const out = path.join(workDir, `exit-${version}.txt`);
      const r = await runKubectl(
        bin,
        ['exec', 'ess-postgres-0', '-c', 'postgres', '--', 'sh', '-c', 'echo partial; exit 3'],
        { stdoutFile: out },
      );
      expect(r.code).toBe(3);
      expect(r.stderr).toContain('command terminated with exit code 3');
      expect(readFileSync(out, 'utf8')).toBe('partial\n');
      const m = await runKubectl(bin, ['exec', 'ess-postgres-0', '-c', 'postgres', '--', 'mas-cli'], {
        stdoutFile: out,
      });
      expect(m.code).toBe(1);
      expect(m.stderr).toMatch(
        /error: Internal error occurred: error executing command in container: .*exec: "mas-cli": executable file not found in \$PATH: unknown/,
      );
    });

    it('an exec fault cuts the stream after N bytes (SPDY clients even exit 0 on it, as client-go does)', async () => {
      sandbox.faults.addExecFault({ pod: 'ess-postgres-0', commandIncludes: 'cut-marker', cutAfterBytes: 100_000 });
      const out = path.join(workDir, `cut-${version}.bin`);
      const argv = [
        'exec',
        'ess-postgres-0',
        '-c',
        'postgres',
        '--',
        'sh',
        '-c',
        'head -c 1000000 /dev/zero # cut-marker',
      ];
      const r = await runKubectl(bin, argv, { stdoutFile: out });
      expect(statSync(out).size).toBe(100_000);
      if (version === '1.27') {
        // client-go's SPDY executor reads an empty error stream at EOF as success: a silent truncation.
        expect(r.code).toBe(0);
      } else {
        expect(r.code).toBe(1);
        expect(r.stderr).toContain('error reading from error stream');
      }
    });

    it('port-forwards the Postgres pod to the real server', async () => {
      const pf = await portForward(bin, 'pod/ess-postgres-0', 5432);
      try {
        for (let i = 0; i < 2; i++) {
          const c = new pg.Client({ host: '127.0.0.1', port: pf.port, user: 'postgres', database: 'synapse' });
          await c.connect();
          const res = await c.query('select count(*)::int as n from users');
          await c.end();
          expect(res.rows[0].n).toBe(rows);
        }
        // 1.27 upgrades to SPDY (POST); 1.33 tunnels SPDY through a WebSocket (GET).
        const upgrades = sandbox.requests.filter((q) => q.subresource === 'portforward');
        expect(upgrades.at(-1)?.method).toBe(version === '1.27' ? 'POST' : 'GET');
      } finally {
        await pf.stop();
      }
    });
  });
}

describe.skipIf(!existsSync(kubectl('1.33')))(
  `kubectl 1.33 against a v4-only (pre-1.30) server${existsSync(kubectl('1.33')) ? '' : ` (SKIPPED: ${kubectl('1.33')} is not installed)`}`,
  () => {
    it('falls back from WebSocket to SPDY for exec (stdin included) and port-forward', async () => {
      sandbox.runtime.execProtocol = 'v4-only';
      try {
        const sql = path.join(workDir, 'fallback.sql');
        writeFileSync(sql, 'select 6 * 7;\n');
        const out = path.join(workDir, 'fallback.txt');
        const r = await runKubectl(
          kubectl('1.33'),
          ['exec', '-i', 'sts/ess-postgres', '-c', 'postgres', '-v=6', '--', 'psql', '-tA', '-U', 'postgres'],
          {
            stdoutFile: out,
            stdinFile: sql,
          },
        );
        expect(r.code).toBe(0);
        expect(readFileSync(out, 'utf8')).toBe('42\n');
        expect(r.stderr).toContain('RemoteCommand fallback');
        expect(r.stderr).toMatch(/verb="POST" url="[^"]+\/exec\?[^"]*" status="101 Switching Protocols"/);
        const pf = await portForward(kubectl('1.33'), 'pod/ess-postgres-0', 5432);
        try {
          const c = new pg.Client({ host: '127.0.0.1', port: pf.port, user: 'postgres', database: 'postgres' });
          await c.connect();
          expect((await c.query('select 1 as one')).rows[0].one).toBe(1);
          await c.end();
        } finally {
          await pf.stop();
        }
      } finally {
        sandbox.runtime.execProtocol = 'v5';
      }
    });
  },
);
