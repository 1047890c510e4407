/**
 * The one error taxonomy of ess. An expected failure is an {@link EssError}: a message, the next step(s) and an exit
 * code. Anything else that escapes a command is a bug and is reported as such.
 */

/** Exit codes: public API, listed in every command's help and in docs/exit-codes.md. */
export const ExitCode = {
  OK: 0,
  FAILED: 1,
  USAGE: 2,
  PARTIAL: 3,
  PRECONDITION: 4,
  INTERRUPTED: 130,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** One row per exit code: the single source for help text and docs. */
export const EXIT_CODE_TABLE: { code: ExitCode; name: string; meaning: string }[] = [
  { code: ExitCode.OK, name: 'ok', meaning: 'Success.' },
  {
    code: ExitCode.FAILED,
    name: 'failed',
    meaning: 'The operation failed (a tool, the API or the database reported an error). Workloads were put back.',
  },
  { code: ExitCode.USAGE, name: 'usage', meaning: 'Invalid flags or arguments.' },
  {
    code: ExitCode.PARTIAL,
    name: 'partial',
    meaning: 'Finished, but with warnings that need attention (listed in the output).',
  },
  {
    code: ExitCode.PRECONDITION,
    name: 'precondition',
    meaning:
      'A precondition was not met: deployment not found, lock held, confirmation missing, bad input. Nothing was changed.',
  },
  { code: ExitCode.INTERRUPTED, name: 'interrupted', meaning: 'Interrupted by SIGINT/SIGTERM after cleaning up.' },
];

export interface EssErrorOptions {
  /** Concrete next steps: commands to run or flags to pass. */
  next?: string[];
  exitCode?: ExitCode;
  /** Stable machine-readable identifier, e.g. 'DEPLOYMENT_NOT_FOUND'. */
  code?: string;
  cause?: unknown;
  /** Structured context for scripts, added to the --json error envelope as `error.details` (no secrets). */
  details?: Record<string, unknown>;
}

/** An expected failure: shown to the user as a message plus next steps, never with a stack trace. */
export class EssError extends Error {
  readonly next: string[];
  readonly exitCode: ExitCode;
  readonly code: string;
  readonly details?: Record<string, unknown>;

  constructor(message: string, options: EssErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'EssError';
    this.next = options.next ?? [];
    this.exitCode = options.exitCode ?? ExitCode.FAILED;
    this.code = options.code ?? 'FAILED';
    this.details = options.details;
  }
}

/** A precondition failure (exit code 4): nothing has been changed. */
export class PreconditionError extends EssError {
  constructor(message: string, options: Omit<EssErrorOptions, 'exitCode'> = {}) {
    super(message, { ...options, exitCode: ExitCode.PRECONDITION, code: options.code ?? 'PRECONDITION' });
    this.name = 'PreconditionError';
  }
}

/** An external tool (pg_dump, tar, helm…) failed. argv must not contain secrets. */
export class ExternalToolError extends EssError {
  constructor(
    readonly tool: string,
    readonly exitStatus: number | string,
    readonly stderrTail: string,
    options: EssErrorOptions = {},
  ) {
    const tail = stderrTail.trim().split('\n').slice(-20).join('\n');
    super(`${tool} failed (${exitStatus})${tail ? `:\n${tail}` : ''}`, { code: 'EXTERNAL_TOOL', ...options });
    this.name = 'ExternalToolError';
  }
}

/** The run was interrupted by a signal; cleanup has happened. */
export class InterruptedError extends EssError {
  constructor(signal: string) {
    super(`Interrupted by ${signal}.`, { exitCode: ExitCode.INTERRUPTED, code: 'INTERRUPTED' });
    this.name = 'InterruptedError';
  }
}

export function isEssError(error: unknown): error is EssError {
  return error instanceof EssError;
}

/** Help-section text listing the exit codes (for `static description` footers). */
export function exitCodeHelp(): string {
  return `EXIT CODES\n${EXIT_CODE_TABLE.map((row) => `  ${String(row.code).padEnd(4)}${row.meaning}`).join('\n')}`;
}
