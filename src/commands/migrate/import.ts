import { Args, Flags } from '@oclif/core';
import { EssCommand, EXIT_CODES_HELP } from '../../lib/base-command.js';
import { ExitCode } from '../../lib/errors.js';
import { durationFlag } from '../../lib/workloads/duration-flag.js';
import { type ImportOptions, type ImportResult, importSynapse } from '../../services/migrate/import.js';
import { renderImport } from '../../services/migrate/render.js';

export default class MigrateImport extends EssCommand<typeof MigrateImport> {
  static summary = 'Replace the ESS Synapse database with a self-hosted Synapse dump (pg_dump -Fc) or export bundle.';
  static description =
    `Checks everything first and changes nothing until you confirm: the file (custom-format dump or a verified \`ess migrate export\` bundle), its server name against ESS's, its schema against ESS's Synapse, free space. Then it uploads the media (resumable), stops Synapse and MAS, recreates the synapse database, runs pg_restore inside the Postgres pod (one-time keys left out), stores the signing key and secrets in a Secret, starts everything again and checks the result. On failure Synapse and MAS are always scaled back.\n\n${EXIT_CODES_HELP}`;
  static examples = [
    '<%= config.bin %> migrate import synapse-export-example.org-20250301T020000Z.tar --dry-run',
    '<%= config.bin %> migrate import synapse.dump --signing-key example.org.signing.key --homeserver-config homeserver.yaml --media-store media_store.tar',
    '<%= config.bin %> migrate import bundle.tar --yes --update-generated-secret --json',
  ];

  static args = {
    file: Args.string({
      description: 'synapse.dump (pg_dump -Fc) or a bundle from ess migrate export.',
      required: true,
    }),
  };

  static flags = {
    'signing-key': Flags.string({ description: 'The old signing key file (overrides the bundle).' }),
    'homeserver-config': Flags.string({
      description: 'The old homeserver.yaml: macaroon, registration and form secrets, signing_key_path, login setup.',
    }),
    'update-generated-secret': Flags.boolean({
      description:
        'Write the keys into <release>-generated instead of a Secret of ess (then no Helm values are needed).',
      default: false,
    }),
    'media-store': Flags.string({
      description: 'The old media store: a directory or a tar of it (overrides the bundle).',
    }),
    'no-media': Flags.boolean({ description: 'Do not upload media.', default: false }),
    'include-media-caches': Flags.boolean({
      description: 'With --media-store: also upload remote media and URL-preview caches.',
      default: false,
    }),
    jobs: Flags.integer({
      char: 'j',
      description: 'Parallel data streams and pg_restore jobs for indexes (methods parallel and staged).',
      default: 4,
      min: 1,
      max: 32,
    }),
    method: Flags.string({
      description:
        'How the dump reaches pg_restore: parallel (data in parallel streams, only the TOC staged), staged (whole dump copied onto the Postgres volume), stream (one stdin stream), auto (parallel when possible).',
      options: ['auto', 'parallel', 'staged', 'stream'],
      default: 'auto',
    }),
    // A Go duration as for backup and restore; a bare integer is still seconds, as this flag took before.
    timeout: durationFlag(
      'How long to wait for Synapse and MAS to stop or become ready: a duration (90s, 10m) or seconds.',
      '10m',
      { bareSeconds: true },
    ),
    'dry-run': Flags.boolean({ description: 'Run every check and print the plan; change nothing.', default: false }),
    yes: Flags.boolean({ char: 'y', description: 'Confirm without a prompt (needed without a TTY).', default: false }),
  };

  async run(): Promise<ImportResult> {
    const f = this.flags;
    const result = await importSynapse(
      {
        namespace: f.namespace,
        release: f.release,
        file: this.args.file,
        signingKey: f['signing-key'],
        homeserverConfig: f['homeserver-config'],
        updateGeneratedSecret: f['update-generated-secret'],
        mediaStore: f['media-store'],
        noMedia: f['no-media'],
        includeMediaCaches: f['include-media-caches'],
        jobs: f.jobs,
        method: f.method as ImportOptions['method'],
        dryRun: f['dry-run'],
        yes: f.yes,
        timeoutMs: f.timeout,
        signal: this.abort.signal,
      },
      { kube: () => this.kube(), reporter: this.reporter },
    );
    this.render(renderImport(result));
    if (result.needsAttention) process.exitCode = ExitCode.PARTIAL;
    return result;
  }
}
