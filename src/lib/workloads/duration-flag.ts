import { Flags } from '@oclif/core';
import { EssError, ExitCode } from '../errors.js';
import { parseGoDuration } from '../helm/duration.js';

/**
 * A `--timeout` style oclif flag: a Go duration as kubectl and helm take it (90s, 5m, 1h30m), parsed to
 * milliseconds. Rejects zero, negative and malformed values with a usage error (exit 2).
 */
export function durationFlag(description: string, defaultValue = '5m', options: { bareSeconds?: boolean } = {}) {
  return Flags.custom<number>({
    description,
    default: async () => parseGoDuration(defaultValue) as number,
    defaultHelp: async () => defaultValue,
    parse: async (input) => {
      // `bareSeconds`: a plain integer counts as seconds (what such a flag took before it took durations).
      if (options.bareSeconds && /^\d+$/.test(input.trim()) && Number(input) > 0) return Number(input) * 1000;
      const ms = parseGoDuration(input);
      if (ms === undefined || ms <= 0) {
        // An EssError, so that a typo is a usage error (exit 2), not "a bug in ess".
        throw new EssError(`Expected a duration such as 90s or 5m, got "${input}".`, {
          exitCode: ExitCode.USAGE,
          code: 'USAGE',
          next: ['Use a Go duration: 90s, 5m, 1h30m'],
        });
      }
      return ms;
    },
  })();
}
