/**
 * Backup retention as a pure function: which backups `--keep-last N` and `--keep-within 30d` keep, and which may be
 * deleted. Never selects the newest backup of a group, nor any backup that a kept incremental backup depends on
 * (its parent, the parent's parent, …).
 */
import { EssError, ExitCode } from './errors.js';

/** One backup as retention sees it. */
export interface RetentionItem {
  /** Unique id, e.g. naming.ts backupId(). */
  id: string;
  createdAt: Date;
  /** Id of the backup this incremental one depends on. */
  parentId?: string;
  /** Rules apply per group (e.g. per server name); default: one group. */
  group?: string;
}

/** The rules; at least one must be set. */
export interface RetentionPolicy {
  /** Keep the N newest backups of each group. */
  keepLast?: number;
  /** Keep backups younger than this many milliseconds (see {@link parseRetentionDuration}). */
  keepWithinMs?: number;
}

/** Why a backup is kept. */
export type KeepReason = 'newest' | 'keep-last' | 'keep-within' | 'parent-of-kept';

/** The decision for every item, newest first within each group. */
export interface RetentionDecision {
  keep: { id: string; reasons: KeepReason[] }[];
  remove: { id: string }[];
  /** Parents referenced by kept backups but not in the list (their chain is already broken). */
  missingParents: string[];
}

const UNITS: Record<string, number> = { h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };

/**
 * Parses a duration such as `30d`, `12h`, `2w` or `1w3d` into milliseconds. Throws EssError (exit 2) otherwise.
 */
export function parseRetentionDuration(text: string): number {
  const trimmed = text.trim();
  if (!/^(\d+[hdw])+$/.test(trimmed)) {
    throw new EssError(`Invalid duration ${JSON.stringify(text)}.`, {
      exitCode: ExitCode.USAGE,
      code: 'USAGE',
      next: ['Use hours, days or weeks, e.g. 36h, 30d, 2w or 1w3d'],
    });
  }
  let total = 0;
  for (const [, amount, unit] of trimmed.matchAll(/(\d+)([hdw])/g)) total += Number(amount) * UNITS[unit!]!;
  return total;
}

/**
 * Decides what to keep. `now` is the reference time for keepWithin. Items with equal times are ordered by id so
 * the result is deterministic. Throws EssError (exit 2) when no rule is given or keepLast < 1.
 */
export function selectRetention(items: RetentionItem[], policy: RetentionPolicy, now: Date): RetentionDecision {
  if (policy.keepLast === undefined && policy.keepWithinMs === undefined) {
    throw new EssError('Say what to keep: --keep-last and/or --keep-within.', {
      exitCode: ExitCode.USAGE,
      code: 'USAGE',
    });
  }
  if (policy.keepLast !== undefined && (!Number.isInteger(policy.keepLast) || policy.keepLast < 1)) {
    throw new EssError('--keep-last must be at least 1.', { exitCode: ExitCode.USAGE, code: 'USAGE' });
  }
  const sorted = [...items].sort(
    (a, b) => b.createdAt.getTime() - a.createdAt.getTime() || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0),
  );
  const reasons = new Map<string, Set<KeepReason>>();
  const keep = (id: string, reason: KeepReason) => {
    const set = reasons.get(id) ?? new Set<KeepReason>();
    set.add(reason);
    reasons.set(id, set);
  };
  const seenInGroup = new Map<string, number>();
  for (const item of sorted) {
    const group = item.group ?? '';
    const rank = seenInGroup.get(group) ?? 0;
    seenInGroup.set(group, rank + 1);
    if (rank === 0) keep(item.id, 'newest');
    if (policy.keepLast !== undefined && rank < policy.keepLast) keep(item.id, 'keep-last');
    if (policy.keepWithinMs !== undefined && now.getTime() - item.createdAt.getTime() <= policy.keepWithinMs) {
      keep(item.id, 'keep-within');
    }
  }
  const byId = new Map(items.map((item) => [item.id, item]));
  const missingParents = new Set<string>();
  for (const id of [...reasons.keys()]) {
    let parentId = byId.get(id)?.parentId;
    const visited = new Set<string>([id]);
    while (parentId !== undefined && !visited.has(parentId)) {
      visited.add(parentId);
      const parent = byId.get(parentId);
      if (!parent) {
        missingParents.add(parentId);
        break;
      }
      keep(parentId, 'parent-of-kept');
      parentId = parent.parentId;
    }
  }
  return {
    keep: sorted.filter((i) => reasons.has(i.id)).map((i) => ({ id: i.id, reasons: [...reasons.get(i.id)!] })),
    remove: sorted.filter((i) => !reasons.has(i.id)).map((i) => ({ id: i.id })),
    missingParents: [...missingParents].sort(),
  };
}
