/**
 * Unit tests of the `ess backup` building blocks that need no cluster: retention against an in-memory store,
 * Prometheus metrics, the media listing script and parser, the helper pod, and the Secret/ConfigMap members.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRecipient } from '../../src/lib/crypto/age.js';
import type { MediaInfo } from '../../src/lib/deployment/model.js';
import { MemoryStore } from '../../src/lib/storage/memory.js';
import { decodeSavedObject, encodeSavedObject, type SavedObject } from '../../src/services/backup/collect-config.js';
import {
  HELPER_COMPONENT,
  helperPodSpec,
  mediaListingScript,
  parseStatListing,
} from '../../src/services/backup/media.js';
import { renderMetrics, writeMetricsFile } from '../../src/services/backup/metrics.js';
import { applyRetention, planRetention } from '../../src/services/backup/retention.js';
import { removeDir, tempDir } from '../archive/helpers.js';
import { repoRoot } from '../helpers/cli.js';

const DAY = 86_400_000;

async function storeWith(names: string[]): Promise<MemoryStore> {
  const store = new MemoryStore('units');
  for (const name of names) await store.put(name, Readable.from([Buffer.from(name)]));
  return store;
}

describe('retention of backups at a destination', () => {
  const full1 = 'ess-backup_a.example_20250101T020000Z.tar';
  const incr1 = 'ess-backup_a.example_20250102T020000Z_incr-20250101T020000Z.tar.age';
  const full2 = 'ess-backup_a.example_20250103T020000Z.tar';
  const otherServer = 'ess-backup_b.example_20240101T020000Z.tar';

  it('keeps the newest per server and every parent of a kept incremental, deleting the rest newest first', async () => {
    const store = await storeWith([full1, incr1, full2, otherServer, 'notes.txt']);
    const plan = await planRetention(store, { keepLast: 2, now: new Date('2025-01-10T00:00:00Z') });
    expect(plan.keep.map((o) => o.name).sort()).toEqual([full1, incr1, full2, otherServer].sort());
    expect(plan.keep.find((o) => o.name === full1)?.reasons).toEqual(['parent-of-kept']);
    expect(plan.remove).toEqual([]);

    const one = await planRetention(store, { keepLast: 1, now: new Date('2025-01-10T00:00:00Z') });
    expect(one.remove.map((o) => o.name)).toEqual([incr1, full1]);
    expect(one.keep.map((o) => o.name).sort()).toEqual([full2, otherServer].sort());
    const outcome = await applyRetention(store, one);
    expect(outcome.deleted.map((o) => o.name)).toEqual([incr1, full1]);
    expect(outcome.freedBytes).toBe(incr1.length + full1.length);
    expect((await store.list()).map((o) => o.name).sort()).toEqual([full2, otherServer, 'notes.txt'].sort());
  });

  it('limits the decision to the given servers and applies keep-within by age', async () => {
    const store = await storeWith([full1, full2, otherServer]);
    const plan = await planRetention(store, {
      keepWithinMs: 3 * DAY,
      now: new Date('2025-01-04T12:00:00Z'),
      servers: ['b.example'],
    });
    expect(plan.keep.map((o) => o.name)).toEqual([otherServer]);
    expect(plan.remove).toEqual([]);
    const aOnly = await planRetention(store, {
      keepWithinMs: 2 * DAY,
      now: new Date('2025-01-04T12:00:00Z'),
      servers: ['a.example'],
    });
    expect(aOnly.remove.map((o) => o.name)).toEqual([full1]);
    await expect(planRetention(store, { now: new Date() })).rejects.toMatchObject({ exitCode: 2 });
  });

  it('reports a failed deletion and carries on', async () => {
    const store = await storeWith([full1, full2, 'ess-backup_a.example_20250104T020000Z.tar']);
    const plan = await planRetention(store, { keepLast: 1, now: new Date('2025-02-01T00:00:00Z') });
    const failing = Object.assign(Object.create(store), {
      delete: async (name: string) => {
        if (name === full2) throw new Error('permission denied');
        return store.delete(name);
      },
    }) as MemoryStore;
    const outcome = await applyRetention(failing, plan);
    expect(outcome.failed).toEqual([{ name: full2, error: 'permission denied' }]);
    expect(outcome.deleted.map((o) => o.name)).toEqual([full1]);
  });
});

describe('Prometheus textfile metrics', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await tempDir('ess-metrics-');
  });
  afterAll(async () => removeDir(dir));
  const labels = { namespace: 'ess', release: 'ess', destination: 's3://b/"x"' };

  it('renders a success with size and downtime, and a failure keeps the last success time', async () => {
    const path = join(dir, 'ess_backup.prom');
    await writeMetricsFile(path, labels, {
      success: true,
      finishedAtMs: 1_700_000_000_500,
      durationMs: 61_250,
      sizeBytes: 12345,
      downtimeMs: 2_500,
    });
    const ok = await readFile(path, 'utf8');
    const l = '{namespace="ess",release="ess",destination="s3://b/\\"x\\""}';
    expect(ok).toContain(`ess_backup_last_run_success${l} 1\n`);
    expect(ok).toContain(`ess_backup_last_success_timestamp_seconds${l} 1700000000.5\n`);
    expect(ok).toContain(`ess_backup_last_run_duration_seconds${l} 61.25\n`);
    expect(ok).toContain(`ess_backup_last_size_bytes${l} 12345\n`);
    expect(ok).toContain(`ess_backup_last_downtime_seconds${l} 2.5\n`);
    expect(ok).toContain('# TYPE ess_backup_last_size_bytes gauge\n');

    await writeMetricsFile(path, labels, { success: false, finishedAtMs: 1_700_086_400_000, durationMs: 1_000 });
    const failed = await readFile(path, 'utf8');
    expect(failed).toContain(`ess_backup_last_run_success${l} 0\n`);
    expect(failed).toContain(`ess_backup_last_success_timestamp_seconds${l} 1700000000.5\n`);
    expect(failed).toContain(`ess_backup_last_run_timestamp_seconds${l} 1700086400\n`);
    expect(failed).not.toContain('ess_backup_last_size_bytes');
    expect(await readdir(dir)).toEqual(['ess_backup.prom']);
    expect(renderMetrics(labels, { success: false, finishedAtMs: 0, durationMs: 0 })).not.toContain(
      'last_success_timestamp',
    );
  });
});

describe('media listing', () => {
  it('prunes the cache folders unless asked, with GNU find or a BusyBox-compatible stat', () => {
    const gnu = mediaListingScript('/media/media_store', { includeRemote: false, gnuFind: true });
    expect(gnu).toBe(
      "[ -d /media/media_store ] || exit 0; cd /media/media_store && find . \\( -path ./remote_content -o -path ./remote_thumbnail -o -path ./url_cache -o -path ./url_cache_thumbnails \\) -prune -o -type f -printf '%s %T@ %P\\0'",
    );
    const busybox = mediaListingScript('/media/my store', { includeRemote: true, gnuFind: false });
    expect(busybox).toBe(
      "[ -d '/media/my store' ] || exit 0; cd '/media/my store' && find . -type f -exec stat -c '%s %Y %n' {} +",
    );
  });

  it('parses the stat listing across chunk boundaries and refuses garbage', async () => {
    const text = '12 1700000000 ./local_content/ab/cd/efgh\n0 1700000001 ./local_thumbnails/ab/cd/efgh/32-32-image-png';
    const chunks = [Buffer.from(text.slice(0, 20)), Buffer.from(text.slice(20))];
    const entries = [];
    for await (const e of parseStatListing(Readable.from(chunks))) entries.push(e);
    expect(entries).toEqual([
      { path: 'local_content/ab/cd/efgh', size: 12, mtime: 1700000000 },
      { path: 'local_thumbnails/ab/cd/efgh/32-32-image-png', size: 0, mtime: 1700000001 },
    ]);
    const bad = async () => {
      for await (const _ of parseStatListing(Readable.from([Buffer.from('stat: cannot stat\n')]))) {
        // drain
      }
    };
    await expect(bad()).rejects.toMatchObject({ code: 'MEDIA_LISTING' });
  });

  it('a helper pod mounts the media claim read-only as the Synapse user, on the media pod node', () => {
    const media: MediaInfo = {
      claimName: 'ess-synapse-media',
      statefulSet: 'ess-synapse-main',
      pod: 'ess-synapse-main-0',
      container: 'synapse',
      mountPath: '/media',
      storePath: '/media/media_store',
    };
    const pod = helperPodSpec(media, { name: 'h', release: 'ess', image: 'postgres:17-alpine', nodeName: 'node-1' });
    const spec = pod.spec as unknown as {
      nodeName: string;
      securityContext: { runAsUser: number };
      volumes: { persistentVolumeClaim: { claimName: string; readOnly: boolean } }[];
      containers: { image: string; volumeMounts: { mountPath: string; readOnly: boolean }[] }[];
    };
    expect(spec.nodeName).toBe('node-1');
    expect(spec.securityContext.runAsUser).toBe(10091);
    expect(spec.volumes[0]?.persistentVolumeClaim).toEqual({ claimName: 'ess-synapse-media', readOnly: true });
    expect(spec.containers[0]?.volumeMounts).toEqual([{ name: 'media', mountPath: '/media', readOnly: true }]);
    expect(spec.containers[0]?.image).toBe('postgres:17-alpine');
    expect(pod.metadata.labels?.['app.kubernetes.io/component']).toBe(HELPER_COMPONENT);
  });
});

describe('Secret and ConfigMap members', () => {
  it('round-trip exact base64 (binary DER included), labels and ConfigMap text', () => {
    const der = Buffer.from([0x30, 0x82, 0x01, 0x0a, 0x00, 0xff, 0x7f]).toString('base64');
    const secret: SavedObject = {
      kind: 'Secret',
      name: 'ess-generated',
      type: 'Opaque',
      labels: { 'app.kubernetes.io/managed-by': 'matrix-tools-init-secrets' },
      annotations: {},
      data: { MAS_RSA_PRIVATE_KEY: der, SYNAPSE_SIGNING_KEY: Buffer.from('ed25519 a_b c\n').toString('base64') },
    };
    const yaml = encodeSavedObject(secret).toString();
    expect(yaml).toContain('kind: Secret');
    expect(yaml).toContain(`MAS_RSA_PRIVATE_KEY: ${der}`);
    expect(decodeSavedObject(yaml)).toEqual(secret);
    const cm: SavedObject = {
      kind: 'ConfigMap',
      name: 'ess-markers',
      labels: {},
      annotations: { a: 'b' },
      data: {},
      stringData: { 'marker.yaml': 'multi\nline: "text"\n' },
    };
    expect(decodeSavedObject(encodeSavedObject(cm).toString())).toEqual(cm);
    expect(() => decodeSavedObject('kind: Pod\n')).toThrow();
  });
});

describe('age recipients in the documentation', () => {
  it('every age1… recipient in docs/ and README.md parses (bech32 checksum included)', async () => {
    const files = [
      join(repoRoot, 'README.md'),
      ...(await readdir(join(repoRoot, 'docs'))).filter((n) => n.endsWith('.md')).map((n) => join(repoRoot, 'docs', n)),
      ...(await readdir(join(repoRoot, 'docs', 'commands'))).map((n) => join(repoRoot, 'docs', 'commands', n)),
    ];
    const found: string[] = [];
    for (const file of files) {
      const text = await readFile(file, 'utf8').catch(() => '');
      for (const match of text.matchAll(/\bage1[0-9a-z]+/g)) {
        found.push(match[0]);
        expect(() => parseRecipient(match[0]), `${file}: ${match[0]}`).not.toThrow();
      }
    }
    expect(found.length).toBeGreaterThanOrEqual(3);
  });
});
