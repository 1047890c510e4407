/**
 * Calendar arithmetic of the MAU report, all in UTC and in milliseconds since the epoch (the unit of
 * `user_ips.last_seen` and `user_daily_visits.timestamp`).
 */
import { EssError, ExitCode } from '../../lib/errors.js';

export const DAY_MS = 86_400_000;
/** The runbook's "current MAU" window: from 00:00 UTC this many days before the day of the report. */
export const CURRENT_WINDOW_DAYS = 30;
/** A `--from/--to` range longer than this is refused (it is almost certainly a typo). */
export const MAX_MONTHS = 240;

/** One calendar month: [startMs, endMs), UTC. */
export interface Month {
  /** `YYYY-MM`. */
  label: string;
  startMs: number;
  endMs: number;
}

function usage(message: string, next: string[]): EssError {
  return new EssError(message, { exitCode: ExitCode.USAGE, code: 'BAD_FLAG', next });
}

/** Parses `YYYY-MM` into the month's UTC bounds; throws a usage error (exit 2) otherwise. */
export function parseMonth(text: string, flag = '--month'): Month {
  const match = /^(\d{4})-(\d{2})$/.exec(text.trim());
  const year = match ? Number(match[1]) : Number.NaN;
  const month = match ? Number(match[2]) : Number.NaN;
  if (!match || month < 1 || month > 12 || year < 1970) {
    throw usage(`${flag} must be a month like 2024-11 (got "${text}").`, [`Example: ${flag} 2024-11`]);
  }
  return { label: monthLabel(year, month - 1), startMs: Date.UTC(year, month - 1, 1), endMs: Date.UTC(year, month, 1) };
}

function monthLabel(year: number, monthIndex: number): string {
  const d = new Date(Date.UTC(year, monthIndex, 1));
  return `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, '0')}`;
}

/** The calendar month containing `ms`. */
export function monthOf(ms: number): Month {
  const d = new Date(ms);
  return parseMonth(monthLabel(d.getUTCFullYear(), d.getUTCMonth()));
}

/** Every month from `from` to `to`, both included, in order. */
export function monthRange(from: Month, to: Month): Month[] {
  if (from.startMs > to.startMs) {
    throw usage(`--from ${from.label} is after --to ${to.label}.`, ['Swap the two months']);
  }
  const months: Month[] = [];
  for (let m = from; m.startMs <= to.startMs; m = monthOf(m.endMs)) {
    months.push(m);
    if (months.length > MAX_MONTHS) {
      throw usage(`The range ${from.label}..${to.label} is longer than ${MAX_MONTHS} months.`, [
        'Ask for a shorter range',
      ]);
    }
  }
  return months;
}

/** 00:00 UTC of the day containing `ms`. */
export function utcMidnight(ms: number): number {
  return Math.floor(ms / DAY_MS) * DAY_MS;
}

/** Parses `YYYY-MM-DD` (a UTC day) into its midnight; throws a usage error (exit 2) otherwise. */
export function parseDay(text: string, flag = '--at'): number {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text.trim());
  if (match) {
    const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])];
    const ms = Date.UTC(year, month - 1, day);
    const d = new Date(ms);
    if (year >= 1970 && d.getUTCFullYear() === year && d.getUTCMonth() === month - 1 && d.getUTCDate() === day) {
      return ms;
    }
  }
  throw usage(`${flag} must be a date like 2025-01-07 (got "${text}").`, [`Example: ${flag} 2025-01-07`]);
}

/** `YYYY-MM-DD` of a UTC day. */
export function dayLabel(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** ISO 8601 in UTC, e.g. `2024-11-01T00:00:00.000Z`. */
export function isoUtc(ms: number): string {
  return new Date(ms).toISOString();
}

/**
 * The runbook's rolling window for "current MAU" on day `dayMs` (a UTC midnight): from 00:00 UTC 30 days
 * earlier (included) to the end of that day (excluded). Run on 2025-01-07 it starts 2024-12-08, as in the runbook.
 */
export function rollingWindow(dayMs: number): { fromMs: number; toMs: number } {
  return { fromMs: dayMs - CURRENT_WINDOW_DAYS * DAY_MS, toMs: dayMs + DAY_MS };
}
