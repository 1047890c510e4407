/**
 * The layout of an ess backup archive: the format version and every member name, in one place.
 * docs/backup-format.md describes the format for humans; keep both in step.
 *
 * ```
 * manifest.json                     first member: what the backup holds (see manifest.ts)
 * media-index.jsonl                 the complete media file list (when media is included)
 * postgres/globals.sql              roles (pg_dumpall --globals-only)
 * postgres/<database>.dump          one pg_dump -Fc per database
 * kubernetes/secrets/<name>.yaml    Secrets (init-secrets, generated)
 * kubernetes/configmaps/<name>.yaml ConfigMaps (deployment markers)
 * helm/values.yaml                  the release's user-supplied values
 * helm/release.json                 chart name, version, revision
 * media/<path>                      media files stored in this archive, relative to the media store
 * checksums.sha256                  last member: `sha256sum -c` list of every other member (the trailer)
 * ```
 */

/** Version of the archive format this ess writes. Readers refuse archives with a higher version. */
export const FORMAT_VERSION = 1;

/** The `kind` every manifest carries, to tell ess archives from other tar files. */
export const ARCHIVE_KIND = 'ess-backup';

/** Fixed member names. */
export const MEMBERS = {
  manifest: 'manifest.json',
  mediaIndex: 'media-index.jsonl',
  trailer: 'checksums.sha256',
  postgresGlobals: 'postgres/globals.sql',
  helmValues: 'helm/values.yaml',
  helmRelease: 'helm/release.json',
} as const;

/** Folder prefixes of member families. */
export const PREFIXES = {
  postgres: 'postgres/',
  secrets: 'kubernetes/secrets/',
  configMaps: 'kubernetes/configmaps/',
  media: 'media/',
} as const;

/** Member name of a database dump (pg_dump custom format). */
export function databaseMember(database: string): string {
  return `${PREFIXES.postgres}${safeSegment(database, 'database name')}.dump`;
}

/** Member name of a Kubernetes Secret (YAML). */
export function secretMember(name: string): string {
  return `${PREFIXES.secrets}${safeSegment(name, 'Secret name')}.yaml`;
}

/** Member name of a Kubernetes ConfigMap (YAML). */
export function configMapMember(name: string): string {
  return `${PREFIXES.configMaps}${safeSegment(name, 'ConfigMap name')}.yaml`;
}

/** Member name of a media file, from its path relative to the media store (`local_content/ab/cd/xyz`). */
export function mediaMember(relativePath: string): string {
  const name = `${PREFIXES.media}${relativePath}`;
  if (!isSafeMemberName(name)) throw new Error(`unsafe media path ${JSON.stringify(relativePath)}`);
  return name;
}

/** The media store path of a media member, or undefined when the name is not a media member. */
export function mediaPathOf(member: string): string | undefined {
  return member.startsWith(PREFIXES.media) ? member.slice(PREFIXES.media.length) : undefined;
}

/**
 * Members whose digests may be missing from the manifest because they are streamed straight into the archive
 * (their size and SHA-256 are in the trailer only). Everything else must be listed in the manifest.
 */
export function isStreamedMember(name: string): boolean {
  return name.startsWith(PREFIXES.media);
}

/** Members that hold secrets or personal data: written with mode 0600 in the archive and on disk. */
export function isSensitiveMember(name: string): boolean {
  return !(
    name === MEMBERS.manifest ||
    name === MEMBERS.mediaIndex ||
    name === MEMBERS.trailer ||
    name === MEMBERS.helmRelease ||
    name.startsWith(PREFIXES.configMaps)
  );
}

/** The file mode recorded in the tar header of a member. */
export function memberMode(name: string): number {
  return isSensitiveMember(name) ? 0o600 : 0o644;
}

/**
 * A member name that is safe to extract: relative, `/`-separated, no empty, `.` or `..` segments, no backslashes or
 * control characters, at most 4096 bytes.
 */
export function isSafeMemberName(name: string): boolean {
  if (name.length === 0 || Buffer.byteLength(name) > 4096) return false;
  if (name.startsWith('/') || name.includes('\\') || /[\x00-\x1f\x7f]/.test(name)) return false;
  return name.split('/').every((segment) => segment.length > 0 && segment !== '.' && segment !== '..');
}

function safeSegment(value: string, what: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(value)) throw new Error(`unsupported ${what} ${JSON.stringify(value)}`);
  return value;
}
