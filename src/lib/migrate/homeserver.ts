/**
 * The parts of an old Synapse's homeserver.yaml that a migration needs: database settings, server name, identity
 * secrets (inline or `*_path` files), signing key, media store, password pepper, and how users log in.
 */
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { PreconditionError } from '../errors.js';

/** The secrets that make an imported database usable: they move with it. */
export interface IdentitySecrets {
  macaroonSecretKey?: string;
  registrationSharedSecret?: string;
  formSecret?: string;
}

export interface PostgresSettings {
  host?: string;
  port?: number;
  user?: string;
  password?: string;
  database?: string;
  sslmode?: string;
}

export interface HomeserverConfig {
  path: string;
  serverName?: string;
  database: { engine: 'postgres'; settings: PostgresSettings } | { engine: 'sqlite'; path?: string } | undefined;
  signingKeyPath?: string;
  secrets: IdentitySecrets;
  mediaStorePath?: string;
  /** password_config.pepper is set (ESS cannot carry it over). */
  pepper: boolean;
  /** Synapse's own logins: password_config.enabled (default true) and no MAS delegation. */
  passwordLogin: boolean;
  /** SSO providers configured (oidc_providers, saml2, cas, jwt). */
  sso: string[];
  /** Authentication already delegated to MAS (matrix_authentication_service.enabled or experimental msc3861). */
  delegatedToMas: boolean;
}

function record(value: unknown): Record<string, unknown> | undefined {
  return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

function str(value: unknown): string | undefined {
  if (typeof value === 'string' && value.length > 0) return value;
  if (typeof value === 'number') return String(value);
  return undefined;
}

async function secretValue(
  config: Record<string, unknown>,
  key: string,
  baseDir: string,
  warnings: string[],
): Promise<string | undefined> {
  const inline = str(config[key]);
  if (inline) return inline;
  const path = str(config[`${key}_path`]);
  if (!path) return undefined;
  try {
    return (await readFile(resolve(baseDir, path), 'utf8')).trim();
  } catch (error) {
    warnings.push(`${key}_path ${path} could not be read: ${(error as Error).message}`);
    return undefined;
  }
}

/**
 * Reads a homeserver.yaml. Relative paths in it (signing key, media store, secret files) are resolved against the
 * file's directory, which is where Synapse is normally started from. Secret files that cannot be read add warnings.
 */
export async function readHomeserverConfig(path: string): Promise<{ config: HomeserverConfig; warnings: string[] }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new PreconditionError(`Cannot read the Synapse config ${path}: ${(error as Error).message}`, {
      code: 'CONFIG_UNREADABLE',
      next: ['Pass the path of the old homeserver.yaml with --config'],
    });
  }
  let parsed: unknown;
  try {
    parsed = parseYaml(text);
  } catch (error) {
    throw new PreconditionError(`${path} is not valid YAML: ${(error as Error).message}`, { code: 'CONFIG_INVALID' });
  }
  const root = record(parsed);
  if (!root)
    throw new PreconditionError(`${path} is not a Synapse config (no YAML mapping).`, { code: 'CONFIG_INVALID' });
  const warnings: string[] = [];
  const baseDir = dirname(resolve(path));
  const abs = (p: string | undefined) => (p ? (isAbsolute(p) ? p : resolve(baseDir, p)) : undefined);

  const db = record(root.database);
  const args = record(db?.args) ?? {};
  let database: HomeserverConfig['database'];
  const engine = str(db?.name);
  if (engine === 'sqlite3') {
    database = { engine: 'sqlite', path: abs(str(args.database)) };
  } else if (engine === 'psycopg2' || engine === 'psycopg') {
    database = {
      engine: 'postgres',
      settings: {
        host: str(args.host),
        port: args.port !== undefined ? Number(args.port) : undefined,
        user: str(args.user),
        password: str(args.password),
        database: str(args.dbname) ?? str(args.database),
        sslmode: str(args.sslmode),
      },
    };
  } else if (db === undefined) {
    // Synapse's default is SQLite in the data directory.
    database = { engine: 'sqlite', path: undefined };
  }

  const passwordConfig = record(root.password_config) ?? {};
  const mas = record(root.matrix_authentication_service);
  const msc3861 = record(record(root.experimental_features)?.msc3861);
  const delegatedToMas = mas?.enabled === true || msc3861?.enabled === true;
  const sso: string[] = [];
  if (Array.isArray(root.oidc_providers) && root.oidc_providers.length > 0) sso.push('oidc');
  if (record(root.oidc_config)?.enabled === true) sso.push('oidc');
  if (record(root.saml2_config)?.sp_config) sso.push('saml2');
  if (record(root.cas_config)?.enabled === true) sso.push('cas');
  if (record(root.jwt_config)?.enabled === true) sso.push('jwt');

  const config: HomeserverConfig = {
    path,
    serverName: str(root.server_name),
    database,
    signingKeyPath: abs(str(root.signing_key_path)),
    secrets: {
      macaroonSecretKey: await secretValue(root, 'macaroon_secret_key', baseDir, warnings),
      registrationSharedSecret: await secretValue(root, 'registration_shared_secret', baseDir, warnings),
      formSecret: await secretValue(root, 'form_secret', baseDir, warnings),
    },
    mediaStorePath: abs(str(root.media_store_path)),
    pepper: Boolean(str(passwordConfig.pepper)),
    passwordLogin: passwordConfig.enabled !== false && passwordConfig.localdb_enabled !== false && !delegatedToMas,
    sso: [...new Set(sso)],
    delegatedToMas,
  };
  return { config, warnings };
}

/** Postgres settings from a `postgres://user:pass@host:port/db?sslmode=…` URL. */
export function settingsFromUrl(url: string): PostgresSettings {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new PreconditionError('--database-url is not a valid URL.', {
      code: 'DATABASE_URL_INVALID',
      next: ['Use the form postgres://USER:PASSWORD@HOST:5432/DATABASE'],
    });
  }
  if (parsed.protocol === 'sqlite:' || parsed.protocol === 'file:') {
    throw sqliteRefusal();
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new PreconditionError(`--database-url must be a postgres:// URL, not ${parsed.protocol}//.`, {
      code: 'DATABASE_URL_INVALID',
    });
  }
  return {
    host: parsed.hostname ? decodeURIComponent(parsed.hostname) : undefined,
    port: parsed.port ? Number(parsed.port) : undefined,
    user: parsed.username ? decodeURIComponent(parsed.username) : undefined,
    password: parsed.password ? decodeURIComponent(parsed.password) : undefined,
    database: parsed.pathname.length > 1 ? decodeURIComponent(parsed.pathname.slice(1)) : undefined,
    sslmode: parsed.searchParams.get('sslmode') ?? undefined,
  };
}

/** libpq environment for the settings (the password never goes into argv). */
export function libpqEnv(settings: PostgresSettings): Record<string, string> {
  const env: Record<string, string> = {};
  if (settings.host) env.PGHOST = settings.host;
  if (settings.port) env.PGPORT = String(settings.port);
  if (settings.user) env.PGUSER = settings.user;
  if (settings.password) env.PGPASSWORD = settings.password;
  if (settings.database) env.PGDATABASE = settings.database;
  if (settings.sslmode) env.PGSSLMODE = settings.sslmode;
  return env;
}

/** The refusal for a SQLite database (ESS runs PostgreSQL only). */
export function sqliteRefusal(path?: string): PreconditionError {
  return new PreconditionError(
    `The old Synapse uses SQLite${path ? ` (${path})` : ''}; ESS runs PostgreSQL only, and a SQLite file cannot be imported.`,
    {
      code: 'SQLITE_UNSUPPORTED',
      next: [
        'Port the database to PostgreSQL first with synapse_port_db: https://element-hq.github.io/synapse/latest/postgres.html#porting-from-sqlite',
        'Then point homeserver.yaml at PostgreSQL (or pass --database-url) and run ess migrate export again',
      ],
    },
  );
}
