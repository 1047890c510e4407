// `ess backup` on a sandbox with ≥ 1 GB of database and ≥ 1 GB of media, in one run:
// (1) ess wall time against a raw local `pg_dump -Fc` of the same databases (the sandbox's real PostgreSQL URL) plus
//     `tar` of the same media directory — target ≤ 1.15×;
// (2) Synapse downtime against the runbook's manual procedure with real kubectl (scale sts/deploy to 0, wait,
//     `kubectl exec sts/ess-postgres -- pg_dumpall > dump.sql`, copy the media PV on the node, scale up, wait
//     ready) — target ≤ 0.5×;
// (3) peak RSS of ess at 1× and 5× the data — target ≤ 150 MB and flat. The big sandbox is the 5× point; a second,
//     small sandbox (1/5 of the sizes) is the 1× point.
// Env: ESS_BENCH_BACKUP_DB_MB (default 1024), ESS_BENCH_BACKUP_MEDIA_MB (default 1024), ESS_BENCH_BACKUP_ROUNDS
// (default 1), ESS_BENCH_BACKUP_SKIP_RSS=1 skips the small sandbox, ESS_BENCH_KEEP=1 keeps the state directories.
// Quick run: ESS_BENCH_BACKUP_DB_MB=100 ESS_BENCH_BACKUP_MEDIA_MB=100 npm run bench -- backup
import { execFileSync, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { type Sandbox, startSandbox } from '../src/sandbox/index.js';
import { kubectlFor, median, repoRoot, report, runbookScale, runOk, type Timed } from './lib.js';

const DB_MB = Number(process.env.ESS_BENCH_BACKUP_DB_MB ?? 1024);
const MEDIA_MB = Number(process.env.ESS_BENCH_BACKUP_MEDIA_MB ?? 1024);
const ROUNDS = Number(process.env.ESS_BENCH_BACKUP_ROUNDS ?? 1);
const MiB = 2 ** 20;

const dir = mkdtempSync(join(os.tmpdir(), 'ess-bench-backup-'));
mkdirSync(join(dir, 'spool'));

async function seeded(name: string, dbMb: number, mediaMb: number): Promise<Sandbox> {
  const t0 = Date.now();
  const sandbox = await startSandbox({
    users: 500,
    mediaMb,
    dbMb,
    stateDir: join(dir, name),
    readyTimeoutMs: 600_000,
  });
  console.log(
    `${name}: seeded in ${Math.round((Date.now() - t0) / 1000)} s (synapse ${Math.round(sandbox.seed.dbBytes.synapse / MiB)} MiB, media ${Math.round(sandbox.seed.media.bytes / MiB)} MiB in ${sandbox.seed.media.files} files)`,
  );
  return sandbox;
}

/** Runs argv with stdout into a file (the runbook's `> dump.sql`). */
function runToFile(argv: string[], file: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const out = createWriteStream(file);
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
    child.stdout.pipe(out);
    child.on('error', reject);
    child.on('close', (code) =>
      out.end(() => (code === 0 ? resolve() : reject(new Error(`${argv[0]} exited ${code}`)))),
    );
  });
}

function essBackup(sandbox: Sandbox, out: string, extra: string[] = []): Promise<Timed> {
  return runOk([
    process.execPath,
    join(repoRoot, 'bin', 'run.js'),
    'backup',
    '--kubeconfig',
    sandbox.kubeconfigPath,
    '-n',
    sandbox.namespace,
    '--release',
    sandbox.release,
    '-o',
    out,
    '--include-remote-media',
    '--spool-dir',
    join(dir, 'spool'),
    '--json',
    ...extra,
  ]);
}

function databases(sandbox: Sandbox): string[] {
  const out = execFileSync(
    join(sandbox.postgres.binDir, 'psql'),
    [
      sandbox.postgres.url,
      '-X',
      '-A',
      '-t',
      '-c',
      "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres' AND datallowconn",
    ],
    { encoding: 'utf8' },
  );
  return out.split('\n').filter(Boolean);
}

/**
 * The raw baseline: local pg_dump -Fc of each database, then tar of the media store, one after the other. Returns
 * that time, and the time until the files are also on disk (`sync FILE…`, i.e. fsync): ess fsyncs its archive before
 * it reports success, plain `tar > file` leaves the data in the page cache.
 */
async function raw(sandbox: Sandbox, into: string): Promise<{ ms: number; durableMs: number }> {
  mkdirSync(into, { recursive: true });
  const start = Date.now();
  const pg = ['-h', sandbox.postgres.host, '-p', String(sandbox.postgres.port), '-U', 'postgres'];
  for (const db of databases(sandbox)) {
    await runOk([join(sandbox.postgres.binDir, 'pg_dump'), ...pg, '-d', db, '-Fc', '-f', join(into, `${db}.dump`)]);
  }
  const store = join(sandbox.volumeDir(sandbox.namespace, sandbox.layout.mediaClaim), 'media_store');
  await runOk(['tar', '-C', store, '-cf', join(into, 'media.tar'), '.']);
  const ms = Date.now() - start;
  await runOk(['sync', ...readdirSync(into).map((f) => join(into, f))]);
  return { ms, durableMs: Date.now() - start };
}

/** The runbook: scale down, wait, pg_dumpall through kubectl exec, copy the media PV, scale up, wait ready. */
async function manualDowntime(sandbox: Sandbox, into: string): Promise<number> {
  mkdirSync(into, { recursive: true });
  const k = kubectlFor(sandbox);
  const start = Date.now();
  await runbookScale(k, 0);
  await runToFile(k('exec', 'sts/ess-postgres', '--', 'pg_dumpall', '-U', 'postgres'), join(into, 'dump.sql'));
  // "find the media PV on the node and copy it": the volume's directory on the (single) node.
  const store = join(sandbox.volumeDir(sandbox.namespace, sandbox.layout.mediaClaim), 'media_store');
  await runOk(['tar', '-C', store, '-cf', join(into, 'media.tar'), '.']);
  await runbookScale(k, 1);
  return Date.now() - start;
}

const rssMiB = (t: Timed) => (t.peakRssBytes ? Math.round(t.peakRssBytes / MiB) : 'n/a');

let big: Sandbox | undefined;
let small: Sandbox | undefined;
try {
  big = await seeded('big', DB_MB, MEDIA_MB);
  const rawMs: number[] = [];
  const rawDurableMs: number[] = [];
  const essMs: number[] = [];
  const manualMs: number[] = [];
  const essDowntime: number[] = [];
  const ess6Ms: number[] = [];
  let ess6Bytes = 0;
  let bigRun: Timed | undefined;
  let archiveBytes = 0;
  let rawBytes = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const baseline = await raw(big, join(dir, `raw-${round}`));
    rawMs.push(baseline.ms);
    rawDurableMs.push(baseline.durableMs);
    rawBytes = readdirSync(join(dir, `raw-${round}`)).reduce(
      (n, f) => n + statSync(join(dir, `raw-${round}`, f)).size,
      0,
    );
    rmSync(join(dir, `raw-${round}`), { recursive: true, force: true });
    bigRun = await essBackup(big, join(dir, `ess-${round}`));
    const json = JSON.parse(bigRun.stdout) as {
      downtimeMs: number;
      bytes: number;
      durationMs: number;
      stages: { stage: string; ms: number }[];
    };
    console.log(
      `ess stages: ${json.stages.map((st) => `${st.stage} ${(st.ms / 1000).toFixed(1)} s`).join(', ')}; run ${(json.durationMs / 1000).toFixed(1)} s`,
    );
    essMs.push(bigRun.ms);
    essDowntime.push(json.downtimeMs);
    archiveBytes = json.bytes;
    rmSync(join(dir, `ess-${round}`), { recursive: true, force: true });
    // The same compression level as the baseline's pg_dump (ess defaults to gzip 1).
    const level6 = await essBackup(big, join(dir, `ess6-${round}`), ['--compression-level', '6']);
    ess6Ms.push(level6.ms);
    ess6Bytes = (JSON.parse(level6.stdout) as { bytes: number }).bytes;
    rmSync(join(dir, `ess6-${round}`), { recursive: true, force: true });
    console.log(`ess --compression-level 6: ${(level6.ms / 1000).toFixed(1)} s (${Math.round(ess6Bytes / MiB)} MiB)`);
    manualMs.push(await manualDowntime(big, join(dir, `manual-${round}`)));
    rmSync(join(dir, `manual-${round}`), { recursive: true, force: true });
    console.log(
      `round ${round + 1}: raw ${(rawMs.at(-1)! / 1000).toFixed(1)} s (${(rawDurableMs.at(-1)! / 1000).toFixed(1)} s with fsync, ${Math.round(rawBytes / MiB)} MiB), ess ${(bigRun.ms / 1000).toFixed(1)} s (${Math.round(archiveBytes / MiB)} MiB, RSS ${rssMiB(bigRun)} MiB), downtime ess ${(json.downtimeMs / 1000).toFixed(1)} s vs manual ${(manualMs.at(-1)! / 1000).toFixed(1)} s`,
    );
  }
  await big.stop();
  big = undefined;

  let smallRun: Timed | undefined;
  if (!process.env.ESS_BENCH_BACKUP_SKIP_RSS) {
    small = await seeded('small', Math.max(1, Math.round(DB_MB / 5)), Math.max(1, Math.round(MEDIA_MB / 5)));
    smallRun = await essBackup(small, join(dir, 'ess-small'));
    console.log(`small: ess ${(smallRun.ms / 1000).toFixed(1)} s, RSS ${rssMiB(smallRun)} MiB`);
  }

  const r = median(rawMs);
  const rd = median(rawDurableMs);
  const e = median(essMs);
  const m = median(manualMs);
  const d = median(essDowntime);
  report(
    'backup',
    [
      {
        what: 'raw: local pg_dump -Fc of each database + tar of the media',
        medianS: Number((r / 1000).toFixed(1)),
        ratio: 1,
      },
      {
        what: 'ess backup (wall time; archive fsynced)',
        medianS: Number((e / 1000).toFixed(1)),
        ratio: Number((e / r).toFixed(2)),
        target: '≤ 1.15',
      },
      {
        what: "ess backup --compression-level 6 (the baseline pg_dump's level)",
        medianS: Number((median(ess6Ms) / 1000).toFixed(1)),
        ratio: Number((median(ess6Ms) / r).toFixed(2)),
      },
      { what: 'raw, with its files fsynced (sync FILE…)', medianS: Number((rd / 1000).toFixed(1)), ratio: 1 },
      {
        what: 'ess backup against the fsynced raw baseline',
        medianS: Number((e / 1000).toFixed(1)),
        ratio: Number((e / rd).toFixed(2)),
      },
      { what: 'manual runbook downtime (kubectl)', medianS: Number((m / 1000).toFixed(1)), ratio: 1 },
      {
        what: 'ess backup downtime',
        medianS: Number((d / 1000).toFixed(1)),
        ratio: Number((d / m).toFixed(2)),
        target: '≤ 0.5',
      },
      {
        what: `ess peak RSS at 1× (${Math.round(DB_MB / 5)} MB db + ${Math.round(MEDIA_MB / 5)} MB media)`,
        peakRssMiB: smallRun ? rssMiB(smallRun) : 'skipped',
        target: '≤ 150 MB',
      },
      {
        what: `ess peak RSS at 5× (${DB_MB} MB db + ${MEDIA_MB} MB media)`,
        peakRssMiB: bigRun ? rssMiB(bigRun) : 'n/a',
        target: '≤ 150 MB, flat',
      },
    ],
    {
      rounds: ROUNDS,
      dbMb: DB_MB,
      mediaMb: MEDIA_MB,
      archiveBytes,
      archiveBytesLevel6: ess6Bytes,
      rawBytes,
      cpus: os.cpus().length,
      loadavg: os.loadavg(),
    },
  );
} finally {
  await big?.stop();
  await small?.stop();
  if (!process.env.ESS_BENCH_KEEP) rmSync(dir, { recursive: true, force: true });
}
