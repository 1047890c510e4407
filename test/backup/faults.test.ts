/**
 * `ess backup` under faults, against the sandbox (exec protocol v5) and s3rver: each case must end with a non-zero
 * exit and a clear message, no archive that looks complete (no object, multipart upload aborted), and every
 * workload back at its recorded replica count with the annotations cleared. Also a successful S3 backup.
 * The CLI runs as a child process (requires `npm run build`); the "scale-up keeps failing" case calls the service
 * in-process to shorten its API retries.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readArchiveFrom } from '../../src/lib/archive/transfer.js';
import type { EssError } from '../../src/lib/errors.js';
import { connectKube } from '../../src/lib/kube/load.js';
import { silentReporter } from '../../src/lib/output/log.js';
import { S3Store } from '../../src/lib/storage/s3.js';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import { createBackup } from '../../src/services/backup/create.js';
import { removeDir, tempDir } from '../archive/helpers.js';
import { runCli, sandboxFlags } from '../helpers/cli.js';
import {
  allReady,
  archivesIn,
  connectDb,
  describeRun,
  expectWorkloadsBack,
  replicaCounts,
  waitFor,
} from './helpers.js';

const BUCKET = 'backups';
const S3_ENV = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' };

describe('ess backup under faults', () => {
  let sandbox: Sandbox;
  let flags: string[];
  let dir: string;
  let before: Map<string, number>;
  let s3: S3rver;
  let endpoint: string;
  const aborted: string[] = [];
  let failPart: number | undefined;

  const pendingUploads = () =>
    readdir(s3.store.getResourcePath(BUCKET, undefined, 'uploads')).catch(() => [] as string[]);
  const s3Flags = (prefix: string) => [
    '--s3',
    `s3://${BUCKET}/${prefix}`,
    '--s3-endpoint',
    endpoint,
    '--s3-region',
    'us-east-1',
  ];
  const backToNormal = async () => {
    sandbox.faults.clear();
    await waitFor('workloads back', () => allReady(sandbox), 60_000);
    expectWorkloadsBack(sandbox, before);
    expect(sandbox.store.get(sandbox.store.resourceByKind('Lease'), 'ess', 'ess-ess-lock')).toBeUndefined();
  };

  beforeAll(async () => {
    // > 16 MiB of media so that an S3 upload has more than one part and the media copy takes a while.
    sandbox = await startSandbox({ users: 20, mediaMb: 20, podStartDelayMs: 150, podStopDelayMs: 150 });
    flags = sandboxFlags(sandbox);
    dir = await tempDir('ess-backup-faults-');
    s3 = new S3rver({
      port: 0,
      address: '127.0.0.1',
      silent: true,
      directory: join(dir, 's3'),
      configureBuckets: [{ name: BUCKET }],
    });
    s3.middleware.unshift(async (ctx, next) => {
      const uploadId = ctx.query.uploadId;
      // s3rver 3 has no AbortMultipartUpload: do what S3 does.
      if (ctx.method === 'DELETE' && typeof uploadId === 'string') {
        aborted.push(uploadId);
        await rm(join(s3.store.getResourcePath(BUCKET, undefined, 'uploads'), uploadId), { recursive: true });
        ctx.status = 204;
        return;
      }
      if (ctx.method === 'PUT' && failPart !== undefined && ctx.query.partNumber === String(failPart)) {
        ctx.status = 500;
        ctx.body = '<Error><Code>InternalError</Code><Message>injected</Message></Error>';
        return;
      }
      await next();
    });
    endpoint = `http://127.0.0.1:${(await s3.run()).port}`;
    await waitFor('the seeded deployment to be ready', () => allReady(sandbox));
    before = replicaCounts(sandbox);
  });
  afterAll(async () => {
    await s3?.close();
    await sandbox?.stop();
    await removeDir(dir);
  });

  it('backs up to S3 with a multipart upload that reads back verified', async () => {
    const result = await runCli(['backup', ...flags, ...s3Flags('ok'), '--include-remote-media', '--json'], {
      env: S3_ENV,
    });
    expect(result.code, describeRun(result)).toBe(0);
    const json = JSON.parse(result.stdout);
    expect(json.location).toBe(`s3://${BUCKET}/ok/${json.name}`);
    expect(json.bytes).toBeGreaterThan(16 * 1024 * 1024);
    const store = new S3Store({
      url: `s3://${BUCKET}/ok`,
      endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    });
    expect((await store.list()).map((o) => o.name)).toEqual([json.name]);
    const read = await readArchiveFrom(store, json.name);
    expect(read.manifest.media?.storedBytes).toBe(json.media.storedBytes);
    expect(await pendingUploads()).toEqual([]);
    await backToNormal();
  });

  it('S3 failing mid-upload: the multipart upload is aborted and no object appears', async () => {
    failPart = 2;
    try {
      const result = await runCli(['backup', ...flags, ...s3Flags('fail'), '--include-remote-media'], { env: S3_ENV });
      expect(result.code, describeRun(result)).toBe(1);
      expect(result.stderr).toMatch(/Writing the backup to s3:\/\/backups\/fail\/ess-backup_\S+ failed/);
    } finally {
      failPart = undefined;
    }
    expect(aborted.length).toBeGreaterThan(0);
    expect(await pendingUploads()).toEqual([]);
    const store = new S3Store({
      url: `s3://${BUCKET}/fail`,
      endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    });
    expect(await store.list()).toEqual([]);
    await backToNormal();
  });

  it('the exec stream cut in the middle of a dump fails the backup', async () => {
    const out = join(dir, 'cut');
    sandbox.faults.addExecFault({ pod: 'ess-postgres-0', commandIncludes: '-Fc', cutAfterBytes: 20_000 });
    const result = await runCli(['backup', ...flags, '-o', out]);
    expect(result.code, describeRun(result)).toBe(1);
    expect(result.stderr).toMatch(
      /Error: exec pg_dump in ess-postgres-0: connection closed without an exit status \(postgres\/\S+\.dump is incomplete\)/,
    );
    expect(await archivesIn(out)).toEqual({ archives: [], partial: [] });
    await backToNormal();
  });

  it('a pod deleted in the middle of the media copy fails the backup', async () => {
    const out = join(dir, 'pod-gone');
    const seen = sandbox.requests.length;
    let deleted = false;
    const watcher = setInterval(() => {
      if (deleted) return;
      const tar = sandbox.requests
        .slice(seen)
        .find(
          (r) =>
            r.path.endsWith('/pods/ess-synapse-main-0/exec') &&
            new URLSearchParams(r.query).getAll('command').join(' ').includes('tar -C'),
        );
      if (tar) {
        deleted = true;
        sandbox.faults.disappearPod('ess', 'ess-synapse-main-0');
      }
    }, 2);
    try {
      const result = await runCli(['backup', ...flags, '-o', out]);
      expect(deleted).toBe(true);
      expect(result.code, describeRun(result)).toBe(1);
      expect(result.stderr).toMatch(/Copying the media out of ess-synapse-main-0 failed/);
    } finally {
      clearInterval(watcher);
    }
    expect(await archivesIn(out)).toEqual({ archives: [], partial: [] });
    await backToNormal();
  });

  /** Once ess has scaled Synapse main to 0, its scale-up PATCHes answer 500 `times` times; returns the unsubscribe. */
  function failScaleUpOfMain(times: number): () => void {
    const sts = sandbox.store.resourceByKind('StatefulSet');
    const stop = sandbox.store.subscribe((e) => {
      if (e.resource !== sts || e.object.metadata.name !== 'ess-synapse-main') return;
      if ((e.object.spec as { replicas?: number }).replicas !== 0) return;
      stop();
      sandbox.faults.addApiFault({
        verb: 'patch',
        resource: 'statefulsets',
        name: 'ess-synapse-main',
        status: 500,
        times,
      });
    });
    return stop;
  }

  it('an API 500 on scale-up is retried and the backup succeeds', async () => {
    const out = join(dir, 'retry');
    const stop = failScaleUpOfMain(2);
    const result = await runCli(['backup', ...flags, '-o', out, '--json']);
    stop();
    expect(result.code, describeRun(result)).toBe(0);
    expect(result.stderr).toMatch(/scale statefulset\/ess-synapse-main to 1 failed .*retrying/);
    expect((await archivesIn(out)).archives.length).toBe(1);
    await backToNormal();
  });

  it('scale-up failing for good: non-zero exit, no archive, and the message says `ess start`', async () => {
    const out = join(dir, 'no-scale-up');
    const stop = failScaleUpOfMain(Number.POSITIVE_INFINITY);
    const kube = await connectKube({ kubeconfig: sandbox.kubeconfigPath });
    const error = (await createBackup(
      { namespace: 'ess', release: 'ess', output: out, essVersion: 'test', timeoutMs: 30_000 },
      { kube, reporter: silentReporter, retry: { attempts: 2, initialDelayMs: 20 }, pollMs: 100 },
    ).then(
      () => undefined,
      (e: unknown) => e,
    )) as EssError;
    stop();
    expect(error).toMatchObject({ code: 'RESTORE_FAILED', exitCode: 1 });
    expect(error.message).toMatch(/Could not scale statefulset\/ess-synapse-main back up/);
    expect(error.next.join('\n')).toContain('ess start -n ess');
    expect(await archivesIn(out)).toEqual({ archives: [], partial: [] });
    const main = sandbox.store.get(sandbox.store.resourceByKind('StatefulSet'), 'ess', 'ess-synapse-main')!;
    expect(main.metadata.annotations?.['ess.element.io/replicas-before-stop']).toBe('1');
    sandbox.faults.clear();
    const start = await runCli(['start', ...flags]);
    expect(start.code, describeRun(start)).toBe(0);
    await backToNormal();
  });

  it('SIGTERM during the dump: workloads back, lock released, nothing left, exit 130', async () => {
    const out = join(dir, 'sigterm');
    const spoolDir = await mkdtemp(join(tmpdir(), 'ess-spool-parent-'));
    // Hold a lock that pg_dump waits for, so the dump is still running when the signal arrives.
    const blocker = await connectDb(sandbox, 'synapse');
    await blocker.query('BEGIN');
    await blocker.query('LOCK TABLE events IN ACCESS EXCLUSIVE MODE');
    try {
      await sigtermDuringDump(out, spoolDir);
    } finally {
      await blocker.query('ROLLBACK');
      await blocker.end();
      await rm(spoolDir, { recursive: true, force: true });
    }
    expect(await archivesIn(out)).toEqual({ archives: [], partial: [] });
    await backToNormal();
  });

  /** Runs a backup that is sent SIGTERM while pg_dump waits for a table lock. */
  async function sigtermDuringDump(out: string, spoolDir: string): Promise<void> {
    const result = await runCli(['backup', ...flags, '-o', out, '--spool-dir', spoolDir], {
      onSpawn: (child) => {
        let text = '';
        let sent = false;
        child.stderr?.on('data', (chunk: Buffer) => {
          text += chunk.toString();
          if (text.includes('Dumping database synapse') && !sent) {
            sent = true;
            setTimeout(() => child.kill('SIGTERM'), 300);
          }
        });
      },
    });
    expect(result.code, describeRun(result)).toBe(130);
    expect(result.stderr).toMatch(/SIGTERM received: cleaning up/);
    expect(result.stderr).toMatch(/Interrupted by SIGTERM/);
    expect(await readdir(spoolDir)).toEqual([]);
  }

  it('a full disk at the destination fails the backup and leaves no file', async (ctx) => {
    const mount = join(dir, 'tiny');
    await (await import('node:fs/promises')).mkdir(mount);
    const { spawnSync } = await import('node:child_process');
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mount]);
    if (mounted.status !== 0) {
      ctx.skip(`cannot mount a tmpfs here (${mounted.stderr.toString().trim() || 'not root'})`);
      return;
    }
    try {
      const result = await runCli(['backup', ...flags, '-o', mount]);
      expect(result.code, describeRun(result)).toBe(1);
      expect(result.stderr).toMatch(/Error: Writing the backup to .* failed: .*(ENOSPC|no space left)/i);
      expect(result.stderr).toContain(`Free space in ${mount}`);
      expect(await readdir(mount)).toEqual([]);
    } finally {
      spawnSync('umount', [mount]);
    }
    await backToNormal();
  });
});
