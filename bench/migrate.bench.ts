// `ess migrate import` of a ≥ 1 GB dump against the runbook's manual procedure ("Migrating from Self-Hosted to
// ESS": scale Synapse down, copy the dump into the pod's /tmp, drop the tables and the listed sequences, pg_restore,
// scale up), both against the same sandbox. Targets: ess ≤ 0.8× the manual wall time; ess peak RSS ≤ 150 MB.
// Env: ESS_BENCH_MIGRATE_DB_MB (database size to seed, default 3100: a ~1.3 GB dump), ESS_BENCH_MIGRATE_ROUNDS
// (default 1), ESS_BENCH_MIGRATE_JOBS (ess --jobs, default 4), ESS_BENCH_MIGRATE_STATE (reuse a sandbox state
// directory seeded earlier, e.g. one kept with ESS_BENCH_KEEP=1, which keeps the state directory).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { startSandbox } from '../src/sandbox/index.js';
import { kubectlFor, median, repoRoot, report, runbookScale, runOk, timeCommand } from './lib.js';

const DB_MB = Number(process.env.ESS_BENCH_MIGRATE_DB_MB ?? 3100);
const ROUNDS = Number(process.env.ESS_BENCH_MIGRATE_ROUNDS ?? 1);
const JOBS = Number(process.env.ESS_BENCH_MIGRATE_JOBS ?? 4);

const dir = mkdtempSync(join(os.tmpdir(), 'ess-bench-migrate-'));
const t0 = Date.now();
const sandbox = await startSandbox({
  users: 500,
  mediaMb: 1,
  dbMb: DB_MB,
  stateDir: process.env.ESS_BENCH_MIGRATE_STATE ?? join(dir, 'state'),
  readyTimeoutMs: 600_000,
});
console.log(
  `sandbox seeded in ${Math.round((Date.now() - t0) / 1000)} s (synapse ${Math.round(sandbox.seed.dbBytes.synapse / 2 ** 20)} MiB)`,
);

try {
  const dump = join(dir, 'synapse.dump');
  const pgArgs = ['-h', sandbox.postgres.host, '-p', String(sandbox.postgres.port), '-U', 'postgres'];
  execFileSync(join(sandbox.postgres.binDir, 'pg_dump'), [...pgArgs, '-d', 'synapse', '-Fc', '-O', '-f', dump]);
  const dumpBytes = statSync(dump).size;
  console.log(`dump: ${(dumpBytes / 2 ** 30).toFixed(2)} GiB`);
  if (dumpBytes < 2 ** 30) console.warn('warning: the dump is smaller than 1 GiB; raise ESS_BENCH_MIGRATE_DB_MB');

  const k = kubectlFor(sandbox);
  // The runbook's drop block (ess-runbooks.md, "Migrating from Self-Hosted to ESS"), verbatim sequence list.
  const dropSql = `DO $$ DECLARE r RECORD; BEGIN
    FOR r IN (SELECT tablename FROM pg_tables WHERE schemaname = current_schema()) LOOP
      EXECUTE 'DROP TABLE ' || quote_ident(r.tablename) || ' CASCADE'; END LOOP; END $$;
    ${[
      'cache_invalidation_stream_seq',
      'state_group_id_seq',
      'user_id_seq',
      'account_data_sequence',
      'application_services_txn_id_seq',
      'device_inbox_sequence',
      'event_auth_chain_id',
      'events_backfill_stream_seq',
      'events_stream_seq',
      'presence_stream_sequence',
      'receipts_sequence',
      'un_partial_stated_event_stream_sequence',
      'un_partial_stated_room_stream_sequence',
    ]
      .map((s) => `DROP sequence ${s};`)
      .join(' ')}`;

  const manual = async (): Promise<number> => {
    const start = Date.now();
    await runbookScale(k, 0);
    await runOk(k('cp', dump, `${sandbox.layout.postgresPod}:/tmp/synapse.dump`, '-c', 'postgres'));
    await runOk(
      k(
        'exec',
        sandbox.layout.postgresPod,
        '-c',
        'postgres',
        '--',
        'psql',
        '-U',
        'synapse_user',
        '-d',
        'synapse',
        '-c',
        dropSql,
      ),
    );
    // The runbook's restore; it reports the leftover functions as errors (ignored, as a user would).
    await timeCommand(
      k(
        'exec',
        sandbox.layout.postgresPod,
        '-c',
        'postgres',
        '--',
        'pg_restore',
        '-U',
        'postgres',
        '--no-owner',
        '--role=synapse_user',
        '-d',
        'synapse',
        '/tmp/synapse.dump',
      ),
    );
    await runOk(k('exec', sandbox.layout.postgresPod, '-c', 'postgres', '--', 'rm', '-f', '/tmp/synapse.dump'));
    await runbookScale(k, 1);
    return Date.now() - start;
  };

  const manualMs: number[] = [];
  const essMs: number[] = [];
  const essRss: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    manualMs.push(await manual());
    console.log(`round ${round + 1}: manual ${Math.round(manualMs.at(-1)! / 1000)} s`);
    const argv = [
      process.execPath,
      join(repoRoot, 'bin', 'run.js'),
      'migrate',
      'import',
      dump,
      '--kubeconfig',
      sandbox.kubeconfigPath,
      '-n',
      sandbox.namespace,
      '--release',
      sandbox.release,
      '--yes',
      '--no-media',
      '--jobs',
      String(JOBS),
      '--json',
    ];
    const t = await timeCommand(argv);
    if (t.code !== 0 && t.code !== 3) throw new Error(`ess migrate import exited ${t.code}:\n${t.stderr.slice(-2000)}`);
    const phases = (JSON.parse(t.stdout) as { phases: { name: string; ms: number }[] }).phases;
    console.log(`  phases: ${phases.map((p) => `${p.name} ${(p.ms / 1000).toFixed(1)}s`).join(', ')}`);
    essMs.push(t.ms);
    if (t.peakRssBytes) essRss.push(t.peakRssBytes);
    console.log(
      `round ${round + 1}: ess ${Math.round(t.ms / 1000)} s, peak RSS ${Math.round((t.peakRssBytes ?? 0) / 2 ** 20)} MiB`,
    );
  }
  const m = median(manualMs);
  const e = median(essMs);
  report(
    'migrate',
    [
      {
        what: 'manual runbook (kubectl cp to /tmp, drop tables, pg_restore)',
        medianS: Number((m / 1000).toFixed(1)),
        ratio: 1,
      },
      {
        what: `ess migrate import (--jobs ${JOBS})`,
        medianS: Number((e / 1000).toFixed(1)),
        ratio: Number((e / m).toFixed(2)),
        peakRssMiB: essRss.length ? Math.round(Math.max(...essRss) / 2 ** 20) : 'n/a',
      },
    ],
    { rounds: ROUNDS, dumpBytes, dbMb: DB_MB, cpus: os.cpus().length, target: 'ess ≤ 0.8× manual; peak RSS ≤ 150 MB' },
  );
} finally {
  await sandbox.stop();
  if (!process.env.ESS_BENCH_KEEP) rmSync(dir, { recursive: true, force: true });
}
