import { gunzipSync, gzipSync, constants as zlibConstants } from 'node:zlib';
import type { KubeClient } from '../kube/client.js';
import type { Secret } from '../kube/types.js';

/** Helm 3 release statuses (helm/helm pkg/release/status.go). */
export type ReleaseStatus =
  | 'unknown'
  | 'deployed'
  | 'uninstalled'
  | 'superseded'
  | 'failed'
  | 'uninstalling'
  | 'pending-install'
  | 'pending-upgrade'
  | 'pending-rollback';

export const PENDING_STATUSES: ReleaseStatus[] = ['pending-install', 'pending-upgrade', 'pending-rollback'];

/** The decoded release JSON; only the fields ess reads are typed, the rest is preserved as-is. */
export interface HelmRelease {
  name: string;
  namespace: string;
  version: number;
  info: {
    status: ReleaseStatus;
    description?: string;
    first_deployed?: string;
    last_deployed?: string;
    [key: string]: unknown;
  };
  chart?: {
    metadata?: { name?: string; version?: string; appVersion?: string; [key: string]: unknown };
    /** The chart's default values. */
    values?: Record<string, unknown>;
    [key: string]: unknown;
  };
  config?: Record<string, unknown>;
  manifest?: string;
  [key: string]: unknown;
}

/** One `sh.helm.release.v1.<release>.v<N>` Secret. */
export interface ReleaseRecord {
  secretName: string;
  revision: number;
  /** Status from the Secret label (may disagree with the body; the body is authoritative). */
  labelStatus: string;
  modifiedAt?: Date;
  createdAt?: Date;
  secret: Secret;
}

const GZIP_MAGIC = [0x1f, 0x8b, 0x08];

/**
 * Decodes a release from the Secret's `data.release` as the API returns it: base64 (API) → base64 (Helm) → gzip
 * (only if the gzip magic is present; old releases were stored uncompressed) → JSON.
 */
export function decodeRelease(apiData: string): HelmRelease {
  return JSON.parse(decodeReleaseText(apiData)) as HelmRelease;
}

/** Like {@link decodeRelease}, but returns the JSON text exactly as Helm wrote it (for lossless edits). */
export function decodeReleaseText(apiData: string): string {
  const helmString = Buffer.from(apiData, 'base64').toString('utf8');
  const bytes = Buffer.from(helmString, 'base64');
  const isGzip = GZIP_MAGIC.every((b, i) => bytes[i] === b);
  return (isGzip ? gunzipSync(bytes) : bytes).toString('utf8');
}

/** Encodes a release the way Helm does (JSON → gzip best compression → base64), then base64 again for the API. */
export function encodeRelease(release: HelmRelease): string {
  return encodeReleaseText(goJsonStringify(release));
}

/** Encodes release JSON text (gzip best compression → base64 → base64 for the API). */
export function encodeReleaseText(json: string): string {
  const gz = gzipSync(Buffer.from(json, 'utf8'), { level: zlibConstants.Z_BEST_COMPRESSION });
  return Buffer.from(gz.toString('base64'), 'utf8').toString('base64');
}

/** JSON.stringify with Go's encoding/json escaping of `<`, `>`, `&`, U+2028 and U+2029, as Helm writes releases. */
export function goJsonStringify(value: unknown): string {
  // These characters only occur inside JSON strings, so replacing them everywhere is safe.
  return JSON.stringify(value).replace(
    /[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

function labelTime(value: string | undefined): Date | undefined {
  if (!value || !/^\d+$/.test(value)) return undefined;
  return new Date(Number(value) * 1000);
}

/** Lists the release Secrets of one release, oldest revision first. No helm binary needed. */
export async function listReleaseRecords(
  kube: KubeClient,
  namespace: string,
  release: string,
): Promise<ReleaseRecord[]> {
  const secrets = await kube.list<Secret>('Secret', namespace, `owner=helm,name=${release}`);
  return secrets
    .filter((s) => s.type === 'helm.sh/release.v1' || s.metadata.name.startsWith('sh.helm.release.v1.'))
    .map((secret) => {
      const labels = secret.metadata.labels ?? {};
      return {
        secretName: secret.metadata.name,
        revision: Number(labels.version ?? secret.metadata.name.replace(/.*\.v/, '')),
        labelStatus: labels.status ?? 'unknown',
        modifiedAt: labelTime(labels.modifiedAt),
        createdAt: labelTime(labels.createdAt),
        secret,
      };
    })
    .filter((r) => Number.isInteger(r.revision))
    .sort((a, b) => a.revision - b.revision);
}

/** Decodes the body of a release record. Throws if the Secret has no release data. */
export function decodeRecord(record: ReleaseRecord): HelmRelease {
  const data = record.secret.data?.release;
  if (!data) throw new Error(`Secret ${record.secretName} has no release data`);
  return decodeRelease(data);
}

/** Release names that have Helm records in a namespace (for "did you mean --release X"). */
export async function listReleaseNames(kube: KubeClient, namespace: string): Promise<string[]> {
  const secrets = await kube.list<Secret>('Secret', namespace, 'owner=helm');
  return [...new Set(secrets.map((s) => s.metadata.labels?.name).filter((n): n is string => Boolean(n)))].sort();
}
