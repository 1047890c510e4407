/**
 * list → verify --restore-test → prune on archives made by `ess backup` itself, against the sandbox with the
 * default exec protocol (v5; restore-test.test.ts covers v4). A full and an incremental backup with new media in
 * between. Requires `npm run build`.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import type { ListBackupsResult } from '../../src/services/backup/list.js';
import type { PruneResult } from '../../src/services/backup/prune.js';
import type { VerifyResult } from '../../src/services/backup/verify.js';
import { runCli, sandboxFlags } from '../helpers/cli.js';
import { parseJson, removeDir, tempDir } from './helpers.js';

let sb: Sandbox;
let work: string;

beforeAll(async () => {
  work = await tempDir();
  sb = await startSandbox({ users: 20, mediaMb: 1, podStartDelayMs: 150, podStopDelayMs: 150 });
});

afterAll(async () => {
  await sb?.stop();
  await removeDir(work);
});

async function cli<T>(args: string[]): Promise<{ code: number | null; stderr: string; json: T }> {
  const run = await runCli([...args, '--json', ...sandboxFlags(sb)]);
  return { code: run.code, stderr: run.stderr, json: parseJson<T>(run.stdout) };
}

describe('backup tools on archives made by ess backup (sandbox, exec v5)', () => {
  it('Given a full and an incremental backup, when listed, verified with a restore test and pruned, then the chain is intact and kept', async () => {
    const out = join(work, 'backups');
    const full = await cli<{ name: string }>(['backup', '-o', out]);
    expect(full.code, full.stderr).toBe(0);
    // A new local media file, so the incremental backup stores something of its own.
    const mediaDir = join(sb.volumeDir(sb.namespace, sb.layout.mediaClaim), 'media_store', 'local_content', 'zz', 'kk');
    await mkdir(mediaDir, { recursive: true });
    await writeFile(join(mediaDir, 'newfile'), 'fresh media bytes');
    await new Promise((resolve) => setTimeout(resolve, 1100)); // archive names carry the time to the second
    const incr = await cli<{ name: string; parent?: string }>(['backup', '-o', out, '--incremental']);
    expect(incr.code, incr.stderr).toBe(0);

    const list = await cli<ListBackupsResult>(['backup', 'list', '-o', out]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.json.backups.map((b) => b.name)).toEqual([incr.json.name, full.json.name]);
    expect(list.json.backups[0]).toMatchObject({ incremental: true, parent: full.json.name, parentPresent: true });
    expect(list.json.backups[0]!.server).toBe(list.json.backups[1]!.server);

    const verify = await cli<VerifyResult>(['backup', 'verify', join(out, incr.json.name), '--restore-test']);
    expect(verify.code, verify.stderr).toBe(0);
    expect(verify.json).toMatchObject({ ok: true, parents: [{ name: full.json.name, present: true }] });
    expect(verify.json.backup!.incremental).toBe(true);
    for (const db of verify.json.databases) {
      expect(db.restored, db.database).toBe(true);
      expect(db.rows!.compared, db.database).toBeGreaterThan(0);
      expect(db.rows!.mismatches, db.database).toEqual([]);
    }
    const client = new pg.Client({ connectionString: sb.postgres.url });
    await client.connect();
    const left = await client.query(`SELECT datname FROM pg_database WHERE datname LIKE 'ess\\_verify\\_%'`);
    await client.end();
    expect(left.rows).toEqual([]);

    const prune = await cli<PruneResult>(['backup', 'prune', '-o', out, '--keep-last', '1', '--yes']);
    expect(prune.code, prune.stderr).toBe(0);
    expect(prune.json.deleted).toEqual([]);
    expect(prune.json.kept.map((k) => [k.name, k.reasons])).toEqual([
      [incr.json.name, expect.arrayContaining(['newest', 'keep-last'])],
      [full.json.name, ['parent-of-kept']],
    ]);
  });
});
