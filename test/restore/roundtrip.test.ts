/**
 * The round trip with the real commands, on a sandbox that speaks only exec protocol v4 (no stdin half-close):
 * `ess backup` (age-encrypted to a key), media added, `ess backup --incremental`, then the data damaged and
 * `ess restore` of the incremental backup — databases, Secrets and media (assembled from both archives) must come
 * back exactly. Also a restore into a namespace that does not exist yet (--create-namespace), and the same chain
 * read from S3 (s3rver). Requires `npm run build`.
 */
import { createReadStream } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgeKeyPair } from '../../src/lib/crypto/age.js';
import { S3Store } from '../../src/lib/storage/s3.js';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import { runCli, sandboxFlags } from '../helpers/cli.js';
import { mediaSnapshot, mediaStore, OTK, psql, secretData, tableChecksums, workloadState } from './helpers.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

/** The caches `ess backup` leaves out by default. */
const CACHE = /^(remote_content|remote_thumbnail|url_cache|url_cache_thumbnails)\//;

let sb: Sandbox;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ess-restore-rt-'));
  await chmod(dir, 0o755);
  sb = await startSandbox({
    users: 20,
    mediaMb: 1,
    podStartDelayMs: 150,
    podStopDelayMs: 150,
    execProtocol: 'v4-only',
  });
});

afterAll(async () => {
  await sb?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function cli(args: string[]) {
  const r = await runCli([...args, ...sandboxFlags(sb), '--json']);
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(r.stdout) as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  return { ...r, json };
}

describe('ess backup → damage → ess restore (exec v4, encrypted, incremental)', () => {
  it('brings back every table, Secret and media file', async () => {
    const key = generateAgeKeyPair();
    const keyFile = join(dir, 'key.txt');
    await writeFile(keyFile, `${key.identity}\n`, { mode: 0o600 });
    const out = join(dir, 'backups');

    const full = await cli(['backup', '-o', out, '--encrypt-to', key.recipient]);
    expect(full.code, full.stderr).toBe(0);
    const root = mediaStore(sb);
    await mkdir(join(root, 'local_content/zz/yy'), { recursive: true });
    await writeFile(join(root, 'local_content/zz/yy/uploaded-later'), Buffer.alloc(5000, 3));
    psql(sb, 'synapse', 'UPDATE users SET admin = 1 WHERE name = (SELECT min(name) FROM users)');
    await new Promise((resolve) => setTimeout(resolve, 1100)); // archive names carry the second
    const incr = await cli([
      'backup',
      '-o',
      out,
      '--encrypt-to',
      key.recipient,
      '--identity',
      keyFile,
      '--incremental',
    ]);
    expect(incr.code, incr.stderr).toBe(0);
    const names = (await readdir(out)).sort();
    expect(names).toHaveLength(2);
    const incremental = names.find((n) => n.includes('_incr-'))!;

    const synapse = tableChecksums(sb, 'synapse');
    const mas = tableChecksums(sb, 'matrixauthenticationservice');
    const secret = secretData(sb, 'ess-generated');
    const workloads = workloadState(sb);
    const media = new Map([...mediaSnapshot(root)].filter(([path]) => !CACHE.test(path)));
    expect(media.has('local_content/zz/yy/uploaded-later')).toBe(true);

    // Damage: tables, a Secret, media held by the parent and by the incremental backup.
    psql(sb, 'synapse', 'DROP TABLE events CASCADE; DELETE FROM devices; DROP TABLE state_groups_state');
    psql(
      sb,
      'matrixauthenticationservice',
      `DROP TABLE ${[...mas.keys()].find((t) => t.startsWith('public.'))} CASCADE`,
    );
    const secretRes = sb.store.resourceByKind('Secret');
    const live = sb.store.get(secretRes, sb.namespace, 'ess-generated')!;
    sb.store.update(secretRes, { ...live, data: { ONLY: 'eA==' } } as typeof live);
    const paths = [...media.keys()];
    await unlink(join(root, 'local_content/zz/yy/uploaded-later'));
    for (const path of paths.filter((p) => p !== 'local_content/zz/yy/uploaded-later').slice(0, 3)) {
      await unlink(join(root, path));
    }

    const r = await cli([
      'restore',
      join(out, incremental),
      '--identity',
      keyFile,
      '--yes',
      '--values-out',
      join(dir, 'v.yaml'),
    ]);
    expect(r.code, r.stderr).toBe(0);
    const json = r.json as {
      archive: { incremental: boolean; parents: string[]; encrypted: boolean };
      media: { files: number; archives: string[] };
      postChecks: { ok: boolean }[];
    };
    expect(json.archive).toMatchObject({ incremental: true, encrypted: true });
    expect(json.archive.parents).toEqual(names.filter((n) => n !== incremental));
    expect(json.media.files).toBe(media.size);
    expect(json.media.archives).toHaveLength(2);
    expect(json.postChecks.every((c) => c.ok)).toBe(true);

    const after = tableChecksums(sb, 'synapse');
    for (const [table, sum] of synapse) {
      if (table !== OTK) expect({ table, sum: after.get(table) }).toEqual({ table, sum });
    }
    expect(Number(psql(sb, 'synapse', `SELECT count(*) FROM ${OTK}`)[0]?.[0])).toBe(0);
    expect(tableChecksums(sb, 'matrixauthenticationservice')).toEqual(mas);
    expect(secretData(sb, 'ess-generated')).toEqual(secret);
    const restored = mediaSnapshot(root);
    for (const [path, file] of media) {
      expect({ path, sha256: restored.get(path)?.sha256 }).toEqual({ path, sha256: file.sha256 });
    }
    expect(restored.get('local_content/zz/yy/uploaded-later')?.uid).toBe(10091);
    expect(workloadState(sb)).toEqual(workloads);
  });

  it('restores the Secrets into a new namespace and says what to do next', async () => {
    const out = join(dir, 'backups');
    const name = (await readdir(out)).sort()[0]!;
    const keyFile = join(dir, 'key.txt');
    const target = ['--kubeconfig', sb.kubeconfigPath, '-n', 'ess-dr', '--json'];
    const missing = await runCli(['restore', join(out, name), '--identity', keyFile, '--yes', ...target]);
    expect(missing.code).toBe(4);
    expect((JSON.parse(missing.stdout) as { error: { code: string } }).error.code).toBe('NAMESPACE_NOT_FOUND');

    const r = await runCli([
      'restore',
      join(out, name),
      '--identity',
      keyFile,
      '--yes',
      '--create-namespace',
      '--values-out',
      join(dir, 'dr-values.yaml'),
      ...target,
    ]);
    expect(r.code, r.stderr).toBe(3);
    const json = JSON.parse(r.stdout) as { pending: string[]; next: string[]; target: { namespaceCreated: boolean } };
    expect(json.target.namespaceCreated).toBe(true);
    expect(json.pending).toEqual(['db', 'media']);
    expect(json.next.join('\n')).toMatch(/helm upgrade --install ess .* --namespace ess-dr --values /);
    expect(json.next.join('\n')).toMatch(/--only db,media/);
    expect(secretData(sb, 'ess-generated', 'ess-dr')).toEqual(secretData(sb, 'ess-generated'));
    const copy = sb.store.get(sb.store.resourceByKind('Secret'), 'ess-dr', 'ess-generated');
    expect(copy?.metadata.labels?.['app.kubernetes.io/managed-by']).toBe('matrix-tools-init-secrets');
  });

  it('reads an incremental chain from S3 (both passes) for --only media', async () => {
    const out = join(dir, 'backups');
    const names = (await readdir(out)).sort();
    const server = new S3rver({
      port: 0,
      address: '127.0.0.1',
      silent: true,
      directory: join(dir, 's3'),
      configureBuckets: [{ name: 'backups' }],
    });
    const { port } = await server.run();
    try {
      const endpoint = `http://127.0.0.1:${port}`;
      const s3 = new S3Store({
        url: 's3://backups/ess',
        endpoint,
        region: 'us-east-1',
        credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
      });
      for (const name of names) await s3.put(name, createReadStream(join(out, name)));
      const root = mediaStore(sb);
      const before = mediaSnapshot(root);
      await unlink(join(root, 'local_content/zz/yy/uploaded-later'));
      const fromParent = [...before.keys()].find((p) => !CACHE.test(p) && p !== 'local_content/zz/yy/uploaded-later')!;
      await unlink(join(root, fromParent));
      const incremental = names.find((n) => n.includes('_incr-'))!;
      const r = await runCli(
        [
          'restore',
          `s3://backups/ess/${incremental}`,
          '--s3-endpoint',
          endpoint,
          '--s3-region',
          'us-east-1',
          '--identity',
          join(dir, 'key.txt'),
          '--only',
          'media',
          '--yes',
          ...sandboxFlags(sb),
          '--json',
        ],
        { env: { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' } },
      );
      expect(r.code, r.stderr).toBe(0);
      const json = JSON.parse(r.stdout) as { archive: { location: string; parents: string[] }; media: { via: string } };
      expect(json.archive.location).toBe(`s3://backups/ess/${incremental}`);
      expect(json.archive.parents).toEqual(names.filter((n) => n !== incremental));
      expect(json.media.via).toBe('media-pod');
      const after = mediaSnapshot(root);
      for (const path of ['local_content/zz/yy/uploaded-later', fromParent]) {
        expect({ path, sha256: after.get(path)?.sha256 }).toEqual({ path, sha256: before.get(path)?.sha256 });
      }
    } finally {
      await server.close();
    }
  });
});
