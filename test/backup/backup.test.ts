/**
 * `ess backup` end to end against the sandbox in exec protocol v4-only mode (no stdin half-close): the built CLI as
 * a child process (requires `npm run build`, see test/helpers/cli.ts). Full backup inspected with tar, sha256sum
 * and pg_restore; dry run; the lock; incremental; encryption; retention; --json and --metrics-file.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readArchiveFrom } from '../../src/lib/archive/transfer.js';
import { generateAgeKeyPair } from '../../src/lib/crypto/age.js';
import { readDumpToc } from '../../src/lib/migrate/pgdump.js';
import { LocalDirStore } from '../../src/lib/storage/local-dir.js';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import { renderBackupPlan } from '../../src/services/backup/render.js';
import { collect, hasCommand, removeDir, tempDir } from '../archive/helpers.js';
import { runCli, sandboxFlags } from '../helpers/cli.js';
import {
  allReady,
  archivesIn,
  describeRun,
  expectWorkloadsBack,
  extractArchive,
  readManifestFile,
  replicaCounts,
  restoreList,
  tableCounts,
  WRITERS,
  waitFor,
} from './helpers.js';

describe('ess backup (exec v4-only)', () => {
  let sandbox: Sandbox;
  let flags: string[];
  let dir: string;
  let before: Map<string, number>;

  beforeAll(async () => {
    sandbox = await startSandbox({
      users: 20,
      mediaMb: 1,
      execProtocol: 'v4-only',
      podStartDelayMs: 150,
      podStopDelayMs: 150,
    });
    flags = sandboxFlags(sandbox);
    dir = await tempDir('ess-backup-test-');
    await waitFor('the seeded deployment to be ready', () => allReady(sandbox));
    before = replicaCounts(sandbox);
  });
  afterAll(async () => {
    await sandbox?.stop();
    await removeDir(dir);
  });

  it('--dry-run prints the plan with sizes and changes nothing', async () => {
    const out = join(dir, 'dry');
    // The throwaway database of a concurrent `ess backup verify --restore-test` is not part of the deployment.
    const psql = join(sandbox.postgres.binDir, 'psql');
    execFileSync(psql, [sandbox.postgres.url, '-X', '-q', '-c', 'CREATE DATABASE ess_verify_0123456789ab']);
    const writes = () => sandbox.requests.filter((r) => r.method !== 'GET').length;
    const writesBefore = writes();
    const result = await runCli(['backup', ...flags, '-o', out, '--dry-run', '--json']);
    expect(result.code, describeRun(result)).toBe(0);
    const json = JSON.parse(result.stdout);
    expect(json).toMatchObject({ action: 'backup', dryRun: true, serverName: 'ess.localhost', bytes: 0 });
    expect(json.plan.stop.map((w: { name: string }) => w.name).sort()).toEqual([...WRITERS].sort());
    expect(json.plan.postgres.databases.map((d: { name: string }) => d.name).sort()).toEqual([
      'matrixauthenticationservice',
      'synapse',
    ]);
    expect(json.plan.postgres.databases.find((d: { name: string }) => d.name === 'synapse').excludeTableData).toEqual([
      'public.e2e_one_time_keys_json',
    ]);
    // PostgreSQL 15 in the sandbox: gzip, at ess's default level.
    expect(json.plan.postgres.compression).toEqual({ method: 'gzip', level: 1 });
    expect(renderBackupPlan(json.plan)).toContain('pg_dump -Fc, gzip 1,');
    const outOfRange = await runCli(['backup', ...flags, '-o', out, '--dry-run', '--compression-level', '12']);
    expect(outOfRange.code, describeRun(outOfRange)).toBe(2);
    expect(outOfRange.stderr).toMatch(/Compression level 12 is out of range for gzip .*0–9/);
    const level9 = JSON.parse(
      (await runCli(['backup', ...flags, '-o', out, '--dry-run', '--json', '--compression-level', '9'])).stdout,
    );
    expect(level9.plan.postgres.compression).toEqual({ method: 'gzip', level: 9 });
    expect(json.plan.media.fileCount).toBeGreaterThan(0);
    expect(json.plan.estimatedBytes).toBeGreaterThan(json.plan.media.bytes);
    expect(writes()).toBe(writesBefore);
    expect((await archivesIn(out)).archives).toEqual([]);
    expect(renderBackupPlan(json.plan)).toContain('Stopped only while database snapshots are exported');
    execFileSync(psql, [sandbox.postgres.url, '-X', '-q', '-c', 'DROP DATABASE ess_verify_0123456789ab']);
  });

  it('a full backup holds verified dumps without one-time keys, exact row counts, Secrets and media', async () => {
    const out = join(dir, 'full');
    const metrics = join(dir, 'ess_backup.prom');
    const result = await runCli(['backup', ...flags, '-o', out, '--json', '--metrics-file', metrics]);
    expect(result.code, describeRun(result)).toBe(0);
    const json = JSON.parse(result.stdout);
    expect(json).toMatchObject({ dryRun: false, consistency: 'snapshot', incremental: false, encrypted: false });
    expect(json.downtimeMs).toBeGreaterThan(0);
    expect(json.downtimeMs).toBeLessThan(json.durationMs);
    expect(json.workloads.map((w: { name: string }) => w.name).sort()).toEqual([...WRITERS].sort());
    expectWorkloadsBack(sandbox, before);

    const { archives, partial } = await archivesIn(out);
    expect(archives).toEqual([json.name]);
    expect(partial).toEqual([]);
    expect(json.location).toBe(join(out, json.name));
    const x = join(dir, 'x-full');
    await mkdir(x);
    extractArchive(json.location, x);
    const manifest = await readManifestFile(x);
    expect(manifest).toMatchObject({
      formatVersion: 1,
      kind: 'ess-backup',
      deployment: { serverName: 'ess.localhost', namespace: 'ess', release: 'ess', flavour: 'matrix-stack' },
      synapse: { schemaVersion: sandbox.seed.schemaVersion, schemaCompatVersion: sandbox.seed.schemaCompatVersion },
      postgres: { globals: 'postgres/globals.sql' },
    });
    expect(manifest.deployment.chartVersion).toBeTruthy();
    expect(manifest.mas?.schemaVersion).toBeTruthy();
    // A local archive: the media were written while the dumps ran, the manifest last into its reserved slot.
    const order = execFileSync('tar', ['-tf', json.location]).toString().trim().split('\n');
    expect(order[0]).toBe('manifest.json');
    expect(order.at(-1)).toBe('checksums.sha256');
    const firstDump = order.findIndex((n) => n.startsWith('postgres/'));
    expect(order.findIndex((n) => n.startsWith('media/'))).toBeGreaterThan(order.indexOf('media-index.jsonl'));
    expect(firstDump).toBeGreaterThan(0);
    expect(order.slice(firstDump).filter((n) => n.startsWith('media/'))).toEqual([]);
    expect(manifest.members.map((m) => m.name)).toEqual(order.filter((n) => !n.startsWith('media/')).slice(1, -1));
    const manifestText = await readFile(join(x, 'manifest.json'), 'utf8');
    expect(manifestText.length % 4096).toBe(0);
    expect(manifestText).toMatch(/}\n +$/);
    const names = manifest.members.map((m) => m.name);
    for (const m of ['postgres/synapse.dump', 'postgres/matrixauthenticationservice.dump', 'helm/values.yaml']) {
      expect(names).toContain(m);
    }
    expect(names).toContain('kubernetes/secrets/ess-generated.yaml');
    expect(names).toContain('kubernetes/configmaps/ess-markers.yaml');

    // pg_restore reads the dump; the one-time keys table is there, its data is not.
    const dumpPath = join(x, 'postgres/synapse.dump');
    const toc = await readDumpToc({ path: dumpPath, length: (await stat(dumpPath)).size });
    expect(toc.header).toMatchObject({ compression: 'gzip', compressionLevel: 1 });
    const list = restoreList(sandbox, dumpPath);
    expect(list).toMatch(/TABLE public e2e_one_time_keys_json/);
    expect(list).not.toMatch(/TABLE DATA public e2e_one_time_keys_json/);
    expect(list).toMatch(/TABLE DATA public events /);
    const synapse = manifest.postgres!.databases.find((d) => d.name === 'synapse')!;
    expect(synapse.excludedTableData).toEqual(['public.e2e_one_time_keys_json']);
    expect(synapse.rowCounts).toBe('exact');
    const live = await tableCounts(sandbox, 'synapse');
    expect(live.get('public.e2e_one_time_keys_json')).toBeGreaterThan(0);
    for (const t of synapse.tables) {
      expect(t.rows, t.name).toBe(t.name === 'public.e2e_one_time_keys_json' ? 0 : live.get(t.name));
    }
    expect(synapse.tables.length).toBe(live.size);
    const mas = manifest.postgres!.databases.find((d) => d.name === 'matrixauthenticationservice')!;
    const liveMas = await tableCounts(sandbox, 'matrixauthenticationservice');
    for (const t of mas.tables) expect(t.rows, t.name).toBe(liveMas.get(t.name));
    expect(await readFile(join(x, 'postgres/globals.sql'), 'utf8')).toContain('CREATE ROLE');

    // Secrets keep their exact base64 (binary DER keys included).
    const secret = sandbox.store.get(sandbox.store.resourceByKind('Secret'), 'ess', 'ess-generated')!;
    const saved = await readFile(join(x, 'kubernetes/secrets/ess-generated.yaml'), 'utf8');
    for (const [key, value] of Object.entries((secret as unknown as { data: Record<string, string> }).data)) {
      expect(saved).toContain(`${key}: ${value}`);
    }

    // Media: the index lists every non-cache file, each stored with its bytes.
    expect(manifest.media).toMatchObject({ storePath: '/media/media_store', incremental: false, requires: [] });
    expect(manifest.media!.fileCount).toBe(json.media.fileCount);
    expect(manifest.media!.storedFileCount).toBe(manifest.media!.fileCount);
    const index = (await readFile(join(x, 'media-index.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(index.length).toBe(manifest.media!.fileCount);
    expect(index.some((e: { path: string }) => e.path.startsWith('remote_content/'))).toBe(false);
    const mediaRoot = join(sandbox.volumeDir('ess', sandbox.layout.mediaClaim), 'media_store');
    for (const entry of index.slice(0, 5)) {
      expect(await readFile(join(x, 'media', entry.path))).toEqual(await readFile(join(mediaRoot, entry.path)));
    }

    // ess's own reader verifies the whole archive, and the metrics file says when and how big.
    const read = await readArchiveFrom(new LocalDirStore(out), json.name);
    expect(read.manifest.createdAt).toBe(manifest.createdAt);
    const prom = await readFile(metrics, 'utf8');
    expect(prom).toMatch(/^ess_backup_last_run_success\{namespace="ess",release="ess",destination="[^"]+"\} 1$/m);
    expect(prom).toContain(
      `ess_backup_last_size_bytes{namespace="ess",release="ess",destination="${out}"} ${json.bytes}`,
    );
    expect(prom).toMatch(/^ess_backup_last_success_timestamp_seconds\{.*\} \d+(\.\d+)?$/m);
    expect(prom).toMatch(/^ess_backup_last_downtime_seconds\{.*\} \d/m);
  });

  it('a second run fails fast naming the lock holder; --force-unlock breaks the lock', async () => {
    const out = join(dir, 'lock');
    const now = new Date().toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
    const leases = sandbox.store.resourceByKind('Lease');
    sandbox.store.create(leases, {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: 'ess-ess-lock', namespace: 'ess', annotations: { 'ess.element.io/operation': 'backup' } },
      spec: { holderIdentity: 'backup-host-7:4242', leaseDurationSeconds: 120, acquireTime: now, renewTime: now },
    });
    const seen = sandbox.requests.length;
    const refused = await runCli(['backup', ...flags, '-o', out]);
    expect(refused.code, describeRun(refused)).toBe(4);
    expect(refused.stderr).toMatch(/holds the lock ess\/ess-ess-lock: backup-host-7:4242 \(backup\) since/);
    expect(refused.stderr).toContain('--force-unlock');
    // Failing fast: it did not wait for the lock and changed nothing.
    expect(sandbox.requests.slice(seen).filter((r) => r.method !== 'GET')).toEqual([]);
    expect((await archivesIn(out)).archives).toEqual([]);
    expect(replicaCounts(sandbox)).toEqual(before);

    const forced = await runCli(['backup', ...flags, '-o', out, '--force-unlock']);
    expect(forced.code, describeRun(forced)).toBe(0);
    expect((await archivesIn(out)).archives.length).toBe(1);
    expect(sandbox.store.get(leases, 'ess', 'ess-ess-lock')).toBeUndefined();
    expectWorkloadsBack(sandbox, before);
  });

  it('--incremental stores only new media; encrypted parents need --identity; --keep-last prunes', async () => {
    const out = join(dir, 'chain');
    const keys = generateAgeKeyPair();
    const keyFile = join(dir, 'key.txt');
    await writeFile(keyFile, `${keys.identity}\n`, { mode: 0o600 });
    let lastStart = 0;
    const backup = async (...extra: string[]) => {
      // Names carry the time to the second.
      const wait = lastStart + 1100 - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      lastStart = Date.now();
      const result = await runCli(['backup', ...flags, '-o', out, '--json', ...extra]);
      expect(result.code, describeRun(result)).toBe(0);
      return JSON.parse(result.stdout);
    };
    const full = await backup('--encrypt-to', keys.recipient);
    expect(full.name).toMatch(/^ess-backup_ess\.localhost_\d{8}T\d{6}Z\.tar\.age$/);
    const raw = await readFile(full.location);
    expect(raw.subarray(0, 21).toString()).toBe('age-encryption.org/v1');

    const mediaRoot = join(sandbox.volumeDir('ess', sandbox.layout.mediaClaim), 'media_store');
    await mkdir(join(mediaRoot, 'local_content/Zz/Yy'), { recursive: true });
    await writeFile(join(mediaRoot, 'local_content/Zz/Yy/NewUploadAbcdefghijklmn'), 'fresh upload');

    const withoutKey = await backup('--incremental', '--encrypt-to', keys.recipient);
    expect(withoutKey.incremental).toBe(false);
    expect(withoutKey.warnings.join('\n')).toMatch(/encrypted: pass --identity/);

    const incr = await backup('--incremental', '--encrypt-to', keys.recipient, '--identity', keyFile);
    expect(incr.incremental).toBe(true);
    expect(incr.parent).toBe(withoutKey.name);
    expect(incr.name).toContain('_incr-');
    expect(incr.media.storedFileCount).toBe(0);
    expect(incr.media.fileCount).toBe(withoutKey.media.fileCount);

    await writeFile(join(mediaRoot, 'local_content/Zz/Yy/AnotherUploadAbcdefghij'), 'second upload');
    // Keep the 2 newest (incr2, incr) and what they need (withoutKey, incr's parent): only `full` goes.
    const incr2 = await backup(
      '--incremental',
      '--encrypt-to',
      keys.recipient,
      '--identity',
      keyFile,
      '--keep-last',
      '2',
    );
    expect(incr2.parent).toBe(incr.name);
    expect(incr2.media.storedFileCount).toBe(1);
    expect(incr2.media.storedBytes).toBe('second upload'.length);
    const read = await readArchiveFrom(new LocalDirStore(out), incr2.name, {
      keys: { identities: [keys.identity] },
      onMember: async (m) => {
        if (m.name.startsWith('media/')) expect(m.name).toBe('media/local_content/Zz/Yy/AnotherUploadAbcdefghij');
        if (m.name === 'media-index.jsonl') {
          const lines = (await collect(m.stream))
            .toString()
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l));
          const fresh = lines.find((e: { path: string }) => e.path.endsWith('NewUploadAbcdefghijklmn'));
          expect(fresh.archive).toBe(withoutKey.name);
        }
      },
    });
    expect(read.manifest.media).toMatchObject({ incremental: true, parent: incr.name, requires: [withoutKey.name] });
    if (hasCommand('age')) {
      const listing = execFileSync('sh', ['-c', `age -d -i '${keyFile}' '${incr2.location}' | tar -t`], {
        encoding: 'utf8',
      });
      expect(listing.split('\n')[0]).toBe('manifest.json');
    }

    expect(incr2.retention.deleted).toEqual([full.name]);
    expect((await archivesIn(out)).archives).toEqual([withoutKey.name, incr.name, incr2.name].sort());
    expectWorkloadsBack(sandbox, before);
  });
});
