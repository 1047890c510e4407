/**
 * S3-compatible storage (AWS S3, MinIO, Ceph, Garage…). Uploads stream through @aws-sdk/lib-storage multipart
 * uploads with no local copy; a failed upload is aborted (AbortMultipartUpload) so the object only ever appears
 * complete. The AWS SDK is imported lazily, on first use.
 */
import type { Readable } from 'node:stream';
import { pipeline, Transform, type TransformCallback } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import { EssError, ExitCode, PreconditionError } from '../errors.js';
import { backupExistsError, backupNotFoundError, storeWriteError } from './errors.js';
import { assertObjectName, type BackupStore, type PutOptions, type PutResult, type StoredObject } from './store.js';

/** When the SDK adds and checks CRC checksums. Many S3-compatible servers need 'WHEN_REQUIRED' (the default). */
export type S3ChecksumMode = 'WHEN_REQUIRED' | 'WHEN_SUPPORTED';

/** Bucket and key prefix parsed from `s3://bucket/prefix`. */
export interface S3Location {
  bucket: string;
  /** Without leading or trailing slashes; may be empty. */
  prefix: string;
}

/** Options of {@link S3Store}; credentials come from the standard AWS chain unless given. */
export interface S3StoreOptions {
  /** `s3://bucket/prefix` */
  url: string;
  /** Endpoint of an S3-compatible server, e.g. https://minio.example.com:9000. */
  endpoint?: string;
  /** Region; when unset the AWS chain decides (us-east-1 when an endpoint is given and nothing else is set). */
  region?: string;
  /** Path-style addressing (bucket in the path, not the host name). Default true. */
  forcePathStyle?: boolean;
  /** requestChecksumCalculation and responseChecksumValidation; default 'WHEN_REQUIRED'. */
  checksumMode?: S3ChecksumMode;
  /** Static credentials (tests); otherwise env, profile, SSO, web identity, instance role… */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Multipart part size; default 16 MiB, raised so that `sizeHint` fits in 9,000 parts. */
  partSizeBytes?: number;
  /** Parts uploaded in parallel; memory use is about (queueSize + 1) × part size. Default 2. */
  queueSize?: number;
  /** Receives one line per S3 request (for --verbose); never includes credentials. */
  debug?: (message: string) => void;
}

const MIB = 1024 * 1024;
/** Default multipart part size. */
export const DEFAULT_PART_SIZE = 16 * MIB;

/** Parses `s3://bucket/prefix`; throws EssError (exit 2) for anything else. */
export function parseS3Url(url: string): S3Location {
  const match = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(url.trim());
  const bucket = match?.[1];
  if (!match || !bucket || !/^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$/.test(bucket)) {
    throw new EssError(`Invalid S3 location ${JSON.stringify(url)}.`, {
      exitCode: ExitCode.USAGE,
      code: 'BAD_S3_URL',
      next: ['Use s3://bucket or s3://bucket/prefix'],
    });
  }
  return { bucket, prefix: (match[2] ?? '').replace(/^\/+|\/+$/g, '') };
}

/** The part size for an upload of about `sizeHint` bytes: at least `base`, at most 9,000 parts, whole MiB. */
export function choosePartSize(sizeHint: number | undefined, base = DEFAULT_PART_SIZE): number {
  const forHint = sizeHint ? Math.ceil(sizeHint / 9000 / MIB) * MIB : 0;
  return Math.max(base, forHint, 5 * MIB);
}

class ByteCounter extends Transform {
  bytes = 0;
  constructor() {
    super({ highWaterMark: MIB });
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    callback(null, chunk);
  }
}

interface AwsError {
  name?: string;
  message?: string;
  code?: string;
  $metadata?: { httpStatusCode?: number };
}

function isNotFound(error: unknown): boolean {
  const e = error as AwsError;
  return e?.name === 'NotFound' || e?.name === 'NoSuchKey' || e?.$metadata?.httpStatusCode === 404;
}

function describeAwsError(error: unknown): string {
  const e = error as AwsError;
  const status = e?.$metadata?.httpStatusCode;
  return `${e?.name ?? 'Error'}: ${e?.message || e?.code || 'request failed'}${status ? ` (HTTP ${status})` : ''}`;
}

/** The errno-like code of a network failure, which the SDK may wrap (AggregateError, cause). */
function networkCode(error: unknown): string | undefined {
  const seen = new Set<unknown>();
  const queue = [error];
  while (queue.length) {
    const e = queue.shift() as (AwsError & { cause?: unknown; errors?: unknown[] }) | undefined;
    if (!e || typeof e !== 'object' || seen.has(e)) continue;
    seen.add(e);
    if (typeof e.code === 'string' && /^E[A-Z_]+$/.test(e.code)) return e.code;
    queue.push(e.cause, ...(Array.isArray(e.errors) ? e.errors : []));
  }
  return undefined;
}

const UNREACHABLE = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'ECONNRESET',
]);

function nextStepsFor(error: unknown, checksumMode: S3ChecksumMode = 'WHEN_REQUIRED'): string[] {
  const e = error as AwsError;
  const status = e?.$metadata?.httpStatusCode;
  if (status === 401 || status === 403 || e?.name === 'CredentialsProviderError') {
    return ['Check the AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and bucket policy'];
  }
  if (e?.name === 'NoSuchBucket') return ['Create the bucket first, or fix the bucket name in --s3'];
  const network = networkCode(error);
  if (network && UNREACHABLE.has(network)) {
    return ['Check --s3-endpoint (scheme, host and port) and that the S3 server runs and is reachable'];
  }
  if (checksumMode === 'WHEN_SUPPORTED') {
    return ['If the server is not AWS, use the default --s3-checksum-mode WHEN_REQUIRED', 'Check --s3-endpoint'];
  }
  return ['Check --s3-endpoint and --s3-region, and that the server speaks the S3 API'];
}

function describeError(error: unknown): string {
  const e = error as AwsError;
  const network = networkCode(error);
  return network && !e?.$metadata?.httpStatusCode && !e?.message?.includes(network)
    ? `${describeAwsError(error)} (${network})`
    : describeAwsError(error);
}

/** See the module comment. */
export class S3Store implements BackupStore {
  readonly location: string;
  private readonly bucket: string;
  private readonly prefix: string;
  private clientPromise: Promise<S3Client> | undefined;
  /** Per-key listeners told when an S3 request of an upload fails, to stop feeding it at once. */
  private readonly requestFailures = new Map<string, (error: unknown) => void>();

  constructor(private readonly options: S3StoreOptions) {
    const { bucket, prefix } = parseS3Url(options.url);
    this.bucket = bucket;
    this.prefix = prefix;
    this.location = `s3://${bucket}${prefix ? `/${prefix}` : ''}`;
  }

  private key(name: string): string {
    assertObjectName(name);
    return this.prefix ? `${this.prefix}/${name}` : name;
  }

  private url(name: string): string {
    return `s3://${this.bucket}/${this.key(name)}`;
  }

  private client(): Promise<S3Client> {
    this.clientPromise ??= (async () => {
      const { S3Client } = await import('@aws-sdk/client-s3');
      const mode = this.options.checksumMode ?? 'WHEN_REQUIRED';
      const client = new S3Client({
        region: this.options.region ?? (this.options.endpoint && !process.env.AWS_REGION ? 'us-east-1' : undefined),
        endpoint: this.options.endpoint,
        forcePathStyle: this.options.forcePathStyle ?? true,
        credentials: this.options.credentials,
        requestChecksumCalculation: mode,
        responseChecksumValidation: mode,
      });
      const debug = this.options.debug;
      client.middlewareStack.add(
        (next, context) => async (args) => {
          const input = args.input as { Key?: string; UploadId?: string; PartNumber?: number };
          const what = `${context.commandName ?? 'S3'} ${input.Key ?? ''}${input.PartNumber ? ` part ${input.PartNumber}` : ''}${input.UploadId ? ` upload ${input.UploadId}` : ''}`;
          debug?.(`S3 ${what}`);
          try {
            return await next(args);
          } catch (error) {
            debug?.(`S3 ${what} failed: ${describeAwsError(error)}`);
            if (input.Key) this.requestFailures.get(input.Key)?.(error);
            throw error;
          }
        },
        { step: 'initialize', name: 'essRequestWatch' },
      );
      return client;
    })();
    return this.clientPromise;
  }

  async put(name: string, body: Readable, options: PutOptions = {}): Promise<PutResult> {
    const key = this.key(name);
    const location = this.url(name);
    let bodyError: unknown;
    body.once('error', (error) => {
      bodyError = error;
    });
    const feed = new ByteCounter();
    // Destroying `feed` makes lib-storage's part reader throw, which ends every parallel part uploader.
    pipeline(body, feed, () => {});
    feed.on('error', () => {});
    const stop = (error: unknown) => {
      if (!feed.destroyed) feed.destroy(error instanceof Error ? error : new Error(String(error)));
    };
    const onAbort = () => stop(options.signal?.reason ?? new Error('aborted'));
    options.signal?.addEventListener('abort', onAbort, { once: true });
    let upload: { uploadId?: string; done(): Promise<unknown> } | undefined;
    try {
      const client = await this.client();
      if (await this.stat(name)) throw backupExistsError(location);
      const { Upload } = await import('@aws-sdk/lib-storage');
      this.requestFailures.set(key, stop);
      upload = new Upload({
        client,
        params: { Bucket: this.bucket, Key: key, Body: feed, ContentType: 'application/octet-stream' },
        partSize: choosePartSize(options.sizeHint, this.options.partSizeBytes),
        queueSize: this.options.queueSize ?? 2,
        // ess aborts the multipart upload itself, so it can report when the abort fails.
        leavePartsOnError: true,
      });
      // done() must run before anything is written into the body (lib-storage reads only once done() runs).
      await upload.done();
      if (bodyError !== undefined) throw bodyError;
      return { name, location, bytes: feed.bytes };
    } catch (error) {
      stop(error);
      if (!body.destroyed) body.destroy(error as Error);
      const abortProblem = await this.abortUpload(key, upload?.uploadId);
      const primary = bodyError ?? error;
      if (abortProblem) {
        (primary as { abortProblem?: string }).abortProblem = abortProblem;
        this.options.debug?.(abortProblem);
      }
      if (bodyError !== undefined || (error as { code?: string }).code === 'BACKUP_EXISTS' || options.signal?.aborted) {
        throw primary;
      }
      throw storeWriteError(location, new Error(describeError(error), { cause: error }), [
        ...nextStepsFor(error, this.options.checksumMode),
        ...(abortProblem ? [abortProblem] : []),
      ]);
    } finally {
      this.requestFailures.delete(key);
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Aborts a multipart upload; returns a message when that failed (parts may then remain in the bucket). */
  private async abortUpload(key: string, uploadId: string | undefined): Promise<string | undefined> {
    if (!uploadId) return undefined;
    try {
      const { AbortMultipartUploadCommand } = await import('@aws-sdk/client-s3');
      const client = await this.client();
      await client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }));
      return undefined;
    } catch (error) {
      return `Could not abort multipart upload ${uploadId} of s3://${this.bucket}/${key} (${describeAwsError(error)}); its parts may remain: abort it (aws s3api abort-multipart-upload) or add an AbortIncompleteMultipartUpload lifecycle rule`;
    }
  }

  /** One cheap request (ListObjectsV2, MaxKeys 1, under the prefix): the endpoint answers and the bucket exists. */
  async check(): Promise<void> {
    const { ListObjectsV2Command } = await import('@aws-sdk/client-s3');
    const client = await this.client();
    try {
      await client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix ? `${this.prefix}/` : '', MaxKeys: 1 }),
      );
    } catch (error) {
      throw new PreconditionError(`Cannot use ${this.location}: ${describeError(error)}.`, {
        code: 'DESTINATION_UNUSABLE',
        cause: error,
        next: nextStepsFor(error, this.options.checksumMode),
      });
    }
  }

  async list(): Promise<StoredObject[]> {
    const { ListObjectsV2Command } = await import('@aws-sdk/client-s3');
    const client = await this.client();
    const prefix = this.prefix ? `${this.prefix}/` : '';
    const objects: StoredObject[] = [];
    let token: string | undefined;
    try {
      do {
        const page = await client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, Delimiter: '/', ContinuationToken: token }),
        );
        for (const item of page.Contents ?? []) {
          const name = item.Key?.slice(prefix.length);
          if (!name) continue;
          objects.push({ name, size: item.Size ?? 0, modifiedAt: item.LastModified ?? new Date(0) });
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
    } catch (error) {
      throw this.requestError('list', this.location, error);
    }
    return objects;
  }

  async stat(name: string): Promise<StoredObject | undefined> {
    const { HeadObjectCommand } = await import('@aws-sdk/client-s3');
    const client = await this.client();
    try {
      const head = await client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(name) }));
      return { name, size: head.ContentLength ?? 0, modifiedAt: head.LastModified ?? new Date(0) };
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw this.requestError('read', this.url(name), error);
    }
  }

  async get(
    name: string,
    options: { signal?: AbortSignal; range?: { start: number; end?: number } } = {},
  ): Promise<Readable> {
    const { GetObjectCommand } = await import('@aws-sdk/client-s3');
    const client = await this.client();
    const range = options.range ? `bytes=${options.range.start}-${options.range.end ?? ''}` : undefined;
    try {
      const object = await client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.key(name), Range: range }),
        {
          abortSignal: options.signal,
        },
      );
      return object.Body as Readable;
    } catch (error) {
      if (isNotFound(error)) throw backupNotFoundError(this.url(name));
      throw this.requestError('read', this.url(name), error);
    }
  }

  async delete(name: string): Promise<void> {
    const { DeleteObjectCommand } = await import('@aws-sdk/client-s3');
    const client = await this.client();
    try {
      await client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(name) }));
    } catch (error) {
      if (!isNotFound(error)) throw this.requestError('delete', this.url(name), error);
    }
  }

  /** Releases the HTTP connections (the client is recreated on next use). */
  async close(): Promise<void> {
    const client = await this.clientPromise;
    this.clientPromise = undefined;
    client?.destroy();
  }

  private requestError(action: string, location: string, error: unknown): EssError {
    return new EssError(`Could not ${action} ${location}: ${describeError(error)}.`, {
      code: 'S3_REQUEST_FAILED',
      cause: error,
      next: nextStepsFor(error, this.options.checksumMode),
    });
  }
}
