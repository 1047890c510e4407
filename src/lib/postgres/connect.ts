/**
 * A `pg` connection to a deployment's database: to the bundled Postgres through a Kubernetes port-forward (with the
 * role password from the chart's Secrets), or to any server given as a URL. Reports use {@link readOnlyTransaction},
 * so ess never writes while it reads.
 */
import type { Client, ClientConfig } from 'pg';
import {
  DATABASE_PASSWORD_SOURCES,
  type DatabaseComponent,
  names,
  POSTGRES_PORT,
  postgresSecretName,
  targetFlags,
} from '../deployment/components.js';
import type { Deployment } from '../deployment/model.js';
import { EssError, ExitCode, InterruptedError, PreconditionError } from '../errors.js';
import type { KubeClient, PortForwardHandle } from '../kube/client.js';
import type { Pod, Secret } from '../kube/types.js';

/** Where to connect. `pod` goes through a port-forward; `url` is used as given (libpq URL syntax). */
export type PgTarget =
  | { kind: 'url'; url: string }
  | {
      kind: 'pod';
      namespace: string;
      /** Helm release of the deployment (for next steps); undefined for the operator flavour. */
      release?: string;
      pod: string;
      port: number;
      database: string;
      user: string;
      /** Undefined when no Secret holds it: the connection is then tried without one (loopback trust). */
      password?: string;
      /** Where the password came from (`secret/key`, or the pod's env), for messages. Never the password itself. */
      passwordSource?: string;
    };

/** What the connection points at, safe to print (no password). */
export interface PgEndpoint {
  via: 'url' | 'port-forward';
  /** `host:port` for a URL, `namespace/pod:port` for a port-forward. */
  address: string;
  database: string;
  user: string;
}

/** The small query surface services need; implemented by a pg client inside a transaction. */
export interface SqlSession {
  query<Row extends Record<string, unknown>>(sql: string, params?: unknown[]): Promise<Row[]>;
}

/** An open connection. `close()` ends the client and the port-forward; it is idempotent. */
export interface PgConnection {
  endpoint: PgEndpoint;
  client: Client;
  close(): Promise<void>;
  /** What the port-forward last reported (kubelet or API server), for error messages. */
  tunnelError?(): string | undefined;
}

export interface OpenOptions {
  /** Required for `pod` targets. */
  kube?: KubeClient;
  /** Shown in pg_stat_activity, e.g. `ess mau`. */
  applicationName: string;
  connectTimeoutMs?: number;
  signal?: AbortSignal;
}

export interface ReadOnlyOptions {
  /** Server-side statement_timeout for every statement of the transaction. */
  statementTimeoutMs: number;
  signal?: AbortSignal;
}

/**
 * Finds the bundled Postgres pod, database, role and password of `component` in a discovered deployment. The
 * password comes from the chart's Secrets in their order of precedence ({@link DATABASE_PASSWORD_SOURCES}), else
 * from the Postgres container's environment when it bootstraps that role (operator flavour).
 * Throws a PreconditionError (exit 4) when the deployment has no bundled database for the component.
 */
export async function resolveBundledTarget(
  kube: KubeClient,
  deployment: Deployment,
  component: DatabaseComponent,
): Promise<Extract<PgTarget, { kind: 'pod' }>> {
  const pg = deployment.postgres;
  const db = pg?.databases.find((d) => d.component === component);
  if (pg?.mode !== 'bundled' || !db) {
    const external = pg?.databases.find((d) => d.component === component);
    throw new PreconditionError(
      external
        ? `The ${component} database is external (${external.host ?? '?'}:${external.port ?? POSTGRES_PORT}/${external.name}), not the bundled Postgres.`
        : `No bundled Postgres database for ${component} was found in ${deployment.namespace}/${deployment.release}.`,
      {
        code: 'NO_BUNDLED_DATABASE',
        next: ['Pass --database-url postgres://USER@HOST:PORT/DATABASE (or set ESS_DATABASE_URL)'],
      },
    );
  }
  let password: string | undefined;
  let passwordSource: string | undefined;
  for (const source of DATABASE_PASSWORD_SOURCES[component]) {
    const secretName =
      source.secret === 'generated'
        ? (deployment.generatedSecret ?? names.generatedSecret(deployment.release))
        : postgresSecretName(deployment.release);
    const secret = await kube.get<Secret>('Secret', deployment.namespace, secretName);
    const value = secret?.data?.[source.key];
    if (value) {
      password = Buffer.from(value, 'base64').toString('utf8');
      passwordSource = `${secretName}/${source.key}`;
      break;
    }
  }
  const user = db.owner ?? `${db.name}_user`;
  if (!password) {
    const fromEnv = await passwordFromPodEnv(kube, deployment.namespace, pg.pod, pg.container, user);
    password = fromEnv?.password;
    passwordSource = fromEnv?.source;
  }
  return {
    kind: 'pod',
    namespace: deployment.namespace,
    release: deployment.flavour === 'matrix-stack' ? deployment.release : undefined,
    pod: pg.pod,
    port: POSTGRES_PORT,
    database: db.name,
    user,
    password,
    passwordSource,
  };
}

type EnvVar = { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } };

/**
 * The password of `user` from the Postgres container's own environment: when its bootstrap role POSTGRES_USER is
 * `user`, POSTGRES_PASSWORD (a value, or a secretKeyRef that is then read). This is how the operator-based ESS
 * passes the installer's Secret to its Postgres (the deployment reference reads user and database from the same
 * environment); the chart's Postgres bootstraps `postgres` instead, so it never matches there.
 */
async function passwordFromPodEnv(
  kube: KubeClient,
  namespace: string,
  podName: string,
  containerName: string,
  user: string,
): Promise<{ password: string; source: string } | undefined> {
  const pod = await kube.get<Pod>('Pod', namespace, podName);
  const env = (pod?.spec.containers.find((c) => c.name === containerName)?.env ?? []) as EnvVar[];
  if (env.find((e) => e.name === 'POSTGRES_USER')?.value !== user) return undefined;
  const entry = env.find((e) => e.name === 'POSTGRES_PASSWORD');
  if (entry?.value) return { password: entry.value, source: `pod/${podName} env POSTGRES_PASSWORD` };
  const ref = entry?.valueFrom?.secretKeyRef;
  if (!ref) return undefined;
  const value = (await kube.get<Secret>('Secret', namespace, ref.name))?.data?.[ref.key];
  return value
    ? { password: Buffer.from(value, 'base64').toString('utf8'), source: `${ref.name}/${ref.key}` }
    : undefined;
}

/** `postgres://user:secret@host/db` → `postgres://user:***@host/db` (for messages). */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    for (const key of [...parsed.searchParams.keys()]) {
      if (/pass/i.test(key)) parsed.searchParams.set(key, '***');
    }
    return parsed.toString();
  } catch {
    return '(unparseable URL)';
  }
}

/** libpq's sslmode values, with libpq's meaning (https://www.postgresql.org/docs/current/libpq-ssl.html). */
export const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];

function badUrl(message: string, next: string[] = ['Use the form postgres://USER:PASSWORD@HOST:PORT/DATABASE']) {
  return new EssError(message, { exitCode: ExitCode.USAGE, code: 'BAD_DATABASE_URL', next });
}

/** The URL's sslmode (`ssl=true`, node-postgres' own flag, counts as `require`), else $PGSSLMODE, else `prefer`. */
export function sslModeOf(url: string, env: NodeJS.ProcessEnv = process.env): SslMode {
  const params = new URL(url).searchParams;
  const legacy = ['true', '1'].includes(params.get('ssl') ?? '') ? 'require' : undefined;
  const value = params.get('sslmode') ?? legacy ?? env.PGSSLMODE ?? 'prefer';
  if (!(SSL_MODES as readonly string[]).includes(value)) {
    throw badUrl(`sslmode=${value} is not a libpq SSL mode.`, [`Use one of: ${SSL_MODES.join(', ')}`]);
  }
  return value as SslMode;
}

/**
 * The connection strings to try, in order, for a URL with libpq's sslmode semantics. `pg` alone treats
 * prefer/require/verify-ca as verify-full and never falls back to a plain connection; with `uselibpqcompat=true`
 * it encrypts without verifying for `require`. `prefer` (try TLS, then plain) and `allow` (plain, then TLS) are
 * two attempts.
 */
export function connectionAttempts(url: string, env: NodeJS.ProcessEnv = process.env): string[] {
  const mode = sslModeOf(url, env);
  if (mode === 'verify-ca' && !new URL(url).searchParams.get('sslrootcert')) {
    throw badUrl('sslmode=verify-ca needs sslrootcert=PATH: the CA certificate that signed the server certificate.', [
      'Add sslrootcert=PATH to --database-url, or use sslmode=require to encrypt without verifying',
    ]);
  }
  const withMode = (sslmode: SslMode) => {
    const parsed = new URL(url);
    parsed.searchParams.delete('ssl');
    parsed.searchParams.set('sslmode', sslmode);
    parsed.searchParams.set('uselibpqcompat', 'true');
    return parsed.toString();
  };
  switch (mode) {
    case 'disable':
      return [withMode('disable')];
    case 'allow':
      return [withMode('disable'), withMode('require')];
    case 'prefer':
      return [withMode('require'), withMode('disable')];
    default:
      return [withMode(mode)];
  }
}

const NO_SERVER_TLS = /server does not support SSL/i;

/** Whether a failed attempt of `allow`/`prefer` should be retried the other way (as libpq does). */
function retryOtherWay(error: unknown): boolean {
  const e = error as { code?: string; message?: string };
  return NO_SERVER_TLS.test(e?.message ?? '') || e?.code === '28000';
}

function endpointForUrl(url: string): PgEndpoint {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw badUrl('The database URL is not a valid URL.');
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw badUrl(`The database URL must start with postgres:// (got ${parsed.protocol}//).`);
  }
  return {
    via: 'url',
    address: `${parsed.hostname || 'localhost'}:${parsed.port || POSTGRES_PORT}`,
    database: decodeURIComponent(parsed.pathname.replace(/^\//, '')) || decodeURIComponent(parsed.username),
    user: decodeURIComponent(parsed.username) || process.env.PGUSER || 'postgres',
  };
}

async function ensurePodRunning(kube: KubeClient, target: Extract<PgTarget, { kind: 'pod' }>): Promise<void> {
  const pod = await kube.get<Pod>('Pod', target.namespace, target.pod);
  const ready = pod?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
  if (pod?.status?.phase !== 'Running' || !ready) {
    throw new PreconditionError(
      `The Postgres pod ${target.namespace}/${target.pod} is ${pod ? `not ready (phase ${pod.status?.phase ?? 'unknown'})` : 'not running'}.`,
      {
        code: 'POSTGRES_NOT_RUNNING',
        next: [
          `Check it: kubectl get pod -n ${target.namespace} ${target.pod}`,
          `Start it if ess stopped it: ess start ${targetFlags(target.namespace, target.release)}`,
        ],
      },
    );
  }
}

/**
 * Maps a connection or query error of `pg` to an EssError with next steps; returns undefined for anything else.
 * `endpoint` names what was being talked to; `tunnelError` is what the port-forward reported, if anything.
 */
export function describePgError(error: unknown, endpoint: PgEndpoint, tunnelError?: string): EssError | undefined {
  if (error instanceof EssError) return error;
  const e = error as { code?: string; message?: string };
  const where = `${endpoint.user}@${endpoint.address}/${endpoint.database}`;
  const message = (e?.message ?? String(error)) + (tunnelError ? ` (port-forward: ${tunnelError})` : '');
  if (NO_SERVER_TLS.test(e?.message ?? '')) {
    return new EssError(`The database server at ${endpoint.address} does not accept TLS, but sslmode requires it.`, {
      code: 'DATABASE_TLS',
      cause: error,
      next: [
        'Enable SSL on the server, or connect without TLS: sslmode=prefer (TLS if offered) or sslmode=disable in --database-url',
      ],
    });
  }
  if (/CERT|SELF_SIGNED|^ERR_TLS|^ERR_SSL|^EPROTO$/.test(e?.code ?? '')) {
    return new EssError(`The TLS connection to the database at ${where} failed: ${message}`, {
      code: 'DATABASE_TLS',
      cause: error,
      next: [
        "To verify the server's certificate, pass its CA: sslrootcert=PATH in --database-url (sslmode=verify-full also checks the host name)",
        'To encrypt without verifying the certificate (like libpq), use sslmode=require',
      ],
    });
  }
  switch (e?.code) {
    case '28P01':
    case '28000':
      return new PreconditionError(`The database refused the login of ${where}: ${message}`, {
        code: 'DATABASE_AUTH',
        cause: error,
        next: [
          endpoint.via === 'port-forward'
            ? 'Check the role password in the generated Secret, or pass --database-url with working credentials'
            : 'Check the user and password in --database-url / ESS_DATABASE_URL',
        ],
      });
    case '3D000':
      return new PreconditionError(`Database "${endpoint.database}" does not exist on ${endpoint.address}.`, {
        code: 'DATABASE_NOT_FOUND',
        cause: error,
        next: ['Check the database name in --database-url'],
      });
    case '57014':
      return new EssError(`A query ran into the statement timeout and was cancelled: ${message}`, {
        code: 'STATEMENT_TIMEOUT',
        cause: error,
        next: ['Allow more time with --statement-timeout SECONDS', 'Run it when the server is less busy'],
      });
    case 'ECONNREFUSED':
    case 'ETIMEDOUT':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ECONNRESET':
      return new EssError(`Cannot reach the database at ${where}: ${message}`, {
        code: 'DATABASE_UNREACHABLE',
        cause: error,
        next:
          endpoint.via === 'port-forward'
            ? ['Check that the Postgres pod is running: ess status']
            : ['Check the host and port in --database-url, and that this machine can reach them'],
      });
    default:
      if (/Connection terminated|timeout expired|connect ETIMEDOUT/i.test(message)) {
        return new EssError(`The connection to the database at ${where} was lost: ${message}`, {
          code: 'DATABASE_UNREACHABLE',
          cause: error,
          next:
            endpoint.via === 'port-forward'
              ? ['Check that the Postgres pod is running and accepts connections: ess status']
              : ['Check that the database server is up and reachable'],
        });
      }
      return undefined;
  }
}

/**
 * Opens a `pg` client to the target. For a `pod` target it first checks that the pod is ready, then opens a local
 * port-forward to it; `close()` ends both. Errors become EssErrors (see {@link describePgError}).
 */
export async function openPostgres(target: PgTarget, options: OpenOptions): Promise<PgConnection> {
  const { default: pg } = await import('pg');
  let forward: PortForwardHandle | undefined;
  let endpoint: PgEndpoint;
  const base: ClientConfig = {
    application_name: options.applicationName,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 20_000,
  };
  const configs: ClientConfig[] = [];
  if (target.kind === 'url') {
    endpoint = endpointForUrl(target.url);
    for (const connectionString of connectionAttempts(target.url)) configs.push({ ...base, connectionString });
  } else {
    if (!options.kube) throw new Error('openPostgres: a KubeClient is required for a pod target');
    endpoint = {
      via: 'port-forward',
      address: `${target.namespace}/${target.pod}:${target.port}`,
      database: target.database,
      user: target.user,
    };
    await ensurePodRunning(options.kube, target);
    forward = await options.kube.portForward(target.namespace, target.pod, target.port);
    configs.push({
      ...base,
      host: '127.0.0.1',
      port: forward.localPort,
      database: target.database,
      user: target.user,
      password: target.password ?? '',
      ssl: false,
    });
  }
  let client: Client | undefined;
  let closed: Promise<void> | undefined;
  const close = () => {
    closed ??= (async () => {
      await client?.end().catch(() => {});
      await forward?.close().catch(() => {});
    })();
    return closed;
  };
  const onAbort = () => void close();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  const fail = async (error: unknown): Promise<never> => {
    options.signal?.removeEventListener('abort', onAbort);
    await close();
    if (options.signal?.aborted) throw new InterruptedError(String(options.signal.reason?.message ?? 'signal'));
    throw describePgError(error, endpoint, forward?.lastError?.()) ?? connectFailed(error, endpoint);
  };
  for (const [i, config] of configs.entries()) {
    try {
      // Reading sslrootcert/sslcert files and checking the SSL options happens here.
      client = new pg.Client(config);
    } catch (error) {
      options.signal?.removeEventListener('abort', onAbort);
      await close();
      throw badUrl(`The database URL's SSL options are not usable: ${(error as Error).message}`, [
        'Check sslmode, sslrootcert, sslcert and sslkey in --database-url (sslmode=verify-ca needs sslrootcert=PATH)',
      ]);
    }
    // An 'error' event without a listener would crash the process (e.g. the server going away between queries).
    client.on('error', () => {});
    try {
      await client.connect();
      break;
    } catch (error) {
      if (i < configs.length - 1 && !options.signal?.aborted && retryOtherWay(error)) {
        await client.end().catch(() => {});
        continue;
      }
      await fail(error);
    }
  }
  const connected = client as Client;
  return {
    endpoint,
    client: connected,
    tunnelError: () => forward?.lastError?.(),
    close: async () => {
      options.signal?.removeEventListener('abort', onAbort);
      await close();
    },
  };
}

/** Any other failure to connect: still a connection problem, with the driver's message. */
function connectFailed(error: unknown, endpoint: PgEndpoint): EssError {
  const message = (error as Error)?.message ?? String(error);
  return new EssError(
    `Cannot connect to the database at ${endpoint.user}@${endpoint.address}/${endpoint.database}: ${message}`,
    {
      code: 'DATABASE_UNREACHABLE',
      cause: error,
      next:
        endpoint.via === 'port-forward'
          ? ['Check that the Postgres pod is running and accepts connections: ess status']
          : ['Check the host, port and SSL options (sslmode) in --database-url'],
    },
  );
}

/**
 * Runs `fn` in one READ ONLY, REPEATABLE READ transaction (every statement sees the same snapshot) with a
 * statement_timeout, then rolls back. The server rejects any write attempted inside it.
 */
export async function readOnlyTransaction<T>(
  connection: PgConnection,
  options: ReadOnlyOptions,
  fn: (session: SqlSession) => Promise<T>,
): Promise<T> {
  const { client, endpoint } = connection;
  const session: SqlSession = {
    async query<Row extends Record<string, unknown>>(sql: string, params?: unknown[]) {
      if (options.signal?.aborted) throw new InterruptedError(String(options.signal.reason?.message ?? 'signal'));
      const result = await client.query<Row>(sql, params);
      return result.rows;
    },
  };
  const timeout = Math.max(1, Math.round(options.statementTimeoutMs));
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    // SET LOCAL cannot take a bind parameter; `timeout` is an integer we computed.
    await client.query(`SET LOCAL statement_timeout = ${timeout}`);
    const value = await fn(session);
    await client.query('ROLLBACK');
    return value;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    if (options.signal?.aborted) throw new InterruptedError(String(options.signal.reason?.message ?? 'signal'));
    throw describePgError(error, endpoint, connection.tunnelError?.()) ?? error;
  }
}
