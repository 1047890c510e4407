import { Flags } from '@oclif/core';
import { EssCommand, EXIT_CODES_HELP } from '../../lib/base-command.js';
import { EssError, ExitCode } from '../../lib/errors.js';
import { parseRetentionDuration } from '../../lib/retention.js';
import type { S3ChecksumMode } from '../../lib/storage/s3.js';
import { durationFlag } from '../../lib/workloads/duration-flag.js';
import { type BackupResult, createBackup } from '../../services/backup/create.js';
import { renderBackupSummary } from '../../services/backup/render.js';
import { destinationFlags } from './list.js';

export default class Backup extends EssCommand<typeof Backup> {
  static summary = 'Back up an ESS deployment (databases, media, Secrets, Helm values) into one archive.';
  static description =
    `Takes the ess lock, scales Synapse and MAS to 0 only while a snapshot of every database is exported, scales them back at once, then dumps each database (pg_dump -Fc inside the Postgres pod, one-time keys left out) and copies the media while Synapse runs. Writes one tar archive (manifest first, SHA-256 of every member) to a directory, S3 or stdout, optionally age-encrypted. Workloads are put back on every error and on SIGINT/SIGTERM. See docs/commands/backup.md and docs/backup-format.md.

${EXIT_CODES_HELP}`;
  static flags = {
    ...destinationFlags,
    output: Flags.string({
      char: 'o',
      description: 'Local backup directory (default ./ess-backups), or - to stream the archive to stdout.',
      exclusive: ['s3'],
    }),
    'encrypt-to': Flags.string({ description: 'Encrypt to this age recipient (age1…); repeatable.', multiple: true }),
    'passphrase-file': Flags.string({ description: 'Encrypt with the passphrase in this file (age scrypt).' }),
    identity: Flags.string({
      description: 'age identity file to read an encrypted parent for --incremental; repeatable.',
      multiple: true,
    }),
    incremental: Flags.boolean({
      description: 'Store only media files not in the newest backup of this server at the destination.',
      default: false,
    }),
    'include-remote-media': Flags.boolean({
      description: 'Also back up remote_content, remote_thumbnail, url_cache and url_cache_thumbnails.',
      default: false,
    }),
    'keep-last': Flags.integer({
      description: 'After success, keep only the N newest backups of this server.',
      min: 1,
    }),
    'keep-within': Flags.string({
      description: 'After success, delete backups of this server older than this (30d, 2w, 36h).',
    }),
    'dry-run': Flags.boolean({
      description: 'Print the plan with estimated sizes and change nothing.',
      default: false,
    }),
    'force-unlock': Flags.boolean({ description: "Break another ess run's lock on this deployment.", default: false }),
    'compression-level': Flags.integer({
      description:
        'pg_dump compression level: gzip 0–9 (default 1; PostgreSQL ≤ 15) or zstd 1–19 (default 3; 16+). pg_dump alone defaults to gzip 6: ~3 % smaller, ~25 % slower.',
    }),
    'spool-dir': Flags.string({
      description: 'Directory for the database dumps while the archive is built (default: OS temp).',
    }),
    'metrics-file': Flags.string({
      description: 'Write Prometheus textfile metrics (success time, duration, size, downtime).',
    }),
    timeout: durationFlag('How long to wait for pods to stop or become ready (e.g. 90s, 5m).'),
    'database-url': Flags.string({
      description: 'External PostgreSQL: dump with local tools from postgres://USER@HOST:PORT/ (password: PGPASSWORD).',
    }),
    'pg-bin-dir': Flags.string({
      description: 'Directory of the local pg_dump/psql for --database-url (default: PATH).',
    }),
  };
  static examples = [
    '<%= config.bin %> backup',
    '<%= config.bin %> backup --dry-run',
    '<%= config.bin %> backup -o /srv/ess-backups --encrypt-to age1… --keep-last 14 --metrics-file /var/lib/node_exporter/ess_backup.prom',
    '<%= config.bin %> backup --s3 s3://backups/ess --s3-endpoint https://minio.example.com --incremental --identity key.txt',
    '<%= config.bin %> backup -o - --passphrase-file pass.txt > ess.tar.age',
  ];

  async run(): Promise<BackupResult> {
    const f = this.flags;
    if (f.output === '-' && this.jsonEnabled()) {
      throw new EssError('--json cannot be used with -o - (stdout carries the archive).', {
        exitCode: ExitCode.USAGE,
        code: 'USAGE',
      });
    }
    const result = await createBackup(
      {
        namespace: f.namespace,
        release: f.release,
        output: f.output,
        s3: f.s3,
        s3Endpoint: f['s3-endpoint'],
        s3Region: f['s3-region'],
        s3ChecksumMode: f['s3-checksum-mode'] as S3ChecksumMode,
        encryptTo: f['encrypt-to'],
        passphraseFile: f['passphrase-file'],
        identityFiles: f.identity,
        incremental: f.incremental,
        includeRemoteMedia: f['include-remote-media'],
        keepLast: f['keep-last'],
        keepWithinMs: f['keep-within'] === undefined ? undefined : parseRetentionDuration(f['keep-within']),
        dryRun: f['dry-run'],
        forceUnlock: f['force-unlock'],
        compressionLevel: f['compression-level'],
        spoolDir: f['spool-dir'],
        metricsFile: f['metrics-file'],
        timeoutMs: f.timeout,
        databaseUrl: f['database-url'],
        pgBinDir: f['pg-bin-dir'],
        essVersion: this.config.version,
      },
      { kube: await this.kube(), reporter: this.reporter, signal: this.abort.signal },
    );
    for (const warning of result.warnings) this.reporter.warn(warning);
    const text = renderBackupSummary(result);
    if (f.output === '-') process.stderr.write(text);
    else this.render(text);
    if (result.needsAttention) process.exitCode = ExitCode.PARTIAL;
    return result;
  }
}
