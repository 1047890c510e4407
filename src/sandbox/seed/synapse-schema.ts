/**
 * A Synapse-shaped PostgreSQL schema (main + state + common in one database, as ESS runs it), written for the
 * sandbox from the facts in synapse-database.md §3, §8, §9, §10. It is a subset of the 173 tables of a real
 * v94 database, with the real names, column names, types, unique constraints, the NOT VALID foreign keys of
 * the membership tables, the UNLOGGED lock tables, the standalone sequences and the four plpgsql functions
 * with their triggers, so dumps, restores and imports meet the same obstacles as against a real database.
 * Kept in a .ts module because tsc does not copy .sql files to dist/.
 */

/** Standalone sequences of a v94 database (synapse-database.md §8.1). */
export const STANDALONE_SEQUENCES: readonly string[] = [
  'account_data_sequence',
  'application_services_txn_id_seq',
  'cache_invalidation_stream_seq',
  'device_inbox_sequence',
  'event_auth_chain_id',
  'events_backfill_stream_seq',
  'events_stream_seq',
  'presence_stream_sequence',
  'receipts_sequence',
  'user_id_seq',
  'state_group_id_seq',
  'un_partial_stated_room_stream_sequence',
  'un_partial_stated_event_stream_sequence',
  'device_lists_sequence',
  'e2e_cross_signing_keys_sequence',
  'push_rules_stream_sequence',
  'pushers_sequence',
  'thread_subscriptions_sequence',
  'sticky_events_sequence',
  'quarantined_media_id_seq',
];

/** The plpgsql functions of a v94 database (synapse-database.md §9). */
export const SYNAPSE_FUNCTIONS: readonly string[] = [
  'check_partial_state_events',
  'check_event_stream_ordering',
  'upsert_read_write_lock_parent',
  'delete_read_write_lock_parent',
];

const TABLES = `
CREATE TABLE IF NOT EXISTS schema_version (
    "lock" character(1) DEFAULT 'X'::bpchar NOT NULL,
    version integer NOT NULL,
    upgraded boolean NOT NULL,
    CONSTRAINT schema_version_lock_check CHECK (("lock" = 'X'::bpchar)),
    CONSTRAINT schema_version_lock_key UNIQUE ("lock")
);
CREATE TABLE IF NOT EXISTS schema_compat_version (
    "lock" character(1) DEFAULT 'X'::bpchar NOT NULL,
    compat_version integer NOT NULL,
    CONSTRAINT schema_compat_version_lock_check CHECK (("lock" = 'X'::bpchar)),
    CONSTRAINT schema_compat_version_lock_key UNIQUE ("lock")
);
CREATE TABLE IF NOT EXISTS applied_schema_deltas (
    version integer NOT NULL,
    file text NOT NULL,
    CONSTRAINT applied_schema_deltas_version_file_key UNIQUE (version, file)
);
CREATE TABLE IF NOT EXISTS applied_module_schemas (
    module_name text NOT NULL,
    file text NOT NULL,
    CONSTRAINT applied_module_schemas_module_name_file_key UNIQUE (module_name, file)
);
CREATE TABLE background_updates (
    update_name text NOT NULL,
    progress_json text NOT NULL,
    depends_on text,
    ordering integer DEFAULT 0 NOT NULL,
    CONSTRAINT background_updates_uniqueness UNIQUE (update_name)
);

CREATE TABLE users (
    name text,
    password_hash text,
    creation_ts bigint,
    admin smallint DEFAULT 0 NOT NULL,
    upgrade_ts bigint,
    is_guest smallint DEFAULT 0 NOT NULL,
    appservice_id text,
    consent_version text,
    consent_server_notice_sent text,
    user_type text,
    deactivated smallint DEFAULT 0 NOT NULL,
    shadow_banned boolean,
    consent_ts bigint,
    approved boolean,
    locked boolean DEFAULT false NOT NULL,
    suspended boolean DEFAULT false NOT NULL,
    CONSTRAINT users_name_key UNIQUE (name)
);
CREATE INDEX users_creation_ts ON users USING btree (creation_ts);

CREATE TABLE user_ips (
    user_id text NOT NULL,
    access_token text NOT NULL,
    device_id text,
    ip text NOT NULL,
    user_agent text NOT NULL,
    last_seen bigint NOT NULL
);
CREATE UNIQUE INDEX user_ips_user_token_ip_unique_index ON user_ips USING btree (user_id, access_token, ip);
CREATE INDEX user_ips_device_id ON user_ips USING btree (user_id, device_id, last_seen);
CREATE INDEX user_ips_last_seen ON user_ips USING btree (user_id, last_seen);
CREATE INDEX user_ips_last_seen_only ON user_ips USING btree (last_seen);

CREATE TABLE user_daily_visits (
    user_id text NOT NULL,
    device_id text,
    "timestamp" bigint NOT NULL,
    user_agent text
);
CREATE INDEX user_daily_visits_ts_idx ON user_daily_visits USING btree ("timestamp");
CREATE INDEX user_daily_visits_uts_idx ON user_daily_visits USING btree (user_id, "timestamp");

CREATE TABLE monthly_active_users (
    user_id text NOT NULL,
    "timestamp" bigint NOT NULL
);
CREATE UNIQUE INDEX monthly_active_users_users ON monthly_active_users USING btree (user_id);
CREATE INDEX monthly_active_users_time_stamp ON monthly_active_users USING btree ("timestamp");

CREATE TABLE devices (
    user_id text NOT NULL,
    device_id text NOT NULL,
    display_name text,
    last_seen bigint,
    ip text,
    user_agent text,
    hidden boolean DEFAULT false,
    CONSTRAINT device_uniqueness UNIQUE (user_id, device_id)
);

CREATE TABLE e2e_device_keys_json (
    user_id text NOT NULL,
    device_id text NOT NULL,
    ts_added_ms bigint NOT NULL,
    key_json text NOT NULL,
    CONSTRAINT e2e_device_keys_json_uniqueness UNIQUE (user_id, device_id)
);

CREATE TABLE e2e_one_time_keys_json (
    user_id text NOT NULL,
    device_id text NOT NULL,
    algorithm text NOT NULL,
    key_id text NOT NULL,
    ts_added_ms bigint NOT NULL,
    key_json text NOT NULL,
    CONSTRAINT e2e_one_time_keys_json_uniqueness UNIQUE (user_id, device_id, algorithm, key_id)
);

CREATE TABLE e2e_fallback_keys_json (
    user_id text NOT NULL,
    device_id text NOT NULL,
    algorithm text NOT NULL,
    key_id text NOT NULL,
    key_json text NOT NULL,
    used boolean DEFAULT false NOT NULL,
    CONSTRAINT e2e_fallback_keys_json_uniqueness UNIQUE (user_id, device_id, algorithm)
);

CREATE TABLE profiles (
    user_id text NOT NULL,
    displayname text,
    avatar_url text,
    full_user_id text,
    fields jsonb,
    CONSTRAINT profiles_user_id_key UNIQUE (user_id)
);

CREATE TABLE refresh_tokens (
    id bigint NOT NULL,
    user_id text NOT NULL,
    device_id text NOT NULL,
    token text NOT NULL,
    next_token_id bigint,
    expiry_ts bigint,
    ultimate_session_expiry_ts bigint,
    CONSTRAINT refresh_tokens_pkey PRIMARY KEY (id),
    CONSTRAINT refresh_tokens_token_key UNIQUE (token),
    CONSTRAINT refresh_tokens_next_token_id_fkey FOREIGN KEY (next_token_id) REFERENCES refresh_tokens(id) ON DELETE CASCADE
);

CREATE TABLE access_tokens (
    id bigint NOT NULL,
    user_id text NOT NULL,
    device_id text,
    token text NOT NULL,
    valid_until_ms bigint,
    puppets_user_id text,
    last_validated bigint,
    refresh_token_id bigint,
    used boolean,
    CONSTRAINT access_tokens_pkey PRIMARY KEY (id),
    CONSTRAINT access_tokens_token_key UNIQUE (token),
    CONSTRAINT access_tokens_refresh_token_id_fkey FOREIGN KEY (refresh_token_id) REFERENCES refresh_tokens(id) ON DELETE CASCADE
);
CREATE INDEX access_tokens_device_id ON access_tokens USING btree (user_id, device_id);

CREATE TABLE rooms (
    room_id text NOT NULL,
    is_public boolean,
    creator text,
    room_version text,
    has_auth_chain_index boolean,
    CONSTRAINT rooms_pkey PRIMARY KEY (room_id)
);

CREATE TABLE events (
    topological_ordering bigint NOT NULL,
    event_id text NOT NULL,
    type text NOT NULL,
    room_id text NOT NULL,
    content text,
    unrecognized_keys text,
    processed boolean NOT NULL,
    outlier boolean NOT NULL,
    depth bigint DEFAULT 0 NOT NULL,
    origin_server_ts bigint,
    received_ts bigint,
    sender text,
    contains_url boolean,
    instance_name text,
    stream_ordering bigint,
    state_key text,
    rejection_reason text,
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);
CREATE UNIQUE INDEX events_stream_ordering ON events USING btree (stream_ordering);
CREATE INDEX events_order_room ON events USING btree (room_id, topological_ordering, stream_ordering);
CREATE INDEX events_room_stream ON events USING btree (room_id, stream_ordering);
CREATE INDEX events_ts ON events USING btree (origin_server_ts, stream_ordering);

CREATE TABLE event_json (
    event_id text NOT NULL,
    room_id text NOT NULL,
    internal_metadata text NOT NULL,
    json text NOT NULL,
    format_version integer,
    CONSTRAINT event_json_event_id_key UNIQUE (event_id)
);
CREATE INDEX event_json_room_id ON event_json USING btree (room_id);

CREATE TABLE event_forward_extremities (
    event_id text NOT NULL,
    room_id text NOT NULL,
    CONSTRAINT event_forward_extremities_event_id_room_id_key UNIQUE (event_id, room_id)
);

CREATE TABLE room_memberships (
    event_id text NOT NULL,
    user_id text NOT NULL,
    sender text NOT NULL,
    room_id text NOT NULL,
    membership text NOT NULL,
    forgotten integer DEFAULT 0,
    display_name text,
    avatar_url text,
    event_stream_ordering bigint,
    participant boolean DEFAULT false,
    CONSTRAINT room_memberships_event_id_key UNIQUE (event_id)
);
CREATE INDEX room_memberships_room_id ON room_memberships USING btree (room_id);
CREATE INDEX room_memberships_user_room_forgotten ON room_memberships USING btree (user_id, room_id);

CREATE TABLE current_state_events (
    event_id text NOT NULL,
    room_id text NOT NULL,
    type text NOT NULL,
    state_key text NOT NULL,
    membership text,
    event_stream_ordering bigint,
    CONSTRAINT current_state_events_event_id_key UNIQUE (event_id),
    CONSTRAINT current_state_events_room_id_type_state_key_key UNIQUE (room_id, type, state_key)
);

CREATE TABLE local_current_membership (
    room_id text NOT NULL,
    user_id text NOT NULL,
    event_id text NOT NULL,
    membership text NOT NULL,
    event_stream_ordering bigint
);
CREATE UNIQUE INDEX local_current_membership_idx ON local_current_membership USING btree (user_id, room_id);
CREATE INDEX local_current_membership_room_idx ON local_current_membership USING btree (room_id);

CREATE TABLE event_txn_id_device_id (
    event_id text NOT NULL,
    room_id text NOT NULL,
    user_id text NOT NULL,
    device_id text NOT NULL,
    txn_id text NOT NULL,
    inserted_ts bigint NOT NULL,
    CONSTRAINT event_txn_id_device_id_event_id_fkey FOREIGN KEY (event_id) REFERENCES events(event_id) ON DELETE CASCADE,
    CONSTRAINT event_txn_id_device_id_user_id_device_id_fkey FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX event_txn_id_device_id_event_id ON event_txn_id_device_id USING btree (event_id);

CREATE TABLE state_groups (
    id bigint NOT NULL,
    room_id text NOT NULL,
    event_id text NOT NULL,
    CONSTRAINT state_groups_pkey PRIMARY KEY (id)
);
CREATE INDEX state_groups_room_id_idx ON state_groups USING btree (room_id);

CREATE TABLE state_groups_state (
    state_group bigint NOT NULL,
    room_id text NOT NULL,
    type text NOT NULL,
    state_key text NOT NULL,
    event_id text NOT NULL
);
CREATE INDEX state_groups_state_type_idx ON state_groups_state USING btree (state_group, type, state_key);

CREATE TABLE state_group_edges (
    state_group bigint NOT NULL,
    prev_state_group bigint NOT NULL
);
CREATE UNIQUE INDEX state_group_edges_unique_idx ON state_group_edges USING btree (state_group, prev_state_group);

CREATE TABLE event_to_state_groups (
    event_id text NOT NULL,
    state_group bigint NOT NULL,
    CONSTRAINT event_to_state_groups_event_id_key UNIQUE (event_id)
);

CREATE TABLE partial_state_rooms (
    room_id text NOT NULL,
    device_lists_stream_id bigint DEFAULT 0 NOT NULL,
    join_event_id text,
    joined_via text,
    CONSTRAINT partial_state_rooms_pkey PRIMARY KEY (room_id),
    CONSTRAINT partial_state_rooms_room_id_fkey FOREIGN KEY (room_id) REFERENCES rooms(room_id),
    CONSTRAINT partial_state_rooms_join_event_id_fkey FOREIGN KEY (join_event_id) REFERENCES events(event_id)
);

CREATE TABLE partial_state_events (
    room_id text NOT NULL,
    event_id text NOT NULL,
    CONSTRAINT partial_state_events_event_id_key UNIQUE (event_id),
    CONSTRAINT partial_state_events_room_id_fkey FOREIGN KEY (room_id) REFERENCES partial_state_rooms(room_id),
    CONSTRAINT partial_state_events_event_id_fkey FOREIGN KEY (event_id) REFERENCES events(event_id)
);

CREATE TABLE local_media_repository (
    media_id text,
    media_type text,
    media_length integer,
    created_ts bigint,
    upload_name text,
    user_id text,
    quarantined_by text,
    url_cache text,
    last_access_ts bigint,
    safe_from_quarantine boolean DEFAULT false NOT NULL,
    authenticated boolean DEFAULT false NOT NULL,
    sha256 text,
    CONSTRAINT local_media_repository_media_id_key UNIQUE (media_id)
);
CREATE INDEX users_have_local_media ON local_media_repository USING btree (user_id, created_ts);
CREATE INDEX local_media_repository_url_idx ON local_media_repository USING btree (created_ts) WHERE (url_cache IS NOT NULL);

CREATE TABLE local_media_repository_thumbnails (
    media_id text,
    thumbnail_width integer,
    thumbnail_height integer,
    thumbnail_type text,
    thumbnail_method text,
    thumbnail_length integer,
    CONSTRAINT local_media_repository_thumbn_media_id_thumbnail_width_thum_key UNIQUE (media_id, thumbnail_width, thumbnail_height, thumbnail_type, thumbnail_method)
);

CREATE TABLE remote_media_cache (
    media_origin text,
    media_id text,
    media_type text,
    created_ts bigint,
    upload_name text,
    media_length integer,
    filesystem_id text,
    last_access_ts bigint,
    quarantined_by text,
    authenticated boolean DEFAULT false NOT NULL,
    sha256 text,
    CONSTRAINT remote_media_cache_media_origin_media_id_key UNIQUE (media_origin, media_id)
);

CREATE TABLE remote_media_cache_thumbnails (
    media_origin text,
    media_id text,
    thumbnail_width integer,
    thumbnail_height integer,
    thumbnail_method text,
    thumbnail_type text,
    thumbnail_length integer,
    filesystem_id text
);
CREATE UNIQUE INDEX remote_media_repository_thumbn_media_origin_id_width_height_met ON remote_media_cache_thumbnails USING btree (media_origin, media_id, thumbnail_width, thumbnail_height, thumbnail_type, thumbnail_method);

CREATE TABLE server_keys_json (
    server_name text NOT NULL,
    key_id text NOT NULL,
    from_server text NOT NULL,
    ts_added_ms bigint NOT NULL,
    ts_valid_until_ms bigint NOT NULL,
    key_json bytea NOT NULL,
    CONSTRAINT server_keys_json_uniqueness UNIQUE (server_name, key_id, from_server)
);

CREATE TABLE server_signature_keys (
    server_name text,
    key_id text,
    from_server text,
    ts_added_ms bigint,
    verify_key bytea,
    ts_valid_until_ms bigint,
    CONSTRAINT server_signature_keys_server_name_key_id_key UNIQUE (server_name, key_id)
);

CREATE TABLE instance_map (
    instance_id SERIAL PRIMARY KEY,
    instance_name text NOT NULL
);
CREATE UNIQUE INDEX instance_map_idx ON instance_map USING btree (instance_name);

CREATE TABLE stream_positions (
    stream_name text NOT NULL,
    instance_name text NOT NULL,
    stream_id bigint NOT NULL
);
CREATE UNIQUE INDEX stream_positions_idx ON stream_positions USING btree (stream_name, instance_name);

CREATE TABLE scheduled_tasks (
    id text NOT NULL,
    action text NOT NULL,
    status text NOT NULL,
    "timestamp" bigint NOT NULL,
    resource_id text,
    params text,
    result text,
    error text,
    CONSTRAINT scheduled_tasks_pkey PRIMARY KEY (id)
);

CREATE UNLOGGED TABLE worker_read_write_locks_mode (
    lock_name text NOT NULL,
    lock_key text NOT NULL,
    write_lock boolean NOT NULL,
    token text NOT NULL
);
CREATE UNIQUE INDEX worker_read_write_locks_mode_key ON worker_read_write_locks_mode USING btree (lock_name, lock_key);

CREATE UNLOGGED TABLE worker_read_write_locks (
    lock_name text NOT NULL,
    lock_key text NOT NULL,
    instance_name text NOT NULL,
    write_lock boolean NOT NULL,
    token text NOT NULL,
    last_renewed_ts bigint NOT NULL
);
CREATE UNIQUE INDEX worker_read_write_locks_key ON worker_read_write_locks USING btree (lock_name, lock_key, token);
`;

const FOREIGN_KEYS = `
ALTER TABLE current_state_events ADD CONSTRAINT event_stream_ordering_fkey
    FOREIGN KEY (event_stream_ordering) REFERENCES events(stream_ordering) NOT VALID;
ALTER TABLE local_current_membership ADD CONSTRAINT event_stream_ordering_fkey
    FOREIGN KEY (event_stream_ordering) REFERENCES events(stream_ordering) NOT VALID;
ALTER TABLE room_memberships ADD CONSTRAINT event_stream_ordering_fkey
    FOREIGN KEY (event_stream_ordering) REFERENCES events(stream_ordering) NOT VALID;
ALTER TABLE event_forward_extremities ADD CONSTRAINT event_forward_extremities_event_id
    FOREIGN KEY (event_id) REFERENCES events(event_id) DEFERRABLE INITIALLY DEFERRED NOT VALID;
`;

const SEQUENCES = STANDALONE_SEQUENCES.map(
  (s) => `CREATE SEQUENCE ${s}${s === 'cache_invalidation_stream_seq' ? ' START WITH 2' : ''};`,
).join('\n');

const FUNCTIONS = `
CREATE FUNCTION check_partial_state_events() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- A partial-state event must belong to the room it is recorded under.
    IF EXISTS (
        SELECT 1 FROM events
        WHERE events.event_id = NEW.event_id AND events.room_id != NEW.room_id
    ) THEN
        RAISE EXCEPTION 'partial_state_events: event % is not in room %', NEW.event_id, NEW.room_id;
    END IF;
    RETURN NEW;
END;
$$;

CREATE FUNCTION check_event_stream_ordering() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- event_stream_ordering must match the event's position in the events table.
    IF NOT EXISTS (
        SELECT 1 FROM events
        WHERE events.event_id = NEW.event_id AND events.stream_ordering = NEW.event_stream_ordering
    ) THEN
        RAISE EXCEPTION 'event_stream_ordering of % does not match events.stream_ordering', NEW.event_id;
    END IF;
    RETURN NEW;
END;
$$;

CREATE FUNCTION upsert_read_write_lock_parent() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO worker_read_write_locks_mode (lock_name, lock_key, write_lock, token)
        VALUES (NEW.lock_name, NEW.lock_key, NEW.write_lock, NEW.token)
        ON CONFLICT (lock_name, lock_key)
        DO UPDATE SET write_lock = NEW.write_lock, token = NEW.token
        WHERE worker_read_write_locks_mode.write_lock = NEW.write_lock;
    RETURN NEW;
END;
$$;

CREATE FUNCTION delete_read_write_lock_parent() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    DELETE FROM worker_read_write_locks_mode
        WHERE lock_name = OLD.lock_name AND lock_key = OLD.lock_key
        AND NOT EXISTS (
            SELECT 1 FROM worker_read_write_locks
            WHERE lock_name = OLD.lock_name AND lock_key = OLD.lock_key
        );
    RETURN NULL;
END;
$$;

`;

const TRIGGERS = `
CREATE TRIGGER check_partial_state_events BEFORE INSERT OR UPDATE ON partial_state_events
    FOR EACH ROW EXECUTE FUNCTION check_partial_state_events();
CREATE TRIGGER check_event_stream_ordering BEFORE INSERT OR UPDATE ON current_state_events
    FOR EACH ROW EXECUTE FUNCTION check_event_stream_ordering();
CREATE TRIGGER check_event_stream_ordering BEFORE INSERT OR UPDATE ON local_current_membership
    FOR EACH ROW EXECUTE FUNCTION check_event_stream_ordering();
CREATE TRIGGER check_event_stream_ordering BEFORE INSERT OR UPDATE ON room_memberships
    FOR EACH ROW EXECUTE FUNCTION check_event_stream_ordering();
CREATE TRIGGER upsert_read_write_lock_parent_trigger BEFORE INSERT ON worker_read_write_locks
    FOR EACH ROW EXECUTE FUNCTION upsert_read_write_lock_parent();
CREATE TRIGGER delete_read_write_lock_parent_trigger AFTER DELETE ON worker_read_write_locks
    FOR EACH ROW EXECUTE FUNCTION delete_read_write_lock_parent();
`;

const statements = TABLES.split(/;\s*\n/)
  .map((x) => x.trim())
  .filter(Boolean);

/**
 * Splits CREATE TABLE statements into the bare table and `ALTER TABLE … ADD CONSTRAINT` statements (the way
 * pg_dump orders a schema), except for the IF NOT EXISTS bookkeeping tables.
 */
function splitSchema(): { tables: string[]; constraints: string[]; foreignKeys: string[]; indexes: string[] } {
  const out = {
    tables: [] as string[],
    constraints: [] as string[],
    foreignKeys: [] as string[],
    indexes: [] as string[],
  };
  for (const stmt of statements) {
    if (/^CREATE (UNIQUE )?INDEX /.test(stmt)) {
      out.indexes.push(stmt);
      continue;
    }
    const m = /^CREATE (?:UNLOGGED )?TABLE (\w+) \(/.exec(stmt);
    if (!m) {
      out.tables.push(stmt);
      continue;
    }
    const lines = stmt.split('\n');
    const body: string[] = [];
    for (const line of lines.slice(1, -1)) {
      const c = /^\s*CONSTRAINT (\w+) (.*?),?$/.exec(line);
      if (!c) {
        body.push(line.replace(/,$/, ''));
        continue;
      }
      const alter = `ALTER TABLE ${m[1]} ADD CONSTRAINT ${c[1]} ${c[2]}`;
      (/FOREIGN KEY/.test(c[2]) ? out.foreignKeys : out.constraints).push(alter);
    }
    out.tables.push(`${lines[0]}\n${body.join(',\n')}\n${lines[lines.length - 1]}`);
  }
  return out;
}

const split = splitSchema();
const sql = (xs: string[]) => (xs.length ? `${xs.join(';\n')};\n` : '');

/**
 * The schema in pg_dump's load order, for bulk seeding: bare tables, sequences and functions first; then, after
 * the data, primary keys and unique constraints, indexes, foreign keys (the NOT VALID ones too) and triggers.
 * Building each index once is much faster than maintaining it row by row.
 */
export const SYNAPSE_SCHEMA_PARTS = {
  tables: `${sql(split.tables)}\n${SEQUENCES}\n${FUNCTIONS}`,
  post: `${sql(split.constraints)}\n${sql(split.indexes)}\n${sql(split.foreignKeys)}\n${FOREIGN_KEYS}\n${TRIGGERS}`,
};

/** The whole schema, to be run by the database owner (synapse_user) in database `synapse`. */
export const SYNAPSE_SCHEMA_SQL = `${SYNAPSE_SCHEMA_PARTS.tables}\n${SYNAPSE_SCHEMA_PARTS.post}`;

/**
 * A representative subset of `applied_schema_deltas` for a database created fresh at v72 and upgraded to v94
 * (a real one has 125 rows).
 */
export const APPLIED_DELTAS: readonly [number, string][] = [
  [73, '73/01job_queue.sql'],
  [73, '73/21_un_partial_stated_room_stream_seq.sql.postgres'],
  [73, '73/23_un_partial_stated_room_stream_seq.sql.postgres'],
  [74, '74/01_user_directory_stale_remote_users.sql'],
  [74, '74/04_membership_tables_event_stream_ordering_triggers.py'],
  [76, '76/04_add_room_forgetter.sql'],
  [77, '77/01_add_profiles_full_user_id.sql'],
  [78, '78/03event_extremities_constraints.py'],
  [79, '79/04_mitigate_stream_ordering_update_race.py'],
  [80, '80/01_users_alter_locked.sql'],
  [82, '82/04_add_indices_for_locks.sql'],
  [83, '83/01_drop_old_tables.sql'],
  [84, '84/01_auth_links_stats.sql.postgres'],
  [85, '85/03_new_sequences.sql.postgres'],
  [85, '85/06_add_room_reports.sql'],
  [86, '86/01_authenticate_media.sql'],
  [87, '87/01_sliding_sync_memberships.sql'],
  [88, '88/03_add_otk_ts_added_index.sql'],
  [88, '88/05_drop_old_otks.sql.postgres'],
  [89, '89/01_sliding_sync_membership_snapshot_index.sql'],
  [91, '91/01_media_hash.sql'],
  [92, '92/04_thread_subscriptions_seq.sql.postgres'],
  [93, '93/01_sticky_events_seq.sql.postgres'],
  [93, '93/04_make_delayed_event_content_text.py'],
  [94, '94/03_quarantined_media_tracking_seq.sql.postgres'],
];

/** Background updates left pending after a fresh v94 build (a representative subset of the 54). */
export const PENDING_BACKGROUND_UPDATES: readonly [string, string, string | null, number][] = [
  ['e2e_one_time_keys_json_add_ts_added_ms_index', '{}', null, 8803],
  ['event_forward_extremities_event_id_foreign_key_constraint_update', '{}', null, 7803],
  ['events_jump_to_date_index', '{}', null, 7403],
  ['local_media_repository_sha256_idx', '{}', null, 9101],
  ['remote_media_cache_sha256_idx', '{}', 'local_media_repository_sha256_idx', 9101],
  ['sliding_sync_membership_snapshots_bg_update', '{}', null, 8701],
];
