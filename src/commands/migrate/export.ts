import { Flags } from '@oclif/core';
import { EssCommand, EXIT_CODES_HELP } from '../../lib/base-command.js';
import { ExitCode } from '../../lib/errors.js';
import { type ExportResult, exportSynapse } from '../../services/migrate/export.js';
import { renderExport } from '../../services/migrate/render.js';

export default class MigrateExport extends EssCommand<typeof MigrateExport> {
  static summary = 'On the old host: dump a self-hosted Synapse (database, identity, media) into one bundle.';
  static description =
    `Runs on the old Synapse host; needs no Kubernetes. Reads homeserver.yaml for the database, the signing key, the identity secrets and the media store, dumps the database with the local pg_dump -Fc -O, and writes one tar bundle (manifest with SHA-256 of every member) for \`ess migrate import\`. Synapse must be stopped. The bundle holds secrets: keep it private.\n\n${EXIT_CODES_HELP}`;
  static examples = [
    '<%= config.bin %> migrate export --config /etc/matrix-synapse/homeserver.yaml --synapse-url http://localhost:8008',
    '<%= config.bin %> migrate export --database-url postgres://synapse@db/synapse --media-store /var/lib/synapse/media_store --signing-key /etc/synapse/example.org.signing.key -o synapse.tar',
    '<%= config.bin %> migrate export --config homeserver.yaml --dry-run',
  ];

  static flags = {
    config: Flags.string({
      char: 'c',
      description: 'The old Synapse homeserver.yaml (database, secrets, signing key, media store).',
    }),
    'database-url': Flags.string({
      description: 'postgres://USER:PASSWORD@HOST:PORT/DB: overrides the database of --config.',
    }),
    'synapse-url': Flags.string({
      description: 'Base URL of the old Synapse (e.g. http://localhost:8008): checked to be stopped.',
    }),
    output: Flags.string({
      char: 'o',
      description: 'Bundle file to write (default ./synapse-export-SERVER-TIME.tar).',
    }),
    'media-store': Flags.string({ description: 'Media store directory (default: media_store_path of --config).' }),
    'no-media': Flags.boolean({ description: 'Leave the media store out of the bundle.', default: false }),
    'include-media-caches': Flags.boolean({
      description: 'Also export remote media and URL-preview caches (left out by default: Synapse refetches them).',
      default: false,
    }),
    'signing-key': Flags.string({ description: 'Signing key file (default: signing_key_path of --config).' }),
    'pg-dump': Flags.string({
      description: 'The pg_dump binary to use (same or newer major than the server).',
      default: 'pg_dump',
    }),
    'dry-run': Flags.boolean({ description: 'Check everything and print the plan; write nothing.', default: false }),
  };

  async run(): Promise<ExportResult> {
    const f = this.flags;
    const result = await exportSynapse(
      {
        config: f.config,
        databaseUrl: f['database-url'],
        synapseUrl: f['synapse-url'],
        output: f.output,
        mediaStore: f['media-store'],
        noMedia: f['no-media'],
        includeMediaCaches: f['include-media-caches'],
        signingKey: f['signing-key'],
        pgDump: f['pg-dump'],
        dryRun: f['dry-run'],
        essVersion: this.config.version,
        signal: this.abort.signal,
      },
      { reporter: this.reporter },
    );
    this.render(renderExport(result));
    if (result.needsAttention) process.exitCode = ExitCode.PARTIAL;
    return result;
  }
}
