/**
 * The local half of the import preflight: what file the user gave, whether it is intact, and what the dump inside
 * says (server name, schema, counts); plus the identity and media that go with it. Touches nothing in the cluster.
 */
import { open, stat } from 'node:fs/promises';
import { PreconditionError } from '../../lib/errors.js';
import { BUNDLE, type OpenedBundle, openBundle, readSmallMember } from '../../lib/migrate/bundle.js';
import { type DumpFacts, readDumpFacts } from '../../lib/migrate/dump-facts.js';
import { type InputKind, sniffInput } from '../../lib/migrate/file-kind.js';
import { type IdentitySecrets, readHomeserverConfig, sqliteRefusal } from '../../lib/migrate/homeserver.js';
import { listMediaDir, listMediaTar, listMediaTarFile, type MediaListing } from '../../lib/migrate/media.js';
import {
  DumpFormatError,
  type DumpToc,
  type FileRange,
  readDumpToc,
  verifyDataBlocks,
} from '../../lib/migrate/pgdump.js';
import { parseSigningKey, readSigningKey, type SigningKey } from '../../lib/migrate/signing-key.js';
import { TarFormatError } from '../../lib/migrate/tar-index.js';
import type { Reporter } from '../../lib/output/log.js';

/** The input of an import, checked: an intact custom-format Synapse dump, alone or inside an export bundle. */
export interface ImportSource {
  path: string;
  kind: 'dump' | 'bundle';
  fileBytes: number;
  dump: FileRange;
  toc: DumpToc;
  facts: DumpFacts;
  bundle?: OpenedBundle;
}

const REDUMP = 'On the old host: pg_dump -Fc -O -d synapse -f synapse.dump (or use ess migrate export)';

function refuseKind(path: string, kind: InputKind): PreconditionError {
  const reasons: Partial<Record<InputKind, [string, string[]]>> = {
    'plain-sql': [
      'is a plain SQL dump; ess imports PostgreSQL custom-format dumps (pg_dump -Fc), which it can check and filter before anything is erased',
      [REDUMP],
    ],
    'pg-tar': ['is a tar-format dump (pg_dump -Ft); ess imports the custom format (-Fc)', [REDUMP]],
    gzip: [
      'is gzip-compressed; a custom-format dump is compressed already',
      ['Decompress it first: gunzip -k FILE', REDUMP],
    ],
    zstd: ['is zstd-compressed', ['Decompress it first: zstd -d FILE', REDUMP]],
    tar: ['is a tar file but not an ess export bundle (its first member is not manifest.json)', [REDUMP]],
    empty: ['is empty', [REDUMP]],
    unknown: ['is not a PostgreSQL custom-format dump (it does not start with PGDMP)', [REDUMP]],
  };
  if (kind === 'sqlite') return sqliteRefusal(path);
  const [why, next] = reasons[kind] ?? reasons.unknown ?? ['is not usable', []];
  return new PreconditionError(`${path} ${why}. Nothing was changed.`, { code: 'INPUT_NOT_A_DUMP', next });
}

/** "no such file" rather than a raw "ENOENT: no such file or directory, open '…'". */
function fileProblem(error: unknown): string {
  const { code, message } = error as NodeJS.ErrnoException;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES') return 'permission denied';
  if (code === 'EISDIR') return 'it is a directory';
  return message;
}

/** Reads a file named by a flag; one that cannot be opened is a PreconditionError that names the flag. */
async function fromFlag<T>(flag: string, what: string, path: string, read: () => Promise<T>): Promise<T> {
  try {
    await (await open(path, 'r')).close();
  } catch (error) {
    throw new PreconditionError(`Cannot read ${what} ${path} (${flag}): ${fileProblem(error)}. Nothing was changed.`, {
      code: flag === '--signing-key' ? 'SIGNING_KEY_UNREADABLE' : 'CONFIG_UNREADABLE',
      next: [`Pass the path of ${what} with ${flag}`, `Or leave ${flag} out (then the bundle's, if any, is used)`],
    });
  }
  return read();
}

function dumpProblem(path: string, error: DumpFormatError | TarFormatError): PreconditionError {
  if (error instanceof TarFormatError || error.reason === 'truncated') {
    return new PreconditionError(`${path} is truncated: ${error.message}. Nothing was changed.`, {
      code: 'DUMP_TRUNCATED',
      next: ['Copy the file again (compare sizes or sha256sum on both hosts)', REDUMP],
    });
  }
  if (error.reason === 'unsupported') {
    return new PreconditionError(`${path} cannot be read: ${error.message}. Nothing was changed.`, {
      code: 'DUMP_UNSUPPORTED',
      next: ['Dump again with gzip compression: pg_dump -Fc -Z 6 -O … (PostgreSQL 16+: --compress=gzip)'],
    });
  }
  if (error.reason === 'corrupt') {
    return new PreconditionError(`${path} is damaged: ${error.message}. Nothing was changed.`, {
      code: 'DUMP_CORRUPT',
      next: ['Copy the file again (compare sizes or sha256sum on both hosts)', REDUMP],
    });
  }
  return new PreconditionError(`${path} is not a valid custom-format dump: ${error.message}. Nothing was changed.`, {
    code: 'INPUT_NOT_A_DUMP',
    next: [REDUMP],
  });
}

/**
 * Opens and checks the input: recognises the file, verifies a bundle's checksums, reads the dump's TOC, checks
 * that every data block is present, and reads the Synapse facts. Any problem is a PreconditionError.
 */
export async function openImportSource(path: string, reporter: Reporter): Promise<ImportSource> {
  let sniffed: Awaited<ReturnType<typeof sniffInput>>;
  try {
    sniffed = await sniffInput(path);
  } catch (error) {
    throw new PreconditionError(`Cannot read ${path}: ${fileProblem(error)}. Nothing was changed.`, {
      code: 'INPUT_UNREADABLE',
      next: ['Check the path of the dump or bundle given as the first argument of ess migrate import', REDUMP],
    });
  }
  let dump: FileRange;
  let bundle: OpenedBundle | undefined;
  if (sniffed.kind === 'pg-custom') {
    dump = { path, start: 0, length: sniffed.size };
  } else if (sniffed.kind === 'bundle') {
    reporter.info(`Verifying the checksums of ${path}…`);
    bundle = await openBundle(path, (done) => reporter.progress('Verifying the bundle', done, sniffed.size));
    const member = bundle.members.get(BUNDLE.dump);
    if (!member) throw new PreconditionError(`${path} has no ${BUNDLE.dump}.`, { code: 'BUNDLE_INVALID' });
    dump = { path, start: member.offset, length: member.size };
  } else {
    throw refuseKind(path, sniffed.kind);
  }
  try {
    const toc = await readDumpToc(dump);
    // A bundle's dump was just checked against its SHA-256; a bare dump is read and decompressed in full, so that
    // damaged bytes anywhere are found here and not by pg_restore after the ESS database was erased.
    if (bundle) await verifyDataBlocks(dump, toc);
    else {
      reporter.info(`Reading every data block of ${path}…`);
      await verifyDataBlocks(dump, toc, {
        inflate: true,
        onProgress: (done, total) => reporter.progress('Checking the dump', done, total),
      });
    }
    const facts = await readDumpFacts(dump, toc);
    if (!facts.schema || !facts.users) {
      throw new PreconditionError(
        `${path} is a PostgreSQL dump but not of a Synapse database (no ${facts.schema ? 'users' : 'schema_version'} table). Nothing was changed.`,
        { code: 'NOT_SYNAPSE', next: ['Dump the database named in database.args of the old homeserver.yaml'] },
      );
    }
    return { path, kind: bundle ? 'bundle' : 'dump', fileBytes: sniffed.size, dump, toc, facts, bundle };
  } catch (error) {
    if (error instanceof DumpFormatError || error instanceof TarFormatError) throw dumpProblem(path, error);
    throw error;
  }
}

/** Identity that goes with the import: from flags, else from the bundle. */
export interface ImportIdentity {
  signingKey?: SigningKey;
  secrets: IdentitySecrets;
  /** Where each part came from, for the report. */
  sources: string[];
  /** The old server's login setup, when known (bundle manifest or homeserver.yaml). */
  passwordLogin?: boolean;
  sso?: string[];
  delegatedToMas?: boolean;
  pepper?: boolean;
}

/** Collects the signing key and secrets: `--signing-key` and `--homeserver-config` override the bundle. */
export async function collectIdentity(
  options: { signingKey?: string; homeserverConfig?: string },
  bundle: OpenedBundle | undefined,
): Promise<{ identity: ImportIdentity; warnings: string[] }> {
  const warnings: string[] = [];
  const identity: ImportIdentity = { secrets: {}, sources: [] };
  const info = bundle?.manifest.migrateExport;
  if (bundle) {
    const key = await readSmallMember(bundle, BUNDLE.signingKey);
    if (key) {
      identity.signingKey = parseSigningKey(key.toString('utf8'), `${bundle.path}:${BUNDLE.signingKey}`);
      identity.sources.push(`signing key from the bundle`);
    }
    const secrets = await readSmallMember(bundle, BUNDLE.secrets);
    if (secrets) {
      const json = JSON.parse(secrets.toString('utf8')) as Record<string, string>;
      identity.secrets = {
        macaroonSecretKey: json.macaroon_secret_key,
        registrationSharedSecret: json.registration_shared_secret,
        formSecret: json.form_secret,
      };
      identity.sources.push('homeserver.yaml secrets from the bundle');
    }
    identity.passwordLogin = info?.source.passwordLogin;
    identity.sso = info?.source.sso;
    identity.pepper = info?.source.pepper;
  }
  if (options.homeserverConfig) {
    const configPath = options.homeserverConfig;
    const read = await fromFlag('--homeserver-config', 'the old homeserver.yaml', configPath, () =>
      readHomeserverConfig(configPath),
    );
    warnings.push(...read.warnings);
    const s = read.config.secrets;
    identity.secrets = {
      macaroonSecretKey: s.macaroonSecretKey ?? identity.secrets.macaroonSecretKey,
      registrationSharedSecret: s.registrationSharedSecret ?? identity.secrets.registrationSharedSecret,
      formSecret: s.formSecret ?? identity.secrets.formSecret,
    };
    identity.sources.push(`secrets from ${options.homeserverConfig}`);
    identity.passwordLogin = read.config.passwordLogin;
    identity.sso = read.config.sso;
    identity.delegatedToMas = read.config.delegatedToMas;
    identity.pepper = read.config.pepper;
    if (!options.signingKey && read.config.signingKeyPath) {
      try {
        identity.signingKey = await readSigningKey(read.config.signingKeyPath);
        identity.sources.push(`signing key from ${read.config.signingKeyPath}`);
      } catch (error) {
        warnings.push(`signing_key_path of ${options.homeserverConfig}: ${(error as Error).message}`);
      }
    }
  }
  if (options.signingKey) {
    const keyPath = options.signingKey;
    identity.signingKey = await fromFlag('--signing-key', 'the old signing key', keyPath, () =>
      readSigningKey(keyPath),
    );
    identity.sources.push(`signing key from ${options.signingKey}`);
  }
  return { identity, warnings };
}

/** The media to upload: `--media-store DIR|TAR`, else the bundle's media; undefined for none. */
export async function collectMedia(
  options: { mediaStore?: string; noMedia: boolean; includeCaches: boolean },
  bundle: OpenedBundle | undefined,
): Promise<{ listing?: MediaListing; source?: string }> {
  if (options.noMedia) return {};
  if (options.mediaStore) {
    let isDir: boolean;
    try {
      isDir = (await stat(options.mediaStore)).isDirectory();
    } catch (error) {
      throw new PreconditionError(`Cannot read the media store ${options.mediaStore}: ${(error as Error).message}`, {
        code: 'MEDIA_STORE_MISSING',
        next: ['Pass a directory or a tar of the old media_store with --media-store'],
      });
    }
    try {
      const listing = isDir
        ? await listMediaDir(options.mediaStore, { includeCaches: options.includeCaches })
        : await listMediaTarFile(options.mediaStore, { includeCaches: options.includeCaches });
      return { listing, source: options.mediaStore };
    } catch (error) {
      if (error instanceof TarFormatError) {
        throw new PreconditionError(`${options.mediaStore} is not a readable tar: ${error.message}`, {
          code: 'MEDIA_TAR_INVALID',
        });
      }
      throw error;
    }
  }
  if (bundle) {
    const members = [...bundle.members.values()];
    // The export already decided about caches: take whatever it put in.
    const listing = listMediaTar(bundle.path, members, { includeCaches: true, prefix: BUNDLE.mediaPrefix });
    return { listing, source: `${bundle.path} (${BUNDLE.mediaPrefix})` };
  }
  return {};
}
