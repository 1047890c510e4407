/**
 * Contracts between the parts of the sandbox (a simulated ESS on one machine).
 *
 * Ownership:
 * - api-server.ts, store.ts, resources.ts, controller.ts, faults.ts, index.ts, cli.ts: the API server and wiring.
 * - runtime.ts, exec.ts, spdy.ts, portforward.ts: real processes behind pod exec / port-forward.
 * - postgres.ts, seed/*: the real PostgreSQL server, the seeded Kubernetes objects, database rows and media files.
 *
 * The sandbox never imports product code from src/lib: it simulates the real chart independently, so a wrong
 * name in ess's own tables shows up as a failing test instead of being mirrored here.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: {
    apiVersion: string;
    kind: string;
    name: string;
    uid: string;
    controller?: boolean;
    blockOwnerDeletion?: boolean;
  }[];
  [key: string]: unknown;
}

/** Any Kubernetes object, as JSON. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  [key: string]: unknown;
}

/** One row of the resource table: what discovery advertises and the router serves. */
export interface ResourceType {
  group: string; // '' for the core group
  version: string;
  kind: string;
  listKind: string;
  plural: string;
  singular: string;
  namespaced: boolean;
  shortNames?: string[];
  verbs: string[];
  /** Subresources served for this resource, e.g. ['scale', 'status'] or ['exec', 'portforward', 'log']. */
  subresources?: string[];
  /** Discovery categories, e.g. ['all'] so `kubectl get all` includes the resource. */
  categories?: string[];
}

export type ChangeType = 'ADDED' | 'MODIFIED' | 'DELETED';
export interface ChangeEvent {
  type: ChangeType;
  resource: ResourceType;
  object: KubeObject;
}

/** Which exec subprotocols the API server accepts. 'v4-only' simulates clusters older than 1.30. */
export type ExecProtocolMode = 'v5' | 'v4-only';

/** A fault: make the Nth matching API call fail with a status. */
export interface ApiFault {
  verb?: 'get' | 'list' | 'create' | 'update' | 'patch' | 'delete';
  /** Plural resource name, e.g. 'statefulsets'. */
  resource?: string;
  subresource?: string;
  name?: string;
  namespace?: string;
  status: number;
  message?: string;
  /** How many matching calls fail (default 1). Infinity = every call. */
  times?: number;
}

/** A fault: cut an exec (or port-forward) stream after N bytes of stdout. */
export interface ExecFault {
  pod?: string;
  /** Matches when any argv element contains this text. */
  commandIncludes?: string;
  cutAfterBytes: number;
  times?: number;
}

/** What a pod container looks like to the process runtime. */
export interface ContainerRuntime {
  podNamespace: string;
  podName: string;
  container: string;
  image: string;
  /** Environment for processes run in the container (pod spec env + sandbox additions such as PGHOST/PGPORT). */
  env: Record<string, string>;
  /** Container path → host directory. Longest prefix wins when paths in argv are rewritten. */
  mounts: { containerPath: string; hostPath: string; readOnly: boolean }[];
  /** Executables present in the image (anything else fails like a missing binary on a real cluster). */
  commands: string[];
}

/** Everything the exec / port-forward handlers need from the rest of the sandbox. */
export interface RuntimeContext {
  stateDir: string;
  execProtocol: ExecProtocolMode;
  /** The live object store (pods are read from it). */
  store: SandboxStore;
  faults: SandboxFaults;
  postgres: PostgresInfo;
  /** Host directory backing a PVC (created on demand). */
  volumeDir(namespace: string, claimName: string): string;
  /** Host directory backing an emptyDir volume of one pod. */
  emptyDirPath(namespace: string, podName: string, volumeName: string): string;
}

export interface SandboxStore {
  get(resource: ResourceType, namespace: string | undefined, name: string): KubeObject | undefined;
  list(resource: ResourceType, namespace: string | undefined, labelSelector?: string): KubeObject[];
  create(resource: ResourceType, object: KubeObject): KubeObject;
  update(resource: ResourceType, object: KubeObject): KubeObject;
  delete(resource: ResourceType, namespace: string | undefined, name: string): KubeObject | undefined;
  /** Subscribe to changes; returns an unsubscribe function. */
  subscribe(listener: (event: ChangeEvent) => void): () => void;
  resourceByKind(kind: string, apiVersion?: string): ResourceType;
}

export interface SandboxFaults {
  addApiFault(fault: ApiFault): void;
  addExecFault(fault: ExecFault): void;
  /** Extra delay before pods whose name starts with `podPrefix` become ready. */
  delayReadiness(podPrefix: string, ms: number): void;
  /** Delete a pod now, as if its node vanished (running execs into it are cut). */
  disappearPod(namespace: string, name: string): void;
  /** Consumes and returns a matching exec fault, if any. */
  takeExecFault(podName: string, argv: string[]): ExecFault | undefined;
  /** Consumes and returns a matching API fault, if any. */
  takeApiFault(call: {
    verb: string;
    resource: string;
    subresource?: string;
    name?: string;
    namespace?: string;
  }): ApiFault | undefined;
  clear(): void;
}

export interface PostgresInfo {
  host: string;
  port: number;
  /** Directory holding pg_dump, psql, … of the same major version as the server. */
  binDir: string;
  superuser: string;
  /** postgres://postgres@127.0.0.1:PORT/postgres */
  url: string;
  version: string;
}

/** Handler for an HTTP upgrade on .../pods/NAME/exec|attach|portforward (WebSocket or SPDY). */
export type UpgradeHandler = (
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  target: { namespace: string; pod: string; subresource: 'exec' | 'attach' | 'portforward'; query: URLSearchParams },
  ctx: RuntimeContext,
) => void;

export interface SeedOptions {
  namespace: string; // 'ess' (matrix-stack) or 'element-onprem' (operator)
  release: string; // 'ess'
  flavour: 'matrix-stack' | 'operator';
  serverName: string; // 'ess.localhost'
  users: number;
  mediaMb: number;
  /** Load this SQL file instead of the project's own Synapse-shaped schema. */
  synapseSchemaFile?: string;
  /** Seed a Helm history whose latest revision is stuck in pending-upgrade (the runbook's revisions 6–15). */
  stuckRelease?: boolean;
  /** Fixed "now" for generated data (ms since epoch). */
  nowMs: number;
  /** Timeline events per user (default 20). Scales the events/event_json/state tables. */
  eventsPerUser?: number;
  /**
   * Grow the synapse database to at least this many MB (pg_database_size) by adding large message events in
   * extra rooms; for benchmarks. Unset = no padding.
   */
  dbMb?: number;
  /**
   * Enable the media-repository worker (StatefulSet `<R>-synapse-media-repo`): it then mounts the media PVC and
   * Synapse main gets an emptyDir at /media. Default false (main is the media pod).
   */
  mediaWorker?: boolean;
}

/** Where the seeded install keeps the things the rest of the sandbox has to wire up (see seed/index.ts). */
export interface SeedLayout {
  namespace: string;
  /** PVC whose directory holds the real server's data directory (`<volumeDir>/pgdata`). */
  postgresClaim: string;
  /** StatefulSet, pod and container of the database. */
  postgresStatefulSet: string;
  postgresPod: string;
  postgresContainer: string;
  /** PVC holding the Synapse media store (`<volumeDir>/media_store/...`). */
  mediaClaim: string;
  /** Pod that mounts the media PVC at /media. */
  mediaPod: string;
}

/** What seedData put into the database and the media volume. */
export interface SeedSummary {
  serverName: string;
  /** True when the databases already existed (restarted sandbox) and nothing was generated. */
  reused: boolean;
  schemaVersion: number;
  schemaCompatVersion: number;
  /** Which Synapse schema was used: the project's own or the SQL file given in synapseSchemaFile. */
  schemaSource: 'builtin' | 'file';
  databases: { synapse: string; mas: string };
  roles: { synapse: string; mas: string };
  /** Row counts per table (synapse database; MAS tables prefixed `mas.`). */
  tables: Record<string, number>;
  /** Users by kind. `ipOnly` = user ids that appear only in user_ips (deleted since). */
  users: {
    total: number;
    normal: number;
    admin: number;
    support: number;
    bot: number;
    guest: number;
    appservice: number;
    deactivated: number;
    ipOnly: number;
  };
  media: {
    localFiles: number;
    localThumbnails: number;
    remoteFiles: number;
    remoteThumbnails: number;
    urlCacheFiles: number;
    urlCacheThumbnails: number;
    files: number;
    bytes: number;
  };
  /** pg_database_size of the synapse and MAS databases. */
  dbBytes: { synapse: number; mas: number };
  /** Seeding steps skipped because the loaded schema file lacks the table or columns. */
  skipped: string[];
}
