import { createInterface } from 'node:readline/promises';
import { EssError, ExitCode, PreconditionError } from '../errors.js';

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
 * required. Throws PreconditionError (exit 4) when not confirmed, including when the input ends (Ctrl+D), and an
 * EssError with exit 130 on Ctrl+C; nothing has been changed at that point.
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
  // Ctrl+C in a terminal reaches readline as a key, not as a signal: without a listener readline would only close.
  // The end of the input (Ctrl+D) closes readline, which does not always settle a pending question by itself.
  const stop = new AbortController();
  let why: 'interrupted' | 'ended' | undefined;
  rl.on('SIGINT', () => {
    why ??= 'interrupted';
    stop.abort();
  });
  rl.on('close', () => {
    why ??= 'ended';
    stop.abort();
  });
  let answer: string;
  try {
    answer = await rl.question(`About to ${options.action}.\nType "${options.expected}" to continue: `, {
      signal: stop.signal,
    });
  } catch (error) {
    if (why === 'interrupted') {
      throw new EssError('Interrupted at the confirmation prompt; nothing was changed.', {
        exitCode: ExitCode.INTERRUPTED,
        code: 'INTERRUPTED',
      });
    }
    if (why === 'ended' || (error as { code?: string }).code === 'ABORT_ERR') {
      throw new PreconditionError('Not confirmed (the input ended); nothing was changed.', {
        code: 'CONFIRMATION_REFUSED',
        next: [`Re-run and type "${options.expected}" at the prompt, or pass --yes`],
      });
    }
    throw error;
  } finally {
    rl.close();
  }
  if (answer.trim() !== options.expected) {
    throw new PreconditionError('Confirmation did not match; nothing was changed.', { code: 'CONFIRMATION_REFUSED' });
  }
}
