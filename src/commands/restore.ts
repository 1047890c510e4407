import { Args, Flags } from '@oclif/core';
import { EssCommand, EXIT_CODES_HELP } from '../lib/base-command.js';
import { ExitCode } from '../lib/errors.js';
import { durationFlag } from '../lib/workloads/duration-flag.js';
import { renderRestore } from '../services/restore/render.js';
import type { RestorePart, RestoreResult } from '../services/restore/restore.js';
import { destinationFlags, destinationOptions } from './backup/list.js';

export default class Restore extends EssCommand<typeof Restore> {
  static summary = 'Restore an ess backup: Secrets, Helm values, databases and media.';
  static description =
    `Verifies the whole archive first (format version, every checksum, the key, its parents) and checks the target (namespace, server name, Postgres version and space, Synapse schema); nothing changes before that and your typed confirmation (or --yes). Then: Secrets and ConfigMap with exact bytes, the Helm values file, Synapse and MAS to 0, databases and roles dropped and restored with pg_restore inside the Postgres pod, one-time keys emptied, media written to the media volume as UID 10091, Synapse and MAS back up, row counts checked against the manifest. See docs/commands/restore.md.\n\n${EXIT_CODES_HELP}`;
  static examples = [
    '<%= config.bin %> restore ./ess-backups/ess-backup_example.com_20250301T020000Z.tar --dry-run',
    '<%= config.bin %> restore ess-backup_example.com_20250301T020000Z.tar.age --identity key.txt --yes',
    '<%= config.bin %> restore s3://backups/ess/ess-backup_example.com_20250301T020000Z.tar --s3-endpoint https://minio:9000 --only db',
    '<%= config.bin %> restore backup.tar -n ess-new --create-namespace --only secrets --values-out values.yaml',
  ];

  static args = {
    archive: Args.string({
      description: 'The backup: a file path, a name in -o DIR or --s3, or s3://bucket/prefix/NAME.',
      required: true,
    }),
  };

  static flags = {
    ...destinationFlags,
    identity: Flags.string({
      char: 'i',
      description: 'age identity file (age-keygen output) for an encrypted backup. Repeatable.',
      multiple: true,
    }),
    'passphrase-file': Flags.string({ description: 'File holding the passphrase of an encrypted backup.' }),
    only: Flags.string({
      description: 'Restore only these parts (comma-separated): secrets (Secrets, ConfigMap, values file), db, media.',
      multiple: true,
      delimiter: ',',
      options: ['secrets', 'db', 'media'],
    }),
    'create-namespace': Flags.boolean({ description: 'Create the namespace when it does not exist.', default: false }),
    'allow-different-server-name': Flags.boolean({
      description: "Restore although the backup's server name differs from the target's.",
      default: false,
    }),
    'values-out': Flags.string({
      description:
        'Where to write the Helm values of the backup (mode 0600). Default ./<release>-values.restored.yaml.',
    }),
    jobs: Flags.integer({
      char: 'j',
      description: 'pg_restore parallel jobs per database (dumps staged on the Postgres volume).',
      default: 4,
      min: 1,
      max: 32,
    }),
    'spool-dir': Flags.string({
      description: 'Directory for local temporary files (the media index). Default: OS temp.',
    }),
    timeout: durationFlag('How long to wait for workloads and the helper pod to stop or become ready.', '10m'),
    'dry-run': Flags.boolean({
      description: 'Verify the archive, check the target and print the plan; change nothing.',
    }),
    yes: Flags.boolean({ char: 'y', description: 'Confirm without a prompt (needed without a TTY).', default: false }),
    'force-unlock': Flags.boolean({ description: "Break another ess run's lock on this deployment.", default: false }),
  };

  async run(): Promise<RestoreResult> {
    const f = this.flags;
    const { restoreBackup } = await import('../services/restore/restore.js');
    const result = await restoreBackup(
      {
        archive: this.args.archive,
        destination: destinationOptions(f, this.reporter),
        identityFiles: f.identity ?? [],
        passphraseFile: f['passphrase-file'],
        namespace: f.namespace,
        release: f.release,
        only: f.only as RestorePart[] | undefined,
        createNamespace: f['create-namespace'],
        allowDifferentServerName: f['allow-different-server-name'],
        valuesOut: f['values-out'],
        jobs: f.jobs,
        spoolDir: f['spool-dir'],
        dryRun: f['dry-run'] ?? false,
        yes: f.yes,
        forceUnlock: f['force-unlock'],
        timeoutMs: f.timeout,
        signal: this.abort.signal,
      },
      { kube: () => this.kube(), reporter: this.reporter },
    );
    this.render(renderRestore(result));
    if (result.failed) {
      process.stderr.write('Error: post-checks failed (see the table): the restored data differs from the backup.\n');
      process.exitCode = ExitCode.FAILED;
    } else if (result.needsAttention) process.exitCode = ExitCode.PARTIAL;
    return result;
  }
}
