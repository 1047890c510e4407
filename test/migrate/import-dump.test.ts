/**
 * `ess migrate import synapse.dump` (a plain `pg_dump -Fc -O`, no bundle) against a sandbox whose API server only
 * speaks exec protocol v4 (Kubernetes < 1.30: stdin cannot be half-closed), into a database Synapse has already
 * initialised (tables, every sequence, the plpgsql functions). Identity from --signing-key/--homeserver-config into
 * the generated Secret; media from a tar. Run twice: parallel streams, then one stream; the second run finds the
 * media already there. Needs `npm run build`.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import { runCli, sandboxFlags } from '../helpers/cli.js';
import { clusterState, copyDatabase, dumpDatabase, fingerprint, secretData, sql } from './helpers.js';

describe('ess migrate import of a plain dump over exec v4', () => {
  let sandbox: Sandbox;
  let dir: string;
  let dump: string;
  let expected: Record<string, string>;
  let args: string[];
  let keyLine: string;

  beforeAll(async () => {
    sandbox = await startSandbox({ users: 20, mediaMb: 1, execProtocol: 'v4-only' });
    dir = mkdtempSync(path.join(os.tmpdir(), 'ess-migrate-dump-'));
    await copyDatabase(sandbox, 'old');
    await sql(
      sandbox,
      'old',
      "DELETE FROM users WHERE name LIKE '@bot%'; UPDATE profiles SET displayname = 'Renamed on the old server'",
    );
    dump = path.join(dir, 'synapse.dump');
    dumpDatabase(sandbox, 'old', dump);
    expected = await fingerprint(sandbox, 'old');

    const store = path.join(dir, 'media_store');
    mkdirSync(path.join(store, 'local_content', 'Ab', 'Cd'), { recursive: true });
    mkdirSync(path.join(store, 'remote_content', 'matrix.org', 'Xx', 'Yy'), { recursive: true });
    writeFileSync(path.join(store, 'local_content', 'Ab', 'Cd', 'efghijklmnopqrstuvwx'), Buffer.alloc(300_000, 1));
    writeFileSync(path.join(store, 'remote_content', 'matrix.org', 'Xx', 'Yy', 'cachedRemoteFileXxYyZz'), 'cache');
    const mediaTar = path.join(dir, 'media.tar');
    execFileSync('tar', ['-c', '-f', mediaTar, '-C', dir, 'media_store']);

    keyLine = `ed25519 0 ${Buffer.alloc(32, 3).toString('base64').replace(/=+$/, '')}`;
    writeFileSync(path.join(dir, 'signing.key'), `${keyLine}\n`);
    writeFileSync(
      path.join(dir, 'homeserver.yaml'),
      'server_name: ess.localhost\nmacaroon_secret_key: mac-from-yaml\nregistration_shared_secret: reg-from-yaml\npassword_config: {enabled: true}\n',
    );
    args = [
      'migrate',
      'import',
      dump,
      ...sandboxFlags(sandbox),
      '--yes',
      '--json',
      '--signing-key',
      path.join(dir, 'signing.key'),
      '--homeserver-config',
      path.join(dir, 'homeserver.yaml'),
      '--update-generated-secret',
      '--media-store',
      mediaTar,
    ];
  });

  afterAll(async () => {
    await sandbox?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('restores in parallel streams over v4 and replaces an initialised database', async () => {
    const live = await sql<{ seqs: string; funcs: string }>(
      sandbox,
      'synapse',
      `SELECT (SELECT count(*) FROM pg_class WHERE relkind = 'S' AND relnamespace = 'public'::regnamespace) AS seqs,
              (SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace) AS funcs`,
    );
    expect(Number(live[0]?.seqs)).toBeGreaterThanOrEqual(20);
    expect(Number(live[0]?.funcs)).toBe(4);
    const generatedBefore = secretData(sandbox, 'ess-generated')!;
    const before = clusterState(sandbox);

    const result = await runCli([...args, '--method', 'parallel', '--jobs', '3'], { timeoutMs: 110_000 });
    expect([0, 3], result.stderr).toContain(result.code);
    const out = JSON.parse(result.stdout);
    expect(out.restore).toMatchObject({ method: 'parallel', jobs: 3 });
    expect(out.phases.map((p: { name: string }) => p.name)).toContain('loading the data');
    expect(
      out.postChecks.every((c: { ok: boolean }) => c.ok),
      JSON.stringify(out.postChecks),
    ).toBe(true);

    const actual = await fingerprint(sandbox, 'synapse');
    delete expected.e2e_one_time_keys_json;
    delete actual.e2e_one_time_keys_json;
    expect(actual).toEqual(expected);

    const generated = secretData(sandbox, 'ess-generated')!;
    expect(generated.data.SYNAPSE_SIGNING_KEY?.trim()).toBe(keyLine);
    expect(generated.data.SYNAPSE_MACAROON).toBe('mac-from-yaml');
    expect(generated.data.SYNAPSE_REGISTRATION_SHARED_SECRET).toBe('reg-from-yaml');
    expect(generated.labels).toEqual(generatedBefore.labels);
    expect(generated.data.POSTGRES_SYNAPSE_PASSWORD).toBe(generatedBefore.data.POSTGRES_SYNAPSE_PASSWORD);
    expect(out.warnings.join('\n')).toMatch(/id is "0".*init-secrets job replaces/);
    expect(out.identity.valuesFragment).toBeUndefined();

    const store = path.join(sandbox.volumeDir(sandbox.namespace, sandbox.layout.mediaClaim), 'media_store');
    const file = path.join(store, 'local_content', 'Ab', 'Cd', 'efghijklmnopqrstuvwx');
    expect(statSync(file).size).toBe(300_000);
    expect(statSync(file).uid).toBe(10091);
    expect(existsSync(path.join(store, 'remote_content', 'matrix.org', 'Xx', 'Yy', 'cachedRemoteFileXxYyZz'))).toBe(
      false,
    );
    expect(out.mediaUpload).toMatchObject({ uploadedFiles: 1, skippedFiles: 0 });
    expect(clusterState(sandbox)).toEqual(before);
  });

  it('re-runs as one stream into pg_restore; media already there is skipped', async () => {
    await sql(sandbox, 'synapse', "INSERT INTO users (name) VALUES ('@made-after-import:ess.localhost')");
    const result = await runCli([...args, '--method', 'stream'], { timeoutMs: 110_000 });
    expect([0, 3], result.stderr).toContain(result.code);
    const out = JSON.parse(result.stdout);
    expect(out.restore).toMatchObject({ method: 'stream', jobs: 1 });
    expect(out.mediaUpload).toMatchObject({ uploadedFiles: 0, skippedFiles: 1 });
    const actual = await fingerprint(sandbox, 'synapse');
    delete actual.e2e_one_time_keys_json;
    expect(actual).toEqual(expected);
    // Nothing is left behind on the Postgres volume.
    const pgVolume = sandbox.volumeDir(sandbox.namespace, sandbox.layout.postgresClaim);
    expect(execFileSync('ls', ['-a', pgVolume], { encoding: 'utf8' })).not.toMatch(/ess-import-/);
  });
});
