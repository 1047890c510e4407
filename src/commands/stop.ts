import { Args, Flags } from '@oclif/core';
import { EssCommand, EXIT_CODES_HELP } from '../lib/base-command.js';
import { targetFlags } from '../lib/deployment/components.js';
import { confirmTyped } from '../lib/output/confirm.js';
import { formatDuration } from '../lib/output/log.js';
import { renderTable } from '../lib/output/table.js';
import { durationFlag } from '../lib/workloads/duration-flag.js';
import { COMPONENT_NAMES, renderPlan } from '../services/lifecycle/plan.js';
import { type StopResult, stopServices } from '../services/lifecycle/stop.js';

export default class Stop extends EssCommand<typeof Stop> {
  static summary = 'Stop ESS components: record their replica counts and scale them to 0, Synapse and MAS first.';
  static description =
    `Each workload's replica count is written to the annotation ess.element.io/replicas-before-stop before it is scaled to 0, so \`ess start\` can restore it even if this run is interrupted or killed. Postgres stops last. Without COMPONENT everything stops. A \`helm upgrade\` resets replicas from your values and starts the workloads again; use --print-values for a stop that survives upgrades.

Operator-based ESS: stops the operator, saves each component CR in a ConfigMap, then deletes it.

${EXIT_CODES_HELP}`;
  static strict = false;
  static args = {
    component: Args.string({ description: `Component(s) to stop: ${COMPONENT_NAMES.join(', ')}. Default: all.` }),
  };
  static flags = {
    'dry-run': Flags.boolean({ description: 'Print the plan and change nothing.', default: false }),
    yes: Flags.boolean({
      char: 'y',
      description: 'Do not ask for confirmation (required without a TTY).',
      default: false,
    }),
    'print-values': Flags.boolean({
      description:
        'Print the Helm values snippet (replicas: 0) for a stop that survives `helm upgrade`; change nothing.',
      default: false,
    }),
    timeout: durationFlag('How long to wait for the pods of each stop phase to terminate (e.g. 90s, 5m).'),
    'force-unlock': Flags.boolean({ description: "Break another ess run's lock on this deployment.", default: false }),
  };
  static examples = [
    '<%= config.bin %> stop synapse mas --yes',
    '<%= config.bin %> stop --dry-run',
    '<%= config.bin %> stop synapse --print-values > stopped-values.yaml',
    '<%= config.bin %> stop synapse -n element-onprem --yes',
  ];

  async run(): Promise<StopResult> {
    const { argv } = await this.parse(Stop);
    const kube = await this.kube();
    const result = await stopServices(
      kube,
      {
        namespace: this.flags.namespace,
        release: this.flags.release,
        components: argv as string[],
        dryRun: this.flags['dry-run'],
        printValues: this.flags['print-values'],
        timeoutMs: this.flags.timeout,
        forceUnlock: this.flags['force-unlock'],
      },
      {
        reporter: this.reporter,
        signal: this.abort.signal,
        confirm: async (plan) => {
          process.stderr.write(renderPlan(plan));
          await confirmTyped({
            expected: plan.namespace,
            action: `stop ${plan.components.join(', ')} in namespace ${plan.namespace}`,
            yes: this.flags.yes,
          });
        },
      },
    );
    for (const warning of result.warnings) this.reporter.warn(warning);
    this.render(renderStop(result));
    return result;
  }
}

function renderStop(r: StopResult): string {
  if (r.values) {
    return r.values.paths.length
      ? `# Helm values that keep ${r.components.join(', ')} stopped across \`helm upgrade\`:\n${r.values.yaml}`
      : '# No workload of these components was found.\n';
  }
  if (r.dryRun || !r.changed) return renderPlan(r.plan);
  const lines: string[] = [];
  if (r.operator) {
    lines.push(`Operator ${r.operator.namespace}/${r.operator.deployment} stopped (was ${r.operator.replicasBefore}).`);
    if (r.operator.deletedCRs.length) {
      lines.push(`Deleted ${r.operator.deletedCRs.join(', ')} (saved in ConfigMap ${r.operator.savedIn}).`);
    }
  }
  if (r.workloads.length) {
    lines.push(
      renderTable(r.workloads, [
        { header: 'COMPONENT', get: (w) => w.component },
        { header: 'KIND', get: (w) => w.kind },
        { header: 'NAME', get: (w) => w.name },
        { header: 'RECORDED', get: (w) => w.recordedReplicas, align: 'right' },
        { header: 'RESULT', get: (w) => w.outcome },
      ]),
    );
  }
  const target = targetFlags(r.namespace, r.flavour === 'matrix-stack' ? r.release : undefined);
  lines.push(`Stopped in ${formatDuration(r.durationMs)}. Start again with: ess start ${target}`);
  return `${lines.join('\n')}\n`;
}
