import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import S3rver from 's3rver';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MEMBERS } from '../../src/lib/archive/layout.js';
import { readArchiveFrom, readManifestFrom, writeArchive } from '../../src/lib/archive/transfer.js';
import { generateAgeKeyPair } from '../../src/lib/crypto/age.js';
import { EssError } from '../../src/lib/errors.js';
import { choosePartSize, parseS3Url, S3Store, type S3StoreOptions } from '../../src/lib/storage/s3.js';
import {
  bytesOf,
  collect,
  prepareTypicalBackup,
  produceTypicalBackup,
  removeDir,
  sha256,
  type TypicalBackup,
  tempDir,
} from '../archive/helpers.js';

const BUCKET = 'backups';
const MIB = 1024 * 1024;

let dir: string;
let server: S3rver;
let endpoint: string;
/** UploadIds that received AbortMultipartUpload. */
const aborted: string[] = [];

async function startS3rver(): Promise<{ server: S3rver; endpoint: string }> {
  const instance = new S3rver({
    port: 0,
    address: '127.0.0.1',
    silent: true,
    directory: join(dir, 's3'),
    configureBuckets: [{ name: BUCKET }],
  });
  // s3rver 3 does not implement AbortMultipartUpload (it answers 405): do what S3 does, delete the parts.
  instance.middleware.unshift(async (ctx, next) => {
    const uploadId = ctx.query.uploadId;
    if (ctx.method === 'DELETE' && typeof uploadId === 'string') {
      aborted.push(uploadId);
      const bucket = ctx.path.split('/')[1]!;
      await rm(join(instance.store.getResourcePath(bucket, undefined, 'uploads'), uploadId), { recursive: true });
      ctx.status = 204;
      return;
    }
    await next();
  });
  const { port } = await instance.run();
  return { server: instance, endpoint: `http://127.0.0.1:${port}` };
}

function store(options: Partial<S3StoreOptions> = {}, debug: string[] = []): S3Store {
  return new S3Store({
    url: `s3://${BUCKET}/ess/prod`,
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    partSizeBytes: 5 * MIB,
    debug: (line) => debug.push(line),
    ...options,
  });
}

async function pendingUploads(): Promise<string[]> {
  return readdir(server.store.getResourcePath(BUCKET, undefined, 'uploads')).catch(() => []);
}

beforeAll(async () => {
  dir = await tempDir('ess-s3-test-');
  ({ server, endpoint } = await startS3rver());
});

afterAll(async () => {
  await server?.close();
  await removeDir(dir);
});

describe('S3 location parsing', () => {
  it('Given s3:// URLs, when parsed, then bucket and prefix are split and bad ones refused', () => {
    expect(parseS3Url('s3://bucket')).toEqual({ bucket: 'bucket', prefix: '' });
    expect(parseS3Url('s3://bucket/a/b/')).toEqual({ bucket: 'bucket', prefix: 'a/b' });
    expect(() => parseS3Url('https://bucket/x')).toThrow(EssError);
    expect(choosePartSize(undefined)).toBe(16 * MIB);
    expect(choosePartSize(500 * 1024 * MIB) * 9000).toBeGreaterThanOrEqual(500 * 1024 * MIB);
  });
});

describe('S3 store against s3rver', () => {
  it('Given a missing bucket or an endpoint nobody listens on, when checked, then a precondition says what to fix', async () => {
    await store().check();
    const noBucket = await store({ url: 's3://nobucket/ess' })
      .check()
      .catch((e: unknown) => e as EssError);
    expect(noBucket).toMatchObject({ exitCode: 4, code: 'DESTINATION_UNUSABLE' });
    expect(noBucket?.message).toMatch(/NoSuchBucket/);
    expect(noBucket?.next).toEqual(['Create the bucket first, or fix the bucket name in --s3']);
    const closed = await startS3rver();
    const closedEndpoint = closed.endpoint;
    await closed.server.close();
    for (const endpointThere of [closedEndpoint, closedEndpoint.replace('127.0.0.1', 'localhost')]) {
      const refused = await store({ endpoint: endpointThere })
        .check()
        .catch((e: unknown) => e as EssError);
      expect(refused, endpointThere).toMatchObject({ exitCode: 4, code: 'DESTINATION_UNUSABLE' });
      expect(refused?.message).toMatch(/ECONNREFUSED/);
      expect(refused?.next.join(' ')).toMatch(/Check --s3-endpoint/);
      expect(refused?.next.join(' ')).not.toMatch(/checksum/);
    }
  });

  it('Given a 13 MiB body, when put, then it is uploaded in 3 parts and reads back identical', async () => {
    const debug: string[] = [];
    const s3 = store({}, debug);
    const data = bytesOf(13 * MIB, 21);
    const body = new PassThrough();
    const put = s3.put('big.tar', body);
    // Written after put() started: lib-storage must already be consuming (done() runs first).
    for (let i = 0; i < data.length; i += MIB) {
      if (!body.write(data.subarray(i, i + MIB))) await new Promise((resolve) => body.once('drain', resolve));
    }
    body.end();
    const result = await put;
    expect(result).toEqual({ name: 'big.tar', location: `s3://${BUCKET}/ess/prod/big.tar`, bytes: data.length });
    expect(debug.filter((l) => l.startsWith('S3 UploadPartCommand')).length).toBe(3);
    expect(debug.some((l) => l.startsWith('S3 CompleteMultipartUploadCommand'))).toBe(true);
    expect(sha256(await collect(await s3.get('big.tar')))).toBe(sha256(data));
    const range = await collect(await s3.get('big.tar', { range: { start: 10, end: 19 } }));
    expect(range.equals(data.subarray(10, 20))).toBe(true);
    expect(await s3.stat('big.tar')).toMatchObject({ name: 'big.tar', size: data.length });
    expect((await s3.list()).map((o) => o.name)).toContain('big.tar');
    expect(await pendingUploads()).toEqual([]);
    const other = store({ url: `s3://${BUCKET}/elsewhere` });
    expect(await other.list()).toEqual([]);
    await expect(s3.put('big.tar', Readable.from([Buffer.from('x')]))).rejects.toMatchObject({ code: 'BACKUP_EXISTS' });
    await s3.delete('big.tar');
    expect(await s3.stat('big.tar')).toBeUndefined();
    await expect(s3.get('big.tar')).rejects.toMatchObject({ code: 'BACKUP_NOT_FOUND' });
    await s3.close();
  });

  it('Given a body that fails after two parts, when put, then the multipart upload is aborted and no object exists', async () => {
    const debug: string[] = [];
    const s3 = store({}, debug);
    const cause = new Error('pg_dump died');
    async function* body() {
      for (let i = 0; i < 12; i++) yield bytesOf(MIB, i);
      throw cause;
    }
    const error = await s3.put('failed.tar', Readable.from(body())).catch((e: unknown) => e);
    expect(error).toBe(cause);
    const created = debug.find((l) => l.startsWith('S3 UploadPartCommand'))!;
    const uploadId = /upload (\S+)/.exec(created)![1]!;
    expect(debug).toContain(`S3 AbortMultipartUploadCommand ess/prod/failed.tar upload ${uploadId}`);
    expect(aborted).toContain(uploadId);
    expect((error as { abortProblem?: string }).abortProblem).toBeUndefined();
    expect(await s3.stat('failed.tar')).toBeUndefined();
    expect(await pendingUploads()).toEqual([]);
    await s3.close();
  });

  it('Given the server goes away mid-upload, when put, then it fails, says parts may remain, and no object appears', async () => {
    const debug: string[] = [];
    const s3 = store({}, debug);
    const body = new PassThrough();
    const put = s3.put('gone.tar', body).catch((e: unknown) => e);
    body.write(bytesOf(6 * MIB, 1));
    while (!debug.some((l) => l.startsWith('S3 UploadPartCommand'))) await new Promise((r) => setTimeout(r, 20));
    await server.close();
    body.write(bytesOf(6 * MIB, 2));
    body.end();
    const error = (await put) as EssError;
    expect(error).toBeInstanceOf(EssError);
    expect(error.code).toBe('STORE_WRITE_FAILED');
    expect(error.next.join('\n')).toContain('Could not abort multipart upload');
    ({ server, endpoint } = await startS3rver());
    expect(await store().stat('gone.tar')).toBeUndefined();
    await s3.close();
  });
});

describe('encrypted archive through S3', () => {
  let backup: TypicalBackup;
  afterAll(async () => {
    await backup?.spool.cleanup();
  });

  it('Given an age-encrypted backup written to S3, when read back with the identity, then it verifies', async () => {
    backup = await prepareTypicalBackup(dir, 6 * MIB + 3);
    const keys = generateAgeKeyPair();
    const s3 = store();
    const name = 'ess-backup_example.com_20250301T020000Z.tar.age';
    const written = await writeArchive(s3, { name, encryption: { recipients: [keys.recipient] } }, (w) =>
      produceTypicalBackup(w, backup),
    );
    expect(written.encrypted).toBe(true);
    expect(written.bytes).toBeGreaterThan(written.summary.archiveBytes);
    const raw = await collect(await s3.get(name));
    expect(raw.subarray(0, 22).toString()).toBe('age-encryption.org/v1\n');
    expect(raw.includes(Buffer.from(MEMBERS.manifest))).toBe(false);
    const manifest = await readManifestFrom(s3, name, { keys: { identities: [keys.identity] } });
    expect(manifest.deployment.serverName).toBe('example.com');
    const members: string[] = [];
    const result = await readArchiveFrom(s3, name, {
      keys: { identities: [keys.identity] },
      onMember: async (m) => {
        members.push(m.name);
        expect(sha256(await collect(m.stream))).toBe(sha256(backup.contents.get(m.name)!));
      },
    });
    expect(result.encrypted).toBe(true);
    expect(new Set(members)).toEqual(new Set(backup.contents.keys()));
    await expect(readManifestFrom(s3, name)).rejects.toMatchObject({ code: 'ARCHIVE_ENCRYPTED' });
    await s3.close();
  });
});
