/**
 * The `ess migrate export` bundle. It is an ess archive in the backup format (src/lib/archive, docs/backup-format.md):
 * `manifest.json` first with the size and SHA-256 of every declared member, the members, and the
 * `checksums.sha256` trailer covering everything including the streamed media files. Written and verified with the
 * archive library's writer and reader, so both commands share one format and one set of checks.
 *
 * What makes it an export rather than a backup: the manifest's deployment is the placeholder
 * {@link SELF_HOSTED} (there is no Kubernetes namespace or release on the old host) and it carries a
 * `migrateExport` block (source facts, identity members, media summary). Members:
 *
 * ```
 * manifest.json
 * postgres/synapse.dump        pg_dump -Fc -O of the old database
 * identity/signing.key         the signing key file (signing_key_path)
 * identity/secrets.json        macaroon_secret_key, registration_shared_secret, form_secret
 * media/<path>                 the media store, relative paths as on disk
 * checksums.sha256
 * ```
 *
 * For the import, the verified bundle is then indexed (tar-index.ts) so the dump is read in place and media files
 * are streamed one by one: nothing is extracted to local disk.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { databaseMember, mediaMember } from '../archive/layout.js';
import type { BackupManifest, ManifestInput, TableRows } from '../archive/manifest.js';
import { readArchive } from '../archive/reader.js';
import { ArchiveWriter, type DeclaredMember } from '../archive/writer.js';
import { EssError, isEssError, PreconditionError } from '../errors.js';
import { sha256Of } from './hash.js';
import type { MediaFile } from './media.js';
import { indexTar, normaliseMemberName, TarFormatError, type TarMember } from './tar-index.js';

/** Member names of the bundle (the single source; the dump's name follows the archive layout). */
export const BUNDLE = {
  dump: databaseMember('synapse'),
  signingKey: 'identity/signing.key',
  secrets: 'identity/secrets.json',
  mediaPrefix: 'media/',
} as const;

/** The export's own format version (inside the archive format version). */
export const EXPORT_FORMAT_VERSION = 1;

/** Placeholder namespace and release of an export: it comes from a self-hosted Synapse, not from Kubernetes. */
export const SELF_HOSTED = 'self-hosted';

/** The `migrateExport` block of the manifest. */
export interface ExportInfo {
  formatVersion: number;
  source: {
    database: string;
    postgresVersion?: string;
    pgDumpVersion?: string;
    dumpCommand: string;
    users?: number;
    /** The old server let users log in with Synapse's own passwords. */
    passwordLogin?: boolean;
    sso?: string[];
    pepper: boolean;
  };
  identity: { signingKey?: string; signingKeyId?: string; secrets?: string; secretNames: string[] };
  media: {
    prefix: string;
    files: number;
    bytes: number;
    /** Cache folders left out (Synapse refetches them on demand). */
    excluded: string[];
    excludedFiles: number;
    excludedBytes: number;
  };
}

/** manifest.json of an export bundle. */
export type BundleManifest = BackupManifest & { migrateExport: ExportInfo };

/** Is this the manifest of an `ess migrate export` bundle (imported with `ess migrate import`, never restored)? */
export function isMigrateBundle(manifest: BackupManifest): manifest is BundleManifest {
  return (manifest as { migrateExport?: unknown }).migrateExport !== undefined;
}

export interface BundleWriteInput {
  createdAt: Date;
  essVersion: string;
  serverName: string;
  database: {
    name: string;
    sizeBytes: number;
    serverVersion?: string;
    tables: TableRows[];
    excludedTableData: string[];
  };
  schema: { version?: number; compatVersion?: number };
  warnings: string[];
  exportInfo: ExportInfo;
  /** The spooled dump. */
  dump: { path: string; size: number; sha256: string };
  /** Small members held in memory (identity files). */
  files: { name: string; data: Buffer }[];
  media: readonly MediaFile[];
}

/**
 * Writes the bundle to `output` (via `output.partial`, renamed when complete; mode 0600, it holds secrets) with the
 * archive writer: one pass, media streamed straight from the media store.
 */
export async function writeBundle(
  output: string,
  input: BundleWriteInput,
  onBytes?: (done: number, total: number) => void,
): Promise<{ bytes: number; manifest: BundleManifest }> {
  const writer = new ArchiveWriter({ mtime: input.createdAt });
  const partial = `${output}.partial`;
  const sink = pipeline(writer.output, createWriteStream(partial, { mode: 0o600 }));
  sink.catch(() => undefined);
  const total =
    input.dump.size + input.files.reduce((n, f) => n + f.data.length, 0) + input.media.reduce((n, f) => n + f.size, 0);
  let done = 0;
  const counted = (stream: Readable) => {
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        done += chunk.length;
        onBytes?.(done, total);
        cb(null, chunk);
      },
    });
    stream.on('error', (error) => counter.destroy(error));
    return stream.pipe(counter);
  };
  try {
    const declared: DeclaredMember[] = [
      { name: BUNDLE.dump, size: input.dump.size, sha256: input.dump.sha256 },
      ...(await Promise.all(
        input.files.map(async (f) => ({
          name: f.name,
          size: f.data.length,
          sha256: await sha256Of(Readable.from([f.data])),
        })),
      )),
    ];
    const manifestInput: ManifestInput & { migrateExport: ExportInfo } = {
      createdAt: input.createdAt.toISOString(),
      ess: { version: input.essVersion },
      deployment: { serverName: input.serverName, namespace: SELF_HOSTED, release: SELF_HOSTED },
      postgres: {
        serverVersion: input.database.serverVersion,
        databases: [
          {
            name: input.database.name,
            component: 'synapse',
            member: BUNDLE.dump,
            sizeBytes: input.database.sizeBytes,
            tables: input.database.tables,
            rowCounts: 'estimate',
            excludedTableData: input.database.excludedTableData,
          },
        ],
      },
      synapse: { schemaVersion: input.schema.version, schemaCompatVersion: input.schema.compatVersion },
      warnings: input.warnings,
      migrateExport: input.exportInfo,
    };
    const manifest = (await writer.writeManifest(manifestInput, declared)) as BundleManifest;
    await writer.addMember(
      { name: BUNDLE.dump, size: input.dump.size },
      counted(createReadStream(input.dump.path, { highWaterMark: 1024 * 1024 })),
    );
    for (const f of input.files)
      await writer.addMember({ name: f.name, size: f.data.length }, counted(Readable.from([f.data])));
    for (const file of input.media) {
      await writer.addMember(
        { name: mediaMember(file.path), size: file.size, mtime: new Date(file.mtime * 1000) },
        counted(file.open()),
      );
    }
    const summary = await writer.finish();
    await sink;
    await rename(partial, output);
    return { bytes: summary.archiveBytes, manifest };
  } catch (error) {
    writer.abort(error as Error);
    await sink.catch(() => undefined);
    await rm(partial, { force: true });
    throw error;
  }
}

/** An export bundle opened for import: its manifest and where each member sits in the tar. */
export interface OpenedBundle {
  path: string;
  manifest: BundleManifest;
  members: Map<string, TarMember>;
}

function invalidBundle(path: string, why: string): PreconditionError {
  return new PreconditionError(`${path} is not a usable ess export bundle: ${why}. Nothing was changed.`, {
    code: 'BUNDLE_INVALID',
    next: ['Copy the bundle again from the old host (compare its size and sha256sum), or run ess migrate export again'],
  });
}

/**
 * Verifies a bundle completely with the archive reader (format version, manifest, every member's size and SHA-256,
 * the trailer: one full read) and indexes it for random access. Any damage is a PreconditionError: nothing has been
 * changed at that point.
 */
export async function openBundle(path: string, onBytes?: (done: number) => void): Promise<OpenedBundle> {
  let manifest: BundleManifest | undefined;
  let done = 0;
  const source = createReadStream(path, { highWaterMark: 1024 * 1024 });
  source.on('data', (c) => {
    done += (c as Buffer).length;
    onBytes?.(done);
  });
  try {
    await readArchive(source, {
      onManifest: (m) => {
        const candidate = m as BundleManifest;
        if (!candidate.migrateExport) {
          throw new PreconditionError(`${path} is an ess backup, not an export bundle.`, {
            code: 'NOT_AN_EXPORT',
            next: [
              'Restore backups of an ESS deployment with ess restore',
              'Import bundles written by ess migrate export',
            ],
          });
        }
        if (candidate.migrateExport.formatVersion > EXPORT_FORMAT_VERSION) {
          throw new PreconditionError(
            `${path} has export format ${candidate.migrateExport.formatVersion}; this ess reads ${EXPORT_FORMAT_VERSION}.`,
            { code: 'BUNDLE_TOO_NEW', next: ['Upgrade ess to the version that wrote the bundle'] },
          );
        }
        manifest = candidate;
      },
    });
  } catch (error) {
    // The archive reader's verdicts (damaged, truncated, not an archive) become this command's; a newer archive
    // format and our own refusals above pass through.
    if (isEssError(error) && error.code.startsWith('ARCHIVE_') && error.code !== 'ARCHIVE_FORMAT_TOO_NEW') {
      throw invalidBundle(path, error.message.replace(/^The backup archive /, 'the archive ').replace(/\.$/, ''));
    }
    throw error;
  }
  if (!manifest) throw invalidBundle(path, 'no manifest');
  let members: TarMember[];
  try {
    members = await indexTar(path);
  } catch (error) {
    if (error instanceof TarFormatError) throw invalidBundle(path, error.message);
    throw error;
  }
  const byName = new Map<string, TarMember>();
  for (const m of members) if (m.type === 'file') byName.set(normaliseMemberName(m.name), m);
  if (!byName.has(BUNDLE.dump)) throw invalidBundle(path, `it has no ${BUNDLE.dump}`);
  return { path, manifest, members: byName };
}

/** Reads a small member (identity files) into memory; undefined when absent. */
export async function readSmallMember(bundle: OpenedBundle, name: string): Promise<Buffer | undefined> {
  const member = bundle.members.get(name);
  if (!member) return undefined;
  if (member.size > 1024 * 1024) throw new EssError(`bundle member ${name} is unexpectedly large`);
  if (member.size === 0) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  for await (const c of createReadStream(bundle.path, { start: member.offset, end: member.offset + member.size - 1 })) {
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}
