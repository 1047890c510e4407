/**
 * `ess migrate export` on an "old host" (a copy of the sandbox's Synapse database plus a media directory), then
 * `ess migrate import` of that bundle into the sandbox's ESS: the tables come out identical except the one-time
 * keys, the media lands on the media volume owned by the Synapse UID, the identity lands in a Secret.
 * Needs `npm run build` (the CLI runs from dist/).
 */
import { execFileSync } from 'node:child_process';
import {
  cpSync,
  createReadStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readArchive } from '../../src/lib/archive/reader.js';
import { indexTar } from '../../src/lib/migrate/tar-index.js';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import { runCli, sandboxFlags } from '../helpers/cli.js';
import { clusterState, copyDatabase, fingerprint, secretData, sql } from './helpers.js';

describe('ess migrate export, then import of the bundle', () => {
  let sandbox: Sandbox;
  let dir: string;
  let config: string;
  let bundle: string;
  let keyLine: string;
  let mediaRoot: string;

  beforeAll(async () => {
    sandbox = await startSandbox({ users: 30, mediaMb: 1 });
    dir = mkdtempSync(path.join(os.tmpdir(), 'ess-migrate-export-'));
    // The old server: its own copy of the database, changed so that it differs from ESS's.
    await copyDatabase(sandbox, 'oldsynapse');
    await sql(
      sandbox,
      'oldsynapse',
      `INSERT INTO users (name, password_hash, creation_ts) VALUES ('@only-on-old:ess.localhost', 'hash', 1700000000);
       INSERT INTO rooms (room_id, is_public, creator) VALUES ('!old:ess.localhost', true, '@only-on-old:ess.localhost');`,
    );
    mediaRoot = path.join(dir, 'old', 'media_store');
    cpSync(path.join(sandbox.volumeDir(sandbox.namespace, sandbox.layout.mediaClaim), 'media_store'), mediaRoot, {
      recursive: true,
    });
    mkdirSync(path.join(mediaRoot, 'local_content', 'Zz', 'Yy'), { recursive: true });
    writeFileSync(path.join(mediaRoot, 'local_content', 'Zz', 'Yy', 'onlyOnTheOldServerXx'), 'old media');
    keyLine = `ed25519 a_OldK ${Buffer.alloc(32, 9).toString('base64').replace(/=+$/, '')}`;
    writeFileSync(path.join(dir, 'old', 'signing.key'), `${keyLine}\n`);
    config = path.join(dir, 'old', 'homeserver.yaml');
    writeFileSync(
      config,
      [
        'server_name: ess.localhost',
        'database:',
        '  name: psycopg2',
        `  args: {user: postgres, database: oldsynapse, host: "${sandbox.postgres.host}", port: ${sandbox.postgres.port}}`,
        'signing_key_path: signing.key',
        'macaroon_secret_key: old-macaroon',
        'registration_shared_secret: old-registration',
        'form_secret: old-form',
        `media_store_path: ${mediaRoot}`,
      ].join('\n'),
    );
    bundle = path.join(dir, 'bundle.tar');
  });

  afterAll(async () => {
    await sandbox?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('writes a bundle: manifest first, checksums, dump without one-time keys, identity, media without caches', async () => {
    const result = await runCli(['migrate', 'export', '--config', config, '-o', bundle, '--json']);
    expect(result.code, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout);
    expect(out).toMatchObject({
      serverName: 'ess.localhost',
      identity: { signingKeyId: 'a_OldK' },
      synapseStopped: 'not-checked',
    });
    expect(out.identity.secrets).toEqual(['macaroon_secret_key', 'registration_shared_secret', 'form_secret']);
    expect(out.media.skippedCacheFiles).toBeGreaterThan(0);
    expect(result.stderr).toMatch(/Synapse must be stopped/);
    expect(statSync(bundle).mode & 0o777).toBe(0o600);

    // The archive library's own reader verifies every checksum and the trailer.
    const names: string[] = [];
    const read = await readArchive(createReadStream(bundle), { onMember: (m) => void names.push(m.name) });
    expect((read.manifest as unknown as { migrateExport: unknown }).migrateExport).toBeDefined();
    expect(names.slice(0, 3)).toEqual(['postgres/synapse.dump', 'identity/signing.key', 'identity/secrets.json']);
    expect(names).toContain('media/local_content/Zz/Yy/onlyOnTheOldServerXx');
    expect(names.some((n) => n.startsWith('media/remote_content/') || n.startsWith('media/url_cache'))).toBe(false);

    // The dump keeps the one-time-keys table but not its rows (pg_dump --exclude-table-data).
    const index = await indexTar(bundle);
    const dumpMember = index.find((m) => m.name === 'postgres/synapse.dump')!;
    const dumpFile = path.join(dir, 'extracted.dump');
    execFileSync('sh', [
      '-c',
      `tail -c +${dumpMember.offset + 1} "$0" | head -c ${dumpMember.size} > "$1"`,
      bundle,
      dumpFile,
    ]);
    const toc = execFileSync(path.join(sandbox.postgres.binDir, 'pg_restore'), ['-l', dumpFile], { encoding: 'utf8' });
    expect(toc).toMatch(/ TABLE public e2e_one_time_keys_json /);
    expect(toc).not.toMatch(/ TABLE DATA public e2e_one_time_keys_json /);
    expect(toc).toMatch(/ TABLE DATA public users /);
  });

  it('imports the bundle: identical tables except one-time keys, media, identity Secret, workloads back', async () => {
    const before = clusterState(sandbox);
    const expected = await fingerprint(sandbox, 'oldsynapse');
    const result = await runCli(['migrate', 'import', bundle, ...sandboxFlags(sandbox), '--yes', '--json'], {
      timeoutMs: 110_000,
    });
    // Exit 3: the sandbox runs MAS and the old users have Synapse passwords, so syn2mas is needed (a follow-up).
    expect(result.code, result.stderr).toBe(3);
    const out = JSON.parse(result.stdout);
    expect(
      out.postChecks.every((c: { ok: boolean }) => c.ok),
      JSON.stringify(out.postChecks),
    ).toBe(true);
    expect(out.mas).toMatchObject({ masEnabled: true, oldAuth: 'synapse' });
    expect(out.mas.followUp).toMatch(/syn2mas/);
    expect(out.restore).toMatchObject({ method: 'parallel', jobs: 4 });

    const actual = await fingerprint(sandbox, 'synapse');
    const { e2e_one_time_keys_json: _skipped, ...rest } = expected;
    const { e2e_one_time_keys_json: _imported, ...restActual } = actual;
    expect(restActual).toEqual(rest);
    expect(
      Number((await sql<{ n: string }>(sandbox, 'synapse', 'SELECT count(*) AS n FROM e2e_one_time_keys_json'))[0]?.n),
    ).toBe(0);
    expect(
      Number(
        (await sql<{ n: string }>(sandbox, 'oldsynapse', 'SELECT count(*) AS n FROM e2e_one_time_keys_json'))[0]?.n,
      ),
    ).toBeGreaterThan(0);
    const owner = await sql<{ o: string }>(
      sandbox,
      'synapse',
      "SELECT pg_get_userbyid(relowner) AS o FROM pg_class WHERE relname = 'users'",
    );
    expect(owner[0]?.o).toBe('synapse_user');

    const store = path.join(sandbox.volumeDir(sandbox.namespace, sandbox.layout.mediaClaim), 'media_store');
    const file = path.join(store, 'local_content', 'Zz', 'Yy', 'onlyOnTheOldServerXx');
    expect(existsSync(file)).toBe(true);
    expect(statSync(file).uid).toBe(10091);
    expect(statSync(path.dirname(file)).uid).toBe(10091);

    const identity = secretData(sandbox, 'ess-imported-synapse-identity');
    expect(identity?.data.SIGNING_KEY?.trim()).toBe(keyLine);
    expect(identity?.data.MACAROON).toBe('old-macaroon');
    expect(out.identity.valuesFragment).toMatch(
      /signingKey:\n\s+secret: ess-imported-synapse-identity\n\s+secretKey: SIGNING_KEY/,
    );
    expect(result.stdout).not.toContain('old-macaroon');

    expect(clusterState(sandbox)).toEqual(before);
  });

  it('refuses to export while Synapse answers at --synapse-url, and accepts it once it is down', async () => {
    const server = http.createServer((_req, res) => res.end('OK'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const out = path.join(dir, 'running.tar');
    const refused = await runCli(['migrate', 'export', '--config', config, '--synapse-url', url, '-o', out, '--json']);
    expect(refused.code).toBe(4);
    expect(JSON.parse(refused.stdout).error.code).toBe('SYNAPSE_RUNNING');
    expect(existsSync(out)).toBe(false);
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const dry = await runCli(['migrate', 'export', '--config', config, '--synapse-url', url, '--dry-run', '--json']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(JSON.parse(dry.stdout).synapseStopped).toBe('verified');
  });

  it('refuses an --output under a file before dumping anything (exit 4, next step), not as a bug', async () => {
    const file = path.join(dir, 'not-a-dir');
    writeFileSync(file, 'x');
    const r = await runCli([
      'migrate',
      'export',
      '--config',
      config,
      '--no-media',
      '-o',
      path.join(file, 'x.tar'),
      '--json',
    ]);
    expect(r.code, r.stderr).toBe(4);
    const error = JSON.parse(r.stdout).error;
    expect(error.code).toBe('OUTPUT_UNUSABLE');
    expect(error.next.join('\n')).toMatch(/is a file: pass a directory/);
    expect(r.stderr).not.toMatch(/bug in ess|Dumping/);
  });

  it('refuses a SQLite Synapse and warns loudly about a password pepper', async () => {
    const sqliteConfig = path.join(dir, 'old', 'sqlite.yaml');
    writeFileSync(
      sqliteConfig,
      'server_name: ess.localhost\ndatabase:\n  name: sqlite3\n  args: {database: /var/lib/synapse/homeserver.db}\n',
    );
    const sqlite = await runCli(['migrate', 'export', '--config', sqliteConfig, '--json']);
    expect(sqlite.code).toBe(4);
    const error = JSON.parse(sqlite.stdout).error;
    expect(error.code).toBe('SQLITE_UNSUPPORTED');
    expect(error.next.join('\n')).toMatch(/synapse_port_db/);

    const pepperConfig = path.join(dir, 'old', 'pepper.yaml');
    writeFileSync(pepperConfig, `${readFileSync(config, 'utf8')}\npassword_config: {pepper: "s3cret"}\n`);
    const pepper = await runCli(['migrate', 'export', '--config', pepperConfig, '--no-media', '--dry-run', '--json']);
    expect(pepper.code, pepper.stderr).toBe(3);
    expect(JSON.parse(pepper.stdout).warnings.join('\n')).toMatch(/pepper.*reset/);
    expect(pepper.stderr).toMatch(/warning: password_config\.pepper/);
  });
});
