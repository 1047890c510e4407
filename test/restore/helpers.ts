/**
 * Test helpers for `ess restore`: archives built from a live sandbox with the archive library and REAL pg_dump /
 * pg_dumpall output from the sandbox's PostgreSQL (the host's tools of the same major), snapshots of the database
 * (per-table md5 of every row, computed in SQL), the media volume (SHA-256 per file) and Secrets, and archive
 * damage (truncation, one flipped byte inside a dump member).
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { Readable } from 'node:stream';
import YAML from 'yaml';
import { configMapMember, databaseMember, MEMBERS, mediaMember, secretMember } from '../../src/lib/archive/layout.js';
import type { ManifestDatabase, ManifestInput } from '../../src/lib/archive/manifest.js';
import { emptyMediaSummary, encodeMediaIndex, type MediaIndexEntry } from '../../src/lib/archive/media-index.js';
import { formatArchiveName } from '../../src/lib/archive/naming.js';
import { Spool, type SpooledFile } from '../../src/lib/archive/spool.js';
import { writeArchive } from '../../src/lib/archive/transfer.js';
import { COUNT_ROWS_SQL } from '../../src/lib/postgres/throwaway.js';
import { LocalDirStore } from '../../src/lib/storage/local-dir.js';
import type { Sandbox } from '../../src/sandbox/index.js';
import type { KubeObject } from '../../src/sandbox/types.js';

export const DATABASES = [
  { name: 'synapse', component: 'synapse' as const },
  { name: 'matrixauthenticationservice', component: 'mas' as const },
];
export const OTK = 'public.e2e_one_time_keys_json';

/** A connection URL of one database of the sandbox's server. */
export function dbUrl(sb: Sandbox, database: string): string {
  return sb.postgres.url.replace(/\/postgres$/, `/${database}`);
}

/** Runs SQL with the host's psql against the sandbox server; rows as tab-separated fields. */
export function psql(sb: Sandbox, database: string, sql: string): string[][] {
  const out = execFileSync(
    join(sb.postgres.binDir, 'psql'),
    ['-X', '-A', '-t', '-F', '\t', '-v', 'ON_ERROR_STOP=1', '-d', dbUrl(sb, database), '-c', sql],
    { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
  );
  return out
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => l.split('\t'));
}

/** Per table (`schema.table`): md5 over every row (sorted by its text form), computed in SQL. */
export function tableChecksums(sb: Sandbox, database: string): Map<string, string> {
  const sql = `SELECT n.nspname || '.' || c.relname,
    (xpath('/row/h/text()', query_to_xml(format('SELECT md5(coalesce(string_agg(x::text, ''|'' ORDER BY x::text), '''')) AS h FROM %I.%I x', n.nspname, c.relname), false, true, '')))[1]::text
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r','p') AND n.nspname NOT IN ('information_schema') AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1`;
  return new Map(psql(sb, database, sql).map(([t, h]) => [t as string, h ?? '']));
}

/** Exact row counts per table. */
export function rowCounts(sb: Sandbox, database: string): Map<string, number> {
  return new Map(psql(sb, database, COUNT_ROWS_SQL.replace(/\n/g, ' ')).map(([t, n]) => [t as string, Number(n)]));
}

/** Host directory of the media store. */
export function mediaStore(sb: Sandbox): string {
  return join(sb.volumeDir(sb.namespace, sb.layout.mediaClaim), 'media_store');
}

/** Every file under `root`: relative path → {sha256, size, mtime, uid}. */
export function mediaSnapshot(root: string): Map<string, { sha256: string; size: number; mtime: number; uid: number }> {
  const out = new Map<string, { sha256: string; size: number; mtime: number; uid: number }>();
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.isFile()) {
        const st = statSync(full);
        out.set(relative(root, full), {
          sha256: createHash('sha256').update(readFileSync(full)).digest('hex'),
          size: st.size,
          mtime: Math.floor(st.mtimeMs / 1000),
          uid: st.uid,
        });
      }
    }
  };
  walk(root);
  return out;
}

function storeObject(sb: Sandbox, kind: string, name: string): KubeObject | undefined {
  return sb.store.get(sb.store.resourceByKind(kind), sb.namespace, name);
}

/** Secret data as stored by the API (base64 per key). */
export function secretData(sb: Sandbox, name: string, namespace = sb.namespace): Record<string, string> | undefined {
  const o = sb.store.get(sb.store.resourceByKind('Secret'), namespace, name);
  return o ? ((o as unknown as { data?: Record<string, string> }).data ?? {}) : undefined;
}

/** Workload replica counts and ess annotations. */
export function workloadState(sb: Sandbox): Record<string, { replicas: number; annotations: string[] }> {
  const out: Record<string, { replicas: number; annotations: string[] }> = {};
  for (const kind of ['StatefulSet', 'Deployment']) {
    for (const o of sb.store.list(sb.store.resourceByKind(kind), sb.namespace)) {
      out[`${kind}/${o.metadata.name}`] = {
        replicas: (o.spec as { replicas?: number }).replicas ?? 1,
        annotations: Object.keys(o.metadata.annotations ?? {}).filter((k) => k.startsWith('ess.element.io/')),
      };
    }
  }
  return out;
}

/** A Kubernetes object as a backup stores it (what `kubectl get -o yaml` shows, minus server fields). */
function objectYaml(o: KubeObject): Buffer {
  const { name, labels, annotations } = o.metadata;
  const rest = o as unknown as Record<string, unknown>;
  const doc: Record<string, unknown> = {
    apiVersion: 'v1',
    kind: o.kind,
    metadata: { name, ...(labels ? { labels } : {}), ...(annotations ? { annotations } : {}) },
  };
  for (const key of ['type', 'data', 'binaryData']) if (rest[key] !== undefined) doc[key] = rest[key];
  return Buffer.from(YAML.stringify(doc));
}

function spawnOut(cmd: string, args: string[]): Readable {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const out = child.stdout;
  child.on('close', (code) => {
    if (code !== 0) out.destroy(new Error(`${cmd} exited ${code}`));
  });
  return out;
}

export const TEST_VALUES = Buffer.from('serverName: ess.localhost\nsynapse:\n  replicas: 1\n# restored by ess\n');

/** Options of {@link buildArchive}. */
export interface BuildOptions {
  createdAt: Date;
  /** Override the server name written to the manifest. */
  serverName?: string;
  passphrase?: string;
  recipients?: string[];
  /** Incremental: media already in this parent (same path and size) are not stored. */
  parent?: { name: string; index: MediaIndexEntry[] };
  /** Media files to leave out (a store without them). */
  skipMedia?: (path: string) => boolean;
}

/** What {@link buildArchive} wrote. */
export interface BuiltArchive {
  name: string;
  path: string;
  index: MediaIndexEntry[];
  /** Media files stored in this archive. */
  stored: string[];
}

/** Builds a backup archive of the sandbox's current state into `dir` (see the module comment). */
export async function buildArchive(sb: Sandbox, dir: string, options: BuildOptions): Promise<BuiltArchive> {
  const spool = await Spool.create({ parentDir: dir });
  try {
    const bin = (tool: string) => join(sb.postgres.binDir, tool);
    const serverName = options.serverName ?? sb.seed.serverName;
    const root = mediaStore(sb);
    const files = [...mediaSnapshot(root).entries()]
      .filter(([path]) => !options.skipMedia?.(path))
      .sort(([a], [b]) => a.localeCompare(b));
    const parentIndex = new Map((options.parent?.index ?? []).map((e) => [e.path, e]));
    const index: MediaIndexEntry[] = files.map(([path, f]) => {
      const before = parentIndex.get(path);
      const archive = before && before.size === f.size ? (before.archive ?? options.parent?.name) : undefined;
      return { path, size: f.size, mtime: f.mtime, archive };
    });
    const summary = emptyMediaSummary();
    const spooled: SpooledFile[] = [];
    spooled.push(await spool.add(MEMBERS.mediaIndex, Readable.from(encodeMediaIndex(index, summary))));
    spooled.push(
      await spool.add(MEMBERS.postgresGlobals, spawnOut(bin('pg_dumpall'), ['-d', sb.postgres.url, '--globals-only'])),
    );
    const databases: ManifestDatabase[] = [];
    for (const db of DATABASES) {
      const args = ['-d', dbUrl(sb, db.name), '-Fc', '-Z6'];
      if (db.component === 'synapse') args.push('--exclude-table-data=e2e_one_time_keys_json');
      spooled.push(await spool.add(databaseMember(db.name), spawnOut(bin('pg_dump'), args)));
      const [[size] = ['0']] = psql(sb, db.name, 'SELECT pg_database_size(current_database())');
      databases.push({
        name: db.name,
        component: db.component,
        member: databaseMember(db.name),
        sizeBytes: Number(size),
        tables: [...rowCounts(sb, db.name)].map(([name, rows]) => ({ name, rows })),
        rowCounts: 'exact',
        ...(db.component === 'synapse' ? { excludedTableData: [OTK] } : {}),
      });
    }
    const secret = storeObject(sb, 'Secret', `${sb.release}-generated`);
    const markers = storeObject(sb, 'ConfigMap', `${sb.release}-markers`);
    if (secret) spooled.push(await spool.add(secretMember(secret.metadata.name), objectYaml(secret)));
    if (markers) spooled.push(await spool.add(configMapMember(markers.metadata.name), objectYaml(markers)));
    spooled.push(await spool.add(MEMBERS.helmValues, TEST_VALUES));
    spooled.push(
      await spool.add(
        MEMBERS.helmRelease,
        Buffer.from(JSON.stringify({ chart: 'matrix-stack', version: '26.8.1', revision: 3 })),
      ),
    );
    const [[schema] = ['0']] = psql(sb, 'synapse', 'SELECT version FROM schema_version');
    const input: ManifestInput = {
      createdAt: options.createdAt.toISOString(),
      ess: { version: '0.1.0-test' },
      deployment: {
        serverName,
        namespace: sb.namespace,
        release: sb.release,
        chartVersion: '26.8.1',
        flavour: 'matrix-stack',
      },
      postgres: { serverVersion: sb.postgres.version, globals: MEMBERS.postgresGlobals, databases },
      synapse: { version: '1.157.1', schemaVersion: Number(schema), schemaCompatVersion: sb.seed.schemaCompatVersion },
      media: {
        storePath: '/media/media_store',
        index: MEMBERS.mediaIndex,
        ...summary,
        incremental: options.parent !== undefined,
        ...(options.parent ? { parent: options.parent.name } : {}),
      },
    };
    const encrypted = options.passphrase !== undefined || (options.recipients?.length ?? 0) > 0;
    const name = formatArchiveName({
      serverName,
      createdAt: options.createdAt,
      encrypted,
      parentCreatedAt: options.parent ? new Date(options.createdAt.getTime() - 3600_000) : undefined,
    });
    const stored = index.filter((e) => e.archive === undefined).map((e) => e.path);
    await writeArchive(
      new LocalDirStore(dir),
      {
        name,
        encryption: encrypted
          ? { passphrase: options.passphrase, recipients: options.recipients, scryptWorkFactor: 10 }
          : undefined,
      },
      async (writer) => {
        await writer.writeManifest(input, spooled);
        for (const file of spooled) await writer.addFile(file);
        for (const path of stored) {
          const full = join(root, path);
          const st = statSync(full);
          await writer.addMember({ name: mediaMember(path), size: st.size, mtime: st.mtime }, createReadStream(full));
        }
      },
    );
    return { name, path: join(dir, name), index, stored };
  } finally {
    await spool.cleanup();
  }
}

/** Scans a plain tar for a member and returns the offset of its data. */
export function memberDataOffset(archive: Buffer, member: string): { offset: number; size: number } {
  let pos = 0;
  while (pos + 512 <= archive.length) {
    const header = archive.subarray(pos, pos + 512);
    if (header.every((b) => b === 0)) break;
    const name = header.subarray(0, 100).toString('utf8').replace(/\0.*$/s, '');
    const prefix = header.subarray(345, 500).toString('utf8').replace(/\0.*$/s, '');
    const size = Number.parseInt(header.subarray(124, 136).toString('latin1').replace(/\0.*$/s, '').trim(), 8);
    const full = prefix ? `${prefix}/${name}` : name;
    if (full === member) return { offset: pos + 512, size };
    pos += 512 + Math.ceil(size / 512) * 512;
  }
  throw new Error(`member ${member} not found`);
}

/** Writes a copy of `source` with one byte inside `member`'s data flipped. */
export function flipByteIn(source: string, target: string, member: string): void {
  const data = readFileSync(source);
  const { offset, size } = memberDataOffset(data, member);
  data[offset + Math.floor(size / 2)]! ^= 0x01;
  writeFileSync(target, data);
}

/** Writes the first `fraction` of `source` to `target`. */
export function truncateFile(source: string, target: string, fraction: number): void {
  const data = readFileSync(source);
  writeFileSync(target, data.subarray(0, Math.floor(data.length * fraction)));
}
