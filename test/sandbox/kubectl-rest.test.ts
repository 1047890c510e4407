/**
 * Real kubectl binaries (1.27 and 1.33) against the sandbox API server, with the commands of the upstream
 * maintenance docs run verbatim.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';

const execFileP = promisify(execFile);
const KUBECTL_DIR = '/usr/lib/google-cloud-sdk/bin';
const VERSIONS = ['1.27', '1.33'];

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function waitFor(what: string, fn: () => boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

let sb: Sandbox;

beforeAll(async () => {
  if (!VERSIONS.some((v) => existsSync(`${KUBECTL_DIR}/kubectl.${v}`))) return;
  sb = await startSandbox({ users: 20, mediaMb: 1, podStartDelayMs: 150, podStopDelayMs: 150 });
});
afterAll(async () => {
  await sb?.stop();
});

for (const version of VERSIONS) {
  const bin = `${KUBECTL_DIR}/kubectl.${version}`;
  const missing = !existsSync(bin);

  describe.skipIf(missing)(`kubectl ${version}${missing ? ` (skipped: ${bin} not installed)` : ''}`, () => {
    /** Runs kubectl with the command line split on spaces (as a shell would for these commands). */
    async function kubectl(cmdline: string): Promise<Run> {
      const args = cmdline.split(' ').slice(1);
      try {
        const { stdout, stderr } = await execFileP(bin, args, {
          env: { ...process.env, KUBECONFIG: sb.kubeconfigPath, HOME: sb.stateDir },
        });
        return { code: 0, stdout, stderr };
      } catch (err) {
        const e = err as { code?: number; stdout?: string; stderr?: string };
        return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
      }
    }
    const podsOf = (selector: string) => sb.store.list(sb.store.resourceByKind('Pod', 'v1'), 'ess', selector);
    const running = (selector: string) =>
      podsOf(selector).filter(
        (p) => (p.status as { phase?: string }).phase === 'Running' && !p.metadata.deletionTimestamp,
      );

    it('kubectl get pods', async () => {
      const r = await kubectl('kubectl get pods');
      expect(r.stderr).toBe('');
      const lines = r.stdout.trim().split('\n');
      expect(lines[0].split(/\s+/)).toEqual(['NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE']);
      const row = lines.find((l) => l.startsWith('ess-postgres-0 '))?.split(/\s+/);
      expect(row?.slice(0, 4)).toEqual(['ess-postgres-0', '3/3', 'Running', '0']);
      expect(lines.some((l) => /^ess-synapse-main-0\s+1\/1\s+Running/.test(l))).toBe(true);
      expect(lines.some((l) => /^ess-init-secrets-\w{5}\s+0\/1\s+Completed/.test(l))).toBe(true);
    });

    it('kubectl get sts -o json', async () => {
      const r = await kubectl('kubectl get sts -o json');
      expect(r.code).toBe(0);
      const list = JSON.parse(r.stdout) as {
        kind: string;
        items: { kind: string; metadata: { name: string }; status: { readyReplicas?: number } }[];
      };
      expect(list.kind).toBe('List');
      const main = list.items.find((i) => i.metadata.name === 'ess-synapse-main');
      expect(main?.kind).toBe('StatefulSet');
      expect(main?.status.readyReplicas).toBe(1);
      expect(list.items.map((i) => i.metadata.name)).toContain('ess-postgres');
    });

    it('kubectl get secrets -l app.kubernetes.io/managed-by=matrix-tools-init-secrets -o yaml', async () => {
      const r = await kubectl('kubectl get secrets -l app.kubernetes.io/managed-by=matrix-tools-init-secrets -o yaml');
      expect(r.code).toBe(0);
      const doc = YAML.parse(r.stdout) as {
        items: { kind: string; metadata: { name: string }; data: Record<string, string> }[];
      };
      expect(doc.items.map((i) => i.metadata.name)).toEqual(['ess-generated']);
      expect(doc.items[0].kind).toBe('Secret');
      expect(Buffer.from(doc.items[0].data.POSTGRES_ADMIN_PASSWORD, 'base64').toString()).toMatch(/^[A-Za-z0-9]{32}$/);
    });

    it('kubectl scale sts -l app.kubernetes.io/component=matrix-server --replicas=0', async () => {
      const before = running('k8s.element.io/synapse-instance=ess-synapse').map((p) => p.metadata.name);
      expect(before).toContain('ess-synapse-main-0');
      const r = await kubectl('kubectl scale sts -l app.kubernetes.io/component=matrix-server --replicas=0');
      expect(r.code).toBe(0);
      expect(r.stdout).toContain('statefulset.apps/ess-synapse-main scaled');
      expect(r.stdout).not.toContain('ess-postgres');
      await waitFor('Synapse pods gone', () => podsOf('k8s.element.io/synapse-instance=ess-synapse').length === 0);
      expect(running('app.kubernetes.io/instance=ess-postgres')).toHaveLength(1);
      const sts = await kubectl('kubectl get sts ess-synapse-main');
      expect(sts.stdout).toMatch(/ess-synapse-main\s+0\/0/);

      expect((await kubectl('kubectl scale sts -l app.kubernetes.io/component=matrix-server --replicas=1')).code).toBe(
        0,
      );
      await waitFor(
        'Synapse pods back',
        () => running('k8s.element.io/synapse-instance=ess-synapse').length === before.length,
      );
    });

    it('kubectl scale deploy -l app.kubernetes.io/component=matrix-authentication --replicas=0', async () => {
      const sel = 'app.kubernetes.io/instance=ess-matrix-authentication-service';
      expect(running(sel)).toHaveLength(1);
      const r = await kubectl('kubectl scale deploy -l app.kubernetes.io/component=matrix-authentication --replicas=0');
      expect(r.code).toBe(0);
      expect(r.stdout.trim()).toBe('deployment.apps/ess-matrix-authentication-service scaled');
      await waitFor('MAS pods gone', () => podsOf(sel).length === 0);
      expect(
        (await kubectl('kubectl scale deploy -l app.kubernetes.io/component=matrix-authentication --replicas=1')).code,
      ).toBe(0);
      await waitFor('MAS back', () => running(sel).length === 1);
    });

    it('reports API errors the way kubectl expects', async () => {
      const r = await kubectl('kubectl get sts does-not-exist');
      expect(r.code).toBe(1);
      expect(r.stderr.trim()).toBe('Error from server (NotFound): statefulsets.apps "does-not-exist" not found');
    });

    it('creates, reads and deletes objects (kubectl ≥ 1.32 sends protobuf bodies)', async () => {
      const name = `kubectl-${version.replace('.', '-')}`;
      expect((await kubectl(`kubectl create secret generic ${name} --from-literal=k=v`)).stdout.trim()).toBe(
        `secret/${name} created`,
      );
      const got = await kubectl(`kubectl get secret ${name} -o jsonpath={.data.k}`);
      expect(Buffer.from(got.stdout, 'base64').toString()).toBe('v');
      expect((await kubectl(`kubectl delete secret ${name}`)).stdout.trim()).toBe(`secret "${name}" deleted`);
      expect(sb.store.get(sb.store.resourceByKind('Secret', 'v1'), 'ess', name)).toBeUndefined();
    });

    it('kubectl delete pod waits until the pod is gone, and the StatefulSet recreates it', async () => {
      const before = sb.store.get(sb.store.resourceByKind('Pod', 'v1'), 'ess', 'ess-synapse-main-0');
      const r = await kubectl('kubectl delete pod ess-synapse-main-0');
      expect(r.stdout.trim()).toBe('pod "ess-synapse-main-0" deleted');
      const after = sb.store.get(sb.store.resourceByKind('Pod', 'v1'), 'ess', 'ess-synapse-main-0');
      expect(after?.metadata.uid).not.toBe(before?.metadata.uid);
      await waitFor('pod running again', () => running('app.kubernetes.io/instance=ess-synapse-main').length === 1);
    });
  });
}
