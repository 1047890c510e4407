import { Args, Flags } from '@oclif/core';
import { EssCommand, EXIT_CODES_HELP } from '../../lib/base-command.js';
import { EssError, ExitCode } from '../../lib/errors.js';
import { parseGoDuration } from '../../lib/helm/duration.js';
import { createHelmRunner } from '../../lib/helm/runner.js';
import { confirmTyped } from '../../lib/output/confirm.js';
import { renderPlan, renderRollbackResult } from '../../services/upgrade/render.js';
import { RollbackRefusedError, type RollbackResult, rollbackStuckUpgrade } from '../../services/upgrade/rollback.js';

function duration(flag: string, value: string): number {
  const ms = parseGoDuration(value);
  if (ms === undefined) {
    throw new EssError(`--${flag} ${value} is not a duration.`, {
      code: 'USAGE',
      exitCode: ExitCode.USAGE,
      next: ['Use Go duration syntax, e.g. 90s, 15m, 1h30m'],
    });
  }
  return ms;
}

export default class UpgradeRollback extends EssCommand<typeof UpgradeRollback> {
  static summary =
    'Recover a stuck or failed Helm upgrade: prove it is stale, then roll back to the last good revision.';
  static description =
    `Automates the "Stuck upgrade" runbook. The newest revision must be pending-install, pending-upgrade or pending-rollback (or failed). ess checks that no hook Job is still running, that the revision has been unchanged for --stale-after and that no ess lock is held. It then picks the newest deployed/superseded revision whose operation completed (or REVISION), and refuses it when its Synapse is older than the database's schema compat version or when the auth-mode deployment marker has moved past it (--force overrides these refusals).

With helm on PATH it runs \`helm rollback\`, streaming helm's output to stderr. Without helm, or with --mark-failed, it marks the stuck revision failed in its release Secret (label and release body, like Flux), so that the next \`helm upgrade\` can run.

${EXIT_CODES_HELP}`;
  static examples = [
    '<%= config.bin %> upgrade rollback --dry-run',
    '<%= config.bin %> upgrade rollback --yes',
    '<%= config.bin %> upgrade rollback 13 --timeout 30m',
    '<%= config.bin %> upgrade rollback --mark-failed --stale-after 1h --yes',
  ];
  static args = {
    revision: Args.integer({ description: 'Revision to roll back to (default: the newest good revision).', min: 1 }),
  };
  static flags = {
    'stale-after': Flags.string({
      description: 'A pending revision must be unchanged this long before ess treats it as abandoned.',
      default: '15m',
    }),
    timeout: Flags.string({ description: 'Passed to `helm rollback --wait --timeout`.', default: '10m' }),
    force: Flags.boolean({
      description: 'Roll back even if the target looks incompatible (schema, deployment markers), with a warning.',
      default: false,
    }),
    'mark-failed': Flags.boolean({
      description: 'Mark the stuck revision failed instead of running helm rollback (the default without helm).',
      default: false,
    }),
    'dry-run': Flags.boolean({ description: 'Show the plan and change nothing.', default: false }),
    yes: Flags.boolean({
      char: 'y',
      description: 'Confirm without a prompt (required without a TTY).',
      default: false,
    }),
  };

  async run(): Promise<RollbackResult> {
    const f = this.flags;
    duration('timeout', f.timeout);
    const options = {
      namespace: f.namespace,
      release: f.release,
      revision: this.args.revision,
      staleAfterMs: duration('stale-after', f['stale-after']),
      timeout: f.timeout,
      force: f.force,
      markFailed: f['mark-failed'],
      dryRun: f['dry-run'],
      kubeconfig: f.kubeconfig,
      context: f.context,
    };
    const kube = await this.kube();
    try {
      const result = await rollbackStuckUpgrade(kube, options, {
        reporter: this.reporter,
        helm: createHelmRunner(),
        helmOutput: process.stderr,
        signal: this.abort.signal,
        confirm: async (plan) => {
          if (!f.yes) process.stderr.write(`${renderPlan(plan)}\n`);
          const what =
            plan.action === 'helm-rollback'
              ? `roll back ${plan.namespace}/${plan.release} to revision ${plan.target?.revision}`
              : `mark revision ${plan.stuck.revision} of ${plan.namespace}/${plan.release} failed`;
          await confirmTyped({ expected: `${plan.namespace}/${plan.release}`, action: what, yes: f.yes });
        },
      });
      this.render(renderRollbackResult(result));
      for (const warning of result.warnings) this.reporter.warn(warning);
      return result;
    } catch (error) {
      if (error instanceof RollbackRefusedError) process.stderr.write(`${renderPlan(error.plan)}\n`);
      throw error;
    }
  }
}
