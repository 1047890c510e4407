import { Args, Flags } from '@oclif/core';
import { EssCommand, EXIT_CODES_HELP } from '../lib/base-command.js';
import { formatDuration } from '../lib/output/log.js';
import { renderTable } from '../lib/output/table.js';
import { durationFlag } from '../lib/workloads/duration-flag.js';
import { COMPONENT_NAMES, renderPlan } from '../services/lifecycle/plan.js';
import { type StartResult, startServices } from '../services/lifecycle/start.js';

export default class Start extends EssCommand<typeof Start> {
  static summary = 'Start ESS components again with the replica counts `ess stop` recorded, Postgres first.';
  static description =
    `Without COMPONENT, resumes everything ess stopped: every workload carrying the annotation ess.element.io/replicas-before-stop, including after a crashed \`ess stop\` or backup. A named component at 0 without a recorded count gets 1 replica (with a warning). Waits until the workloads are ready.

Operator-based ESS: scales the operator back; its updater recreates the deleted component CRs (ess recreates them from the copy saved by \`ess stop\` if it does not).

${EXIT_CODES_HELP}`;
  static strict = false;
  static args = {
    component: Args.string({
      description: `Component(s) to start: ${COMPONENT_NAMES.join(', ')}. Default: whatever ess stopped.`,
    }),
  };
  static flags = {
    'dry-run': Flags.boolean({ description: 'Print the plan and change nothing.', default: false }),
    timeout: durationFlag('How long to wait for the workloads of each start phase to become ready (e.g. 90s, 5m).'),
    'force-unlock': Flags.boolean({ description: "Break another ess run's lock on this deployment.", default: false }),
  };
  static examples = [
    '<%= config.bin %> start',
    '<%= config.bin %> start synapse --timeout 10m',
    '<%= config.bin %> start --dry-run --json',
  ];

  async run(): Promise<StartResult> {
    const { argv } = await this.parse(Start);
    const kube = await this.kube();
    const result = await startServices(
      kube,
      {
        namespace: this.flags.namespace,
        release: this.flags.release,
        components: argv as string[],
        dryRun: this.flags['dry-run'],
        timeoutMs: this.flags.timeout,
        forceUnlock: this.flags['force-unlock'],
      },
      { reporter: this.reporter, signal: this.abort.signal },
    );
    for (const warning of result.warnings) this.reporter.warn(warning);
    this.render(renderStart(result));
    return result;
  }
}

function renderStart(r: StartResult): string {
  if (r.dryRun || !r.changed) {
    return r.plan.noop && r.resumed
      ? 'Nothing to start: no workload carries a replica count recorded by ess.\n'
      : renderPlan(r.plan);
  }
  const lines: string[] = [];
  if (r.operator) {
    lines.push(`Operator ${r.operator.namespace}/${r.operator.deployment} running with ${r.operator.replicas}.`);
    for (const cr of r.operator.crs)
      lines.push(
        `${cr.kind}/${cr.name}: ${cr.restoredBy === 'ess' ? 'recreated by ess from the saved copy' : cr.restoredBy === 'updater' ? 'recreated by the updater' : 'present'}`,
      );
  }
  if (r.workloads.length) {
    lines.push(
      renderTable(r.workloads, [
        { header: 'COMPONENT', get: (w) => w.component },
        { header: 'KIND', get: (w) => w.kind },
        { header: 'NAME', get: (w) => w.name },
        { header: 'REPLICAS', get: (w) => `${w.replicasBefore} -> ${w.replicas}`, align: 'right' },
        { header: 'FROM', get: (w) => w.source },
        { header: 'READY', get: (w) => (w.ready ? 'yes' : 'no') },
      ]),
    );
  }
  lines.push(`Started in ${formatDuration(r.durationMs)}.`);
  return `${lines.join('\n')}\n`;
}
