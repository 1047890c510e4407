import { Flags } from '@oclif/core';
import { EssCommand, EXIT_CODES_HELP } from '../../lib/base-command.js';
import type { Reporter } from '../../lib/output/log.js';
import { formatBytes } from '../../lib/output/log.js';
import { renderTable } from '../../lib/output/table.js';
import { type DestinationOptions, openBackupStore } from '../../lib/storage/destination.js';
import { type ListBackupsResult, listBackups } from '../../services/backup/list.js';

/** Destination flags shared by `backup list|verify|prune` (the same spelling as `ess backup`'s). */
export const destinationFlags = {
  output: Flags.string({
    char: 'o',
    description: 'Local backup directory (default ./ess-backups).',
    exclusive: ['s3'],
  }),
  s3: Flags.string({ description: 'S3 destination, s3://bucket/prefix (credentials: standard AWS chain).' }),
  's3-endpoint': Flags.string({ description: 'Endpoint of an S3-compatible server (path-style addressing).' }),
  's3-region': Flags.string({ description: 'S3 region (default from the AWS chain, us-east-1 with an endpoint).' }),
  's3-checksum-mode': Flags.string({
    description: 'When the S3 client adds checksums; WHEN_SUPPORTED only for servers that handle them.',
    options: ['WHEN_REQUIRED', 'WHEN_SUPPORTED'],
    default: 'WHEN_REQUIRED',
  }),
};

/** Destination options from parsed {@link destinationFlags}. */
export function destinationOptions(
  f: { output?: string; s3?: string; 's3-endpoint'?: string; 's3-region'?: string; 's3-checksum-mode'?: string },
  reporter: Reporter,
): DestinationOptions {
  return {
    output: f.output,
    s3: f.s3,
    s3Endpoint: f['s3-endpoint'],
    s3Region: f['s3-region'],
    s3ChecksumMode: f['s3-checksum-mode'] as DestinationOptions['s3ChecksumMode'],
    debug: (line) => reporter.debug(line),
  };
}

export default class BackupList extends EssCommand<typeof BackupList> {
  static summary = 'List the backups at a destination: name, date, size, server, encryption, incremental parent.';
  static description =
    `Reads only the destination's listing (names and sizes): no archive is downloaded and no key is needed, because the archive name encodes the server, the UTC time, encryption (.age) and the parent of an incremental backup. Other files at the destination are ignored; a missing parent is reported.

${EXIT_CODES_HELP}`;
  static flags = {
    ...destinationFlags,
    server: Flags.string({ description: 'Only backups of this server name.' }),
  };
  static examples = [
    '<%= config.bin %> backup list',
    '<%= config.bin %> backup list -o /srv/ess-backups --json',
    '<%= config.bin %> backup list --s3 s3://backups/ess --s3-endpoint https://minio.example.com',
  ];

  async run(): Promise<ListBackupsResult> {
    const f = this.flags;
    const store = openBackupStore(destinationOptions(f, this.reporter));
    const result = await listBackups(store, { server: f.server });
    for (const warning of result.warnings) this.reporter.warn(warning);
    if (result.ignored.length > 0) {
      this.reporter.debug(`Ignored ${result.ignored.length} other file(s): ${result.ignored.join(', ')}`);
    }
    this.render(renderList(result));
    return result;
  }
}

function renderList(r: ListBackupsResult): string {
  if (r.backups.length === 0) return `No backups at ${r.location}.\n`;
  const table = renderTable(r.backups, [
    { header: 'NAME', get: (b) => b.name },
    { header: 'DATE (UTC)', get: (b) => b.createdAt.replace('T', ' ').replace(/\.\d{3}Z$/, 'Z') },
    { header: 'SIZE', get: (b) => formatBytes(b.size), align: 'right' },
    { header: 'SERVER', get: (b) => b.server },
    { header: 'ENCRYPTED', get: (b) => (b.encrypted ? 'yes' : 'no') },
    {
      header: 'PARENT',
      get: (b) => (b.incremental ? (b.parent ?? `MISSING (${b.parentId})`) : '-'),
    },
  ]);
  return `${table}\n${r.backups.length} backup(s), ${formatBytes(r.totalBytes)} at ${r.location}\n`;
}
