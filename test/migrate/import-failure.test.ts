/**
 * A stream cut in the middle of the restore: Synapse and MAS end up scaled back, the error says the ESS database
 * is incomplete and how to retry, the lock is released; the retry then succeeds.
 *
 * The cut is made in-process (the import service runs here, against the real sandbox API server, exec and
 * PostgreSQL): the client's stdin stream of the pg_restore exec fails after 64 KiB, so the exec client tears down
 * the WebSocket mid-stream, as a dropped connection would. The sandbox's exec faults only cut stdout, which a
 * restore does not produce. The retry runs the built CLI (`npm run build` first).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Transform } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EssError } from '../../src/lib/errors.js';
import type { KubeClient } from '../../src/lib/kube/client.js';
import { connectKube } from '../../src/lib/kube/load.js';
import { silentReporter } from '../../src/lib/output/log.js';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import { importSynapse } from '../../src/services/migrate/import.js';
import { runCli, sandboxFlags } from '../helpers/cli.js';
import { clusterState, copyDatabase, dumpDatabase, fingerprint, sql } from './helpers.js';

/**
 * Wraps a client so that the stdin of the first exec running `pg_restore` with stdin (a data stream of the parallel
 * restore) fails after `cutAfter` bytes.
 */
function cuttingClient(kube: KubeClient, cutAfter: number): KubeClient & { cuts: number } {
  const wrapped = Object.create(kube) as KubeClient & { cuts: number };
  wrapped.cuts = 0;
  wrapped.exec = (target, argv, io) => {
    if (!io?.stdin || wrapped.cuts > 0 || !argv.some((a) => a.includes('pg_restore')))
      return kube.exec(target, argv, io);
    wrapped.cuts++;
    let sent = 0;
    const cut = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        sent += chunk.length;
        if (sent > cutAfter) return cb(new Error('connection reset by peer (test)'));
        cb(null, chunk);
      },
    });
    // The exec client consumes it with for-await and sees the error; this listener only keeps Node from also
    // reporting it as unhandled after the consumer has let go.
    cut.on('error', () => {});
    io.stdin.pipe(cut);
    return kube.exec(target, argv, { ...io, stdin: cut });
  };
  return wrapped;
}

describe('ess migrate import when the restore stream is cut', () => {
  let sandbox: Sandbox;
  let dir: string;
  let dump: string;

  beforeAll(async () => {
    sandbox = await startSandbox({ users: 60, mediaMb: 1 });
    dir = mkdtempSync(path.join(os.tmpdir(), 'ess-migrate-cut-'));
    await copyDatabase(sandbox, 'old');
    await sql(sandbox, 'old', "INSERT INTO users (name) VALUES ('@marker:ess.localhost')");
    dump = path.join(dir, 'synapse.dump');
    dumpDatabase(sandbox, 'old', dump);
  });

  afterAll(async () => {
    await sandbox?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('scales Synapse back, says the database is incomplete and how to retry; the retry succeeds', async () => {
    const before = clusterState(sandbox);
    const kube = cuttingClient(await connectKube({ kubeconfig: sandbox.kubeconfigPath }), 64 * 1024);
    const attempt = importSynapse(
      {
        namespace: sandbox.namespace,
        release: sandbox.release,
        file: dump,
        updateGeneratedSecret: false,
        noMedia: true,
        includeMediaCaches: false,
        jobs: 2,
        method: 'parallel',
        dryRun: false,
        yes: true,
      },
      { kube: async () => kube, reporter: silentReporter },
    );
    const error = await attempt.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(kube.cuts).toBe(1);
    expect(error).toBeInstanceOf(EssError);
    const ess = error as EssError;
    expect(ess.code).toBe('IMPORT_INCOMPLETE');
    expect(ess.exitCode).toBe(1);
    expect(ess.message).toMatch(/while loading the data/);
    expect(ess.message).toMatch(/database is now INCOMPLETE/);
    expect(ess.next.join('\n')).toMatch(/ess migrate import .*synapse\.dump .*--yes/);
    // Scaled back: the same replicas as before, no leftover records, no lock.
    expect(clusterState(sandbox)).toEqual(before);
    // And the database really is incomplete: the schema is there, but no index was built (post-data never ran).
    const indexes = await sql<{ n: string }>(
      sandbox,
      'synapse',
      "SELECT count(*) AS n FROM pg_indexes WHERE schemaname = 'public'",
    );
    expect(Number(indexes[0]?.n)).toBe(0);
    const tables = await sql<{ n: string }>(
      sandbox,
      'synapse',
      "SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public'",
    );
    expect(Number(tables[0]?.n)).toBeGreaterThan(10);

    const retry = await runCli(['migrate', 'import', dump, ...sandboxFlags(sandbox), '--yes', '--json', '--no-media'], {
      timeoutMs: 110_000,
    });
    expect([0, 3], retry.stderr).toContain(retry.code);
    const imported = await fingerprint(sandbox, 'synapse');
    const expected = await fingerprint(sandbox, 'old');
    delete imported.e2e_one_time_keys_json;
    delete expected.e2e_one_time_keys_json;
    expect(imported).toEqual(expected);
    expect(clusterState(sandbox)).toEqual(before);
  });
});
