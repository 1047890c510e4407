/**
 * Edge cases of `ess upgrade rollback` that the sandbox's fixed histories do not cover (first install stuck, fresh
 * pending revision, label-only edits, histories without time labels). Uses a small in-memory fake KubeClient that
 * serves only Secrets (Jobs, the Lease and the markers ConfigMap are absent); the real API path is covered by
 * upgrade-commands.test.ts against the sandbox.
 */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { EssError } from '../../src/lib/errors.js';
import { decodeRelease, encodeRelease, type HelmRelease, type ReleaseStatus } from '../../src/lib/helm/release.js';
import type { HelmRunner } from '../../src/lib/helm/runner.js';
import { KubeApiError, type KubeClient } from '../../src/lib/kube/client.js';
import type { KubeObject, Secret } from '../../src/lib/kube/types.js';
import { silentReporter } from '../../src/lib/output/log.js';
import { type RollbackOptions, rollbackStuckUpgrade } from '../../src/services/upgrade/rollback.js';

const NOW = new Date('2025-06-01T12:00:00Z');

interface Rev {
  revision: number;
  status: ReleaseStatus;
  description: string;
  /** Minutes before NOW of the last change; undefined = no time labels at all. */
  ageMin?: number;
  labelStatus?: string;
}

function secret(rev: Rev): Secret {
  const at = new Date(NOW.getTime() - (rev.ageMin ?? 60) * 60_000);
  const release: HelmRelease = {
    name: 'ess',
    namespace: 'ess',
    version: rev.revision,
    info: { status: rev.status, description: rev.description, last_deployed: at.toISOString() },
    chart: { metadata: { name: 'matrix-stack', version: '26.1.0' }, values: {} },
    config: { synapse: { image: { tag: 'v1.130.0' } } },
    manifest: '',
  };
  const labels: Record<string, string> = {
    name: 'ess',
    owner: 'helm',
    status: rev.labelStatus ?? rev.status,
    version: String(rev.revision),
  };
  if (rev.ageMin !== undefined) labels.modifiedAt = String(Math.floor(at.getTime() / 1000));
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'helm.sh/release.v1',
    metadata: { name: `sh.helm.release.v1.ess.v${rev.revision}`, namespace: 'ess', resourceVersion: '1', labels },
    data: { release: encodeRelease(release) },
  };
}

/** In-memory fake: Secrets only, replace with resourceVersion checks. */
function fakeKube(revs: Rev[]): KubeClient & { secrets: Map<string, Secret> } {
  const secrets = new Map(revs.map((r) => [`sh.helm.release.v1.ess.v${r.revision}`, secret(r)]));
  const unsupported = () => Promise.reject(new Error('not supported by the fake'));
  return {
    secrets,
    contextName: 'fake',
    server: 'fake',
    get: async <T extends KubeObject>(kind: string, _ns: string | undefined, name: string) =>
      (kind === 'Secret' ? secrets.get(name) : undefined) as T | undefined,
    list: async <T extends KubeObject>(kind: string) => (kind === 'Secret' ? [...secrets.values()] : []) as T[],
    replace: async <T extends KubeObject>(_kind: string, _ns: string | undefined, body: T) => {
      const current = secrets.get(body.metadata.name);
      if (!current || current.metadata.resourceVersion !== body.metadata.resourceVersion) {
        throw new KubeApiError(409, undefined, 'PUT', body.metadata.name);
      }
      const next = {
        ...body,
        metadata: { ...body.metadata, resourceVersion: String(Number(body.metadata.resourceVersion) + 1) },
      };
      secrets.set(body.metadata.name, next as unknown as Secret);
      return next;
    },
    create: async <T extends KubeObject>(_kind: string, _ns: string | undefined, body: T) => body,
    patch: unsupported,
    delete: async () => true,
    exec: unsupported,
    portForward: unsupported,
  };
}

const helm = (present: boolean): HelmRunner => ({
  available: async () => (present ? '/fake/helm' : undefined),
  run: async () => ({ exitCode: 0, stderrTail: '' }),
});

function run(kube: KubeClient, extra: Partial<RollbackOptions> = {}, helmPresent = true) {
  return rollbackStuckUpgrade(
    kube,
    {
      namespace: 'ess',
      release: 'ess',
      staleAfterMs: 15 * 60_000,
      timeout: '10m',
      force: false,
      markFailed: false,
      dryRun: true,
      ...extra,
    },
    {
      reporter: silentReporter,
      helm: helm(helmPresent),
      helmOutput: new PassThrough().resume(),
      confirm: async () => {},
      now: () => NOW,
    },
  );
}

const fails = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('expected a refusal');
    },
    (e: EssError) => e,
  );

describe('rollback edge cases (fake KubeClient)', () => {
  it('refuses when nothing is stuck', async () => {
    const kube = fakeKube([
      { revision: 1, status: 'superseded', description: 'Install complete' },
      { revision: 2, status: 'deployed', description: 'Upgrade complete' },
    ]);
    const error = await fails(run(kube));
    expect(error).toMatchObject({ code: 'NOT_STUCK', exitCode: 4 });
  });

  it('a stuck first install has nothing to roll back to: helm mode refuses and suggests --mark-failed', async () => {
    const kube = fakeKube([
      { revision: 1, status: 'pending-install', description: 'Initial install underway', ageMin: 30 },
    ]);
    const error = await fails(run(kube, { force: true }));
    expect(error.message).toMatch(/nothing to roll back to/);
    expect(error.next.join('\n')).toMatch(/--mark-failed/);
    const marked = await run(kube, { markFailed: true, dryRun: false });
    expect(marked).toMatchObject({ applied: true, action: 'mark-failed', after: { status: 'failed' } });
    expect(marked.target).toBeUndefined();
    expect(marked.next.join('\n')).not.toMatch(/helm rollback/);
    const stored = kube.secrets.get('sh.helm.release.v1.ess.v1') as Secret;
    expect(stored.metadata.labels?.status).toBe('failed');
    expect(stored.metadata.labels?.modifiedAt).toBe(String(NOW.getTime() / 1000));
    expect(decodeRelease(stored.data?.release ?? '').info.status).toBe('failed');
  });

  it('a pending revision younger than --stale-after is refused even with --force; --stale-after 0 accepts it', async () => {
    const kube = fakeKube([
      { revision: 1, status: 'deployed', description: 'Install complete' },
      { revision: 2, status: 'pending-rollback', description: 'Rollback to 1', ageMin: 5 },
    ]);
    const error = await fails(run(kube, { force: true }));
    expect(error.message).toMatch(/changed 5m00s ago, less than --stale-after 15m00s/);
    const plan = await run(kube, { staleAfterMs: 0, markFailed: true });
    expect(plan.stuck).toMatchObject({ revision: 2, status: 'pending-rollback', ageSeconds: 300 });
  });

  it('without time labels the age comes from the release body; status comes from the body, not the label', async () => {
    const kube = fakeKube([
      { revision: 1, status: 'deployed', description: 'Install complete' },
      // Someone edited only the label to "failed": Helm still sees pending-upgrade, and so does ess.
      { revision: 2, status: 'pending-upgrade', description: 'Preparing upgrade', labelStatus: 'failed' },
    ]);
    const plan = await run(kube, { markFailed: true });
    expect(plan.stuck).toMatchObject({
      revision: 2,
      status: 'pending-upgrade',
      labelStatus: 'failed',
      ageSeconds: 3600,
    });
    expect(plan.target?.revision).toBe(1);
    // Without a database to read, the schema check cannot pass: only a note when marking, a refusal when rolling back.
    expect(plan.checks.find((c) => c.id === 'schema')).toMatchObject({ ok: false, severity: 'info' });
    const error = await fails(run(kube));
    expect(error.message).toMatch(/Cannot read the live database's schema compat version/);
  });
});
