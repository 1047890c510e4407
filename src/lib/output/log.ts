/**
 * Everything ess says to a human goes to stderr through a {@link Reporter}; stdout carries only results.
 * Services receive a Reporter and never touch the console.
 */
export interface Reporter {
  /** A step or fact worth telling the user. */
  info(message: string): void;
  warn(message: string): void;
  /** Only shown with --verbose. */
  debug(message: string): void;
  /**
   * Progress of a long stage. `done`/`total` in the stage's unit (bytes unless `unit` says otherwise).
   * Rendered as a live line on a TTY and throttled timestamped lines otherwise.
   */
  progress(stage: string, done: number, total?: number, unit?: 'bytes' | 'items'): void;
}

/** A reporter that drops everything (tests, --json callers that want silence). */
export const silentReporter: Reporter = {
  info() {},
  warn() {},
  debug() {},
  progress() {},
};

export interface StderrReporterOptions {
  verbose: boolean;
  isTTY: boolean;
  write?: (text: string) => void;
  now?: () => number;
}

/** Formats a byte count: 1536 → "1.5 KiB". */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** Formats a duration in ms: 83000 → "1m23s". */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  const rest = Math.round(s - m * 60);
  if (m < 60) return `${m}m${String(rest).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** A Reporter writing to stderr: live progress lines on a TTY, timestamped lines otherwise. */
export function createStderrReporter(options: StderrReporterOptions): Reporter {
  const write = options.write ?? ((text: string) => process.stderr.write(text));
  const now = options.now ?? Date.now;
  const stages = new Map<string, { start: number; lastPrint: number }>();
  let liveLine = false;

  const clearLive = () => {
    if (liveLine) {
      write('\r\x1b[2K');
      liveLine = false;
    }
  };
  const line = (prefix: string, message: string) => {
    clearLive();
    const stamp = options.isTTY ? '' : `${new Date(now()).toISOString()} `;
    write(`${stamp}${prefix}${message}\n`);
  };

  return {
    info: (message) => line('', message),
    warn: (message) => line('warning: ', message),
    debug: (message) => {
      if (options.verbose) line('debug: ', message);
    },
    progress(stage, done, total, unit = 'bytes') {
      const t = now();
      let state = stages.get(stage);
      if (!state) {
        state = { start: t, lastPrint: Number.NEGATIVE_INFINITY };
        stages.set(stage, state);
      }
      const finished = total !== undefined && done >= total;
      const interval = options.isTTY ? 100 : 10_000;
      if (!finished && t - state.lastPrint < interval) return;
      state.lastPrint = t;
      const elapsed = Math.max(1, t - state.start) / 1000;
      const fmt = unit === 'bytes' ? formatBytes : (n: number) => String(n);
      const rate = done / elapsed;
      let text = `${stage}: ${fmt(done)}`;
      if (total !== undefined && total > 0) {
        text += ` / ${fmt(total)} (${Math.min(100, Math.floor((done / total) * 100))}%)`;
        if (rate > 0 && !finished) text += `, ETA ${formatDuration(((total - done) / rate) * 1000)}`;
      }
      text += `, ${fmt(Math.round(rate))}/s`;
      if (options.isTTY && !finished) {
        clearLive();
        write(`${text}`);
        liveLine = true;
      } else {
        line('', text);
      }
      if (finished) stages.delete(stage);
    },
  };
}
