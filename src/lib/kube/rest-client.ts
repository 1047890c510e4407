import type { ClusterAccess } from './access.js';
import type { ExecIO, ExecResult, ExecTarget, KubeClient, PatchType, PortForwardHandle } from './client.js';
import { KubeApiError } from './client.js';
import { execStream } from './exec-stream.js';
import { kubeRequest } from './http-client.js';
import { listenForward } from './port-forward.js';
import { type Kind, RESOURCES, resourcePath } from './resources.js';
import type { KubeObject } from './types.js';

/** {@link KubeClient} over the Kubernetes REST API, authenticated by a kubeconfig. */
export class RestKubeClient implements KubeClient {
  readonly contextName: string;
  readonly server: string;

  constructor(private readonly kc: ClusterAccess) {
    this.contextName = kc.contextName;
    this.server = kc.server;
  }

  async get<T extends KubeObject>(kind: Kind, namespace: string | undefined, name: string): Promise<T | undefined> {
    try {
      return await kubeRequest<T>(this.kc, 'GET', resourcePath(RESOURCES[kind], namespace, name));
    } catch (error) {
      if (error instanceof KubeApiError && error.statusCode === 404) return undefined;
      throw error;
    }
  }

  async list<T extends KubeObject>(kind: Kind, namespace: string | undefined, labelSelector?: string): Promise<T[]> {
    const body = await kubeRequest<{ items?: T[] }>(this.kc, 'GET', resourcePath(RESOURCES[kind], namespace), {
      query: { labelSelector },
    });
    return body.items ?? [];
  }

  create<T extends KubeObject>(kind: Kind, namespace: string | undefined, body: T): Promise<T> {
    return kubeRequest<T>(this.kc, 'POST', resourcePath(RESOURCES[kind], namespace), {
      body: { apiVersion: RESOURCES[kind].apiVersion, kind, ...body },
    });
  }

  replace<T extends KubeObject>(kind: Kind, namespace: string | undefined, body: T): Promise<T> {
    return kubeRequest<T>(this.kc, 'PUT', resourcePath(RESOURCES[kind], namespace, body.metadata.name), {
      body: { apiVersion: RESOURCES[kind].apiVersion, kind, ...body },
    });
  }

  patch<T extends KubeObject>(
    kind: Kind,
    namespace: string | undefined,
    name: string,
    patch: unknown,
    type: PatchType = 'merge',
  ): Promise<T> {
    return kubeRequest<T>(this.kc, 'PATCH', resourcePath(RESOURCES[kind], namespace, name), {
      body: patch,
      patchType: type,
    });
  }

  async delete(kind: Kind, namespace: string | undefined, name: string): Promise<boolean> {
    try {
      await kubeRequest(this.kc, 'DELETE', resourcePath(RESOURCES[kind], namespace, name));
      return true;
    } catch (error) {
      if (error instanceof KubeApiError && error.statusCode === 404) return false;
      throw error;
    }
  }

  exec(target: ExecTarget, argv: string[], io?: ExecIO): Promise<ExecResult> {
    return execStream(this.kc, target, argv, io);
  }

  portForward(namespace: string, pod: string, port: number): Promise<PortForwardHandle> {
    return listenForward(this.kc, { namespace, pod, port });
  }
}
