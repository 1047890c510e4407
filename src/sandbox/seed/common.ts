/**
 * Shared helpers of the sandbox seed: deterministic randomness, versions of the simulated chart and images,
 * label sets and the deterministic credentials that both the Kubernetes objects and the database roles use.
 */

import { createECDH, createHash, createHmac, createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KubeObject, SeedOptions } from '../types.js';

/** Chart version of the current (deployed) release in the default history. */
export const CURRENT_CHART_VERSION = '26.8.1';

/** Images of the simulated install (tags from the chart's values.yaml at 26.8.x; Synapse pinned to schema 94). */
export const IMAGES = {
  synapse: { registry: 'oci.element.io', repository: 'synapse', tag: 'v1.157.1' },
  matrixTools: { registry: 'ghcr.io', repository: 'element-hq/ess-helm/matrix-tools', tag: '0.8.1' },
  // The chart ships postgres:17-alpine; the sandbox's real server is PostgreSQL 15, and the image tag must match
  // the server the pod's tools talk to.
  postgres: { registry: 'docker.io', repository: 'postgres', tag: '15-alpine' },
  postgresExporter: { registry: 'docker.io', repository: 'prometheuscommunity/postgres-exporter', tag: 'v0.18.1' },
  mas: { registry: 'ghcr.io', repository: 'element-hq/matrix-authentication-service', tag: '1.23.0' },
  elementWeb: { registry: 'oci.element.io', repository: 'element-web', tag: 'v1.12.26' },
  elementAdmin: { registry: 'oci.element.io', repository: 'element-admin', tag: '0.1.12' },
  haproxy: { registry: 'docker.io', repository: 'library/haproxy', tag: '3.2-alpine' },
  sfu: { registry: 'docker.io', repository: 'livekit/livekit-server', tag: 'v1.13.5' },
  rtcAuth: { registry: 'oci.element.io', repository: 'lk-jwt-service', tag: '0.6.0' },
  redis: { registry: 'docker.io', repository: 'library/redis', tag: '7.4-alpine' },
} as const;

/** An image reference as the chart's values spell it. */
export type ImageRef = { registry: string; repository: string; tag: string };

/** `registry/repository:tag`. */
export function imageString(i: ImageRef): string {
  return `${i.registry}/${i.repository}:${i.tag}`;
}

/** Synapse schema facts the seeded database carries (Synapse 1.157.1). */
export const SYNAPSE_SCHEMA_VERSION = 94;
/** schema_compat_version of that database. */
export const SYNAPSE_SCHEMA_COMPAT_VERSION = 84;

/** Compares dotted versions leniently (`25.04.01` = `25.4.1`, `-dev` suffixes ignored). */
export function compareVersions(a: string, b: string): number {
  const pa = a
    .split('-')[0]
    .split('.')
    .map((x) => Number.parseInt(x, 10) || 0);
  const pb = b
    .split('-')[0]
    .split('.')
    .map((x) => Number.parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** Deterministic PRNG (sfc32) seeded from a string. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: string) {
    const h = createHash('sha256').update(seed).digest();
    this.a = h.readUInt32LE(0);
    this.b = h.readUInt32LE(4);
    this.c = h.readUInt32LE(8);
    this.d = h.readUInt32LE(12);
    for (let i = 0; i < 12; i++) this.next();
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.a >>>= 0;
    this.b >>>= 0;
    this.c >>>= 0;
    this.d >>>= 0;
    let t = (this.a + this.b) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.d = (this.d + 1) | 0;
    t = (t + this.d) | 0;
    this.c = (this.c + t) | 0;
    return (t >>> 0) / 4294967296;
  }

  /** Integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /** A uniformly chosen element. */
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }

  /** `n` characters from `alphabet`. */
  string(n: number, alphabet: string = LETTERS): string {
    let s = '';
    for (let i = 0; i < n; i++) s += alphabet[Math.floor(this.next() * alphabet.length)];
    return s;
  }
}

/** ASCII letters (Synapse's random_string alphabet). */
export const LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
/** Letters and digits (the rand32 alphabet of matrix-tools). */
export const ALNUM = `${LETTERS}0123456789`;

/** Bytes derived from (seed, label): HMAC-SHA256 in counter mode. */
export function deriveBytes(seed: string, label: string, n: number): Buffer {
  const out: Buffer[] = [];
  let total = 0;
  for (let i = 0; total < n; i++) {
    const block = createHmac('sha256', seed).update(`${label}\u0000${i}`).digest();
    out.push(block);
    total += block.length;
  }
  return Buffer.concat(out).subarray(0, n);
}

/** `n` characters of `alphabet` derived from (seed, label), without modulo bias. */
export function deriveString(seed: string, label: string, n: number, alphabet: string = ALNUM): string {
  const limit = 256 - (256 % alphabet.length);
  let s = '';
  let round = 0;
  while (s.length < n) {
    for (const byte of deriveBytes(seed, `${label}#${round++}`, n * 2)) {
      if (byte < limit) s += alphabet[byte % alphabet.length];
      if (s.length === n) break;
    }
  }
  return s;
}

/** A UUID-shaped id derived from a string (stable across runs). */
export function stableUid(...parts: string[]): string {
  const h = createHash('sha256').update(parts.join('/')).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** RFC 3339 with second precision, as the API server prints timestamps. */
export function isoSeconds(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

/** One day in milliseconds. */
export const DAY_MS = 86_400_000;

/** Seed string shared by objects.ts and data.ts so both derive the same credentials. */
function credentialSeed(opts: Pick<SeedOptions, 'namespace' | 'release'>): string {
  return `ess-sandbox:${opts.namespace}:${opts.release}`;
}

/** The database role passwords (also stored in the `<R>-generated` Secret), derived from namespace and release. */
export function databasePasswords(opts: Pick<SeedOptions, 'namespace' | 'release'>): {
  admin: string;
  synapse: string;
  mas: string;
} {
  const seed = credentialSeed(opts);
  return {
    admin: deriveString(seed, 'POSTGRES_ADMIN_PASSWORD', 32),
    synapse: deriveString(seed, 'POSTGRES_SYNAPSE_PASSWORD', 32),
    mas: deriveString(seed, 'POSTGRES_MATRIX_AUTHENTICATION_SERVICE_PASSWORD', 32),
  };
}

let rsaKeyCache: Buffer | undefined;

/**
 * RSA-4096 private key, PKCS#1 DER. Generating one takes seconds and node:crypto cannot generate RSA keys from a
 * seed, so one random key is generated per machine and cached (0600) under the OS temp dir; every sandbox (and every
 * test process) reuses it. Only sandboxes use it.
 */
export function masRsaKeyDer(): Buffer {
  if (rsaKeyCache) return rsaKeyCache;
  const dir = join(tmpdir(), 'ess-sandbox-cache');
  const file = join(dir, 'mas-rsa-4096.der');
  try {
    const cached = readFileSync(file);
    createPrivateKey({ key: cached, format: 'der', type: 'pkcs1' });
    rsaKeyCache = cached;
    return cached;
  } catch {
    // Not cached yet (or unreadable): generate below.
  }
  const key = generateKeyPairSync('rsa', { modulusLength: 4096 }).privateKey.export({ type: 'pkcs1', format: 'der' });
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const temp = `${file}.${process.pid}.tmp`;
    writeFileSync(temp, key, { mode: 0o600 });
    renameSync(temp, file);
  } catch {
    // A read-only temp dir only costs the generation time.
  }
  rsaKeyCache = key;
  return key;
}

/** prime256v1 private key, SEC1 DER, derived deterministically from (seed, label). */
export function ecKeyDer(seed: string, label: string): Buffer {
  const n = BigInt('0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551');
  let d = BigInt(`0x${deriveBytes(seed, label, 32).toString('hex')}`) % (n - 1n);
  d += 1n;
  const dBuf = Buffer.from(d.toString(16).padStart(64, '0'), 'hex');
  const ecdh = createECDH('prime256v1');
  ecdh.setPrivateKey(dBuf);
  const pub = ecdh.getPublicKey();
  const key = createPrivateKey({
    key: {
      kty: 'EC',
      crv: 'P-256',
      d: dBuf.toString('base64url'),
      x: pub.subarray(1, 33).toString('base64url'),
      y: pub.subarray(33, 65).toString('base64url'),
    },
    format: 'jwk',
  });
  return key.export({ type: 'sec1', format: 'der' });
}

/**
 * Every key of the `<R>-generated` Secret (ess-deployment.md §5.2) as raw bytes: rand32 strings, the ed25519
 * signing key, the MAS hex secret and the two binary DER keys.
 */
export function generatedSecretData(opts: Pick<SeedOptions, 'namespace' | 'release'>): Record<string, Buffer> {
  const seed = credentialSeed(opts);
  const pw = databasePasswords(opts);
  const rand32 = (k: string) => Buffer.from(deriveString(seed, k, 32));
  const signingSeed = deriveBytes(seed, 'SYNAPSE_SIGNING_KEY', 32).toString('base64').replace(/=+$/, '');
  return {
    ELEMENT_CALL_LIVEKIT_SECRET: rand32('ELEMENT_CALL_LIVEKIT_SECRET'),
    MAS_ECDSA_PRIME256V1_PRIVATE_KEY: ecKeyDer(seed, 'MAS_ECDSA_PRIME256V1_PRIVATE_KEY'),
    MAS_ENCRYPTION_SECRET: Buffer.from(deriveBytes(seed, 'MAS_ENCRYPTION_SECRET', 32).toString('hex')),
    MAS_RSA_PRIVATE_KEY: masRsaKeyDer(),
    MAS_SYNAPSE_SHARED_SECRET: rand32('MAS_SYNAPSE_SHARED_SECRET'),
    POSTGRES_ADMIN_PASSWORD: Buffer.from(pw.admin),
    POSTGRES_MATRIX_AUTHENTICATION_SERVICE_PASSWORD: Buffer.from(pw.mas),
    POSTGRES_SYNAPSE_PASSWORD: Buffer.from(pw.synapse),
    SYNAPSE_EXTRA: Buffer.from('{}\n'),
    SYNAPSE_MACAROON: rand32('SYNAPSE_MACAROON'),
    SYNAPSE_REGISTRATION_SHARED_SECRET: rand32('SYNAPSE_REGISTRATION_SHARED_SECRET'),
    SYNAPSE_SIGNING_KEY: Buffer.from(`ed25519 1 ${signingSeed}`),
  };
}

/** Secret `data` (base64 values, as the API serves them) from raw bytes. */
export function toSecretData(data: Record<string, Buffer | string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(data)) out[k] = Buffer.from(v).toString('base64');
  return out;
}

/** Labels a chart object carries (ess-deployment.md §2). `chartVersion` undefined = a pod template. */
export function chartLabels(p: {
  component: string;
  name: string;
  instance: string;
  version: string;
  chartVersion?: string;
  extra?: Record<string, string>;
}): Record<string, string> {
  const labels: Record<string, string> = {};
  if (p.chartVersion) labels['helm.sh/chart'] = `matrix-stack-${p.chartVersion}`.replace(/\+/g, '_');
  labels['app.kubernetes.io/managed-by'] = 'Helm';
  labels['app.kubernetes.io/part-of'] = 'matrix-stack';
  labels['app.kubernetes.io/component'] = p.component;
  labels['app.kubernetes.io/name'] = p.name;
  labels['app.kubernetes.io/instance'] = p.instance;
  labels['app.kubernetes.io/version'] = p.version.replace(/\+/g, '_').slice(0, 63).replace(/-+$/, '');
  return { ...labels, ...(p.extra ?? {}) };
}

/** Deep copy of a JSON value. */
export function clone<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

/** Template paths of rendered objects, for the Helm manifest's `# Source:` comments. */
export const templateSources = new WeakMap<KubeObject, string>();
