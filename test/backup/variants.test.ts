/**
 * `ess backup` variants against the sandbox (exec protocol v5): bad inputs refused in step 1 before anything is
 * scaled (destination, recipients, stdout on a terminal, Postgres stopped), the spool free-space warning, the
 * snapshot fallback (dump while stopped), an external database dumped with local tools (--database-url), the archive
 * streamed to stdout with a passphrase, and media read through a helper pod when the Synapse container has no tar.
 * The built CLI runs as a child process (requires `npm run build`).
 */
import { spawnSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readArchive } from '../../src/lib/archive/reader.js';
import { openArchiveStream } from '../../src/lib/archive/transfer.js';
import { connectKube } from '../../src/lib/kube/load.js';
import { silentReporter } from '../../src/lib/output/log.js';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import type { KubeObject } from '../../src/sandbox/types.js';
import { createBackup } from '../../src/services/backup/create.js';
import { collect, removeDir, tempDir } from '../archive/helpers.js';
import { runCli, sandboxFlags } from '../helpers/cli.js';
import {
  allReady,
  archivesIn,
  describeRun,
  expectWorkloadsBack,
  extractArchive,
  readManifestFile,
  replicaCounts,
  runCliToFile,
  WRITERS,
  waitFor,
} from './helpers.js';

/** A local TCP port nobody listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('ess backup variants (exec v5)', () => {
  let sandbox: Sandbox;
  let flags: string[];
  let dir: string;
  let before: Map<string, number>;

  beforeAll(async () => {
    sandbox = await startSandbox({ users: 20, mediaMb: 1, podStartDelayMs: 150, podStopDelayMs: 150 });
    flags = sandboxFlags(sandbox);
    dir = await tempDir('ess-backup-variants-');
    await waitFor('the seeded deployment to be ready', () => allReady(sandbox));
    before = replicaCounts(sandbox);
  });
  afterAll(async () => {
    await sandbox?.stop();
    await removeDir(dir);
  });

  /** Runs `fn` and returns the writers that were scaled to 0 meanwhile (none when step 1 refused the run). */
  async function scaledDuring(fn: () => Promise<void>): Promise<string[]> {
    const scaled = new Set<string>();
    const stop = sandbox.store.subscribe((e) => {
      const replicas = (e.object.spec as { replicas?: number } | undefined)?.replicas;
      if (WRITERS.includes(e.object.metadata.name) && replicas === 0) scaled.add(e.object.metadata.name);
    });
    try {
      await fn();
    } finally {
      stop();
    }
    return [...scaled];
  }

  it('refuses an unusable destination or recipient in step 1, also with --dry-run, before anything is scaled', async () => {
    const file = join(dir, 'afile');
    await writeFile(file, 'hi\n');
    const port = await closedPort();
    const cases: { args: string[]; message: RegExp; next: RegExp }[] = [
      { args: ['-o', file], message: /Cannot write to the local backup directory .*ENOTDIR/, next: /is a file/ },
      { args: ['-o', join(file, 'sub')], message: /ENOTDIR/, next: /is a file/ },
      { args: ['-o', '/sys/kernel/ess-x'], message: /EPERM|EACCES|EROFS/, next: /permissions|read-only/ },
      {
        args: ['--s3', 's3://nobucket/ess', '--s3-endpoint', `http://127.0.0.1:${port}`],
        message: /Cannot use s3:\/\/nobucket\/ess: .*ECONNREFUSED/,
        next: /Check --s3-endpoint/,
      },
      {
        args: ['-o', join(dir, 'never'), '--encrypt-to', 'age1notavalidkey'],
        message: /Invalid age recipient "age1notavalidkey"/,
        next: /age-keygen/,
      },
    ];
    for (const c of cases) {
      for (const dryRun of [[], ['--dry-run']]) {
        let result!: Awaited<ReturnType<typeof runCli>>;
        const scaled = await scaledDuring(async () => {
          result = await runCli(['backup', ...flags, ...c.args, ...dryRun], {
            env: { AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'x', AWS_MAX_ATTEMPTS: '1' },
          });
        });
        const what = `${c.args.join(' ')} ${dryRun.join(' ')}\n${describeRun(result)}`;
        expect(result.code, what).toBe(4);
        expect(result.stderr, what).toMatch(c.message);
        expect(result.stderr, what).toMatch(new RegExp(`Next steps:\n  - .*${c.next.source}`));
        expect(result.stderr, what).not.toMatch(/bug in ess/);
        expect(scaled, what).toEqual([]);
      }
    }
    expect(await readFile(file, 'utf8')).toBe('hi\n');
    await expect(readdir(join(dir, 'never'))).rejects.toMatchObject({ code: 'ENOENT' });
    expectWorkloadsBack(sandbox, before);
  });

  it('-o - refuses a terminal before anything is scaled', async () => {
    const kube = await connectKube({ kubeconfig: sandbox.kubeconfigPath });
    let error: unknown;
    const scaled = await scaledDuring(async () => {
      error = await createBackup(
        { namespace: 'ess', release: 'ess', output: '-', essVersion: 'test' },
        { kube, reporter: silentReporter, stdoutIsTerminal: () => true },
      ).catch((e: unknown) => e);
    });
    expect(error).toMatchObject({ code: 'STDOUT_IS_TTY', exitCode: 4 });
    expect((error as { next: string[] }).next.join(' ')).toContain('ess backup -o - > ');
    expect(scaled).toEqual([]);
    expectWorkloadsBack(sandbox, before);
  });

  it('warns about a short spool before the run starts, in the dry-run plan and on stderr', async (ctx) => {
    const spool = join(dir, 'tiny-spool');
    await mkdir(spool);
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=300k', 'tmpfs', spool]);
    ctx.skip(mounted.status !== 0, `cannot mount a tmpfs here (${mounted.stderr.toString().trim() || 'not root'})`);
    try {
      const dry = await runCli(['backup', ...flags, '-o', join(dir, 'spool-out'), '--spool-dir', spool, '--dry-run']);
      expect(dry.code, describeRun(dry)).toBe(0);
      expect(dry.stderr).toMatch(/Only .* free in the spool directory .*tiny-spool for dumps of databases of/);
      const json = await runCli([
        'backup',
        ...flags,
        '-o',
        join(dir, 'spool-out'),
        '--spool-dir',
        spool,
        '--dry-run',
        '--json',
      ]);
      const plan = JSON.parse(json.stdout);
      expect(plan.warnings.join('\n')).toMatch(/Only .* free in the spool directory/);
      expect(plan.plan.spool.freeBytes).toBeLessThan(400 * 1024);

      const real = await runCli(['backup', ...flags, '-o', join(dir, 'spool-out'), '--spool-dir', spool]);
      // The sandbox's dumps are small enough to fit: the run succeeds, and the warning came before the downtime.
      expect(real.code, describeRun(real)).toBe(0);
      const warned = real.stderr.search(/Only .* free in the spool directory/);
      expect(warned, describeRun(real)).toBeGreaterThanOrEqual(0);
      expect(warned, describeRun(real)).toBeLessThan(real.stderr.indexOf('Scaling to 0'));
    } finally {
      spawnSync('umount', [spool]);
    }
    await waitFor('workloads back', () => allReady(sandbox), 60_000);
    expectWorkloadsBack(sandbox, before);
  });

  it('with Postgres stopped by ess stop, exits 4 and says ess start', async () => {
    const stop = await runCli(['stop', ...flags, '--yes']);
    expect(stop.code, describeRun(stop)).toBe(0);
    try {
      const result = await runCli(['backup', ...flags, '-o', join(dir, 'stopped')]);
      expect(result.code, describeRun(result)).toBe(4);
      expect(result.stderr).toMatch(/Cannot query PostgreSQL/);
      expect(result.stderr).toMatch(/Next steps:\n {2}- If ess stop stopped it: ess start -n ess\n/);
    } finally {
      const start = await runCli(['start', ...flags]);
      expect(start.code, describeRun(start)).toBe(0);
    }
    await waitFor('workloads back', () => allReady(sandbox), 60_000);
    expectWorkloadsBack(sandbox, before);
  });

  it('falls back to dumping while stopped when no snapshot can be exported', async () => {
    const out = join(dir, 'fallback');
    sandbox.faults.addExecFault({ pod: 'ess-postgres-0', commandIncludes: 'snapshot-holder', cutAfterBytes: 0 });
    const result = await runCli(['backup', ...flags, '-o', out, '--json']);
    sandbox.faults.clear();
    expect(result.code, describeRun(result)).toBe(0);
    const json = JSON.parse(result.stdout);
    expect(json.consistency).toBe('stopped');
    expect(json.warnings.join('\n')).toMatch(
      /snapshots could not be exported .*dumped while Synapse and MAS were stopped/,
    );
    expect(json.downtimeMs).toBeGreaterThan(0);
    expect(json.databases.map((d: { name: string }) => d.name).sort()).toEqual([
      'matrixauthenticationservice',
      'synapse',
    ]);
    expect((await archivesIn(out)).archives).toEqual([json.name]);
    expectWorkloadsBack(sandbox, before);
  });

  it('dumps an external database with local tools (--database-url)', async () => {
    const out = join(dir, 'external');
    const result = await runCli([
      'backup',
      ...flags,
      '-o',
      out,
      '--json',
      '--database-url',
      sandbox.postgres.url,
      '--pg-bin-dir',
      sandbox.postgres.binDir,
    ]);
    expect(result.code, describeRun(result)).toBe(0);
    const json = JSON.parse(result.stdout);
    expect(json).toMatchObject({ consistency: 'snapshot', globals: false });
    expect(json.plan.postgres).toMatchObject({ tools: 'local', where: `host 127.0.0.1:${sandbox.postgres.port}` });
    const x = join(dir, 'x-external');
    await mkdir(x);
    extractArchive(json.location, x);
    const manifest = await readManifestFile(x);
    expect(manifest.postgres?.globals).toBeUndefined();
    expect(manifest.postgres?.databases.map((d) => d.name).sort()).toEqual(['matrixauthenticationservice', 'synapse']);
    expectWorkloadsBack(sandbox, before);
  });

  it('-o - streams an age passphrase-encrypted archive to stdout', async () => {
    const file = join(dir, 'stdout.tar.age');
    const passFile = join(dir, 'pass.txt');
    await writeFile(passFile, 'correct horse battery staple\n', { mode: 0o600 });
    const result = await runCliToFile(['backup', ...flags, '-o', '-', '--passphrase-file', passFile], file);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/Backup: +stdout/);
    const raw = await readFile(file);
    expect(raw.subarray(0, 21).toString()).toBe('age-encryption.org/v1');
    const opened = await openArchiveStream(createReadStream(file), { passphrases: ['correct horse battery staple'] });
    const members: string[] = [];
    const read = await readArchive(opened.stream, {
      onMember: async (m) => {
        members.push(m.name);
        await collect(m.stream);
      },
    });
    expect(read.manifest.deployment.serverName).toBe('ess.localhost');
    expect(members).toContain('postgres/synapse.dump');
    const json = await runCli(['backup', ...flags, '-o', '-', '--json']);
    expect(json.code).toBe(2);
    expectWorkloadsBack(sandbox, before);
  });

  it('reads the media through a helper pod when the Synapse container has no tar, and removes it', async () => {
    const sts = sandbox.store.resourceByKind('StatefulSet');
    const pods = sandbox.store.resourceByKind('Pod');
    const original = sandbox.store.get(sts, 'ess', 'ess-synapse-main')!;
    const withImage = (image: string): KubeObject => {
      const copy = structuredClone(sandbox.store.get(sts, 'ess', 'ess-synapse-main')!);
      const spec = copy.spec as { template: { spec: { containers: { name: string; image: string }[] } } };
      for (const c of spec.template.spec.containers) if (c.name === 'synapse') c.image = image;
      return copy;
    };
    const image = (
      original.spec as { template: { spec: { containers: { name: string; image: string }[] } } }
    ).template.spec.containers.find((c) => c.name === 'synapse')!.image;
    sandbox.store.update(sts, withImage('oci.element.io/synapse-distroless:v1'));
    const podImage = () =>
      (sandbox.store.get(pods, 'ess', 'ess-synapse-main-0')?.spec as { containers?: { image: string }[] } | undefined)
        ?.containers?.[0]?.image;
    try {
      await waitFor(
        'the distroless Synapse pod',
        () => podImage()?.includes('distroless') === true && allReady(sandbox),
        30_000,
      );
      const out = join(dir, 'helper');
      const seen = new Set<string>();
      const stop = sandbox.store.subscribe((e) => {
        if (e.resource === pods && e.object.metadata.name.includes('media-reader')) seen.add(e.object.metadata.name);
      });
      const result = await runCli(['backup', ...flags, '-o', out, '--json']);
      stop();
      expect(result.code, describeRun(result)).toBe(0);
      const json = JSON.parse(result.stdout);
      expect(json.media.source).toBe('helper-pod');
      expect(json.media.pod).toMatch(/^ess-ess-media-reader-[0-9a-f]{6}$/);
      expect([...seen]).toEqual([json.media.pod]);
      expect(result.stderr).toMatch(/Reading media through helper pod .* \(ess-synapse-main-0 has no (sh, )?tar/);
      await waitFor('the helper pod to be gone', () => !sandbox.store.get(pods, 'ess', json.media.pod), 10_000);
      const x = join(dir, 'x-helper');
      await mkdir(x);
      extractArchive(json.location, x);
      const manifest = await readManifestFile(x);
      expect(manifest.media?.storedFileCount).toBeGreaterThan(0);
      const index = (await readFile(join(x, 'media-index.jsonl'), 'utf8'))
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      const root = join(sandbox.volumeDir('ess', sandbox.layout.mediaClaim), 'media_store');
      for (const entry of index) {
        expect(await readFile(join(x, 'media', entry.path))).toEqual(await readFile(join(root, entry.path)));
      }
    } finally {
      sandbox.store.update(sts, withImage(image));
      await waitFor('Synapse back on its image', () => podImage() === image && allReady(sandbox), 30_000);
    }
    expectWorkloadsBack(sandbox, before);
  });
});
