/**
 * Real processes behind `pods/exec`: maps a pod container (image, env, volumes) onto the local machine and runs
 * the requested command as a local process.
 *
 * The mapping, and where it stops being a container:
 * - Executables: each image has a table of the commands it ships (IMAGE_COMMANDS, keyed by the last component of
 *   the image repository). A per-image directory of symlinks to the host's binaries is the process's only PATH,
 *   so `sh -c "tar …"` in an image without tar fails with the shell's "not found", and a missing argv[0] fails
 *   the way containerd/runc report it. PostgreSQL client tools resolve to the sandbox server's own bin directory
 *   (same major). The host's tools are GNU/Debian ones even where the image has BusyBox (postgres:alpine's tar).
 * - Filesystem: volumes from the pod spec map to host directories (persistentVolumeClaim → ctx.volumeDir,
 *   emptyDir → ctx.emptyDirPath, configMap/secret → files materialised under the state directory, read-only).
 *   `/tmp` maps to a per-container directory when the pod does not mount it. Container paths in argv elements,
 *   in the script text of `sh -c` and in env values are rewritten to host paths at path boundaries, longest mount
 *   first. Paths built at run time (`d=/me; ls ${d}dia`), paths outside every mount (`/etc/passwd` is the host's)
 *   and paths in the command's OUTPUT (`find /media` prints host paths; `tar cf - /media/x` stores host paths —
 *   use `tar -C /media …`) are not mapped. cwd is a per-container scratch directory.
 * - Users: processes run as the sandbox's user (root); nothing is chowned to the pod's runAsUser. `chown` works.
 * - Libraries: LD_PRELOAD / LD_LIBRARY_PATH from the pod are dropped (the image's libraries are not here).
 * - Network: PGHOST/PGPORT point the postgres image's tools at the real server; other in-pod addresses
 *   (`psql -h localhost -p 5432` spelled out in argv) are not redirected.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  accessSync,
  existsSync,
  constants as fsConstants,
  mkdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { type IncomingMessage, STATUS_CODES } from 'node:http';
import path from 'node:path';
import type { Duplex, Readable, Writable } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';
import type { ContainerRuntime, KubeObject, RuntimeContext } from './types.js';

// ---------------------------------------------------------------------------------------------------------------
// Status objects (metav1.Status as the kubelet / API server write them)

/** A `metav1.Status` as JSON. Field order follows the Go struct, as the kubelet marshals it. */
export interface KubeStatus {
  kind?: 'Status';
  apiVersion?: 'v1';
  metadata: Record<string, never>;
  status: 'Success' | 'Failure';
  message?: string;
  reason?: string;
  details?: {
    name?: string;
    group?: string;
    kind?: string;
    causes?: { reason?: string; message?: string; field?: string }[];
  };
  code?: number;
}

/** `{"metadata":{},"status":"Success"}`: what the kubelet sends on the status channel after exit code 0. */
export function successStatus(): KubeStatus {
  return { metadata: {}, status: 'Success' };
}

/**
 * The kubelet's Status for a command that exited non-zero (containerd's CodeExitError wording:
 * `error executing command [sh -c exit 3], exit code 3`). The exit code is the message of the `ExitCode` cause.
 */
export function nonZeroExitStatus(argv: string[], exitCode: number): KubeStatus {
  return {
    metadata: {},
    status: 'Failure',
    message: `command terminated with non-zero exit code: error executing command [${argv.join(' ')}], exit code ${exitCode}`,
    reason: 'NonZeroExitCode',
    details: { causes: [{ reason: 'ExitCode', message: String(exitCode) }] },
  };
}

/** `apierrors.NewInternalError(err)` as the kubelet writes it on the status channel. */
export function internalErrorStatus(cause: string): KubeStatus {
  return {
    metadata: {},
    status: 'Failure',
    message: `Internal error occurred: ${cause}`,
    reason: 'InternalError',
    details: { causes: [{ message: cause }] },
    code: 500,
  };
}

const HTTP_REASONS: Record<number, string> = {
  400: 'BadRequest',
  403: 'Forbidden',
  404: 'NotFound',
  500: 'InternalError',
};

/** A Status for an HTTP error response (with kind/apiVersion, as the API server sends it). */
export function httpStatus(code: number, message: string, reason = HTTP_REASONS[code] ?? 'Unknown'): KubeStatus {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

/**
 * Answers an HTTP request on a raw (not yet upgraded) socket with a Status body and closes the socket, as the API
 * server does for a failed exec/port-forward request. `extraHeaders` are added verbatim.
 */
export function writeHttpStatus(socket: Duplex, status: KubeStatus, extraHeaders: [string, string][] = []): void {
  const code = status.code ?? 500;
  const body = JSON.stringify(status);
  const head = [
    `HTTP/1.1 ${code} ${STATUS_CODES[code] ?? 'Error'}`,
    'Content-Type: application/json',
    'Cache-Control: no-cache, private',
    `Content-Length: ${Buffer.byteLength(body)}`,
    `Date: ${new Date().toUTCString()}`,
    ...extraHeaders.map(([k, v]) => `${k}: ${v}`),
    'Connection: close',
  ];
  if (!socket.destroyed) socket.end(`${head.join('\r\n')}\r\n\r\n${body}`);
}

/**
 * An error with the Status to report. `http` = answer the HTTP request with it (before any upgrade);
 * otherwise it belongs on the exec status channel.
 */
export class RuntimeError extends Error {
  constructor(
    readonly status: KubeStatus,
    readonly http: boolean,
  ) {
    super(status.message ?? status.status);
    this.name = 'RuntimeError';
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Images

/**
 * Executables present in each image, keyed by the last component of the image repository. Data, in one place;
 * an image not listed has no executables at all.
 */
export const IMAGE_COMMANDS: Readonly<Record<string, readonly string[]>> = {
  // docker-library postgres:*-alpine: BusyBox plus bash and the PostgreSQL tools in /usr/local/bin.
  postgres: [
    'sh',
    'bash',
    'psql',
    'pg_dump',
    'pg_dumpall',
    'pg_restore',
    'pg_isready',
    'pg_ctl',
    'createdb',
    'dropdb',
    'tar',
    'cat',
    'ls',
    'df',
    'du',
    'mkdir',
    'rm',
    'mv',
    'cp',
    'find',
    'head',
    'tail',
    'wc',
    'sha256sum',
    'gzip',
    'gunzip',
    'stat',
    'test',
    '[',
    'true',
    'false',
    'sleep',
    'chown',
    'chmod',
    'id',
    'echo',
    'printf',
    'env',
    'grep',
    'sed',
    'cut',
    'sort',
    'tr',
    'date',
    'basename',
    'dirname',
    'xargs',
    'touch',
    'ln',
    'uname',
    'hostname',
    'kill',
  ],
  // Synapse: python:3.x-slim (Debian) with coreutils, tar and gzip.
  synapse: [
    'sh',
    'bash',
    'tar',
    'cat',
    'ls',
    'df',
    'du',
    'sha256sum',
    'find',
    'mkdir',
    'rm',
    'mv',
    'cp',
    'stat',
    'python3',
    'python',
    'test',
    '[',
    'true',
    'false',
    'sleep',
    'chown',
    'chmod',
    'id',
    'gzip',
    'gunzip',
    'head',
    'tail',
    'wc',
    'echo',
    'printf',
    'env',
    'grep',
    'sed',
    'cut',
    'sort',
    'tr',
    'date',
    'basename',
    'dirname',
    'xargs',
    'touch',
    'ln',
    'uname',
    'hostname',
    'kill',
  ],
  // MAS is distroless: no shell, no tar; only its own CLI (not available on this machine).
  'matrix-authentication-service': ['mas-cli'],
  // nginx-unprivileged alpine-slim based.
  'element-web': ['sh', 'cat', 'ls', 'nginx', 'echo', 'test', 'true', 'id'],
  'element-admin': ['sh', 'cat', 'ls', 'nginx', 'echo', 'test', 'true', 'id'],
  haproxy: ['sh', 'cat', 'ls', 'haproxy', 'echo', 'test', 'true', 'id'],
  redis: ['sh', 'cat', 'ls', 'redis-cli', 'redis-server', 'echo', 'test', 'true', 'id'],
  // Distroless / scratch images.
  'matrix-tools': ['matrix-tools'],
  'postgres-exporter': ['postgres_exporter'],
  'livekit-server': ['livekit-server'],
  'lk-jwt-service': ['lk-jwt-service'],
};

/** Commands resolved to the sandbox PostgreSQL's bin directory (same major as the server). */
const POSTGRES_TOOLS = new Set([
  'psql',
  'pg_dump',
  'pg_dumpall',
  'pg_restore',
  'pg_isready',
  'pg_ctl',
  'createdb',
  'dropdb',
  'pg_basebackup',
  'vacuumdb',
  'reindexdb',
]);

const HOST_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** The repository's last path component, without registry, tag or digest: `docker.io/postgres:15-alpine` → `postgres`. */
export function imageKey(image: string): string {
  let ref = image.split('@')[0] ?? image;
  const lastSlash = ref.lastIndexOf('/');
  const colon = ref.lastIndexOf(':');
  if (colon > lastSlash) ref = ref.slice(0, colon);
  return ref.slice(ref.lastIndexOf('/') + 1);
}

/** Executables of an image (empty for an unknown image). */
export function commandsForImage(image: string): string[] {
  return [...(IMAGE_COMMANDS[imageKey(image)] ?? [])];
}

function isExecutable(p: string): boolean {
  try {
    accessSync(p, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function hostExecutable(name: string, pgBinDir: string): string | undefined {
  if (POSTGRES_TOOLS.has(name)) {
    const p = path.join(pgBinDir, name);
    return isExecutable(p) ? p : undefined;
  }
  const dirs = [...HOST_PATH, ...(process.env.PATH ?? '').split(':').filter((d) => d.startsWith('/'))];
  for (const dir of dirs) {
    const p = path.join(dir, name);
    if (isExecutable(p)) return p;
  }
  return undefined;
}

const binDirs = new Map<string, string>();

/**
 * The directory of symlinks that is PATH for processes of this container's image (created once per state dir,
 * image and command list).
 */
export function imageBinDir(c: ContainerRuntime, ctx: RuntimeContext): string {
  const tag = createHash('sha256')
    .update(`${c.commands.join(',')}|${ctx.postgres.binDir}`)
    .digest('hex')
    .slice(0, 12);
  const dir = path.join(ctx.stateDir, 'runtime', 'bin', `${imageKey(c.image) || 'none'}-${tag}`);
  if (binDirs.get(dir) === dir) return dir;
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  for (const name of c.commands) {
    if (name.includes('/')) continue;
    const target = hostExecutable(name, ctx.postgres.binDir);
    if (!target) continue;
    const link = path.join(dir, name);
    try {
      if (readlinkSync(link) === target) continue;
      rmSync(link, { force: true });
    } catch {
      // not there yet
    }
    try {
      symlinkSync(target, link);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  binDirs.set(dir, dir);
  return dir;
}

// ---------------------------------------------------------------------------------------------------------------
// Pods and containers

interface EnvVarSpec {
  name: string;
  value?: string;
  valueFrom?: {
    secretKeyRef?: { name: string; key: string; optional?: boolean };
    configMapKeyRef?: { name: string; key: string; optional?: boolean };
    fieldRef?: { fieldPath: string };
  };
}

interface ContainerSpec {
  name: string;
  image?: string;
  env?: EnvVarSpec[];
  envFrom?: { prefix?: string; secretRef?: { name: string }; configMapRef?: { name: string } }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean; subPath?: string }[];
}

interface VolumeSpec {
  name: string;
  persistentVolumeClaim?: { claimName: string; readOnly?: boolean };
  emptyDir?: Record<string, unknown>;
  configMap?: { name: string; items?: { key: string; path: string }[] };
  secret?: { secretName: string; items?: { key: string; path: string }[] };
}

interface PodSpec {
  containers?: ContainerSpec[];
  initContainers?: ContainerSpec[];
  volumes?: VolumeSpec[];
}

/** A container resolved for exec: the contract's ContainerRuntime plus what the process runtime needs. */
export interface ResolvedContainer extends ContainerRuntime {
  podUid?: string;
  /** Host directory used as the process's cwd (and HOME). */
  workDir: string;
}

function podSpec(pod: KubeObject): PodSpec {
  return (pod.spec ?? {}) as PodSpec;
}

function lookupData(
  ctx: RuntimeContext,
  kind: 'Secret' | 'ConfigMap',
  namespace: string,
  name: string,
): Record<string, string> | undefined {
  let obj: KubeObject | undefined;
  try {
    obj = ctx.store.get(ctx.store.resourceByKind(kind, 'v1'), namespace, name);
  } catch {
    return undefined;
  }
  if (!obj) return undefined;
  const out: Record<string, string> = {};
  const data = (obj.data ?? {}) as Record<string, string>;
  for (const [k, v] of Object.entries(data)) {
    out[k] = kind === 'Secret' ? Buffer.from(v, 'base64').toString('utf8') : v;
  }
  if (kind === 'Secret') {
    for (const [k, v] of Object.entries((obj.stringData ?? {}) as Record<string, string>)) out[k] = v;
  }
  return out;
}

function fieldValue(pod: KubeObject, fieldPath: string): string {
  const status = (pod.status ?? {}) as Record<string, unknown>;
  const spec = (pod.spec ?? {}) as Record<string, unknown>;
  switch (fieldPath) {
    case 'metadata.name':
      return pod.metadata.name;
    case 'metadata.namespace':
      return pod.metadata.namespace ?? '';
    case 'metadata.uid':
      return pod.metadata.uid ?? '';
    case 'status.podIP':
      return String(status.podIP ?? '127.0.0.1');
    case 'status.hostIP':
      return String(status.hostIP ?? '127.0.0.1');
    case 'spec.nodeName':
      return String(spec.nodeName ?? '');
    case 'spec.serviceAccountName':
      return String(spec.serviceAccountName ?? 'default');
    default: {
      const m = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
      if (m) {
        const bag = (m[1] === 'labels' ? pod.metadata.labels : pod.metadata.annotations) ?? {};
        return bag[m[2] as string] ?? '';
      }
      return '';
    }
  }
}

/** `$(VAR)` references to earlier variables, as the kubelet expands them; `$$(VAR)` escapes. */
function expandRefs(value: string, env: Record<string, string>): string {
  return value.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (whole, name: string | undefined) => {
    if (whole === '$$') return '$';
    return name !== undefined && name in env ? (env[name] as string) : whole;
  });
}

function containerEnv(pod: KubeObject, spec: ContainerSpec, ctx: RuntimeContext): Record<string, string> {
  const ns = pod.metadata.namespace ?? 'default';
  const env: Record<string, string> = { HOSTNAME: pod.metadata.name };
  for (const from of spec.envFrom ?? []) {
    const data = from.secretRef
      ? lookupData(ctx, 'Secret', ns, from.secretRef.name)
      : from.configMapRef
        ? lookupData(ctx, 'ConfigMap', ns, from.configMapRef.name)
        : undefined;
    for (const [k, v] of Object.entries(data ?? {})) env[`${from.prefix ?? ''}${k}`] = v;
  }
  for (const e of spec.env ?? []) {
    if (e.value !== undefined) {
      env[e.name] = expandRefs(e.value, env);
    } else if (e.valueFrom?.secretKeyRef) {
      const r = e.valueFrom.secretKeyRef;
      const v = lookupData(ctx, 'Secret', ns, r.name)?.[r.key];
      if (v !== undefined) env[e.name] = v;
    } else if (e.valueFrom?.configMapKeyRef) {
      const r = e.valueFrom.configMapKeyRef;
      const v = lookupData(ctx, 'ConfigMap', ns, r.name)?.[r.key];
      if (v !== undefined) env[e.name] = v;
    } else if (e.valueFrom?.fieldRef) {
      env[e.name] = fieldValue(pod, e.valueFrom.fieldRef.fieldPath);
    } else {
      env[e.name] = '';
    }
  }
  return env;
}

function safeName(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]/g, '_');
}

function podStateDir(ctx: RuntimeContext, pod: KubeObject): string {
  return path.join(
    ctx.stateDir,
    'runtime',
    'pods',
    safeName(pod.metadata.namespace ?? 'default'),
    safeName(pod.metadata.name),
  );
}

/** Writes a configMap/secret volume's files (the kubelet's projection, minus the ..data symlink dance). */
function materialiseVolume(ctx: RuntimeContext, pod: KubeObject, vol: VolumeSpec): string {
  const ns = pod.metadata.namespace ?? 'default';
  const dir = path.join(podStateDir(ctx, pod), 'volumes', safeName(vol.name));
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const data = vol.configMap
    ? lookupData(ctx, 'ConfigMap', ns, vol.configMap.name)
    : vol.secret
      ? lookupData(ctx, 'Secret', ns, vol.secret.secretName)
      : undefined;
  const items = vol.configMap?.items ?? vol.secret?.items;
  const entries: [string, string][] = items
    ? items.filter((i) => data?.[i.key] !== undefined).map((i) => [i.path, data?.[i.key] as string])
    : Object.entries(data ?? {});
  for (const [rel, content] of entries) {
    const file = path.join(dir, rel);
    if (!file.startsWith(dir + path.sep)) continue;
    mkdirSync(path.dirname(file), { recursive: true });
    // Rewritten only when changed, so a process of another exec reading it never sees a half-written file.
    if (!existsSync(file) || readFileSync(file, 'utf8') !== content) {
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, content, { mode: vol.secret ? 0o600 : 0o644 });
      renameSync(tmp, file);
    }
  }
  return dir;
}

function containerNames(list: ContainerSpec[] | undefined): string {
  return (list ?? []).map((c) => c.name).join(' ');
}

/**
 * Resolves the container an exec targets. Like the API server: with no container name, a pod with exactly one
 * container defaults to it, and several containers are a 400 "a container name must be specified …"; an unknown
 * name is a 400 "container X is not valid for pod P". (kubectl itself picks the default container client-side
 * and always sends the name.) Throws {@link RuntimeError} with `http: true`.
 */
export function resolveContainer(
  pod: KubeObject,
  container: string | undefined,
  ctx: RuntimeContext,
): ResolvedContainer {
  const spec = podSpec(pod);
  const name = pod.metadata.name;
  let chosen: ContainerSpec | undefined;
  if (!container) {
    const list = spec.containers ?? [];
    if (list.length === 1) {
      chosen = list[0];
    } else if (list.length === 0) {
      throw new RuntimeError(httpStatus(400, `a container name must be specified for pod ${name}`), true);
    } else {
      let msg = `a container name must be specified for pod ${name}, choose one of: [${containerNames(list)}]`;
      if (spec.initContainers?.length)
        msg += ` or one of the init containers: [${containerNames(spec.initContainers)}]`;
      throw new RuntimeError(httpStatus(400, msg), true);
    }
  } else {
    chosen = [...(spec.containers ?? []), ...(spec.initContainers ?? [])].find((c) => c.name === container);
    if (!chosen) throw new RuntimeError(httpStatus(400, `container ${container} is not valid for pod ${name}`), true);
  }
  const c = chosen as ContainerSpec;
  const ns = pod.metadata.namespace ?? 'default';
  const image = c.image ?? '';
  const commands = commandsForImage(image);

  const volumes = new Map((spec.volumes ?? []).map((v) => [v.name, v]));
  const mounts: ContainerRuntime['mounts'] = [];
  for (const m of c.volumeMounts ?? []) {
    const vol = volumes.get(m.name);
    if (!vol) continue;
    let hostPath: string;
    let readOnly = m.readOnly ?? false;
    if (vol.persistentVolumeClaim) {
      hostPath = ctx.volumeDir(ns, vol.persistentVolumeClaim.claimName);
      readOnly ||= vol.persistentVolumeClaim.readOnly ?? false;
    } else if (vol.emptyDir) {
      hostPath = ctx.emptyDirPath(ns, pod.metadata.name, vol.name);
    } else if (vol.configMap || vol.secret) {
      hostPath = materialiseVolume(ctx, pod, vol);
      readOnly = true;
    } else {
      continue;
    }
    // A subPath is mapped as it is: nothing creates it (the kubelet would make a missing one a directory, but here
    // no init container has rendered the file yet, and a directory would block whoever writes it later).
    if (m.subPath) hostPath = path.join(hostPath, m.subPath);
    else if (!existsSync(hostPath)) mkdirSync(hostPath, { recursive: true });
    mounts.push({ containerPath: path.posix.normalize(m.mountPath).replace(/\/+$/, '') || '/', hostPath, readOnly });
  }
  const workDir = path.join(podStateDir(ctx, pod), 'containers', safeName(c.name));
  mkdirSync(workDir, { recursive: true, mode: 0o755 });
  if (!mounts.some((m) => m.containerPath === '/tmp')) {
    const tmp = path.join(workDir, 'tmp');
    mkdirSync(tmp, { recursive: true, mode: 0o1777 });
    mounts.push({ containerPath: '/tmp', hostPath: tmp, readOnly: false });
  }
  mounts.sort((a, b) => b.containerPath.length - a.containerPath.length);

  const env = containerEnv(pod, c, ctx);
  if (imageKey(image) === 'postgres') {
    env.PGHOST = ctx.postgres.host;
    env.PGPORT = String(ctx.postgres.port);
    if (env.PGUSER === undefined) env.PGUSER = 'postgres';
  }
  return {
    podNamespace: ns,
    podName: pod.metadata.name,
    podUid: pod.metadata.uid,
    container: c.name,
    image,
    env,
    mounts,
    commands,
    workDir,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Path rewriting

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

const regexCache = new WeakMap<ContainerRuntime['mounts'], RegExp>();

/**
 * Rewrites container paths in `text` to host paths. A mount path matches only at a path boundary: not preceded by
 * a path character and followed by `/`, the end, or a character that cannot continue a file name. The longest
 * mount wins.
 */
export function rewritePaths(text: string, mounts: ContainerRuntime['mounts']): string {
  const usable = mounts.filter((m) => m.containerPath !== '/');
  if (usable.length === 0) return text;
  let re = regexCache.get(mounts);
  if (!re) {
    const alts = [...usable]
      .sort((a, b) => b.containerPath.length - a.containerPath.length)
      .map((m) => escapeRegExp(m.containerPath));
    re = new RegExp(`(^|[^A-Za-z0-9._~/-])(${alts.join('|')})(?=$|/|[^A-Za-z0-9._~-])`, 'g');
    regexCache.set(mounts, re);
  }
  const byPath = new Map(usable.map((m) => [m.containerPath, m.hostPath]));
  return text.replace(re, (_all, pre: string, p: string) => `${pre}${byPath.get(p) ?? p}`);
}

// ---------------------------------------------------------------------------------------------------------------
// Processes

/** Options for {@link spawnInContainer}. */
export interface SpawnOptions {
  ctx: RuntimeContext;
  /** Give the process a stdin pipe (otherwise /dev/null). */
  stdin: boolean;
  /** Pipe stdout/stderr (otherwise discarded). Default true. */
  stdout?: boolean;
  stderr?: boolean;
}

/** How a process ended: the exit code, with 128+N for death by signal N (as containerd reports it). */
export interface ExitInfo {
  exitCode: number;
  signal: NodeJS.Signals | null;
}

/** A running process in a container. */
export interface ContainerProcess {
  pid: number;
  stdin: Writable | null;
  stdout: Readable | null;
  stderr: Readable | null;
  /** Settles after the process exited and its stdout/stderr were read to the end. */
  done: Promise<ExitInfo>;
  /** Signals the whole process group (the command and everything it started). */
  kill(signal?: NodeJS.Signals): void;
}

const SIGNALS: Partial<Record<NodeJS.Signals, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGABRT: 6,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
};

/** runc's message for an argv[0] that is not in the image, wrapped the way containerd and the kubelet report it. */
function missingExecutable(argv0: string, problem?: 'permission denied'): RuntimeError {
  const execId = randomBytes(32).toString('hex');
  const what = problem
    ? `exec: "${argv0}": ${problem}`
    : argv0.includes('/')
      ? `exec: "${argv0}": stat ${argv0}: no such file or directory`
      : `exec: "${argv0}": executable file not found in $PATH`;
  const cause =
    `error executing command in container: failed to exec in container: failed to start exec "${execId}": ` +
    `OCI runtime exec failed: exec failed: unable to start container process: ${what}: unknown`;
  return new RuntimeError(internalErrorStatus(cause), false);
}

const STANDARD_BIN_DIRS = new Set(HOST_PATH);

/**
 * Runs argv as a local process "inside" the container: PATH is the image's executables, env is the container's
 * (container paths in values rewritten), argv elements have container paths rewritten, cwd/HOME is the
 * container's scratch directory. The process leads its own process group so kill() reaches its children.
 * Throws {@link RuntimeError} (status-channel kind) when argv[0] is not an executable of the image.
 */
export function spawnInContainer(c: ContainerRuntime, argv: string[], opts: SpawnOptions): ContainerProcess {
  const argv0 = argv[0];
  if (!argv0) throw new RuntimeError(httpStatus(400, 'you must specify at least 1 command'), true);
  const binDir = imageBinDir(c, opts.ctx);
  const base = path.posix.basename(argv0);
  let file = path.join(binDir, base);
  const mapped = argv0.startsWith('/') ? rewritePaths(argv0, c.mounts) : argv0;
  if (mapped !== argv0) {
    // An executable that lives in a volume (a script from a ConfigMap, a tool on a PVC).
    if (!existsSync(mapped)) throw missingExecutable(argv0);
    if (!isExecutable(mapped)) throw missingExecutable(argv0, 'permission denied');
    file = mapped;
  } else {
    const known = argv0.includes('/')
      ? STANDARD_BIN_DIRS.has(path.posix.dirname(argv0)) && c.commands.includes(base)
      : c.commands.includes(base);
    if (!known || !isExecutable(file)) throw missingExecutable(argv0);
  }

  const workDir = (c as Partial<ResolvedContainer>).workDir ?? path.join(opts.ctx.stateDir, 'runtime', 'work');
  mkdirSync(workDir, { recursive: true });
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(c.env)) {
    // The image's shared libraries are not on this machine (Synapse sets LD_PRELOAD=libjemalloc.so.2).
    if (k === 'LD_PRELOAD' || k === 'LD_LIBRARY_PATH') continue;
    env[k] = rewritePaths(v, c.mounts);
  }
  env.PATH = binDir;
  env.HOME = workDir;
  env.LANG ??= 'C.UTF-8';

  const args = argv.slice(1).map((a) => rewritePaths(a, c.mounts));
  const child: ChildProcess = spawn(file, args, {
    argv0,
    cwd: workDir,
    env,
    detached: true,
    stdio: [
      opts.stdin ? 'pipe' : 'ignore',
      opts.stdout === false ? 'ignore' : 'pipe',
      opts.stderr === false ? 'ignore' : 'pipe',
    ],
  });
  child.stdin?.on('error', () => {
    // EPIPE when the process exits before reading all of stdin: the exit status tells the story.
  });
  const pid = child.pid ?? -1;
  const done = new Promise<ExitInfo>((resolve) => {
    child.once('error', () => resolve({ exitCode: 127, signal: null }));
    child.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
      resolve({ exitCode: code ?? 128 + (signal ? (SIGNALS[signal] ?? 0) : 0), signal });
    });
  });
  return {
    pid,
    stdin: child.stdin,
    stdout: child.stdout,
    stderr: child.stderr,
    done,
    kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (pid <= 0) return;
      try {
        process.kill(-pid, signal);
      } catch {
        try {
          child.kill(signal);
        } catch {
          // already gone
        }
      }
    },
  };
}

/**
 * Calls `onGone` once when the pod is deleted (or replaced by a pod with another uid) or reaches a terminal phase.
 * Returns the unsubscribe function.
 */
export function watchPod(
  ctx: RuntimeContext,
  namespace: string,
  name: string,
  uid: string | undefined,
  onGone: () => void,
): () => void {
  let fired = false;
  const unsubscribe = ctx.store.subscribe((ev) => {
    if (fired || ev.resource.kind !== 'Pod') return;
    const m = ev.object.metadata;
    if (m.name !== name || (m.namespace ?? 'default') !== namespace) return;
    const sameUid = !uid || !m.uid || m.uid === uid;
    const phase = (ev.object.status as { phase?: string } | undefined)?.phase;
    if (ev.type === 'DELETED' ? sameUid : !sameUid || phase === 'Succeeded' || phase === 'Failed') {
      fired = true;
      onGone();
    }
  });
  return unsubscribe;
}

// ---------------------------------------------------------------------------------------------------------------
// WebSocket helpers shared by exec and port-forward

/** Bytes queued towards the client above which a producer is paused. */
const HIGH_WATER = 1 << 20;
/** ... and below which it resumes. */
const LOW_WATER = 256 << 10;

/** One shared handshake helper; the protocol picked for each request travels in chosenProtocols. */
const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: false,
  clientTracking: false,
  maxPayload: 64 * 1024 * 1024,
  handleProtocols: (_offered, req) => chosenProtocols.get(req) ?? false,
});
const chosenProtocols = new WeakMap<IncomingMessage, string>();

/** Subprotocols offered in Sec-WebSocket-Protocol, in the client's order. */
export function offeredWebSocketProtocols(req: IncomingMessage): string[] {
  const raw = req.headersDistinct['sec-websocket-protocol'] ?? [];
  return raw.flatMap((v) => v.split(',').map((s) => s.trim())).filter((s) => s.length > 0);
}

/**
 * Completes a WebSocket handshake with the first offered protocol the server supports (the kubelet's wsstream
 * order: the client's). No protocol offered → accepted without one (legacy binary channel protocol). Nothing
 * acceptable → 403 with an empty body, as golang.org/x/net/websocket answers. Protocol names that are not
 * RFC 7230 tokens (SPDY/3.1+portforward.k8s.io) are supported.
 */
export function acceptWebSocket(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  supported: string[],
  onOpen: (ws: WebSocket, protocol: string) => void,
): void {
  const offered = offeredWebSocketProtocols(req);
  let protocol = '';
  if (offered.length > 0) {
    const found = offered.find((p) => supported.includes(p));
    if (found === undefined) {
      if (!socket.destroyed) socket.end('HTTP/1.1 403 Forbidden\r\n\r\n');
      return;
    }
    protocol = found;
    chosenProtocols.set(req, found);
    // ws validates the header as RFC 7230 tokens; '/' (SPDY/3.1+…) is not one, so hand it a token instead.
    req.headers['sec-websocket-protocol'] = 'k8s-sandbox';
  } else {
    delete req.headers['sec-websocket-protocol'];
  }
  wss.handleUpgrade(req, socket, head, (ws) => onOpen(ws, protocol));
}

/** Sends binary frames with accounting of what is still queued, so producers can pause. */
export class WsSender {
  private inflight = 0;
  private drainWaiters: (() => void)[] = [];
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly ws: WebSocket) {}

  send(channel: number, data: Buffer): boolean {
    const frame = Buffer.allocUnsafe(data.length + 1);
    frame[0] = channel;
    data.copy(frame, 1);
    this.inflight += frame.length;
    this.ws.send(frame, { binary: true }, () => {
      this.inflight -= frame.length;
      if (this.inflight <= LOW_WATER) {
        const w = this.drainWaiters;
        this.drainWaiters = [];
        for (const cb of w) cb();
      }
      if (this.inflight === 0) {
        const w = this.idleWaiters;
        this.idleWaiters = [];
        for (const cb of w) cb();
      }
    });
    return this.inflight < HIGH_WATER;
  }

  onDrain(cb: () => void): void {
    if (this.inflight <= LOW_WATER) cb();
    else this.drainWaiters.push(cb);
  }

  /** Calls cb once every frame sent so far was written to the socket. */
  onIdle(cb: () => void): void {
    if (this.inflight === 0) cb();
    else this.idleWaiters.push(cb);
  }
}

/** Feeds WebSocket frames of one channel into a writable, pausing the socket while the writable is full. */
export function writeWithBackpressure(ws: WebSocket, target: Writable, data: Buffer): void {
  if (target.destroyed || target.writableEnded) return;
  if (!target.write(data)) {
    ws.pause();
    const resume = (): void => {
      target.off('drain', resume);
      target.off('close', resume);
      ws.resume();
    };
    target.on('drain', resume);
    target.on('close', resume);
  }
}
