/**
 * `ess backup prune`: applies --keep-last / --keep-within to a destination. Plans from the listing (no downloads),
 * shows the plan, asks for confirmation, deletes newest first. Never deletes the newest backup of a server or a
 * parent of a kept incremental backup (see retention.ts).
 */
import type { Reporter } from '../../lib/output/log.js';
import type { BackupStore } from '../../lib/storage/store.js';
import { applyRetention, planRetention, type RetentionObject, type RetentionPlan } from './retention.js';

/** Options of {@link pruneBackups}. */
export interface PruneOptions {
  keepLast?: number;
  /** Keep backups younger than this (ms). */
  keepWithinMs?: number;
  /** Only backups of these servers (file-safe names as in archive names); default: every server. */
  servers?: string[];
  dryRun: boolean;
  signal?: AbortSignal;
}

/** Dependencies of {@link pruneBackups}. */
export interface PruneDeps {
  reporter: Reporter;
  now?: () => Date;
  /** Called with the plan before anything is deleted (and only when something would be); throw to refuse. */
  confirm?: (plan: RetentionPlan) => Promise<void>;
}

/** What {@link pruneBackups} returns (the `--json` output of `ess backup prune`). */
export interface PruneResult {
  location: string;
  dryRun: boolean;
  policy: { keepLast?: number; keepWithinMs?: number };
  kept: RetentionObject[];
  /** Dry run: what would be deleted. Otherwise: what was deleted. */
  deleted: RetentionObject[];
  failed: { name: string; error: string }[];
  freedBytes: number;
  missingParents: string[];
  warnings: string[];
}

/** See the module comment. */
export async function pruneBackups(store: BackupStore, options: PruneOptions, deps: PruneDeps): Promise<PruneResult> {
  const now = deps.now?.() ?? new Date();
  const plan = await planRetention(store, {
    keepLast: options.keepLast,
    keepWithinMs: options.keepWithinMs,
    servers: options.servers,
    now,
  });
  const warnings = plan.missingParents.map(
    (id) => `Kept incremental backups refer to ${id}, which is not at ${store.location}: their media chain is broken.`,
  );
  const base = {
    location: store.location,
    dryRun: options.dryRun,
    policy: { keepLast: options.keepLast, keepWithinMs: options.keepWithinMs },
    kept: plan.keep,
    missingParents: plan.missingParents,
    warnings,
  };
  if (options.dryRun || plan.remove.length === 0) {
    return {
      ...base,
      deleted: plan.remove,
      failed: [],
      freedBytes: plan.remove.reduce((sum, o) => sum + o.size, 0),
    };
  }
  await deps.confirm?.(plan);
  const outcome = await applyRetention(store, plan, { reporter: deps.reporter, signal: options.signal });
  return { ...base, deleted: outcome.deleted, failed: outcome.failed, freedBytes: outcome.freedBytes };
}
