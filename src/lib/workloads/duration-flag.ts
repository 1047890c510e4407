import { Flags } from '@oclif/core';
import { parseGoDuration } from '../helm/duration.js';

/**
 * A `--timeout` style oclif flag: a Go duration as kubectl and helm take it (90s, 5m, 1h30m), parsed to
 * milliseconds. Rejects zero, negative and malformed values with a usage error.
 */
export function durationFlag(description: string, defaultValue = '5m') {
  return Flags.custom<number>({
    description,
    default: async () => parseGoDuration(defaultValue) as number,
    defaultHelp: async () => defaultValue,
    parse: async (input) => {
      const ms = parseGoDuration(input);
      if (ms === undefined || ms <= 0) throw new Error(`Expected a duration such as 90s or 5m, got "${input}".`);
      return ms;
    },
  })();
}
