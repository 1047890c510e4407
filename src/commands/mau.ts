import { Flags } from '@oclif/core';
import { EssCommand, EXIT_CODES_HELP } from '../lib/base-command.js';
import { EssError, ExitCode } from '../lib/errors.js';
import { renderMauCsv, renderMauText } from '../services/mau/render.js';
import { MAU_EXCLUSIONS, type MauExclusion, type MauRequest, type MauResult, runMau } from '../services/mau/report.js';

export default class Mau extends EssCommand<typeof Mau> {
  static summary = 'Count monthly active users: now, for a calendar month, or month by month.';
  static description =
    `Without flags: the current MAU by the ESS runbook (distinct users in user_ips seen since 00:00 UTC 30 days ago, support users excluded), next to Synapse's own figures. With --month or --from/--to: calendar months (UTC) from user_daily_visits, the only table that keeps history. Every figure says which definition it uses.

Reads the Synapse database through a port-forward to the bundled Postgres, or from --database-url, in a read-only transaction. Nothing is written.

${EXIT_CODES_HELP}`;

  static examples = [
    '<%= config.bin %> mau',
    '<%= config.bin %> mau --month 2024-11',
    '<%= config.bin %> mau --from 2024-01 --to 2024-12 --csv > mau-2024.csv',
    '<%= config.bin %> mau --at 2025-01-07 --exclude bots,deactivated',
    'ESS_DATABASE_URL=postgres://synapse_user:PASSWORD@db.example:5432/synapse <%= config.bin %> mau --json',
  ];

  static flags = {
    month: Flags.string({
      description: 'Count one calendar month (UTC), YYYY-MM, from user_daily_visits.',
      exclusive: ['from', 'to', 'at'],
    }),
    from: Flags.string({
      description: 'First month of a month-by-month report, YYYY-MM (computed in one query).',
      exclusive: ['month', 'at'],
    }),
    to: Flags.string({
      description: 'Last month of the report, YYYY-MM, included (default: the current month).',
      dependsOn: ['from'],
    }),
    at: Flags.string({
      description: 'Compute the current MAU as of the end of this UTC day, YYYY-MM-DD (default: today).',
      exclusive: ['month', 'from', 'to'],
    }),
    exclude: Flags.string({
      description: 'Also leave out these users (support users are always left out). Repeat or comma-separate.',
      options: [...MAU_EXCLUSIONS],
      multiple: true,
      delimiter: ',',
    }),
    csv: Flags.boolean({ description: 'Print CSV (for licence reports) instead of a table.', default: false }),
    'database-url': Flags.string({
      description: 'Read this database instead of the bundled Postgres (postgres://USER:PASSWORD@HOST:PORT/DB).',
      env: 'ESS_DATABASE_URL',
    }),
    'statement-timeout': Flags.integer({
      description: 'Cancel any single query that runs longer than this many seconds.',
      default: 600,
      min: 1,
    }),
  };

  async run(): Promise<MauResult> {
    const { flags } = this;
    if (flags.csv && this.jsonEnabled()) {
      throw new EssError('--csv and --json cannot be used together.', {
        exitCode: ExitCode.USAGE,
        code: 'BAD_FLAG',
        next: ['Pick one output format'],
      });
    }
    const request: MauRequest = flags.from
      ? { kind: 'months', from: flags.from, to: flags.to }
      : flags.month
        ? { kind: 'month', month: flags.month }
        : { kind: 'current', at: flags.at };
    const result = await runMau(
      {
        namespace: flags.namespace,
        release: flags.release,
        request,
        exclude: (flags.exclude ?? []) as MauExclusion[],
        databaseUrl: flags['database-url'],
        statementTimeoutMs: flags['statement-timeout'] * 1000,
      },
      {
        kube: flags['database-url'] ? undefined : () => this.kube(),
        reporter: this.reporter,
        signal: this.abort.signal,
      },
    );
    if (flags.csv) process.stdout.write(renderMauCsv(result));
    else this.render(renderMauText(result));
    for (const warning of result.warnings) this.reporter.warn(warning);
    return result;
  }
}
