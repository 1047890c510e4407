import { Flags } from '@oclif/core';
import { EssCommand, EXIT_CODES_HELP } from '../../lib/base-command.js';
import { getHistory, type HistoryResult } from '../../services/upgrade/history.js';
import { renderHistory } from '../../services/upgrade/render.js';

export default class UpgradeHistory extends EssCommand<typeof UpgradeHistory> {
  static summary = 'Show the Helm history of the ESS release, like `helm history` (no helm binary needed).';
  static description =
    `Reads the Helm release Secrets (sh.helm.release.v1.<release>.v<N>) and shows revision, update time, status, chart, app version and description. The status comes from the release itself; a Secret label that disagrees is reported.\n\n${EXIT_CODES_HELP}`;
  static examples = [
    '<%= config.bin %> upgrade history',
    '<%= config.bin %> upgrade history -n ess --release ess --max 5',
    '<%= config.bin %> upgrade history --json',
  ];
  static flags = {
    max: Flags.integer({ description: 'Show at most this many revisions (the newest).', default: 256, min: 1 }),
  };

  async run(): Promise<HistoryResult> {
    const kube = await this.kube();
    const result = await getHistory(
      kube,
      { namespace: this.flags.namespace, release: this.flags.release, max: this.flags.max },
      this.reporter,
    );
    this.render(renderHistory(result));
    for (const warning of result.warnings) this.reporter.warn(warning);
    return result;
  }
}
