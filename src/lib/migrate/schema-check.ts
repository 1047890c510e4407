/**
 * Can the Synapse that ESS runs use a database restored from this dump? The rule of synapse-database.md §10.6,
 * refined with `applied_schema_deltas`: deltas are sometimes added to an existing schema version, so two databases
 * at the same `schema_version` can differ, and only the deltas tell whether the dump came from a newer release.
 */
import { synapseSchemaFacts } from '../synapse/schema-versions.js';
import type { SchemaFacts } from './dump-facts.js';

/** What ESS's Synapse and its current database say. */
export interface TargetSchema {
  /** Synapse version (image tag) ESS runs, e.g. v1.157.1. */
  synapseVersion?: string;
  /** The live ESS database's schema_version, when Synapse has initialised it. */
  liveVersion?: number;
  /** The live database's applied_schema_deltas at its current version ("version/file"). */
  liveDeltas?: string[];
}

export type SchemaVerdict =
  | { ok: true; kind: 'same' | 'upgrade'; targetVersion: number; note: string }
  | { ok: false; code: 'SCHEMA_TOO_NEW' | 'SCHEMA_UNKNOWN'; targetVersion?: number; reason: string; next: string[] };

/**
 * Compares the dump's schema with the target. Refuses a dump newer than ESS's Synapse (higher schema_version, a
 * compat version above the target's schema, or deltas of the same version the target has not applied).
 */
export function checkSchema(dump: SchemaFacts, target: TargetSchema): SchemaVerdict {
  const facts = target.synapseVersion ? synapseSchemaFacts(target.synapseVersion) : undefined;
  // The table is a lower bound for versions newer than it; a live database built by that Synapse is exact.
  let targetVersion = facts?.schemaVersion;
  if (target.liveVersion !== undefined && (targetVersion === undefined || facts?.exact === false)) {
    targetVersion = Math.max(targetVersion ?? 0, target.liveVersion);
  }
  const upgradeOld = (v: number) =>
    `Bring the old Synapse to the version ESS runs (${target.synapseVersion ?? `schema ${v}`}) or older, start it once, stop it, and dump again` +
    ' — or upgrade ESS to a chart whose Synapse is at least as new as the old server';
  if (targetVersion === undefined) {
    return {
      ok: false,
      code: 'SCHEMA_UNKNOWN',
      reason: `Cannot tell which schema ESS's Synapse (${target.synapseVersion ?? 'version unknown'}) supports, and its database is not initialised.`,
      next: [
        'Check the Synapse image with ess status',
        'Start ESS once so that Synapse initialises its database, then retry',
      ],
    };
  }
  const from = `The dump is at schema ${dump.version} (compat ${dump.compatVersion ?? '?'})`;
  if (dump.compatVersion !== undefined && dump.compatVersion > targetVersion) {
    return {
      ok: false,
      code: 'SCHEMA_TOO_NEW',
      targetVersion,
      reason: `${from}; ESS's Synapse ${target.synapseVersion ?? ''} understands schema ${targetVersion} and would refuse to start ("database too new").`,
      next: [upgradeOld(targetVersion)],
    };
  }
  if (dump.version > targetVersion) {
    return {
      ok: false,
      code: 'SCHEMA_TOO_NEW',
      targetVersion,
      reason: `${from}, newer than the schema ${targetVersion} of ESS's Synapse ${target.synapseVersion ?? ''}: the dump comes from a newer Synapse.`,
      next: [upgradeOld(targetVersion)],
    };
  }
  // Only a live database that records its deltas at this version can vouch for them (a schema-only load has none).
  const liveAtTarget = (target.liveDeltas ?? []).filter((d) => Number(d.split('/')[0]) === targetVersion);
  if (dump.version === targetVersion && target.liveVersion === targetVersion && liveAtTarget.length > 0) {
    const known = new Set(target.liveDeltas);
    const unknown = dump.appliedDeltas.filter((d) => Number(d.split('/')[0]) >= targetVersion && !known.has(d));
    if (unknown.length > 0) {
      return {
        ok: false,
        code: 'SCHEMA_TOO_NEW',
        targetVersion,
        reason: `${from}, the same version as ESS, but it has schema deltas ESS's Synapse has not applied (${unknown.slice(0, 3).join(', ')}${unknown.length > 3 ? ', …' : ''}): it comes from a newer Synapse release.`,
        next: [upgradeOld(targetVersion)],
      };
    }
  }
  if (dump.version < targetVersion) {
    return {
      ok: true,
      kind: 'upgrade',
      targetVersion,
      note: `${from}; ESS's Synapse (schema ${targetVersion}) upgrades it on first start, which can take a while on a large database.`,
    };
  }
  return { ok: true, kind: 'same', targetVersion, note: `${from}, the schema of ESS's Synapse.` };
}
