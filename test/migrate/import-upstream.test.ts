/**
 * CI tier: the import against the real upstream Synapse schema (../shared/fixtures/synapse-schema/generated, a fresh
 * v94 database built by Synapse itself: 173 tables, 20 standalone sequences, 4 plpgsql functions). The sandbox's
 * database is initialised from the upstream plain dump (so the live database has the real applied_schema_deltas),
 * then the upstream custom-format dump is imported over it. Skipped when ../shared is absent (a fresh clone).
 * Needs `npm run build`.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import { hasShared, runCli, sandboxFlags, sharedDir } from '../helpers/cli.js';
import { clusterState, fingerprint, sql } from './helpers.js';

const generated = path.join(sharedDir, 'fixtures', 'synapse-schema', 'generated');

describe.skipIf(!hasShared)('ess migrate import of the upstream Synapse v94 dump (needs ../shared)', () => {
  let sandbox: Sandbox;

  beforeAll(async () => {
    sandbox = await startSandbox({
      users: 10,
      mediaMb: 1,
      synapseSchemaFile: path.join(generated, 'synapse-v94-fresh.dump.sql'),
    });
  });

  afterAll(async () => {
    await sandbox?.stop();
  });

  it('replaces the initialised database with the upstream dump, tables identical to a reference restore', async () => {
    const dump = path.join(generated, 'synapse-v94-fresh.pgdump');
    const before = clusterState(sandbox);
    expect(
      Number((await sql<{ n: string }>(sandbox, 'synapse', 'SELECT count(*) AS n FROM users'))[0]?.n),
    ).toBeGreaterThan(0);

    // Staged: the whole dump copied onto the Postgres volume and restored with --jobs (the other tests cover the
    // parallel and stream methods).
    const result = await runCli(
      ['migrate', 'import', dump, ...sandboxFlags(sandbox), '--yes', '--json', '--no-media', '--method', 'staged'],
      { timeoutMs: 110_000 },
    );
    expect([0, 3], result.stderr).toContain(result.code);
    const out = JSON.parse(result.stdout);
    expect(out.schema).toMatchObject({ dump: 94, dumpCompat: 84, ess: 94 });
    expect(out.restore).toMatchObject({ method: 'staged', jobs: 4 });
    expect(out.warnings.join('\n')).toMatch(/no users, so its server name cannot be checked/);
    expect(
      out.postChecks.every((c: { ok: boolean }) => c.ok),
      JSON.stringify(out.postChecks),
    ).toBe(true);

    const shape = await sql<{ tables: string; seqs: string; funcs: string; deltas: string }>(
      sandbox,
      'synapse',
      `SELECT (SELECT count(*) FROM pg_tables WHERE schemaname = 'public') AS tables,
              (SELECT count(*) FROM pg_class WHERE relkind = 'S' AND relnamespace = 'public'::regnamespace) AS seqs,
              (SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace) AS funcs,
              (SELECT count(*) FROM applied_schema_deltas) AS deltas`,
    );
    expect(shape[0]).toEqual({ tables: '173', seqs: '25', funcs: '4', deltas: '125' });

    // Reference: the same dump restored by the local pg_restore into a scratch database.
    await sql(sandbox, 'postgres', 'DROP DATABASE IF EXISTS reference');
    await sql(
      sandbox,
      'postgres',
      "CREATE DATABASE reference TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'",
    );
    execFileSync(path.join(sandbox.postgres.binDir, 'pg_restore'), [
      '-h',
      sandbox.postgres.host,
      '-p',
      String(sandbox.postgres.port),
      '-U',
      'postgres',
      '-d',
      'reference',
      '--no-owner',
      dump,
    ]);
    expect(await fingerprint(sandbox, 'synapse')).toEqual(await fingerprint(sandbox, 'reference'));
    expect(clusterState(sandbox)).toEqual(before);
  });
});
