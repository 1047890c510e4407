import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { parseGoDuration } from '../../src/lib/helm/duration.js';
import {
  authMarkerOfRelease,
  markerAllows,
  operationCompleted,
  synapseVersionOfRelease,
} from '../../src/lib/helm/inspect.js';
import type { HelmRelease } from '../../src/lib/helm/release.js';
import { createHelmRunner, rollbackArgv, shellQuote } from '../../src/lib/helm/runner.js';

function release(parts: Partial<HelmRelease>): HelmRelease {
  return { name: 'ess', namespace: 'ess', version: 1, info: { status: 'deployed' }, ...parts };
}

const MANIFEST = `---
# Source: matrix-stack/templates/synapse/synapse_statefulset.yaml
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: ess-synapse-event-persister
  labels:
    app.kubernetes.io/component: matrix-server
    app.kubernetes.io/version: v1.129.0
spec:
  template:
    spec:
      containers:
        - name: synapse
          image: ghcr.io/element-hq/synapse:v1.129.0
---
# Source: matrix-stack/templates/synapse/synapse_statefulset.yaml
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: ess-synapse-main
  labels:
    app.kubernetes.io/component: matrix-server
    app.kubernetes.io/version: v1.130.0
spec:
  template:
    spec:
      containers:
        - name: synapse
          image: "ghcr.io/element-hq/synapse:v1.130.0"
---
kind: Deployment
metadata:
  name: ess-haproxy
  labels:
    app.kubernetes.io/component: matrix-stack-ingress
spec:
  template:
    spec:
      containers:
        - name: haproxy
          image: docker.io/library/haproxy:3.2-alpine
`;

describe('reading releases', () => {
  it('recognises completed operations by their Helm description', () => {
    expect(operationCompleted('Install complete')).toBe(true);
    expect(operationCompleted('Upgrade complete')).toBe(true);
    expect(operationCompleted('Rollback to 13')).toBe(true);
    expect(operationCompleted('Preparing upgrade')).toBe(false);
    expect(operationCompleted('Upgrade "ess" failed: pre-upgrade hooks failed')).toBe(false);
    expect(operationCompleted('Rollback "ess" failed: timed out')).toBe(false);
    expect(operationCompleted(undefined)).toBe(false);
  });

  it('finds the Synapse version: main StatefulSet image, then its label, then values, then appVersion', () => {
    expect(synapseVersionOfRelease(release({ manifest: MANIFEST }), 'ess')).toMatchObject({ version: 'v1.130.0' });
    const digestOnly = MANIFEST.replace(
      '"ghcr.io/element-hq/synapse:v1.130.0"',
      'ghcr.io/element-hq/synapse@sha256:ab',
    );
    expect(synapseVersionOfRelease(release({ manifest: digestOnly }), 'ess')).toMatchObject({
      version: 'v1.130.0',
      source: expect.stringContaining('label'),
    });
    const fromValues = release({
      chart: { metadata: { appVersion: '9.9.9' } },
      config: { synapse: { image: { tag: 'v1.120.2' } } },
    });
    expect(synapseVersionOfRelease(fromValues, 'ess')).toMatchObject({ version: 'v1.120.2' });
    expect(synapseVersionOfRelease(release({ chart: { metadata: { appVersion: '1.2.3' } } }), 'ess').version).toBe(
      '1.2.3',
    );
    expect(synapseVersionOfRelease(release({}), 'ess').version).toBeUndefined();
  });

  it('reads the auth marker from the deployment-markers hook in both argument formats', () => {
    const hook = (arg: string) =>
      release({ hooks: [{ name: 'ess-deployment-markers-pre', manifest: `command:\n- "-markers"\n- "${arg}"\n` }] });
    expect(
      authMarkerOfRelease(
        hook('ess-markers:MATRIX_STACK_MSC3861:delegated_auth:delegated_auth;syn2mas_migrated'),
        'ess',
      ),
    ).toMatchObject({
      value: 'delegated_auth',
      allowed: ['delegated_auth', 'syn2mas_migrated'],
    });
    expect(
      authMarkerOfRelease(hook('ess-markers:MATRIX_STACK_MSC3861:pre:legacy_auth:legacy_auth'), 'ess'),
    ).toMatchObject({
      value: 'legacy_auth',
      allowed: ['legacy_auth'],
    });
  });

  it('derives the auth marker from values like the chart does', () => {
    const values = (mas: Record<string, unknown> | undefined, extra: Record<string, unknown> = {}) =>
      authMarkerOfRelease(
        release({
          chart: {
            values: { synapse: { enabled: true }, matrixAuthenticationService: { enabled: true } },
          } as HelmRelease['chart'],
          config: { ...(mas ? { matrixAuthenticationService: mas } : {}), ...extra },
        }),
        'ess',
      );
    expect(values(undefined)?.value).toBe('delegated_auth');
    expect(values({ enabled: false })?.value).toBe('legacy_auth');
    expect(values({ syn2mas: { enabled: true, dryRun: true } })?.value).toBe('legacy_auth');
    expect(values({ syn2mas: { enabled: true, dryRun: false } })).toMatchObject({
      value: 'syn2mas_migrated',
      allowed: ['legacy_auth', 'syn2mas_migrated'],
    });
    expect(values(undefined, { deploymentMarkers: { enabled: false } })).toBeUndefined();
  });

  it('applies the marker transition rules', () => {
    const legacy = { value: 'legacy_auth', allowed: ['legacy_auth'], source: 't' };
    const delegated = { value: 'delegated_auth', allowed: ['delegated_auth', 'syn2mas_migrated'], source: 't' };
    expect(markerAllows(legacy, 'syn2mas_migrated')).toBe(false);
    expect(markerAllows(legacy, 'delegated_auth')).toBe(false);
    expect(markerAllows(legacy, undefined)).toBe(true);
    expect(markerAllows(delegated, 'syn2mas_migrated')).toBe(true);
    expect(markerAllows(delegated, 'legacy_auth')).toBe(false);
  });

  it('parses Go durations', () => {
    expect(parseGoDuration('15m')).toBe(900_000);
    expect(parseGoDuration('1h30m')).toBe(5_400_000);
    expect(parseGoDuration('1.5s')).toBe(1500);
    expect(parseGoDuration('0')).toBe(0);
    expect(parseGoDuration('15')).toBeUndefined();
    expect(parseGoDuration('soon')).toBeUndefined();
  });
});

describe('helm runner', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('builds the rollback command for the same cluster and quotes it for display', () => {
    const argv = rollbackArgv({ release: 'ess', revision: 13, namespace: 'ess', timeout: '10m', context: 'prod eu' });
    expect(argv).toEqual([
      'rollback',
      'ess',
      '13',
      '-n',
      'ess',
      '--wait',
      '--timeout',
      '10m',
      '--kube-context',
      'prod eu',
    ]);
    expect(shellQuote(['helm', ...argv])).toBe(
      "helm rollback ess 13 -n ess --wait --timeout 10m --kube-context 'prod eu'",
    );
  });

  it('finds helm on PATH, streams its output and returns its exit code', async () => {
    // A fake `helm` (a shell script): helm itself cannot be installed on this machine.
    const dir = await mkdtemp(join(tmpdir(), 'ess-helm-'));
    dirs.push(dir);
    await writeFile(join(dir, 'helm'), '#!/bin/sh\necho "out: $*"\necho "err: boom" >&2\nexit 3\n');
    await chmod(join(dir, 'helm'), 0o755);
    const runner = createHelmRunner({ PATH: `/nonexistent:${dir}` });
    expect(await runner.available()).toBe(join(dir, 'helm'));
    const output = new PassThrough();
    const chunks: Buffer[] = [];
    output.on('data', (c: Buffer) => chunks.push(c));
    const result = await runner.run(['rollback', 'ess', '13'], { output });
    expect(result.exitCode).toBe(3);
    expect(result.stderrTail).toBe('err: boom\n');
    const text = Buffer.concat(chunks).toString();
    expect(text).toContain('out: rollback ess 13');
    expect(text).toContain('err: boom');
    expect(output.writableEnded).toBe(false);
  });

  it('reports no helm when PATH has none (a non-executable file does not count)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ess-nohelm-'));
    dirs.push(dir);
    await writeFile(join(dir, 'helm'), 'not executable');
    await chmod(join(dir, 'helm'), 0o644);
    expect(await createHelmRunner({ PATH: dir }).available()).toBeUndefined();
  });
});
