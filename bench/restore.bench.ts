// `ess restore` of the databases against the runbook's manual restore ("Backup & restore" in the ESS docs: scale
// Synapse and MAS down, drop the databases and roles, `kubectl cp dump.sql` into the Postgres pod, `psql < dump.sql`
// of a pg_dumpall, empty e2e_one_time_keys_json, scale up), both against the same sandbox and the same data.
// The archive for ess is made by `ess backup` (not timed); the manual dump by the runbook's
// `kubectl exec … pg_dumpall -U postgres > dump.sql` (not timed). Targets: ess ≤ 0.8× the manual wall time;
// ess peak RSS ≤ 150 MB.
// Env: ESS_BENCH_RESTORE_DB_MB (synapse database size to seed, default 1200), ESS_BENCH_RESTORE_ROUNDS (default 1),
// ESS_BENCH_RESTORE_JOBS (ess --jobs, default 4), ESS_BENCH_KEEP=1 keeps the state directory.
import { execFileSync, spawn } from 'node:child_process';
import { createWriteStream, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { startSandbox } from '../src/sandbox/index.js';
import { kubectlFor, median, repoRoot, report, runbookScale, runOk, timeCommand } from './lib.js';

const DB_MB = Number(process.env.ESS_BENCH_RESTORE_DB_MB ?? 1200);
const ROUNDS = Number(process.env.ESS_BENCH_RESTORE_ROUNDS ?? 1);
const JOBS = Number(process.env.ESS_BENCH_RESTORE_JOBS ?? 4);

const dir = mkdtempSync(join(os.tmpdir(), 'ess-bench-restore-'));
const t0 = Date.now();
const sandbox = await startSandbox({
  users: 500,
  mediaMb: 1,
  dbMb: DB_MB,
  stateDir: join(dir, 'state'),
  readyTimeoutMs: 600_000,
});
const dbBytes = sandbox.seed.dbBytes.synapse + sandbox.seed.dbBytes.mas;
console.log(
  `sandbox seeded in ${Math.round((Date.now() - t0) / 1000)} s (databases ${(dbBytes / 2 ** 30).toFixed(2)} GiB)`,
);
if (dbBytes < 2 ** 30) console.warn('warning: the databases are smaller than 1 GiB; raise ESS_BENCH_RESTORE_DB_MB');

try {
  const k = kubectlFor(sandbox);
  const ess = (...args: string[]) => [
    process.execPath,
    join(repoRoot, 'bin', 'run.js'),
    ...args,
    '--kubeconfig',
    sandbox.kubeconfigPath,
    '-n',
    sandbox.namespace,
    '--release',
    sandbox.release,
  ];

  // Inputs (not timed): the runbook's dump, and an ess backup of the same state.
  const dumpSql = join(dir, 'dump.sql');
  const dumpAll = k('exec', 'sts/ess-postgres', '-c', 'postgres', '--', 'pg_dumpall', '-U', 'postgres');
  const child = spawn(dumpAll[0]!, dumpAll.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`pg_dumpall exited ${code}`))));
  });
  await Promise.all([pipeline(child.stdout, createWriteStream(dumpSql)), exited]);
  const backups = join(dir, 'backups');
  const backup = await runOk(ess('backup', '-o', backups, '--json'));
  const archive = join(backups, readdirSync(backups)[0]!);
  console.log(
    `dump.sql ${(statSync(dumpSql).size / 2 ** 30).toFixed(2)} GiB; ess archive ${(statSync(archive).size / 2 ** 30).toFixed(2)} GiB (backup took ${Math.round(backup.ms / 1000)} s)`,
  );

  const psqlC = (sql: string) =>
    runOk(k('exec', sandbox.layout.postgresPod, '-c', 'postgres', '--', 'psql', '-U', 'postgres', '-c', sql));
  const manual = async (): Promise<number> => {
    const start = Date.now();
    await runbookScale(k, 0);
    // "Drop newly created databases and roles", verbatim.
    await psqlC('DROP DATABASE matrixauthenticationservice');
    await psqlC('DROP DATABASE synapse');
    await psqlC('DROP ROLE synapse_user');
    await psqlC('DROP ROLE matrixauthenticationservice_user');
    await runOk(k('cp', dumpSql, `${sandbox.layout.postgresPod}:/tmp/dump.sql`, '-c', 'postgres'));
    // psql reports "role postgres already exists" and goes on, as it does for a user.
    await runOk(
      k(
        'exec',
        sandbox.layout.postgresPod,
        '-c',
        'postgres',
        '--',
        'bash',
        '-c',
        'psql -q -U postgres -d postgres < /tmp/dump.sql > /dev/null',
      ),
    );
    await runOk(k('exec', sandbox.layout.postgresPod, '-c', 'postgres', '--', 'rm', '-f', '/tmp/dump.sql'));
    await runOk(
      k(
        'exec',
        sandbox.layout.postgresPod,
        '-c',
        'postgres',
        '--',
        'psql',
        '-U',
        'postgres',
        '-d',
        'synapse',
        '-c',
        'TRUNCATE e2e_one_time_keys_json',
      ),
    );
    await runbookScale(k, 1);
    return Date.now() - start;
  };

  const manualMs: number[] = [];
  const essMs: number[] = [];
  const essRss: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    manualMs.push(await manual());
    console.log(`round ${round + 1}: manual ${Math.round(manualMs.at(-1)! / 1000)} s`);
    const t = await timeCommand(ess('restore', archive, '--only', 'db', '--yes', '--jobs', String(JOBS), '--json'));
    if (t.code !== 0) throw new Error(`ess restore exited ${t.code}:\n${t.stderr.slice(-3000)}`);
    const result = JSON.parse(t.stdout) as { postChecks: { ok: boolean }[]; downtimeMs?: number };
    if (!result.postChecks.every((c) => c.ok)) throw new Error(`ess restore post-checks failed: ${t.stdout}`);
    essMs.push(t.ms);
    if (t.peakRssBytes) essRss.push(t.peakRssBytes);
    console.log(
      `round ${round + 1}: ess ${Math.round(t.ms / 1000)} s (downtime ${Math.round((result.downtimeMs ?? 0) / 1000)} s), peak RSS ${Math.round((t.peakRssBytes ?? 0) / 2 ** 20)} MiB`,
    );
  }
  const m = median(manualMs);
  const e = median(essMs);
  const counts = execFileSync(
    join(sandbox.postgres.binDir, 'psql'),
    ['-d', sandbox.postgres.url.replace(/\/postgres$/, '/synapse'), '-XAtc', 'SELECT count(*) FROM events'],
    { encoding: 'utf8' },
  ).trim();
  report(
    'restore',
    [
      {
        what: 'manual runbook (drop, kubectl cp dump.sql, psql < dump.sql, truncate, scale)',
        medianS: Number((m / 1000).toFixed(1)),
        ratio: 1,
      },
      {
        what: `ess restore --only db (--jobs ${JOBS}, incl. verification pass)`,
        medianS: Number((e / 1000).toFixed(1)),
        ratio: Number((e / m).toFixed(2)),
        peakRssMiB: essRss.length ? Math.round(Math.max(...essRss) / 2 ** 20) : 'n/a',
      },
    ],
    {
      rounds: ROUNDS,
      dbBytes,
      dbMb: DB_MB,
      events: Number(counts),
      cpus: os.cpus().length,
      target: 'ess ≤ 0.8× manual; peak RSS ≤ 150 MB',
    },
  );
} finally {
  await sandbox.stop();
  if (!process.env.ESS_BENCH_KEEP) rmSync(dir, { recursive: true, force: true });
}
