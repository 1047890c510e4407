import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { PreconditionError } from '../errors.js';
import {
  type ClusterAccess,
  clientNodeAccess,
  contextNotFound,
  inClusterAccess,
  nativeAccess,
  noContext,
  parseKubeconfigFiles,
} from './access.js';
import type { KubeClient } from './client.js';

export interface KubeTargetOptions {
  /** Explicit kubeconfig path (--kubeconfig). */
  kubeconfig?: string;
  /** Context name (--context). */
  context?: string;
  /** Environment to read KUBECONFIG / in-cluster variables from (defaults to process.env). */
  env?: NodeJS.ProcessEnv;
}

/** Where the kubeconfig comes from: --kubeconfig, then KUBECONFIG, then ~/.kube/config, then the in-cluster account. */
export function kubeconfigSource(
  options: KubeTargetOptions,
): { kind: 'file'; paths: string[] } | { kind: 'in-cluster' } {
  const env = options.env ?? process.env;
  if (options.kubeconfig) return { kind: 'file', paths: [options.kubeconfig] };
  if (env.KUBECONFIG) {
    return { kind: 'file', paths: env.KUBECONFIG.split(process.platform === 'win32' ? ';' : ':').filter(Boolean) };
  }
  const home = join(env.HOME ?? homedir(), '.kube', 'config');
  if (existsSync(home)) return { kind: 'file', paths: [home] };
  if (env.KUBERNETES_SERVICE_HOST) return { kind: 'in-cluster' };
  return { kind: 'file', paths: [] };
}

/** The files to read, after checking that at least one exists. */
function existingKubeconfigs(paths: string[]): string[] {
  const found = paths.filter((p) => existsSync(p));
  if (found.length === 0) {
    throw new PreconditionError(
      paths.length
        ? `Kubeconfig not found: ${paths.join(', ')}`
        : 'No Kubernetes configuration found (no --kubeconfig, no KUBECONFIG, no ~/.kube/config, not in a cluster).',
      {
        code: 'NO_KUBECONFIG',
        next: ['Pass --kubeconfig PATH or set KUBECONFIG', 'Try it on the sandbox: npm run sandbox'],
      },
    );
  }
  return found;
}

/**
 * Loads the kubeconfig through client-node's KubeConfig and selects the context, with actionable errors. Imports
 * client-node (~0.6 s, ~70 MB): only for what {@link loadClusterAccess} does not handle itself.
 */
export async function loadKubeConfig(options: KubeTargetOptions): Promise<KubeConfig> {
  const k8s = await import('@kubernetes/client-node');
  const kc = new k8s.KubeConfig();
  const source = kubeconfigSource(options);
  if (source.kind === 'in-cluster') {
    kc.loadFromCluster();
  } else {
    const [first, ...rest] = existingKubeconfigs(source.paths);
    kc.loadFromFile(first!);
    for (const path of rest) {
      const extra = new k8s.KubeConfig();
      extra.loadFromFile(path);
      kc.mergeConfig(extra, true);
    }
  }
  if (options.context) {
    const names = kc.getContexts().map((c) => c.name);
    if (!names.includes(options.context)) {
      throw contextNotFound(options.context, names);
    }
    kc.setCurrentContext(options.context);
  }
  if (!kc.getCurrentCluster()) {
    throw noContext();
  }
  return kc;
}

/** The selected context's access: read by ess itself when it can, through client-node otherwise (see access.ts). */
export async function loadClusterAccess(options: KubeTargetOptions): Promise<ClusterAccess> {
  const source = kubeconfigSource(options);
  if (source.kind === 'in-cluster') {
    try {
      return inClusterAccess(options.env ?? process.env);
    } catch {
      return clientNodeAccess(await loadKubeConfig(options));
    }
  }
  const native = nativeAccess(parseKubeconfigFiles(existingKubeconfigs(source.paths)), options.context);
  return native ?? clientNodeAccess(await loadKubeConfig(options));
}

/** Creates the KubeClient for the selected kubeconfig and context. */
export async function connectKube(options: KubeTargetOptions): Promise<KubeClient> {
  const access = await loadClusterAccess(options);
  const { RestKubeClient } = await import('./rest-client.js');
  return new RestKubeClient(access);
}
