import { Args, Flags } from '@oclif/core';
import { EssCommand, EXIT_CODES_HELP } from '../../lib/base-command.js';
import { ExitCode } from '../../lib/errors.js';
import { formatBytes, formatDuration } from '../../lib/output/log.js';
import { renderKeyValues } from '../../lib/output/table.js';
import { type ParentCheck, type VerifyResult, verifyBackup } from '../../services/backup/verify.js';
import { resolveArchiveLocation } from '../../services/backup/verify-source.js';
import { openRestoreTestServer, readArchiveKeys } from '../../services/backup/verify-target.js';
import { destinationFlags, destinationOptions } from './list.js';

export default class BackupVerify extends EssCommand<typeof BackupVerify> {
  static summary =
    'Check a backup archive: every SHA-256, the manifest, the media index, parents; optionally restore it.';
  static description =
    `Streams the archive once (decrypting it when encrypted) and checks the format version, the manifest, the size and SHA-256 of every member and the trailer, the media index against the media files, that each database member is a pg_dump custom archive, and that the parents of an incremental backup are at the destination and intact (each read and checked in full, as a restore does; --skip-parents only checks they exist).

--restore-test also restores every database dump into a throwaway database ess_verify_<random> and compares the row count of every table with the manifest; the database is dropped afterwards. By default this runs in the cluster's Postgres pod (pg_restore there matches the server that made the dump; the pod needs free disk space for a copy of the largest database); --restore-test-url uses another server and a local pg_restore instead.

Exit 1 means the archive FAILED verification (damaged, truncated, missing parent, row counts differ); exit 4 means it could not be verified (not found, key missing or wrong, format too new).

${EXIT_CODES_HELP}`;
  static args = {
    archive: Args.string({
      description: 'The archive: a file path, a name at the destination (-o/--s3), or s3://bucket/prefix/NAME.',
      required: true,
    }),
  };
  static flags = {
    ...destinationFlags,
    identity: Flags.string({
      char: 'i',
      description: 'age identity file for encrypted archives (repeatable).',
      multiple: true,
    }),
    'passphrase-file': Flags.string({ description: 'File holding the passphrase of an encrypted archive.' }),
    'restore-test': Flags.boolean({
      description: 'Restore the dumps into a throwaway database and compare row counts.',
      default: false,
    }),
    'skip-parents': Flags.boolean({
      description:
        'Only check that the parents of an incremental backup exist, without reading them (by default each one is read and checked in full, as a restore does).',
      default: false,
    }),
    'restore-test-url': Flags.string({
      description:
        'Run the restore test on this server (postgres://USER:PASSWORD@HOST:PORT/postgres) with a local pg_restore; implies --restore-test.',
    }),
  };
  static examples = [
    '<%= config.bin %> backup verify ess-backups/ess-backup_matrix.example.com_20250301T020000Z.tar',
    '<%= config.bin %> backup verify ess-backup_matrix.example.com_20250301T020000Z.tar.age -i key.txt --restore-test -n ess',
    '<%= config.bin %> backup verify s3://backups/ess/ess-backup_matrix.example.com_20250301T020000Z.tar --s3-endpoint https://minio.example.com',
    '<%= config.bin %> backup verify ./ess-backup_example.com_20250301T020000Z.tar --restore-test-url postgres://postgres:secret@localhost:5432/postgres',
  ];

  async run(): Promise<VerifyResult> {
    const f = this.flags;
    const location = resolveArchiveLocation(this.args.archive, destinationOptions(f, this.reporter));
    const keys = await readArchiveKeys(
      { identityFiles: f.identity, passphraseFile: f['passphrase-file'] },
      this.reporter,
    );
    const url = f['restore-test-url'];
    const restoreTest = url
      ? () => openRestoreTestServer({ kind: 'url', url })
      : f['restore-test']
        ? () =>
            openRestoreTestServer({
              kind: 'cluster',
              kube: () => this.kube(),
              namespace: f.namespace,
              release: f.release,
            })
        : undefined;
    const result = await verifyBackup(
      { location, keys, restoreTest, checkParents: !f['skip-parents'], signal: this.abort.signal },
      { reporter: this.reporter },
    );
    for (const warning of result.warnings) this.reporter.warn(warning);
    this.render(renderVerify(result));
    if (!result.ok) {
      process.stderr.write(
        `Error: ${result.archive} FAILED verification:\n${result.problems.map((p) => `  - [${p.code}] ${p.message}`).join('\n')}\n` +
          'Next steps:\n  - Do not rely on this backup; make a fresh one with `ess backup`\n',
      );
      process.exitCode = ExitCode.FAILED;
    }
    return result;
  }
}

function renderVerify(r: VerifyResult): string {
  const b = r.backup;
  const head = renderKeyValues([
    ['Archive', r.location],
    ['Result', r.ok ? 'OK' : `FAILED (${r.problems.length} problem(s))`],
    ['Server', b?.serverName],
    ['Created', b?.createdAt],
    ['Encrypted', r.encrypted ? 'yes' : 'no'],
    ['Size', r.size === undefined ? undefined : formatBytes(r.size)],
    [
      'Members',
      r.members === undefined ? 'not all read' : `${r.members} verified (${formatBytes(r.contentBytes ?? 0)})`,
    ],
    ['Databases', b?.databases.join(', ') || '-'],
    ['Media', b?.mediaFiles === undefined ? '-' : `${b.mediaFiles} files, ${formatBytes(b.mediaBytes ?? 0)}`],
    ['Parents', r.parents.length ? r.parents.map((p) => `${p.name} (${parentState(p)})`).join(', ') : '-'],
    ['Restore test', r.restoreTest.ran ? `on ${r.restoreTest.server}` : 'not run (--restore-test)'],
    ['Duration', formatDuration(r.durationMs)],
  ]);
  const rows = r.databases
    .filter((d) => d.rows)
    .map((d) => `  ${d.database}: ${d.rows!.compared} tables compared, ${d.rows!.mismatches.length} mismatch(es)`);
  return `${head}${rows.length ? `\n${rows.join('\n')}` : ''}\n`;
}

const parentState = (p: ParentCheck) =>
  !p.present ? 'MISSING' : p.intact === undefined ? 'present, not read' : p.intact ? 'intact' : 'DAMAGED';
