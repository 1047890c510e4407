/**
 * A small Matrix Authentication Service schema (synapse-database.md §12): accounts, sessions, compat sessions
 * (which map to Synapse devices), OAuth 2.0 clients and sessions, and the sqlx bookkeeping table. Primary keys
 * are UUIDs (MAS uses ULIDs), there are no sequences, and the pg_trgm extension is installed as a MAS
 * migration does. Kept in a .ts module because tsc does not copy .sql files to dist/.
 */

const MAS_TABLES_SQL = `
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE _sqlx_migrations (
    version bigint NOT NULL PRIMARY KEY,
    description text NOT NULL,
    installed_on timestamp with time zone DEFAULT now() NOT NULL,
    success boolean NOT NULL,
    checksum bytea NOT NULL,
    execution_time bigint NOT NULL
);

CREATE TABLE users (
    user_id uuid NOT NULL,
    username text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    locked_at timestamp with time zone,
    can_request_admin boolean DEFAULT false NOT NULL,
    is_guest boolean DEFAULT false NOT NULL,
    deactivated_at timestamp with time zone
);

CREATE TABLE user_emails (
    user_email_id uuid NOT NULL,
    user_id uuid NOT NULL,
    email text NOT NULL,
    created_at timestamp with time zone NOT NULL
);

CREATE TABLE user_sessions (
    user_session_id uuid NOT NULL,
    user_id uuid NOT NULL,
    created_at timestamp with time zone NOT NULL,
    finished_at timestamp with time zone,
    user_agent text,
    last_active_at timestamp with time zone,
    last_active_ip inet
);

CREATE TABLE compat_sessions (
    compat_session_id uuid NOT NULL,
    user_id uuid NOT NULL,
    device_id text,
    created_at timestamp with time zone NOT NULL,
    finished_at timestamp with time zone,
    is_synapse_admin boolean DEFAULT false NOT NULL,
    last_active_at timestamp with time zone,
    last_active_ip inet,
    user_session_id uuid,
    user_agent text,
    human_name text
);

CREATE TABLE compat_access_tokens (
    compat_access_token_id uuid NOT NULL,
    compat_session_id uuid NOT NULL,
    access_token text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    expires_at timestamp with time zone
);

CREATE TABLE oauth2_clients (
    oauth2_client_id uuid NOT NULL,
    encrypted_client_secret text,
    grant_type_authorization_code boolean NOT NULL,
    grant_type_refresh_token boolean NOT NULL,
    client_name text,
    client_uri text,
    token_endpoint_auth_method text,
    created_at timestamp with time zone,
    is_static boolean DEFAULT false NOT NULL,
    redirect_uris text[] DEFAULT '{}'::text[] NOT NULL,
    application_type text,
    contacts text[] DEFAULT '{}'::text[] NOT NULL,
    grant_type_client_credentials boolean DEFAULT false NOT NULL,
    grant_type_device_code boolean DEFAULT false NOT NULL
);

CREATE TABLE oauth2_sessions (
    oauth2_session_id uuid NOT NULL,
    user_session_id uuid,
    oauth2_client_id uuid NOT NULL,
    created_at timestamp with time zone NOT NULL,
    finished_at timestamp with time zone,
    user_id uuid,
    scope_list text[] NOT NULL,
    last_active_at timestamp with time zone,
    last_active_ip inet,
    user_agent text,
    human_name text
);
`;

const MAS_POST_SQL = `
ALTER TABLE users ADD CONSTRAINT users_pkey PRIMARY KEY (user_id);
ALTER TABLE user_emails ADD CONSTRAINT user_emails_pkey PRIMARY KEY (user_email_id);
ALTER TABLE user_sessions ADD CONSTRAINT user_sessions_pkey PRIMARY KEY (user_session_id);
ALTER TABLE compat_sessions ADD CONSTRAINT compat_sessions_pkey PRIMARY KEY (compat_session_id);
ALTER TABLE compat_access_tokens ADD CONSTRAINT compat_access_tokens_pkey PRIMARY KEY (compat_access_token_id);
ALTER TABLE compat_access_tokens ADD CONSTRAINT compat_access_tokens_access_token_key UNIQUE (access_token);
ALTER TABLE oauth2_clients ADD CONSTRAINT oauth2_clients_pkey PRIMARY KEY (oauth2_client_id);
ALTER TABLE oauth2_sessions ADD CONSTRAINT oauth2_sessions_pkey PRIMARY KEY (oauth2_session_id);

CREATE UNIQUE INDEX users_lower_username_unique_idx ON users USING btree (lower(username));
CREATE INDEX users_username_trgm_idx ON users USING gin (username gin_trgm_ops);
CREATE INDEX user_emails_user_id_fk ON user_emails USING btree (user_id);
CREATE INDEX user_session_user_id_idx ON user_sessions USING btree (user_id);
CREATE INDEX compat_sessions_user_id_idx ON compat_sessions USING btree (user_id);
CREATE INDEX oauth2_sessions_user_id_idx ON oauth2_sessions USING btree (user_id);

ALTER TABLE user_emails ADD CONSTRAINT user_emails_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(user_id);
ALTER TABLE user_sessions ADD CONSTRAINT user_sessions_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(user_id);
ALTER TABLE compat_sessions ADD CONSTRAINT compat_sessions_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(user_id);
ALTER TABLE compat_sessions ADD CONSTRAINT compat_sessions_user_session_id_fkey
    FOREIGN KEY (user_session_id) REFERENCES user_sessions(user_session_id);
ALTER TABLE compat_access_tokens ADD CONSTRAINT compat_access_tokens_compat_session_id_fkey
    FOREIGN KEY (compat_session_id) REFERENCES compat_sessions(compat_session_id);
ALTER TABLE oauth2_sessions ADD CONSTRAINT oauth2_sessions_user_session_id_fkey
    FOREIGN KEY (user_session_id) REFERENCES user_sessions(user_session_id);
ALTER TABLE oauth2_sessions ADD CONSTRAINT oauth2_sessions_oauth2_client_id_fkey
    FOREIGN KEY (oauth2_client_id) REFERENCES oauth2_clients(oauth2_client_id);
ALTER TABLE oauth2_sessions ADD CONSTRAINT oauth2_sessions_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(user_id);
`;

/**
 * The MAS schema in load order for bulk seeding: tables first; keys, indexes and foreign keys after the data.
 * Run by the database owner (matrixauthenticationservice_user) in database `matrixauthenticationservice`.
 */
export const MAS_SCHEMA_PARTS = { tables: MAS_TABLES_SQL, post: MAS_POST_SQL };

/** The whole MAS schema in one script. */
export const MAS_SCHEMA_SQL = `${MAS_TABLES_SQL}\n${MAS_POST_SQL}`;

/** Tables of the MAS schema (for counts). */
export const MAS_TABLES: readonly string[] = [
  '_sqlx_migrations',
  'users',
  'user_emails',
  'user_sessions',
  'compat_sessions',
  'compat_access_tokens',
  'oauth2_clients',
  'oauth2_sessions',
];

/** A representative subset of MAS's sqlx migrations (version, description); a real database has 167. */
export const MAS_MIGRATIONS: readonly [number, string][] = [
  [20210722072901, 'init'],
  [20211021201500, 'oauth2 sessions'],
  [20220530084123, 'jwt client auth'],
  [20221018142001, 'init'],
  [20230408110421, 'upstream oauth'],
  [20230616093555, 'compat refresh tokens'],
  [20230728154304, 'user session authentication'],
  [20231009142904, 'user can request admin'],
  [20240207100003, 'user terms'],
  [20240301091201, 'oauth2 device code grant'],
  [20240402084854, 'policy data'],
  [20241004075132, 'queue worker'],
  [20241120163320, 'queue job failures'],
  [20250109105709, 'user row lock'],
  [20250311093145, 'user deactivated at'],
  [20250602212101, 'personal sessions'],
  [20251023134634, 'user registration tokens'],
  [20260211091512, 'compat sessions human name'],
  [20260720134722, 'oauth2 clients metadata digest'],
];
