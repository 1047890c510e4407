import type { Readable, Writable } from 'node:stream';
import type { Kind } from './resources.js';
import type { KubeObject, Status } from './types.js';

export type PatchType = 'merge' | 'strategic' | 'json';

export interface ExecTarget {
  namespace: string;
  pod: string;
  container?: string;
}

export interface ExecIO {
  /** Streamed to the remote stdin. On v5 servers its end half-closes stdin; on v4 servers it cannot (see below). */
  stdin?: Readable;
  /** Remote stdout, written with backpressure: a slow consumer slows the remote side instead of filling memory. */
  stdout?: Writable;
  /** Remote stderr. The last 64 KiB are also kept in the result. */
  stderr?: Writable;
  signal?: AbortSignal;
}

export interface ExecResult {
  exitCode: number;
  /** Tail of stderr (at most 64 KiB), for error messages. */
  stderrTail: string;
  /** The channel subprotocol the server chose, e.g. 'v5.channel.k8s.io'. */
  protocol: string;
}

/**
 * The Kubernetes operations ess needs. Implemented over HTTP(S) with credentials from a kubeconfig; tests run it
 * against the sandbox API server. Every method throws {@link KubeApiError} for API errors (except `get` on 404).
 */
export interface KubeClient {
  /** The kubeconfig context in use and its server URL (for messages). */
  readonly contextName: string;
  readonly server: string;
  get<T extends KubeObject>(kind: Kind, namespace: string | undefined, name: string): Promise<T | undefined>;
  list<T extends KubeObject>(kind: Kind, namespace: string | undefined, labelSelector?: string): Promise<T[]>;
  create<T extends KubeObject>(kind: Kind, namespace: string | undefined, body: T): Promise<T>;
  replace<T extends KubeObject>(kind: Kind, namespace: string | undefined, body: T): Promise<T>;
  patch<T extends KubeObject>(
    kind: Kind,
    namespace: string | undefined,
    name: string,
    patch: unknown,
    type?: PatchType,
  ): Promise<T>;
  /** Returns false when the object did not exist. */
  delete(kind: Kind, namespace: string | undefined, name: string): Promise<boolean>;
  /**
   * Runs argv in a container over the WebSocket exec protocol (v5, falling back to v4). Resolves with the exit code;
   * rejects with {@link ExecStreamError} when the connection ends without an exit status.
   */
  exec(target: ExecTarget, argv: string[], io?: ExecIO): Promise<ExecResult>;
  /** Opens a local TCP port forwarded to `port` of the pod. */
  portForward(namespace: string, pod: string, port: number): Promise<PortForwardHandle>;
}

export interface PortForwardHandle {
  localPort: number;
  close(): Promise<void>;
  /** The last error the API server or kubelet reported on a forwarded connection, if any. */
  lastError?(): string | undefined;
}

/** An error answer of the API server. */
export class KubeApiError extends Error {
  constructor(
    readonly statusCode: number,
    readonly status: Status | undefined,
    readonly method: string,
    readonly path: string,
  ) {
    super(status?.message ?? `${method} ${path}: HTTP ${statusCode}`);
    this.name = 'KubeApiError';
  }

  get reason(): string | undefined {
    return this.status?.reason;
  }
}

/** The API server could not be reached (refused, reset, DNS, TLS). Safe to retry for idempotent calls. */
export class KubeConnectionError extends Error {
  constructor(
    message: string,
    readonly server: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'KubeConnectionError';
  }
}

/** An exec stream ended without an exit status (connection cut, pod deleted, v4 server closing on stdin end). */
export class ExecStreamError extends Error {
  constructor(
    message: string,
    readonly stderrTail: string,
  ) {
    super(message);
    this.name = 'ExecStreamError';
  }
}

export function isNotFound(error: unknown): boolean {
  return error instanceof KubeApiError && error.statusCode === 404;
}

export function isConflict(error: unknown): boolean {
  return error instanceof KubeApiError && error.statusCode === 409;
}
