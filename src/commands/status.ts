import { EssCommand, EXIT_CODES_HELP } from '../lib/base-command.js';
import { formatBytes } from '../lib/output/log.js';
import { renderKeyValues, renderTable } from '../lib/output/table.js';
import { getStatus, type StatusResult } from '../services/status.js';

export default class Status extends EssCommand<typeof Status> {
  static summary = 'Show the ESS deployment: server name, chart, Helm release, components, Postgres and media.';
  static description = `Reads everything from the Kubernetes API (no helm binary needed).\n\n${EXIT_CODES_HELP}`;
  static examples = ['<%= config.bin %> status', '<%= config.bin %> status --namespace ess --release ess --json'];

  async run(): Promise<StatusResult> {
    const kube = await this.kube();
    const result = await getStatus(
      kube,
      { namespace: this.flags.namespace, release: this.flags.release },
      this.reporter,
    );
    this.render(renderStatus(result));
    for (const warning of result.warnings) this.reporter.warn(warning);
    return result;
  }
}

function renderStatus(s: StatusResult): string {
  const head = renderKeyValues([
    ['Server name', s.serverName],
    ['Flavour', s.flavour],
    ['Namespace', s.namespace],
    ['Release', s.release],
    ['Chart', s.chartVersion],
    [
      'Helm',
      s.helm
        ? `revision ${s.helm.revision} (${s.helm.status})${s.helm.updated ? `, ${s.helm.updated}` : ''}`
        : undefined,
    ],
    ['Generated secret', s.generatedSecret],
    ['Media PVC', s.media ? `${s.media.claimName} (${s.media.capacity ?? '?'}) on ${s.media.pod}` : undefined],
  ]);
  const components = renderTable(s.components, [
    { header: 'COMPONENT', get: (w) => w.component },
    { header: 'KIND', get: (w) => w.kind },
    { header: 'NAME', get: (w) => w.name },
    { header: 'READY', get: (w) => `${w.readyReplicas}/${w.replicas}`, align: 'right' },
    { header: 'STATE', get: (w) => w.state },
    { header: 'REMEMBERED', get: (w) => w.rememberedReplicas },
    { header: 'VERSION', get: (w) => w.version },
  ]);
  const databases = s.postgres
    ? `Postgres (${s.postgres.mode}${s.postgres.pod ? `, ${s.postgres.pod}` : ''}):\n${renderTable(
        s.postgres.databases,
        [
          { header: 'DATABASE', get: (d) => d.name },
          { header: 'USED BY', get: (d) => d.component },
          { header: 'SIZE', get: (d) => (d.bytes === undefined ? '?' : formatBytes(d.bytes)), align: 'right' },
        ],
      )}`
    : 'Postgres: not found';
  return `${head}\n\n${components}\n\n${databases}\n`;
}
