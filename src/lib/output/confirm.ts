import { createInterface } from 'node:readline/promises';
import { PreconditionError } from '../errors.js';

export interface ConfirmOptions {
  /** What the user must type, e.g. the namespace name. */
  expected: string;
  /** One-line description of what is about to happen. */
  action: string;
  /** --yes was given. */
  yes: boolean;
  input?: NodeJS.ReadableStream & { isTTY?: boolean };
  output?: NodeJS.WritableStream;
}

/**
 * Typed confirmation for destructive operations: on a TTY the user types `expected`; without a TTY `--yes` is
 * required. Throws PreconditionError (exit 4) when not confirmed; nothing has been changed at that point.
 */
export async function confirmTyped(options: ConfirmOptions): Promise<void> {
  if (options.yes) return;
  const input = options.input ?? process.stdin;
  const output = options.output ?? process.stderr;
  if (!input.isTTY) {
    throw new PreconditionError(`Refusing to ${options.action} without confirmation (no TTY).`, {
      code: 'CONFIRMATION_REQUIRED',
      next: ['Re-run with --yes to confirm non-interactively', 'Or run with --dry-run to see the plan first'],
    });
  }
  const rl = createInterface({ input, output });
  try {
    const answer = await rl.question(`About to ${options.action}.\nType "${options.expected}" to continue: `);
    if (answer.trim() !== options.expected) {
      throw new PreconditionError('Confirmation did not match; nothing was changed.', { code: 'CONFIRMATION_REFUSED' });
    }
  } finally {
    rl.close();
  }
}
