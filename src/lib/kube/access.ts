/**
 * How ess reaches the API server: the selected context's server URL, and the TLS material and auth headers of each
 * request.
 *
 * Importing @kubernetes/client-node costs ~0.6 s and ~70 MB of resident memory (its generated API models load with
 * any of its modules), which is half of ess's memory budget for a streaming backup or restore. So ess reads the
 * kubeconfig itself for what almost every kubeconfig holds (tokens, token files, client certificates, basic auth,
 * CA data or files, insecure-skip-tls-verify, tls-server-name) and for the in-cluster ServiceAccount, and hands
 * everything else (exec credential plugins, auth-provider, proxy-url) to client-node's KubeConfig, loaded only then.
 */
import { readFileSync } from 'node:fs';
import type https from 'node:https';
import { dirname, isAbsolute, join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { parse } from 'yaml';
import { PreconditionError } from '../errors.js';

/** The selected context of a loaded kubeconfig. */
export interface ClusterAccess {
  readonly contextName: string;
  readonly server: string;
  /** TLS options and auth headers for one request (token files are re-read: projected tokens rotate). */
  requestOptions(): Promise<https.RequestOptions>;
}

/** The in-cluster ServiceAccount files (the paths every pod has). */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
/** The context name client-node gives the in-cluster configuration. */
export const IN_CLUSTER_CONTEXT = 'inClusterContext';

/** User fields ess handles itself; anything else in the user entry goes to client-node. */
const NATIVE_USER_FIELDS = new Set([
  'token',
  'tokenFile',
  'client-certificate',
  'client-certificate-data',
  'client-key',
  'client-key-data',
  'username',
  'password',
]);
/** Cluster fields ess handles itself. */
const NATIVE_CLUSTER_FIELDS = new Set([
  'server',
  'certificate-authority',
  'certificate-authority-data',
  'insecure-skip-tls-verify',
  'tls-server-name',
  'extensions',
]);

/** --context names a context the kubeconfig does not have. */
export function contextNotFound(context: string, names: string[]): PreconditionError {
  return new PreconditionError(`Context "${context}" is not in the kubeconfig.`, {
    code: 'CONTEXT_NOT_FOUND',
    next: [names.length ? `Use one of: ${names.join(', ')}` : 'Check the kubeconfig', 'kubectl config get-contexts'],
  });
}

/** No current context, or it points at no cluster. */
export function noContext(): PreconditionError {
  return new PreconditionError('The kubeconfig has no current context or cluster.', {
    code: 'NO_CONTEXT',
    next: ['Pass --context NAME', 'kubectl config use-context NAME'],
  });
}

type Entry = Record<string, unknown>;
interface Named {
  name: string;
  body: Entry;
  /** Directory of the file that defined it: relative file paths in it are resolved from there (as kubectl does). */
  dir: string;
}

/** A merged kubeconfig: the first file that defines a name wins, as in kubectl. */
export interface ParsedKubeconfig {
  currentContext?: string;
  contexts: Map<string, Named>;
  clusters: Map<string, Named>;
  users: Map<string, Named>;
}

/** Parses and merges kubeconfig files. Throws a PreconditionError naming the file on unreadable YAML. */
export function parseKubeconfigFiles(paths: readonly string[]): ParsedKubeconfig {
  const merged: ParsedKubeconfig = { contexts: new Map(), clusters: new Map(), users: new Map() };
  for (const path of paths) {
    let doc: Entry;
    try {
      doc = (parse(readFileSync(path, 'utf8')) ?? {}) as Entry;
    } catch (error) {
      throw new PreconditionError(`Cannot read the kubeconfig ${path}: ${(error as Error).message}`, {
        code: 'BAD_KUBECONFIG',
        next: ['Check the file with: kubectl config view --kubeconfig ' + path],
      });
    }
    const dir = dirname(path);
    if (merged.currentContext === undefined && typeof doc['current-context'] === 'string' && doc['current-context']) {
      merged.currentContext = doc['current-context'];
    }
    const lists: [string, string, Map<string, Named>][] = [
      ['contexts', 'context', merged.contexts],
      ['clusters', 'cluster', merged.clusters],
      ['users', 'user', merged.users],
    ];
    for (const [list, field, into] of lists) {
      const items = Array.isArray(doc[list]) ? (doc[list] as Entry[]) : [];
      for (const item of items) {
        const name = typeof item?.name === 'string' ? item.name : undefined;
        if (name === undefined || into.has(name)) continue;
        into.set(name, { name, body: (item[field] ?? {}) as Entry, dir });
      }
    }
  }
  return merged;
}

/**
 * The access for `context` (or the current one) if ess can serve it without client-node; undefined when it needs
 * client-node (exec plugin, auth-provider, proxy, or an entry ess does not know). Missing or dangling names are
 * PreconditionErrors with a next step.
 */
export function nativeAccess(config: ParsedKubeconfig, context: string | undefined): ClusterAccess | undefined {
  const names = [...config.contexts.keys()];
  const name = context ?? config.currentContext;
  if (context !== undefined && !config.contexts.has(context)) {
    throw contextNotFound(context, names);
  }
  const ctx = name === undefined ? undefined : config.contexts.get(name);
  const cluster = ctx ? config.clusters.get(String(ctx.body.cluster ?? '')) : undefined;
  if (!ctx || !cluster || typeof cluster.body.server !== 'string' || !cluster.body.server) {
    throw noContext();
  }
  const user = config.users.get(String(ctx.body.user ?? ''));
  const userBody = user?.body ?? {};
  if (Object.keys(userBody).some((k) => !NATIVE_USER_FIELDS.has(k))) return undefined;
  if (Object.keys(cluster.body).some((k) => !NATIVE_CLUSTER_FIELDS.has(k))) return undefined;

  const file = (owner: Named, value: unknown): string => {
    const path = String(value);
    return isAbsolute(path) ? path : join(owner.dir, path);
  };
  const material = (owner: Named, dataKey: string, fileKey: string): Buffer | undefined => {
    const data = owner.body[dataKey];
    if (typeof data === 'string' && data) return Buffer.from(data, 'base64');
    const path = owner.body[fileKey];
    return typeof path === 'string' && path ? readFileSync(file(owner, path)) : undefined;
  };
  // TLS material is read once, now: a missing file is an error at load time, as with kubectl.
  const tls: https.RequestOptions = {};
  const ca = material(cluster, 'certificate-authority-data', 'certificate-authority');
  if (ca) tls.ca = ca;
  if (cluster.body['insecure-skip-tls-verify'] === true) tls.rejectUnauthorized = false;
  if (typeof cluster.body['tls-server-name'] === 'string') tls.servername = cluster.body['tls-server-name'];
  if (user) {
    const cert = material(user, 'client-certificate-data', 'client-certificate');
    const key = material(user, 'client-key-data', 'client-key');
    if (cert) tls.cert = cert;
    if (key) tls.key = key;
  }
  const authorization = (): string | undefined => {
    if (!user) return undefined;
    const b = user.body;
    if (typeof b.token === 'string' && b.token) return `Bearer ${b.token}`;
    if (typeof b.tokenFile === 'string' && b.tokenFile) {
      return `Bearer ${readFileSync(file(user, b.tokenFile), 'utf8').trim()}`;
    }
    if (typeof b.username === 'string' && typeof b.password === 'string') {
      return `Basic ${Buffer.from(`${b.username}:${b.password}`).toString('base64')}`;
    }
    return undefined;
  };
  return staticAccess(ctx.name, cluster.body.server, tls, authorization);
}

/** The in-cluster ServiceAccount (what client-node's loadFromCluster reads). */
export function inClusterAccess(env: NodeJS.ProcessEnv, accountDir = SERVICE_ACCOUNT_DIR): ClusterAccess {
  const host = env.KUBERNETES_SERVICE_HOST ?? '';
  const port = env.KUBERNETES_SERVICE_PORT ?? '443';
  const server = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
  const tls: https.RequestOptions = { ca: readFileSync(join(accountDir, 'ca.crt')) };
  const token = () => `Bearer ${readFileSync(join(accountDir, 'token'), 'utf8').trim()}`;
  return staticAccess(IN_CLUSTER_CONTEXT, server, tls, token);
}

function staticAccess(
  contextName: string,
  server: string,
  tls: https.RequestOptions,
  authorization: () => string | undefined,
): ClusterAccess {
  return {
    contextName,
    server,
    async requestOptions() {
      const auth = authorization();
      return { ...tls, headers: auth ? { Authorization: auth } : {} };
    },
  };
}

/** Access through client-node's KubeConfig (exec plugins, auth-provider, proxies). */
export function clientNodeAccess(kc: KubeConfig): ClusterAccess {
  return {
    contextName: kc.getCurrentContext(),
    server: kc.getCurrentCluster()?.server ?? '',
    async requestOptions() {
      const options: https.RequestOptions = { headers: {} };
      await kc.applyToHTTPSOptions(options);
      return options;
    },
  };
}
