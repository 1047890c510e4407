import { Writable } from 'node:stream';
import { ExternalToolError } from '../errors.js';
import type { KubeClient } from '../kube/client.js';

export interface PodPostgres {
  namespace: string;
  pod: string;
  container: string;
  superuser: string;
}

/** Collects a small stream into memory with a hard cap (for query results, never for dumps). */
export function collect(limitBytes = 16 * 1024 * 1024): { sink: Writable; text: () => string } {
  const chunks: Buffer[] = [];
  let size = 0;
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      size += chunk.length;
      if (size > limitBytes) return cb(new Error(`output larger than ${limitBytes} bytes`));
      chunks.push(chunk);
      cb();
    },
  });
  return { sink, text: () => Buffer.concat(chunks).toString('utf8') };
}

/**
 * Runs one SQL statement with psql inside the Postgres pod (as the superuser, no password needed there) and returns
 * the rows as arrays of strings. Meant for small results.
 */
export async function psqlInPod(
  kube: KubeClient,
  pg: PodPostgres,
  sql: string,
  database = 'postgres',
): Promise<string[][]> {
  const out = collect();
  const result = await kube.exec(
    { namespace: pg.namespace, pod: pg.pod, container: pg.container },
    ['psql', '-U', pg.superuser, '-d', database, '-X', '-A', '-t', '-F', '\t', '-v', 'ON_ERROR_STOP=1', '-c', sql],
    { stdout: out.sink },
  );
  if (result.exitCode !== 0) throw new ExternalToolError('psql', result.exitCode, result.stderrTail);
  return out
    .text()
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => line.split('\t'));
}
