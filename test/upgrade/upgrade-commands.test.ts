/**
 * `ess upgrade history` and `ess upgrade rollback` against the sandbox seeded with the runbook's stuck history
 * (revisions 6–15: 9 and 14 failed, 13 deployed, 15 pending-upgrade). The CLI runs as a child process (build first:
 * `npm run build`); the many refusal variants call the service in-process over the same real API and Postgres, to
 * keep the file fast.
 *
 * helm cannot be installed on this machine. The CLI tests put a fake `helm` executable (a shell script that records
 * its argv and prints like helm) on PATH; the in-process tests inject a fake HelmRunner. The no-helm path runs with
 * a PATH that has no helm at all.
 */
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { PassThrough } from 'node:stream';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EssError } from '../../src/lib/errors.js';
import { decodeRelease, type HelmRelease } from '../../src/lib/helm/release.js';
import type { HelmRunner } from '../../src/lib/helm/runner.js';
import type { KubeClient } from '../../src/lib/kube/client.js';
import { connectKube } from '../../src/lib/kube/load.js';
import { silentReporter } from '../../src/lib/output/log.js';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import type { KubeObject } from '../../src/sandbox/types.js';
import { getHistory } from '../../src/services/upgrade/history.js';
import { renderRollbackResult } from '../../src/services/upgrade/render.js';
import { type RollbackOptions, rollbackStuckUpgrade } from '../../src/services/upgrade/rollback.js';
import { type CliResult, runCli, sandboxFlags } from '../helpers/cli.js';

const FAKE_HELM = `#!/bin/sh
# Fake helm for tests: records argv (one per line), prints like helm, exits with $FAKE_HELM_EXIT.
: > "$FAKE_HELM_LOG"
for a in "$@"; do printf '%s\\n' "$a" >> "$FAKE_HELM_LOG"; done
echo "Rollback was a success! Happy Helming!"
`;

/** A helm that hangs like `helm rollback --wait` until it gets SIGINT, then records that it did and exits 1. */
const SLOW_HELM = `#!/bin/sh
: > "$FAKE_HELM_LOG"
for a in "$@"; do printf '%s\\n' "$a" >> "$FAKE_HELM_LOG"; done
trap 'kill $pid; echo "Error: context canceled" >&2; echo SIGINT > "$FAKE_HELM_LOG.signal"; exit 1' INT
echo "waiting for resources" >&2
sleep 60 &
pid=$!
wait $pid
`;

/** An injected HelmRunner that records calls instead of running anything. */
function fakeHelm(present: boolean, exitCode = 0): HelmRunner & { calls: string[][] } {
  const calls: string[][] = [];
  return {
    calls,
    available: async () => (present ? '/fake/bin/helm' : undefined),
    async run(argv, { output }) {
      calls.push(argv);
      output.write(exitCode ? 'Error: simulated helm failure\n' : 'Rollback was a success! Happy Helming!\n');
      return { exitCode, stderrTail: exitCode ? 'Error: simulated helm failure\n' : '' };
    },
  };
}

describe('ess upgrade history / rollback against the sandbox (stuck release)', () => {
  let sandbox: Sandbox;
  let kube: KubeClient;
  let tmp: string;
  let helmDir: string;
  let slowHelmDir: string;
  let helmLog: string;
  /** PATH without any helm (the machine has none; directories that do are dropped). */
  let pathWithoutHelm: string;

  const secretRes = () => sandbox.store.resourceByKind('Secret', 'v1');
  const releaseSecret = (rev: number) =>
    sandbox.store.get(secretRes(), sandbox.namespace, `sh.helm.release.v1.${sandbox.release}.v${rev}`) as KubeObject & {
      data: { release: string };
    };
  const decoded = (rev: number): HelmRelease => decodeRelease(releaseSecret(rev).data.release);

  const withHelm = () => ({ PATH: `${helmDir}${delimiter}${pathWithoutHelm}`, FAKE_HELM_LOG: helmLog });
  const withoutHelm = () => ({ PATH: pathWithoutHelm, FAKE_HELM_LOG: helmLog });
  const cli = (args: string[], env: NodeJS.ProcessEnv = withHelm()) =>
    runCli([...args, ...sandboxFlags(sandbox)], { env });
  const json = (r: CliResult) => JSON.parse(r.stdout);
  const helmArgv = async () => (existsSync(helmLog) ? (await readFile(helmLog, 'utf8')).trim().split('\n') : undefined);

  const options = (extra: Partial<RollbackOptions> = {}): RollbackOptions => ({
    namespace: sandbox.namespace,
    release: sandbox.release,
    staleAfterMs: 15 * 60_000,
    timeout: '10m',
    force: false,
    markFailed: false,
    dryRun: true,
    ...extra,
  });
  const rollback = (extra: Partial<RollbackOptions> = {}, helm: HelmRunner = fakeHelm(true)) =>
    rollbackStuckUpgrade(kube, options(extra), {
      reporter: silentReporter,
      helm,
      helmOutput: new PassThrough().resume(),
      confirm: async () => {},
    });
  /** The error a rollback is refused with. */
  const refusal = async (extra: Partial<RollbackOptions> = {}, helm?: HelmRunner): Promise<EssError> => {
    const error = await rollback(extra, helm).then(
      () => undefined,
      (e: EssError) => e,
    );
    if (!error) throw new Error('expected the rollback to be refused');
    return error;
  };

  async function synapseSql(sql: string): Promise<void> {
    const url = new URL(sandbox.postgres.url);
    url.pathname = `/${sandbox.seed.databases.synapse}`;
    const client = new pg.Client({ connectionString: url.toString() });
    await client.connect();
    try {
      await client.query(sql);
    } finally {
      await client.end();
    }
  }

  beforeAll(async () => {
    sandbox = await startSandbox({ stuckRelease: true, users: 10, mediaMb: 1 });
    kube = await connectKube({ kubeconfig: sandbox.kubeconfigPath });
    tmp = await mkdtemp(join(tmpdir(), 'ess-upgrade-test-'));
    helmDir = join(tmp, 'bin');
    helmLog = join(tmp, 'helm-argv.txt');
    await mkdir(helmDir);
    await writeFile(join(helmDir, 'helm'), FAKE_HELM);
    await chmod(join(helmDir, 'helm'), 0o755);
    slowHelmDir = join(tmp, 'slow-bin');
    await mkdir(slowHelmDir);
    await writeFile(join(slowHelmDir, 'helm'), SLOW_HELM);
    await chmod(join(slowHelmDir, 'helm'), 0o755);
    pathWithoutHelm = (process.env.PATH ?? '')
      .split(delimiter)
      .filter((d) => d && !existsSync(join(d, 'helm')))
      .join(delimiter);
  });
  afterAll(async () => {
    await sandbox?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('history --json: the runbook revisions 6–15 from the release Secrets, status from the release body', async () => {
    const r = await cli(['upgrade', 'history', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const rows = json(r).revisions as { revision: number; status: string; chart: string; description: string }[];
    expect(rows.map((x) => x.revision)).toEqual([6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
    expect(rows.map((x) => x.status)).toEqual([
      'superseded',
      'superseded',
      'superseded',
      'failed',
      'superseded',
      'superseded',
      'superseded',
      'deployed',
      'failed',
      'pending-upgrade',
    ]);
    expect(rows[7]).toMatchObject({ chart: 'matrix-stack-0.12.0', description: 'Upgrade complete' });
    expect(rows[8].description).toContain('pre-upgrade hooks failed');
    expect(rows[9]).toMatchObject({ chart: 'matrix-stack-25.4.2', description: 'Preparing upgrade' });
    // Every key the docs list is in every revision, appVersion too ('' for matrix-stack, which sets none).
    for (const row of rows) expect(row).toHaveProperty('appVersion', '');
  });

  it('history: a helm-like table on stdout, --max keeps the newest; an unknown release is a precondition error', async () => {
    const r = await cli(['upgrade', 'history', '--max', '3']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/REVISION.*UPDATED.*STATUS.*CHART.*APP VERSION.*DESCRIPTION/);
    expect(r.stdout).toMatch(/15.*pending-upgrade.*matrix-stack-25\.4\.2.*Preparing upgrade/);
    expect(r.stdout).toMatch(/13 .*(Mon|Tue|Wed|Thu|Fri|Sat|Sun) May 1[56] \d\d:\d\d:\d\d 2025/);
    expect(r.stdout).not.toMatch(/matrix-stack-0\.11\.5/);
    const missing = await getHistory(kube, { namespace: 'ess', release: 'prod', max: 5 }, silentReporter).catch(
      (e: EssError) => e,
    );
    expect(missing).toMatchObject({ code: 'RELEASE_NOT_FOUND', exitCode: 4 });
    expect((missing as EssError).next.join(' ')).toContain('ess');
  });

  it('rollback --dry-run: proves 15 is stale, picks 13 and explains why, changes nothing', async () => {
    const before = releaseSecret(15).metadata.resourceVersion;
    const r = await cli(['upgrade', 'rollback', '--dry-run', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const plan = json(r);
    expect(plan).toMatchObject({ dryRun: true, applied: false, action: 'helm-rollback' });
    expect(plan.stuck).toMatchObject({ revision: 15, status: 'pending-upgrade' });
    expect(plan.target).toMatchObject({ revision: 13, status: 'deployed', chart: 'matrix-stack-0.12.0' });
    expect(plan.target.synapseVersion).toMatch(/^v?1\.\d+\.\d+/);
    const verdicts = Object.fromEntries(
      plan.candidates.map((c: { revision: number; verdict: string }) => [c.revision, c.verdict]),
    );
    expect(verdicts).toMatchObject({ 15: 'stuck (pending-upgrade)', 14: 'skipped: failed', 13: 'TARGET' });
    expect(verdicts[12]).toBe('older than target');
    expect(plan.checks.map((c: { id: string; ok: boolean }) => [c.id, c.ok])).toEqual([
      ['hook-jobs', true],
      ['age', true],
      ['lock', true],
      ['target', true],
      ['schema', true],
      ['marker', true],
    ]);
    expect(plan.database).toMatchObject({ schemaVersion: sandbox.seed.schemaVersion, compatVersion: 84 });
    expect(plan.liveMarker).toBe('delegated_auth');
    expect(plan.command).toBe(
      `helm rollback ess 13 -n ess --wait --timeout 10m --kubeconfig ${sandbox.kubeconfigPath}`,
    );
    expect(await helmArgv()).toBeUndefined();
    expect(releaseSecret(15).metadata.resourceVersion).toBe(before);

    const text = renderRollbackResult(plan);
    expect(text).toMatch(/Stuck revision:\s+15 \(pending-upgrade/);
    expect(text).toMatch(/13 .*deployed.*TARGET/);
    expect(text).toMatch(/\[ok {2}\] schema: Synapse .* can use the database/);
    expect(text).toContain('Dry run: nothing was changed.');
  });

  it('rollback without --yes and without a TTY refuses (exit 4) and runs nothing', async () => {
    const r = await cli(['upgrade', 'rollback', '--json']);
    expect(r.code).toBe(4);
    expect(json(r).error.code).toBe('CONFIRMATION_REQUIRED');
    expect(await helmArgv()).toBeUndefined();
  });

  it('rollback refuses a revision that changed less than --stale-after ago (plan on stderr); bad durations exit 2', async () => {
    const r = await cli(['upgrade', 'rollback', '--dry-run', '--stale-after', '100000h', '--json']);
    expect(r.code).toBe(4);
    expect(json(r).error.code).toBe('ROLLBACK_REFUSED');
    expect(json(r).error.message).toMatch(/less than --stale-after/);
    expect(r.stderr).toMatch(/\[FAIL\] age:/);
    // The JSON error carries the plan, so a script can see which check failed.
    const plan = json(r).error.details.plan;
    expect(plan).toMatchObject({ stuck: { revision: 15 }, target: { revision: 13 }, action: 'helm-rollback' });
    expect(plan.checks.find((c: { id: string }) => c.id === 'age')).toMatchObject({ ok: false, severity: 'hard' });
    // A refused REVISION is named in the message (not "revision ?").
    const fifteen = await cli(['upgrade', 'rollback', '15', '--dry-run', '--json']);
    expect(fifteen.code).toBe(4);
    expect(json(fifteen).error.message).toMatch(/^Refusing to roll back ess\/ess to revision 15:/);
    expect(json(fifteen).error.details.plan).toMatchObject({ requestedRevision: 15 });
    expect(json(fifteen).error.details.plan.checks.find((c: { id: string }) => c.id === 'target')).toMatchObject({
      ok: false,
      detail: 'Revision 15 is not older than the stuck revision.',
    });
    const bad = await cli(['upgrade', 'rollback', '--dry-run', '--stale-after', 'soon', '--json']);
    expect(bad.code).toBe(2);
  });

  it('a pending revision younger than 1h passes --stale-after 15m but is flagged: helm --wait may still run', async () => {
    const modifiedAt = Number(releaseSecret(15).metadata.labels?.modifiedAt) * 1000;
    const at = (ms: number) =>
      rollbackStuckUpgrade(kube, options(), {
        reporter: silentReporter,
        helm: fakeHelm(true),
        helmOutput: new PassThrough().resume(),
        confirm: async () => {},
        now: () => new Date(ms),
      });
    const young = await at(modifiedAt + 20 * 60_000);
    expect(young.stuck.ageSeconds).toBe(20 * 60);
    const age = young.checks.find((c) => c.id === 'age');
    expect(age).toMatchObject({ ok: true });
    expect(age?.detail).toMatch(/unchanged for 20m.*younger than 1h: a `helm upgrade --wait --timeout 1h`/);
    expect(young.warnings.join('\n')).toMatch(/Revision 15 changed 20m.* ago\. It is younger than 1h/);
    expect(renderRollbackResult(young)).toMatch(/Stuck revision:\s+15 \(pending-upgrade, .*unchanged for 20m/);
    const old = await at(modifiedAt + 2 * 3600_000);
    expect(old.checks.find((c) => c.id === 'age')?.detail).not.toMatch(/younger than 1h/);
    expect(old.warnings.join('\n')).not.toMatch(/younger than 1h/);
  });

  it('refuses while the ess lock is held, and ignores an expired lease', async () => {
    const leaseRes = sandbox.store.resourceByKind('Lease', 'coordination.k8s.io/v1');
    const spec = (renewMs: number) => ({
      holderIdentity: 'other-host:42',
      leaseDurationSeconds: 120,
      renewTime: new Date(renewMs).toISOString(),
    });
    sandbox.store.create(leaseRes, {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: {
        name: 'ess-ess-lock',
        namespace: sandbox.namespace,
        annotations: { 'ess.element.io/operation': 'backup' },
      },
      spec: spec(Date.now()),
    });
    try {
      expect((await refusal()).message).toMatch(/held by other-host:42 \(backup\)/);
      const current = sandbox.store.get(leaseRes, sandbox.namespace, 'ess-ess-lock') as KubeObject;
      sandbox.store.update(leaseRes, { ...current, spec: spec(Date.now() - 600_000) });
      expect((await rollback()).checks.find((c) => c.id === 'lock')?.ok).toBe(true);
    } finally {
      sandbox.store.delete(leaseRes, sandbox.namespace, 'ess-ess-lock');
    }
  });

  it('refuses while a hook Job is still running, even with --force', async () => {
    const jobRes = sandbox.store.resourceByKind('Job', 'batch/v1');
    sandbox.store.create(jobRes, {
      apiVersion: 'batch/v1',
      kind: 'Job',
      metadata: { name: 'ess-deployment-markers-post', namespace: sandbox.namespace },
      spec: { template: { spec: { containers: [] } } },
      status: { active: 1, startTime: new Date().toISOString() },
    });
    try {
      expect((await refusal({ force: true })).message).toMatch(/Hook Job still running: ess-deployment-markers-post/);
    } finally {
      sandbox.store.delete(jobRes, sandbox.namespace, 'ess-deployment-markers-post');
    }
  });

  it("refuses a target older than the database's schema compat version; --force overrides with a warning", async () => {
    await synapseSql('UPDATE schema_compat_version SET compat_version = 95');
    try {
      const error = await refusal();
      expect(error.code).toBe('ROLLBACK_REFUSED');
      expect(error.message).toMatch(/older than the database's compat version 95/);
      expect(error.next.join('\n')).toMatch(/--force/);
      const forced = await rollback({ force: true });
      expect(forced.forced.join('\n')).toMatch(/compat version 95/);
      expect(forced.warnings.join('\n')).toMatch(/--force: ignoring: .*compat version 95/);
      // Marking failed does not roll back: the refusal becomes a note and no rollback is suggested.
      const mark = await rollback({ markFailed: true });
      expect(mark.checks.find((c) => c.id === 'schema')).toMatchObject({ ok: false, severity: 'info' });
    } finally {
      await synapseSql('UPDATE schema_compat_version SET compat_version = 84');
    }
  });

  it('refuses a target across a deployment-marker boundary', async () => {
    const cmRes = sandbox.store.resourceByKind('ConfigMap', 'v1');
    const original = sandbox.store.get(cmRes, sandbox.namespace, 'ess-markers') as KubeObject & {
      data: Record<string, string>;
    };
    expect(original.data.MATRIX_STACK_MSC3861).toBe('delegated_auth');
    sandbox.store.update(cmRes, { ...original, data: { ...original.data, MATRIX_STACK_MSC3861: 'legacy_auth' } });
    try {
      expect((await refusal()).message).toMatch(/runs delegated_auth .* moved on to legacy_auth/);
    } finally {
      const current = sandbox.store.get(cmRes, sandbox.namespace, 'ess-markers') as KubeObject;
      sandbox.store.update(cmRes, { ...current, data: original.data });
    }
  });

  it('REVISION: a good older revision is accepted, a failed one refused, the stuck one impossible', async () => {
    const twelve = await rollback({ revision: 12 });
    expect(twelve.target?.revision).toBe(12);
    expect(twelve.candidates.find((c) => c.revision === 13)?.verdict).toBe(
      'skipped: newer than the requested revision',
    );
    expect((await refusal({ revision: 14 })).message).toMatch(/Revision 14 is failed/);
    expect((await refusal({ revision: 15, force: true })).message).toMatch(/not older than the stuck revision/);
  });

  it('SIGINT during helm rollback: forwarded to helm, exit 130, says the release may be pending-rollback', async () => {
    const env = { PATH: `${slowHelmDir}${delimiter}${pathWithoutHelm}`, FAKE_HELM_LOG: helmLog };
    const r = await runCli(['upgrade', 'rollback', '--yes', '--json', ...sandboxFlags(sandbox)], {
      env,
      onSpawn: (child) => {
        const poll = setInterval(() => {
          if (existsSync(helmLog)) {
            clearInterval(poll);
            setTimeout(() => child.kill('SIGINT'), 300);
          }
        }, 100);
        child.on('close', () => clearInterval(poll));
      },
    });
    expect(r.code, r.stderr).toBe(130);
    const error = json(r).error;
    expect(error).toMatchObject({ code: 'INTERRUPTED', exitCode: 130 });
    expect(error.message).toMatch(/pending-rollback/);
    expect(error.next.join('\n')).toMatch(/ess upgrade history -n ess --release ess/);
    expect(error.next.join('\n')).toMatch(/--mark-failed/);
    expect(r.stderr).not.toMatch(/This is a bug in ess|helm failed/);
    expect(await readFile(`${helmLog}.signal`, 'utf8')).toBe('SIGINT\n');
    const leaseRes = sandbox.store.resourceByKind('Lease', 'coordination.k8s.io/v1');
    expect(sandbox.store.get(leaseRes, 'ess', 'ess-ess-lock')).toBeUndefined();
    await rm(helmLog, { force: true });
    await rm(`${helmLog}.signal`, { force: true });
  });

  it('rollback --yes with helm: runs the exact helm rollback command and streams its output to stderr', async () => {
    const r = await cli(['upgrade', 'rollback', '--yes', '--timeout', '20m', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(await helmArgv()).toEqual([
      'rollback',
      'ess',
      '13',
      '-n',
      'ess',
      '--wait',
      '--timeout',
      '20m',
      '--kubeconfig',
      sandbox.kubeconfigPath,
    ]);
    expect(r.stderr).toContain(
      `Running: helm rollback ess 13 -n ess --wait --timeout 20m --kubeconfig ${sandbox.kubeconfigPath}`,
    );
    expect(r.stderr).toContain('Rollback was a success! Happy Helming!');
    expect(json(r)).toMatchObject({ applied: true, action: 'helm-rollback', target: { revision: 13 } });
    // ess took and released its lock around the rollback.
    const leaseRes = sandbox.store.resourceByKind('Lease', 'coordination.k8s.io/v1');
    expect(sandbox.store.get(leaseRes, 'ess', 'ess-ess-lock')).toBeUndefined();
    await rm(helmLog, { force: true });
  });

  it('a failing helm is an external tool error with its stderr and next steps', async () => {
    const helm = fakeHelm(true, 1);
    const error = await refusal({ dryRun: false }, helm);
    expect(helm.calls).toHaveLength(1);
    expect(error).toMatchObject({ code: 'EXTERNAL_TOOL', exitCode: 1 });
    expect(error.message).toContain('simulated helm failure');
    expect(error.next.join('\n')).toContain('ess upgrade history');
  });

  it('mark-failed: a concurrent change of the release Secret is detected and nothing is written', async () => {
    const before = releaseSecret(15).metadata.resourceVersion;
    sandbox.faults.addApiFault({
      verb: 'update',
      resource: 'secrets',
      name: 'sh.helm.release.v1.ess.v15',
      status: 409,
      message: 'the object has been modified',
    });
    const error = await refusal({ dryRun: false }, fakeHelm(false));
    expect(error.code).toBe('RELEASE_CHANGED');
    expect(releaseSecret(15).metadata.resourceVersion).toBe(before);
    expect(decoded(15).info.status).toBe('pending-upgrade');
  });

  it('mark-failed without helm (CLI): status failed in the label and the release body, nothing else changes', async () => {
    const before = decoded(15);
    const r = await cli(['upgrade', 'rollback', '--yes', '--json'], withoutHelm());
    expect(r.code, r.stderr).toBe(0);
    const result = json(r);
    expect(result).toMatchObject({ applied: true, action: 'mark-failed', after: { revision: 15, status: 'failed' } });
    const secret = releaseSecret(15);
    expect(secret.metadata.labels?.status).toBe('failed');
    expect(Number(secret.metadata.labels?.modifiedAt)).toBeGreaterThan(Date.now() / 1000 - 300);
    const after = decoded(15);
    expect(after.info.status).toBe('failed');
    expect(after.info.description).toBe("Release unlocked from stale 'pending-upgrade' state by ess");
    const strip = (x: HelmRelease) => {
      const c = structuredClone(x);
      delete (c.info as Record<string, unknown>).status;
      delete (c.info as Record<string, unknown>).description;
      return c;
    };
    expect(strip(after)).toEqual(strip(before));
    expect(decoded(14).info.status).toBe('failed');
    expect(decoded(13).info.status).toBe('deployed');
    expect(result.next.join('\n')).toMatch(
      /helm upgrade --install ess oci:\/\/\S+matrix-stack --version 25\.4\.2 -n ess/,
    );
    expect(result.next.join('\n')).toMatch(/helm rollback ess 13 -n ess/);
    expect(await helmArgv()).toBeUndefined();

    const history = await getHistory(kube, { namespace: 'ess', release: 'ess', max: 256 }, silentReporter);
    expect(history.revisions.at(-1)).toMatchObject({ revision: 15, status: 'failed', labelStatus: 'failed' });
    expect(history.warnings).toEqual([]);
  });

  it('after marking: without helm there is nothing left to do; with helm it rolls back to 13', async () => {
    expect((await refusal({ dryRun: false }, fakeHelm(false))).code).toBe('HELM_NOT_FOUND');
    expect((await refusal({ dryRun: false, markFailed: true })).code).toBe('ALREADY_FAILED');
    const helm = fakeHelm(true);
    const result = await rollback({ dryRun: false }, helm);
    expect(result.checks.find((c) => c.id === 'age')?.detail).toMatch(/failed: final/);
    expect(helm.calls).toEqual([['rollback', 'ess', '13', '-n', 'ess', '--wait', '--timeout', '10m']]);
  });
});
