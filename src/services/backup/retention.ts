/**
 * Applying a retention policy to a backup destination: shared by `ess backup --keep-last/--keep-within` (after a
 * successful backup) and `ess backup prune`. Planning works from the listing alone (archive names carry server,
 * time and parent), so it needs no downloads or keys; the decision itself is the pure {@link selectRetention}.
 */
import { backupId, parentBackupId, parseArchiveName } from '../../lib/archive/naming.js';
import { interruption } from '../../lib/deployment/scaler.js';
import type { Reporter } from '../../lib/output/log.js';
import { type KeepReason, selectRetention } from '../../lib/retention.js';
import type { BackupStore } from '../../lib/storage/store.js';

/** One archive in the store as retention sees it. */
export interface RetentionObject {
  name: string;
  /** Backup id (`<server>_<timestamp>`): every object with this id is kept or removed together. */
  id: string;
  /** File-safe server name from the archive name. */
  server: string;
  /** ISO time from the archive name. */
  createdAt: string;
  size: number;
  /** Id of the parent (incremental backups). */
  parentId?: string;
  /** Why it is kept (kept objects only). */
  reasons?: KeepReason[];
}

/** What {@link planRetention} decided. Objects newest first. */
export interface RetentionPlan {
  keep: RetentionObject[];
  remove: RetentionObject[];
  /** Parents referenced by kept incremental backups but missing from the store (already broken chains). */
  missingParents: string[];
}

/** Options of {@link planRetention}: at least one of keepLast and keepWithinMs. */
export interface PlanRetentionOptions {
  keepLast?: number;
  keepWithinMs?: number;
  /** Reference time for keepWithin. */
  now: Date;
  /** Only these servers (file-safe names as in archive names); default: every server in the store. */
  servers?: string[];
}

/**
 * Lists the store and decides per server what to keep: never the newest backup of a server, never a parent that a
 * kept incremental backup needs. Files that are not ess archive names are left out. Throws EssError (exit 2) for an
 * empty or invalid policy (see {@link selectRetention}).
 */
export async function planRetention(store: BackupStore, options: PlanRetentionOptions): Promise<RetentionPlan> {
  const byId = new Map<string, RetentionObject[]>();
  const items: { id: string; createdAt: Date; parentId?: string; group: string }[] = [];
  for (const object of await store.list()) {
    const parsed = parseArchiveName(object.name);
    if (!parsed) continue;
    if (options.servers && !options.servers.includes(parsed.server)) continue;
    const id = backupId(parsed);
    const parentId = parentBackupId(parsed);
    const described: RetentionObject = {
      name: object.name,
      id,
      server: parsed.server,
      createdAt: parsed.createdAt.toISOString(),
      size: object.size,
      ...(parentId ? { parentId } : {}),
    };
    const same = byId.get(id);
    if (same) same.push(described);
    else {
      byId.set(id, [described]);
      items.push({ id, createdAt: parsed.createdAt, parentId, group: parsed.server });
    }
  }
  const decision = selectRetention(
    items,
    { keepLast: options.keepLast, keepWithinMs: options.keepWithinMs },
    options.now,
  );
  return {
    keep: decision.keep.flatMap((k) => byId.get(k.id)!.map((o) => ({ ...o, reasons: k.reasons }))),
    remove: decision.remove.flatMap((r) => byId.get(r.id)!),
    missingParents: decision.missingParents,
  };
}

/** What {@link applyRetention} did. */
export interface RetentionOutcome {
  deleted: RetentionObject[];
  /** Deletions that failed (the others still happened). */
  failed: { name: string; error: string }[];
  freedBytes: number;
}

/**
 * Deletes `plan.remove` in plan order (newest first, so an incremental child goes before its parent). A failed
 * deletion is reported in the outcome, not thrown; `signal` stops before the next deletion (InterruptedError).
 */
export async function applyRetention(
  store: BackupStore,
  plan: RetentionPlan,
  options: { reporter?: Reporter; signal?: AbortSignal } = {},
): Promise<RetentionOutcome> {
  const outcome: RetentionOutcome = { deleted: [], failed: [], freedBytes: 0 };
  for (const object of plan.remove) {
    if (options.signal?.aborted) throw interruption(options.signal);
    options.reporter?.info(`Deleting ${object.name}`);
    try {
      await store.delete(object.name);
    } catch (error) {
      outcome.failed.push({ name: object.name, error: (error as Error).message });
      continue;
    }
    outcome.deleted.push(object);
    outcome.freedBytes += object.size;
  }
  return outcome;
}
