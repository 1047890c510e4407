/**
 * `ess restore` against the sandbox (exec protocol v5), as a user runs it: the built CLI in a child process (run
 * `npm run build` first). Archives are made with the archive library from real pg_dump output of the sandbox's
 * PostgreSQL (helpers.ts). Covers the bad inputs (each refused with nothing changed), confirmation, --dry-run,
 * the full round trip and --only.
 */
import { renameSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, stat, truncate, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectKube } from '../../src/lib/kube/load.js';
import { silentReporter } from '../../src/lib/output/log.js';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import { restoreBackup } from '../../src/services/restore/restore.js';
import { runCli, sandboxFlags } from '../helpers/cli.js';
import {
  type BuiltArchive,
  buildArchive,
  flipByteIn,
  mediaSnapshot,
  mediaStore,
  OTK,
  psql,
  secretData,
  TEST_VALUES,
  tableChecksums,
  truncateFile,
  workloadState,
} from './helpers.js';

let sb: Sandbox;
let dir: string;
let archive: BuiltArchive;
let encrypted: BuiltArchive;
/** The synapse tables as the archive holds them. */
let archived: Map<string, string>;

/** Everything a refused restore must leave alone. */
function snapshot() {
  return {
    synapse: tableChecksums(sb, 'synapse'),
    mas: tableChecksums(sb, 'matrixauthenticationservice'),
    workloads: workloadState(sb),
    secret: secretData(sb, 'ess-generated'),
    media: mediaSnapshot(mediaStore(sb)),
    lease: sb.store.get(sb.store.resourceByKind('Lease'), sb.namespace, 'ess-ess-lock'),
  };
}

async function restore(args: string[], options: { input?: string } = {}) {
  const result = await runCli(['restore', ...args, ...sandboxFlags(sb), '--json'], { input: options.input });
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(result.stdout) as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  return { ...result, json };
}

function errorCode(json: Record<string, unknown> | undefined): string | undefined {
  return (json?.error as { code?: string } | undefined)?.code;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ess-restore-test-'));
  await chmod(dir, 0o755);
  sb = await startSandbox({ users: 20, mediaMb: 1, podStartDelayMs: 150, podStopDelayMs: 150 });
  archive = await buildArchive(sb, dir, { createdAt: new Date('2025-03-01T02:00:00Z') });
  archived = tableChecksums(sb, 'synapse');
  encrypted = await buildArchive(sb, dir, { createdAt: new Date('2025-03-01T03:00:00Z'), passphrase: 'right horse' });
});

afterAll(async () => {
  await sb?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('refused before anything changes', () => {
  it('refuses bad archives, keys and targets with exit 4 and leaves the deployment untouched', async () => {
    const before = snapshot();
    const bad = join(dir, 'bad');
    await rm(bad, { recursive: true, force: true });
    await mkdir(bad);
    const cases: { name: string; file: () => Promise<string>; extra?: string[]; code: string }[] = [
      {
        name: 'truncated',
        code: 'ARCHIVE_TRUNCATED',
        file: async () => {
          const target = join(bad, archive.name);
          truncateFile(archive.path, target, 0.6);
          return target;
        },
      },
      {
        name: 'one flipped byte in a dump',
        code: 'ARCHIVE_CORRUPT',
        file: async () => {
          const target = join(bad, 'flipped-dump', archive.name);
          await mkdir(join(bad, 'flipped-dump'));
          flipByteIn(archive.path, target, 'postgres/synapse.dump');
          return target;
        },
      },
      {
        name: 'one flipped byte in a media file (found only by the trailer)',
        code: 'ARCHIVE_CORRUPT',
        file: async () => {
          const target = join(bad, 'flipped-media', archive.name);
          await mkdir(join(bad, 'flipped-media'));
          flipByteIn(archive.path, target, `media/${archive.stored.at(-1)}`);
          return target;
        },
      },
      {
        name: 'wrong passphrase',
        code: 'AGE_WRONG_PASSPHRASE',
        extra: ['--passphrase-file', join(dir, 'wrong.pass')],
        file: async () => {
          await writeFile(join(dir, 'wrong.pass'), 'wrong horse\n', { mode: 0o600 });
          return encrypted.path;
        },
      },
      {
        name: 'encrypted without a key',
        code: 'ARCHIVE_ENCRYPTED',
        file: async () => encrypted.path,
      },
      {
        name: 'newer format version',
        code: 'ARCHIVE_FORMAT_TOO_NEW',
        file: async () => {
          const target = join(bad, 'ess-backup_ess.localhost_20300101T000000Z.tar');
          const pack = tar.pack();
          pack.entry({ name: 'manifest.json' }, JSON.stringify({ formatVersion: 99, kind: 'ess-backup' }));
          pack.finalize();
          const chunks: Buffer[] = [];
          for await (const chunk of pack as AsyncIterable<Buffer>) chunks.push(chunk);
          await writeFile(target, Buffer.concat(chunks));
          return target;
        },
      },
      {
        name: 'another server',
        code: 'SERVER_NAME_MISMATCH',
        file: async () =>
          (
            await buildArchive(sb, bad, {
              createdAt: new Date('2025-03-02T02:00:00Z'),
              serverName: 'other.example.org',
            })
          ).path,
      },
    ];
    // Some through the CLI (exit code and message as a user sees them), the rest through the service directly
    // (the same code, without a process start each).
    const viaCli = new Set(['truncated', 'wrong passphrase', 'newer format version', 'another server']);
    const kube = await connectKube({ kubeconfig: sb.kubeconfigPath });
    for (const c of cases) {
      const file = await c.file();
      if (viaCli.has(c.name)) {
        const r = await restore([file, '--yes', ...(c.extra ?? [])]);
        expect({ name: c.name, code: r.code, error: errorCode(r.json) }, r.stderr).toEqual({
          name: c.name,
          code: 4,
          error: c.code,
        });
        expect(r.stderr).toMatch(/Error: /);
      } else {
        const passphraseFile = c.extra?.[1];
        const refused = restoreBackup(
          {
            archive: file,
            destination: {},
            identityFiles: [],
            passphraseFile,
            namespace: sb.namespace,
            release: sb.release,
            createNamespace: false,
            allowDifferentServerName: false,
            jobs: 2,
            dryRun: false,
            yes: true,
            forceUnlock: false,
          },
          { kube: async () => kube, reporter: silentReporter },
        );
        await expect(refused, c.name).rejects.toMatchObject({ code: c.code, exitCode: 4 });
      }
    }
    expect(snapshot()).toEqual(before);
  });

  it('needs --yes without a TTY, and --dry-run changes nothing', async () => {
    const before = snapshot();
    const noTty = await restore([archive.path]);
    expect(noTty.code).toBe(4);
    expect(errorCode(noTty.json)).toBe('CONFIRMATION_REQUIRED');
    expect(noTty.stderr).toMatch(/--yes/);

    const dry = await restore([archive.path, '--dry-run', '--values-out', join(dir, 'dry-values.yaml')]);
    expect(dry.code, dry.stderr).toBe(0);
    const json = dry.json as { dryRun: boolean; plan: string[]; parts: string[]; archive: { members: number } };
    expect(json.dryRun).toBe(true);
    expect(json.parts).toEqual(['secrets', 'db', 'media']);
    expect(json.plan.join('\n')).toMatch(/ERASE database\(s\) synapse, matrixauthenticationservice/);
    expect(json.plan.join('\n')).toMatch(/pg_restore --jobs 4/);
    expect(json.archive.members).toBeGreaterThan(archive.stored.length);
    await expect(stat(join(dir, 'dry-values.yaml'))).rejects.toThrow();
    expect(snapshot()).toEqual(before);
  });

  it('refuses an unwritable --values-out before replacing anything, and --dry-run reports it', async () => {
    const before = snapshot();
    const aFile = join(dir, 'a-file');
    await writeFile(aFile, 'x');
    for (const extra of [['--yes'], ['--dry-run']]) {
      const r = await restore([archive.path, ...extra, '--values-out', join(aFile, 'values.yaml')]);
      expect(r.code, r.stderr).toBe(4);
      expect(errorCode(r.json)).toBe('VALUES_OUT_UNWRITABLE');
      expect(r.stderr).toMatch(/a-file\/values\.yaml.*Nothing was changed/);
      expect(r.stderr).toMatch(/--values-out/);
      expect(r.stderr).not.toMatch(/This is a bug/);
    }
    const missingDir = await restore([archive.path, '--dry-run', '--values-out', join(dir, 'no', 'such', 'v.yaml')]);
    expect(missingDir.code, missingDir.stderr).toBe(4);
    expect(errorCode(missingDir.json)).toBe('VALUES_OUT_UNWRITABLE');
    expect(snapshot()).toEqual(before);
  });

  it('refuses an ess migrate export bundle and points to ess migrate import', async () => {
    const before = snapshot();
    const bundle = join(dir, 'synapse-export.tar');
    const exp = await runCli([
      'migrate',
      'export',
      '--database-url',
      `postgres://postgres@${sb.postgres.host}:${sb.postgres.port}/synapse`,
      '--no-media',
      '-o',
      bundle,
      '--json',
    ]);
    expect(exp.code, exp.stderr).toBe(0);
    const r = await restore([bundle, '--yes']);
    expect(r.code, r.stderr).toBe(4);
    expect(errorCode(r.json)).toBe('ARCHIVE_IS_MIGRATE_BUNDLE');
    expect(r.stderr).toMatch(/ess migrate export. bundle/);
    expect(r.stderr).toMatch(/ess migrate import .*synapse-export\.tar/);
    expect(r.stderr).not.toMatch(/--release self-hosted/);
    expect(snapshot()).toEqual(before);
    // backup verify says the same instead of failing it as a damaged backup (it used to report MEDIA_MISMATCH).
    const v = await runCli(['backup', 'verify', bundle, '--json']);
    expect(v.code, v.stderr).toBe(4);
    expect(JSON.parse(v.stdout).error).toMatchObject({ code: 'ARCHIVE_IS_MIGRATE_BUNDLE' });
    expect(v.stderr).toMatch(/ess migrate import .*synapse-export\.tar/);
  });

  it('interrupted after the Secrets were replaced: says what changed and to run the same restore again', async () => {
    const before = snapshot();
    // SIGINT right after the Secrets and ConfigMap were replaced, before Synapse is stopped.
    const { interrupted } = await restoreInterruptedAt(/^Restored .*exact bytes/, 'interrupted-values.yaml');
    await expect(interrupted).rejects.toMatchObject({ code: 'RESTORE_INTERRUPTED', exitCode: 130 });
    const error = (await interrupted.catch((e: unknown) => e)) as { message: string; next: string[] };
    expect(error.message).toMatch(/interrupted \(SIGINT\) after it had replaced .*Secret ess-generated \(replaced\)/);
    expect(error.message).toMatch(/databases and the media were not touched/);
    expect(error.next.join('\n')).toMatch(/Run the same restore again.*ess restore .* --yes/);
    // The archive's Secrets are the deployment's own: nothing observable changed, no database was dropped.
    expect(tableChecksums(sb, 'synapse')).toEqual(before.synapse);
    expect(secretData(sb, 'ess-generated')).toEqual(before.secret);
    expect(workloadState(sb)).toEqual(before.workloads);
  });
});

describe('round trip', () => {
  it('restores damaged databases, Secrets and media exactly (one-time keys excepted)', async () => {
    const before = snapshot();
    const markersBefore = sb.store.get(sb.store.resourceByKind('ConfigMap'), sb.namespace, 'ess-markers');
    expect(Number(psql(sb, 'synapse', `SELECT count(*) FROM ${OTK}`)[0]?.[0])).toBeGreaterThan(0);

    // Damage: tables dropped and emptied in both databases, a Secret key changed, media deleted and corrupted.
    psql(sb, 'synapse', 'DROP TABLE events CASCADE; DELETE FROM users; DELETE FROM room_memberships');
    const masTable = [...before.mas.keys()].find((t) => t.startsWith('public.'))!;
    psql(sb, 'matrixauthenticationservice', `DROP TABLE ${masTable} CASCADE`);
    const secretRes = sb.store.resourceByKind('Secret');
    const secret = sb.store.get(secretRes, sb.namespace, 'ess-generated')!;
    const data = { ...(secret as unknown as { data: Record<string, string> }).data };
    data.MAS_RSA_PRIVATE_KEY = Buffer.from('garbage').toString('base64');
    delete data.SYNAPSE_SIGNING_KEY;
    sb.store.update(secretRes, { ...secret, data } as typeof secret);
    const root = mediaStore(sb);
    for (const path of archive.stored.slice(0, 3)) await unlink(join(root, path));
    await writeFile(join(root, archive.stored[3]!), Buffer.alloc(before.media.get(archive.stored[3]!)!.size, 7));
    await truncate(join(root, archive.stored[4]!), 10);

    const valuesOut = join(dir, 'restored-values.yaml');
    const r = await restore([archive.path, '--yes', '--values-out', valuesOut]);
    expect(r.code, r.stderr).toBe(0);
    const json = r.json as {
      databases: { name: string; method: string }[];
      media: { files: number; via: string };
      downtimeMs: number;
      postChecks: { name: string; ok: boolean }[];
      objects: { name: string; action: string }[];
    };

    const synapse = tableChecksums(sb, 'synapse');
    for (const [table, sum] of before.synapse) {
      if (table === OTK) continue;
      expect({ table, sum: synapse.get(table) }).toEqual({ table, sum });
    }
    expect(Number(psql(sb, 'synapse', `SELECT count(*) FROM ${OTK}`)[0]?.[0])).toBe(0);
    expect(tableChecksums(sb, 'matrixauthenticationservice')).toEqual(before.mas);

    // Secrets byte-identical (binary DER keys included), labels kept.
    expect(secretData(sb, 'ess-generated')).toEqual(before.secret);
    const restoredSecret = sb.store.get(secretRes, sb.namespace, 'ess-generated')!;
    expect(restoredSecret.metadata.labels?.['app.kubernetes.io/managed-by']).toBe('matrix-tools-init-secrets');
    const markers = sb.store.get(sb.store.resourceByKind('ConfigMap'), sb.namespace, 'ess-markers');
    expect((markers as unknown as { data: unknown }).data).toEqual(
      (markersBefore as unknown as { data: unknown }).data,
    );

    // Every media file of the backup by SHA-256, owned by the Synapse UID.
    const media = mediaSnapshot(root);
    for (const path of archive.stored) {
      expect({ path, sha256: media.get(path)?.sha256 }).toEqual({ path, sha256: before.media.get(path)?.sha256 });
    }
    for (const path of archive.stored.slice(0, 5)) expect(media.get(path)?.uid).toBe(10091);

    // Workloads back at their counts, no ess annotations left, lock released.
    expect(workloadState(sb)).toEqual(before.workloads);
    expect(sb.store.get(sb.store.resourceByKind('Lease'), sb.namespace, 'ess-ess-lock')).toBeUndefined();
    // No helper pod left.
    expect(sb.store.get(sb.store.resourceByKind('Pod'), sb.namespace, 'ess-ess-restore-media')).toBeUndefined();

    // Values file: exact bytes, 0600.
    expect(await readFile(valuesOut)).toEqual(TEST_VALUES);
    expect((await stat(valuesOut)).mode & 0o777).toBe(0o600);

    expect(json.databases.map((d) => [d.name, d.method])).toEqual([
      ['synapse', 'staged'],
      ['matrixauthenticationservice', 'staged'],
    ]);
    expect(json.media).toMatchObject({ files: archive.stored.length, via: 'helper-pod' });
    expect(json.downtimeMs).toBeGreaterThan(0);
    expect(json.postChecks.every((c) => c.ok)).toBe(true);
    expect(json.objects.map((o) => o.name).sort()).toEqual(['ess-generated', 'ess-markers']);
  });

  it('--only media writes the media through the running Synapse pod without stopping anything', async () => {
    const before = snapshot();
    const root = mediaStore(sb);
    for (const path of archive.stored.slice(-2)) await unlink(join(root, path));
    const requestsBefore = sb.requests.length;
    const r = await restore([archive.path, '--yes', '--only', 'media']);
    expect(r.code, r.stderr).toBe(0);
    const json = r.json as { parts: string[]; media: { via: string; pod: string }; downtimeMs?: number };
    expect(json.parts).toEqual(['media']);
    expect(json.media).toMatchObject({ via: 'media-pod', pod: 'ess-synapse-main-0' });
    expect(json.downtimeMs).toBeUndefined();
    const scaled = sb.requests
      .slice(requestsBefore)
      .filter((q) => q.verb === 'patch' && (q.resource === 'statefulsets' || q.resource === 'deployments'));
    expect(scaled).toEqual([]);
    expect(mediaSnapshot(root)).toEqual(before.media);
    expect(tableChecksums(sb, 'synapse')).toEqual(before.synapse);
  });

  it('--only secrets restores the Secrets and values only', async () => {
    const before = snapshot();
    const secretRes = sb.store.resourceByKind('Secret');
    const secret = sb.store.get(secretRes, sb.namespace, 'ess-generated')!;
    const data = { ...(secret as unknown as { data: Record<string, string> }).data, EXTRA: 'eA==' };
    sb.store.update(secretRes, { ...secret, data } as typeof secret);
    psql(sb, 'synapse', 'DELETE FROM profiles');
    const changed = tableChecksums(sb, 'synapse');
    const r = await restore([archive.path, '--yes', '--only', 'secrets', '--values-out', join(dir, 'v2.yaml')]);
    expect(r.code, r.stderr).toBe(0);
    expect(secretData(sb, 'ess-generated')).toEqual(before.secret);
    expect(tableChecksums(sb, 'synapse')).toEqual(changed);
    expect(workloadState(sb)).toEqual(before.workloads);
  });

  it('damage found after the databases were dropped: exit 1, Synapse left stopped; a re-run repairs it', async () => {
    const before = snapshot();
    const swap = join(dir, 'swap');
    await mkdir(swap);
    const path = join(swap, archive.name);
    await copyFile(archive.path, path);
    flipByteIn(archive.path, `${path}.flipped`, 'postgres/synapse.dump');
    let stderr = '';
    let swapped = false;
    const r = await runCli(['restore', path, ...sandboxFlags(sb), '--yes', '--json'], {
      onSpawn: (child) =>
        child.stderr?.on('data', (chunk: Buffer) => {
          stderr += chunk.toString();
          // The archive changes between the verification pass and the apply pass.
          if (!swapped && /Verified /.test(stderr)) {
            swapped = true;
            renameSync(`${path}.flipped`, path);
          }
        }),
    });
    expect(swapped).toBe(true);
    expect(r.code, r.stderr).toBe(1);
    const error = (JSON.parse(r.stdout) as { error: { code: string; message: string; next: string[] } }).error;
    expect(error.code).toBe('RESTORE_INCOMPLETE');
    expect(error.message).toMatch(/damaged|SHA-256/);
    expect(error.next.join('\n')).toMatch(/ess start/);
    const stopped = workloadState(sb);
    expect(stopped['StatefulSet/ess-synapse-main']).toEqual({
      replicas: 0,
      annotations: ['ess.element.io/replicas-before-stop', 'ess.element.io/stopped-by'],
    });
    expect(sb.store.get(sb.store.resourceByKind('Pod'), sb.namespace, 'ess-ess-restore-media')).toBeUndefined();

    const again = await restore([archive.path, '--yes']);
    expect(again.code, again.stderr).toBe(0);
    const synapse = tableChecksums(sb, 'synapse');
    for (const [table, sum] of archived) {
      if (table !== OTK) expect({ table, sum: synapse.get(table) }).toEqual({ table, sum });
    }
    expect(workloadState(sb)).toEqual(before.workloads);
  });
});

// Last: it restores for real (the one-time keys the earlier tests count are gone afterwards).
describe('interrupts late in a restore', () => {
  it('interrupted while the databases are restored: says they are incomplete, never that they were not touched', async () => {
    const before = snapshot();
    // SIGINT while the databases are being restored (after the Synapse one-time keys were emptied).
    const { interrupted, controller } = await restoreInterruptedAt(/^Emptied /, 'late-values.yaml');
    const error = (await interrupted.catch((e: unknown) => e)) as { code?: string; message?: string } | undefined;
    expect(controller.signal.aborted).toBe(true);
    // The databases were dropped: the message must say they are incomplete, never that they were not touched.
    expect(String(error?.message ?? '')).toMatch(/after the databases were dropped.*INCOMPLETE/s);
    expect(String(error?.message ?? '')).not.toMatch(/were not touched/);
    // Leave the deployment as the next tests expect it (ess start resumes anything still recorded).
    const start = await runCli(['start', ...sandboxFlags(sb), '--json']);
    expect(start.code, start.stderr).toBe(0);
    expect(workloadState(sb)).toEqual(before.workloads);
  });
});

/** Runs a full restore of the test archive with --yes and aborts it (SIGINT) at the first progress line matching `at`. */
async function restoreInterruptedAt(at: RegExp, valuesFile: string) {
  const kube = await connectKube({ kubeconfig: sb.kubeconfigPath });
  const controller = new AbortController();
  const reporter = {
    ...silentReporter,
    info(message: string) {
      if (at.test(message)) controller.abort(new Error('SIGINT'));
    },
  };
  const interrupted = restoreBackup(
    {
      archive: archive.path,
      destination: {},
      identityFiles: [],
      namespace: sb.namespace,
      release: sb.release,
      createNamespace: false,
      allowDifferentServerName: false,
      valuesOut: join(dir, valuesFile),
      jobs: 2,
      dryRun: false,
      yes: true,
      forceUnlock: false,
      timeoutMs: 60_000,
      signal: controller.signal,
    },
    { kube: async () => kube, reporter },
  );
  interrupted.catch(() => undefined);
  return { interrupted, controller };
}
