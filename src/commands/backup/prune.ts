import { Flags } from '@oclif/core';
import { EssCommand, EXIT_CODES_HELP } from '../../lib/base-command.js';
import { ExitCode } from '../../lib/errors.js';
import { confirmTyped } from '../../lib/output/confirm.js';
import { formatBytes } from '../../lib/output/log.js';
import { renderTable } from '../../lib/output/table.js';
import { parseRetentionDuration } from '../../lib/retention.js';
import { openBackupStore } from '../../lib/storage/destination.js';
import { type PruneResult, pruneBackups } from '../../services/backup/prune.js';
import type { RetentionObject } from '../../services/backup/retention.js';
import { destinationFlags, destinationOptions } from './list.js';

export default class BackupPrune extends EssCommand<typeof BackupPrune> {
  static summary = 'Delete old backups at a destination by --keep-last and/or --keep-within.';
  static description =
    `Rules apply per server name. A backup is kept when any rule keeps it; the newest backup of each server is always kept, and so is every parent (and grandparent…) of a kept incremental backup, so no kept backup loses its media. Works from the listing alone: nothing is downloaded. Other files at the destination are never touched. Deletes newest first (an incremental backup before its parent).

Shows the plan, then asks to type the number of backups to delete on a TTY; without a TTY --yes is required. --dry-run only lists what would be deleted.

${EXIT_CODES_HELP}`;
  static flags = {
    ...destinationFlags,
    'keep-last': Flags.integer({ description: 'Keep the N newest backups of each server.', min: 1 }),
    'keep-within': Flags.string({ description: 'Keep backups younger than this, e.g. 36h, 30d, 2w, 1w3d.' }),
    server: Flags.string({ description: 'Only prune backups of this server (file name spelling).', multiple: true }),
    'dry-run': Flags.boolean({ description: 'List what would be deleted and delete nothing.', default: false }),
    yes: Flags.boolean({
      char: 'y',
      description: 'Do not ask for confirmation (required without a TTY).',
      default: false,
    }),
  };
  static examples = [
    '<%= config.bin %> backup prune --keep-last 7 --dry-run',
    '<%= config.bin %> backup prune --keep-last 7 --keep-within 30d --yes',
    '<%= config.bin %> backup prune --s3 s3://backups/ess --keep-within 2w --yes',
  ];

  async run(): Promise<PruneResult> {
    const f = this.flags;
    const store = openBackupStore(destinationOptions(f, this.reporter));
    const keepWithinMs = f['keep-within'] === undefined ? undefined : parseRetentionDuration(f['keep-within']);
    const result = await pruneBackups(
      store,
      { keepLast: f['keep-last'], keepWithinMs, servers: f.server, dryRun: f['dry-run'], signal: this.abort.signal },
      {
        reporter: this.reporter,
        confirm: async (plan) => {
          process.stderr.write(`Would delete from ${store.location}:\n${renderObjects(plan.remove)}\n`);
          await confirmTyped({
            expected: String(plan.remove.length),
            action: `delete ${plan.remove.length} backup(s) from ${store.location}`,
            yes: f.yes,
          });
        },
      },
    );
    for (const warning of result.warnings) this.reporter.warn(warning);
    this.render(renderPrune(result));
    if (result.failed.length > 0) {
      process.stderr.write(
        `Error: could not delete ${result.failed.map((x) => `${x.name} (${x.error})`).join(', ')}\nNext steps:\n  - Check the permissions at the destination and run \`ess backup prune\` again\n`,
      );
      process.exitCode = ExitCode.FAILED;
    }
    return result;
  }
}

function renderObjects(objects: RetentionObject[], withReasons = false): string {
  return renderTable(objects, [
    { header: 'NAME', get: (o) => o.name },
    { header: 'SIZE', get: (o) => formatBytes(o.size), align: 'right' },
    ...(withReasons ? [{ header: 'KEPT BECAUSE', get: (o: RetentionObject) => (o.reasons ?? []).join(', ') }] : []),
  ]);
}

function renderPrune(r: PruneResult): string {
  const kept = r.kept.length ? `Kept (${r.kept.length}):\n${renderObjects(r.kept, true)}\n` : 'No backups to keep.\n';
  if (r.deleted.length === 0) return `${kept}Nothing to delete at ${r.location}.\n`;
  const verb = r.dryRun ? 'Would delete' : 'Deleted';
  return `${kept}${verb} (${r.deleted.length}, ${formatBytes(r.freedBytes)}):\n${renderObjects(r.deleted)}\n${r.dryRun ? 'Dry run: nothing was deleted.\n' : ''}`;
}
