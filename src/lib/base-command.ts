import { Command, Flags, type Interfaces } from '@oclif/core';
import { DEFAULT_NAMESPACE, DEFAULT_RELEASE } from './deployment/components.js';
import { EssError, ExitCode, exitCodeHelp, isEssError } from './errors.js';
import type { KubeClient } from './kube/client.js';
import { KubeApiError, KubeConnectionError } from './kube/client.js';
import { createStderrReporter, type Reporter } from './output/log.js';

export type EssFlags<T extends typeof Command> = Interfaces.InferredFlags<
  (typeof EssCommand)['baseFlags'] & T['flags']
>;
export type EssArgs<T extends typeof Command> = Interfaces.InferredArgs<T['args']>;

/** Flags every command has: kubectl-style targeting plus --verbose (oclif adds --json). */
export const targetFlags = {
  kubeconfig: Flags.string({
    description: 'Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).',
    helpGroup: 'GLOBAL',
  }),
  context: Flags.string({ description: 'Kubeconfig context to use.', helpGroup: 'GLOBAL' }),
  namespace: Flags.string({
    char: 'n',
    description: 'Namespace of the ESS deployment.',
    default: DEFAULT_NAMESPACE,
    helpGroup: 'GLOBAL',
  }),
  release: Flags.string({
    description: 'Helm release name of the ESS deployment.',
    default: DEFAULT_RELEASE,
    helpGroup: 'GLOBAL',
  }),
  verbose: Flags.boolean({ description: 'Show debug output and stack traces.', default: false, helpGroup: 'GLOBAL' }),
};

/**
 * Base of every ess command: global flags, one error discipline (message, next steps, exit code), stderr reporting,
 * signal handling, and lazy construction of the Kubernetes client.
 */
export abstract class EssCommand<T extends typeof Command> extends Command {
  static enableJsonFlag = true;
  static baseFlags = targetFlags;

  protected flags!: EssFlags<T>;
  protected args!: EssArgs<T>;
  protected reporter!: Reporter;
  /** Aborted on the first SIGINT/SIGTERM; services clean up (e.g. scale workloads back) and then stop. */
  protected readonly abort = new AbortController();
  private kubeClient?: Promise<KubeClient>;
  private signalHandlers: [NodeJS.Signals, () => void][] = [];

  public async init(): Promise<void> {
    await super.init();
    const ctor = this.ctor as unknown as typeof EssCommand;
    const { args, flags } = await this.parse({
      flags: this.ctor.flags,
      baseFlags: ctor.baseFlags,
      enableJsonFlag: this.ctor.enableJsonFlag,
      args: this.ctor.args,
      strict: this.ctor.strict,
    });
    this.flags = flags as EssFlags<T>;
    this.args = args as EssArgs<T>;
    this.reporter = createStderrReporter({ verbose: this.flags.verbose, isTTY: Boolean(process.stderr.isTTY) });
    for (const signal of ['SIGINT', 'SIGTERM'] as NodeJS.Signals[]) {
      const handler = () => {
        if (this.abort.signal.aborted) process.exit(ExitCode.INTERRUPTED);
        this.reporter.warn(`${signal} received: cleaning up (send it again to exit at once).`);
        this.abort.abort(new Error(signal));
      };
      process.on(signal, handler);
      this.signalHandlers.push([signal, handler]);
    }
  }

  /** The Kubernetes client for --kubeconfig/--context, created on first use (client-node is loaded lazily). */
  protected kube(): Promise<KubeClient> {
    this.kubeClient ??= import('./kube/load.js').then(({ connectKube }) =>
      connectKube({ kubeconfig: this.flags.kubeconfig, context: this.flags.context }),
    );
    return this.kubeClient;
  }

  /** Writes a human-readable result to stdout unless --json is on (then the returned object is the output). */
  protected render(text: string): void {
    if (!this.jsonEnabled()) process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  protected async finally(error: Error | undefined): Promise<void> {
    for (const [signal, handler] of this.signalHandlers) process.off(signal, handler);
    await super.finally(error);
  }

  protected async catch(error: Error & { exitCode?: number; oclif?: { exit?: number } }): Promise<never> {
    // oclif's own parse/usage errors keep their exit code (2) and formatting.
    if (error.oclif?.exit !== undefined && !isEssError(error)) {
      if (this.jsonEnabled()) {
        this.logJson({ error: { code: 'USAGE', message: error.message, next: [], exitCode: error.oclif.exit } });
        this.exit(error.oclif.exit);
      }
      throw error;
    }
    const expected = toExpectedError(error);
    if (expected) {
      const next = expected.next.map((n) => `  - ${n}`).join('\n');
      process.stderr.write(`Error: ${expected.message}\n${next ? `Next steps:\n${next}\n` : ''}`);
      if (this.flags?.verbose && error.stack) process.stderr.write(`${error.stack}\n`);
      if (this.jsonEnabled()) {
        this.logJson({
          error: {
            code: expected.code,
            message: expected.message,
            next: expected.next,
            exitCode: expected.exitCode,
            ...(expected.details ? { details: expected.details } : {}),
          },
        });
      }
      this.exit(expected.exitCode);
    }
    process.stderr.write(`Unexpected error: ${error.message}\n`);
    process.stderr.write(
      this.flags?.verbose && error.stack
        ? `${error.stack}\n`
        : 'This is a bug in ess. Re-run with --verbose for the stack trace and report it.\n',
    );
    if (this.jsonEnabled()) {
      this.logJson({ error: { code: 'BUG', message: error.message, next: [], exitCode: ExitCode.FAILED } });
    }
    this.exit(ExitCode.FAILED);
  }
}

/** Maps the errors ess expects (its own, and API/connection failures) to an EssError; undefined for bugs. */
export function toExpectedError(error: unknown): EssError | undefined {
  if (isEssError(error)) return error;
  if (error instanceof KubeConnectionError) {
    return new EssError(error.message, {
      code: 'KUBE_UNREACHABLE',
      next: [
        'Check that the cluster is reachable: kubectl cluster-info',
        'Pick another cluster with --context or --kubeconfig',
      ],
    });
  }
  if (error instanceof KubeApiError) {
    if (error.statusCode === 401 || error.statusCode === 403) {
      return new EssError(`Kubernetes refused the request: ${error.message}`, {
        code: 'KUBE_FORBIDDEN',
        exitCode: ExitCode.PRECONDITION,
        next: [
          'Check your credentials and RBAC (see docs/cron.md for the minimal Role)',
          'kubectl auth can-i --list -n NAMESPACE',
        ],
      });
    }
    return new EssError(
      `Kubernetes API error (${error.statusCode}${error.reason ? ` ${error.reason}` : ''}): ${error.message}`,
      {
        code: 'KUBE_API',
      },
    );
  }
  return undefined;
}

/** Standard footer for command descriptions: the exit codes. */
export const EXIT_CODES_HELP = exitCodeHelp();
