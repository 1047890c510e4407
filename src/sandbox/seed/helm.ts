/**
 * Helm 3 release records (`sh.helm.release.v1.<R>.v<N>` Secrets) encoded the way helm/helm v3.21
 * `pkg/storage/driver/util.go` does: base64(gzip(json)), with Go's gzip header (`1f8b 0800 0000 0000 02ff`),
 * stored as Secret data (so the API shows it base64-encoded once more).
 */
import { gunzipSync, gzipSync } from 'node:zlib';
import YAML from 'yaml';
import type { KubeObject, SeedOptions } from '../types.js';
import { CURRENT_CHART_VERSION, clone, DAY_MS, stableUid, templateSources } from './common.js';
import { enabledWorkers, renderChart } from './objects.js';

/** One revision of the release history. */
export interface Revision {
  revision: number;
  chartVersion: string;
  status: 'deployed' | 'superseded' | 'failed' | 'pending-upgrade';
  description: string;
  /** When this revision was created (info.last_deployed). */
  atMs: number;
  /** When the record was last modified (status change), for the `modifiedAt` label. */
  modifiedMs: number;
}

/** The release history the sandbox seeds. */
export interface ReleaseHistory {
  firstDeployedMs: number;
  revisions: Revision[];
}

const MIN = 60_000;

/** Parses the runbook's `helm history` dates (shown without zone; taken as UTC). */
function utc(s: string): number {
  return Date.parse(`${s}Z`);
}

/**
 * The history to seed. Default: revisions 1–3 (3 deployed, chart 26.8.1). `stuckRelease`: revisions 6–15 exactly
 * as the ESS runbook "Stuck upgrade" lists them (9 and 14 failed, 13 deployed, 15 pending-upgrade), moved back in
 * time if needed so that revision 15 is at least 20 minutes older than `nowMs`.
 */
export function releaseHistory(opts: SeedOptions): ReleaseHistory {
  const R = opts.release;
  if (!opts.stuckRelease) {
    const now = opts.nowMs;
    const t1 = now - 90 * DAY_MS;
    const t2 = now - 45 * DAY_MS;
    const t3 = now - 7 * DAY_MS;
    return {
      firstDeployedMs: t1,
      revisions: [
        {
          revision: 1,
          chartVersion: '26.4.0',
          status: 'superseded',
          description: 'Install complete',
          atMs: t1,
          modifiedMs: t2 + 95_000,
        },
        {
          revision: 2,
          chartVersion: '26.7.0',
          status: 'superseded',
          description: 'Upgrade complete',
          atMs: t2,
          modifiedMs: t3 + 95_000,
        },
        {
          revision: 3,
          chartVersion: CURRENT_CHART_VERSION,
          status: 'deployed',
          description: 'Upgrade complete',
          atMs: t3,
          modifiedMs: t3 + 95_000,
        },
      ],
    };
  }
  const rows: [number, string, string, Revision['status'], string][] = [
    [6, '2025-03-25T13:17:00', '0.7.5', 'superseded', 'Upgrade complete'],
    [7, '2025-03-31T13:00:49', '0.8.1', 'superseded', 'Upgrade complete'],
    [8, '2025-04-08T10:49:10', '0.9.1', 'superseded', 'Upgrade complete'],
    [
      9,
      '2025-05-02T11:31:29',
      '0.11.3',
      'failed',
      `Upgrade "${R}" failed: failed to create resource: Service "${R}-matrix-rtc-sfu-tcp" is invalid: spec.ports[0].nodePort: Invalid value: 30881: provided port is already allocated`,
    ],
    [10, '2025-05-02T11:38:15', '0.11.3', 'superseded', 'Upgrade complete'],
    [11, '2025-05-06T15:51:44', '0.11.4', 'superseded', 'Upgrade complete'],
    [12, '2025-05-08T12:55:26', '0.11.5', 'superseded', 'Upgrade complete'],
    [13, '2025-05-16T09:22:36', '0.12.0', 'deployed', 'Upgrade complete'],
    [
      14,
      '2025-05-21T14:47:23',
      '25.4.2',
      'failed',
      `Upgrade "${R}" failed: pre-upgrade hooks failed: 1 error occurred:\n\t* timed out waiting for the condition\n\n`,
    ],
    [15, '2025-05-21T14:55:14', '25.4.2', 'pending-upgrade', 'Preparing upgrade'],
  ];
  const last = utc(rows[rows.length - 1][1]);
  const shift = Math.min(0, opts.nowMs - 20 * MIN - last);
  const revisions: Revision[] = rows.map(([revision, at, chartVersion, status, description]) => ({
    revision,
    chartVersion,
    status,
    description,
    atMs: utc(at) + shift,
    modifiedMs: utc(at) + shift,
  }));
  // A superseded revision was last modified when the next successful deploy replaced it; a failed one when
  // Helm recorded the failure.
  const successes = revisions.filter((r) => r.status === 'superseded' || r.status === 'deployed');
  for (const r of revisions) {
    if (r.status === 'superseded') {
      const next = successes.find((s) => s.revision > r.revision);
      r.modifiedMs = (next?.atMs ?? r.atMs) + 90_000;
    } else if (r.status === 'failed') {
      r.modifiedMs = r.atMs + (r.revision === 14 ? 5 * MIN : 20_000);
    } else if (r.status === 'deployed') {
      r.modifiedMs = r.atMs + 90_000;
    }
  }
  return { firstDeployedMs: utc('2025-02-03T10:12:41') + shift, revisions };
}

/** RFC 3339 with nanoseconds, as Go's time.Time marshals. */
function rfc3339Nano(ms: number): string {
  const iso = new Date(ms).toISOString();
  const nanos = `${String(ms % 1000).padStart(3, '0')}${String((ms * 7919) % 1_000_000).padStart(6, '0')}`.replace(
    /0+$/,
    '',
  );
  return iso.replace(/\.\d{3}Z$/, nanos ? `.${nanos}Z` : 'Z');
}

const STRIP_ANNOTATIONS = ['meta.helm.sh/release-name', 'meta.helm.sh/release-namespace'];

/** Rendered YAML of the chart objects, as Helm stores it in `manifest`. */
export function renderManifest(objects: KubeObject[]): string {
  const docs: string[] = [];
  for (const o of objects) {
    const c = clone(o);
    delete c.status;
    const m = c.metadata;
    delete m.uid;
    delete m.creationTimestamp;
    delete m.generation;
    delete m.resourceVersion;
    if (m.annotations) {
      for (const a of STRIP_ANNOTATIONS) delete m.annotations[a];
      if (Object.keys(m.annotations).length === 0) delete m.annotations;
    }
    const src = templateSources.get(o) ?? 'matrix-stack/templates/unknown.yaml';
    docs.push(`---\n# Source: ${src}\n${YAML.stringify(c, { lineWidth: 0 })}`);
  }
  return docs.join('');
}

function userValues(opts: SeedOptions) {
  const host = (s: string) => `${s}.${opts.serverName}`;
  const workers: Record<string, { enabled: boolean; replicas: number }> = {};
  for (const w of enabledWorkers(opts)) workers[w] = { enabled: true, replicas: 1 };
  return {
    serverName: opts.serverName,
    elementAdmin: { ingress: { host: host('admin') }, replicas: 1 },
    elementWeb: { ingress: { host: host('chat') }, replicas: 1 },
    matrixAuthenticationService: { ingress: { host: host('account') }, replicas: 1 },
    matrixRTC: { ingress: { host: host('mrtc') } },
    postgres: { replicas: 1 },
    synapse: { ingress: { host: host('matrix') }, replicas: 1, workers },
  };
}

function chartDefaults() {
  const comp = (extra: Record<string, unknown> = {}) => ({
    enabled: true,
    replicas: 1,
    labels: {},
    annotations: {},
    ...extra,
  });
  return {
    serverName: null,
    clusterDomain: 'cluster.local.',
    labels: {},
    networking: { ipFamily: 'dual-stack' },
    storage: { resourcePolicy: 'keep', storageClassName: null },
    initSecrets: { enabled: true },
    deploymentMarkers: { enabled: true },
    elementAdmin: comp(),
    elementWeb: comp(),
    haproxy: { replicas: 1 },
    hookshot: { enabled: false },
    matrixAuthenticationService: comp({ syn2mas: { enabled: false, dryRun: false } }),
    matrixRTC: comp({ sfu: { enabled: true } }),
    postgres: comp({ storage: { size: '10Gi' }, essPasswords: {}, resources: { limits: { memory: '4Gi' } } }),
    synapse: comp({ media: { storage: { size: '10Gi' }, maxUploadSize: '100M' }, workers: {} }),
    wellKnownDelegation: { enabled: true },
  };
}

/** The release JSON for one revision (pkg/release/release.go field order). */
export function releaseJson(opts: SeedOptions, history: ReleaseHistory, rev: Revision, manifest: string) {
  return {
    name: opts.release,
    info: {
      first_deployed: rfc3339Nano(history.firstDeployedMs),
      last_deployed: rfc3339Nano(rev.atMs),
      deleted: '',
      description: rev.description,
      status: rev.status,
      notes: `Thank you for installing matrix-stack ${rev.chartVersion}.\n\nYour Matrix server is available at https://matrix.${opts.serverName}\n`,
    },
    chart: {
      metadata: {
        name: 'matrix-stack',
        home: 'https://element.io/server-suite',
        sources: ['https://github.com/element-hq/ess-helm', 'https://github.com/element-hq/synapse'],
        version: rev.chartVersion,
        description: 'A Helm chart for deploying a Matrix Stack from Element',
        keywords: ['ESS', 'Element', 'Matrix', 'Synapse'],
        maintainers: [{ name: 'Element - Server Products Team' }],
        apiVersion: 'v2',
        kubeVersion: '>= 1.22.0-0',
        type: 'application',
      },
      lock: null,
      templates: [],
      values: chartDefaults(),
      schema: null,
      files: [],
    },
    config: userValues(opts),
    manifest,
    hooks: [],
    version: rev.revision,
    namespace: opts.namespace,
  };
}

/** base64(gzip(json)) with Go's gzip header: the string Helm stores under `data.release`. */
export function encodeRelease(release: unknown): string {
  const gz = gzipSync(Buffer.from(JSON.stringify(release)), { level: 9 });
  gz[8] = 0x02; // XFL: best compression
  gz[9] = 0xff; // OS: unknown, as Go writes it
  gz.writeUInt32LE(0, 4); // MTIME zero
  return gz.toString('base64');
}

/** Decodes a release Secret's `data.release` as served by the API (base64 → base64 → gunzip → JSON). */
export function decodeReleaseData(apiValue: string): Record<string, unknown> {
  const inner = Buffer.from(apiValue, 'base64');
  let raw = Buffer.from(inner.toString('utf8'), 'base64');
  if (raw[0] === 0x1f && raw[1] === 0x8b && raw[2] === 0x08) raw = gunzipSync(raw);
  return JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
}

/** The Helm release Secrets of the history (one per revision). */
export function helmReleaseSecrets(opts: SeedOptions, history: ReleaseHistory): KubeObject[] {
  return history.revisions.map((rev) => {
    const rendered = renderChart({
      opts,
      chartVersion: rev.chartVersion,
      installedMs: history.firstDeployedMs,
      hooksMs: rev.atMs,
    });
    const manifest = renderManifest(rendered.objects);
    const encoded = encodeRelease(releaseJson(opts, history, rev, manifest));
    const name = `sh.helm.release.v1.${opts.release}.v${rev.revision}`;
    return {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'helm.sh/release.v1',
      metadata: {
        name,
        namespace: opts.namespace,
        uid: stableUid(opts.namespace, 'Secret', name),
        creationTimestamp: new Date(Math.floor(rev.atMs / 1000) * 1000).toISOString().replace('.000Z', 'Z'),
        labels: {
          createdAt: String(Math.floor(rev.atMs / 1000)),
          modifiedAt: String(Math.floor(rev.modifiedMs / 1000)),
          name: opts.release,
          owner: 'helm',
          status: rev.status,
          version: String(rev.revision),
        },
      },
      data: { release: Buffer.from(encoded).toString('base64') },
    };
  });
}
