/**
 * Synapse release → database SCHEMA_VERSION and SCHEMA_COMPAT_VERSION: public facts read from the element-hq/synapse
 * release tags (what Synapse's scripts-dev/schema_versions.py reads for its "rolling back" table). A Synapse refuses
 * to start on a database whose `schema_compat_version.compat_version` is newer than its own SCHEMA_VERSION.
 */

/** `[since, schema, compat]`: every release from `since` on has these values, until the next row. */
export type SchemaChange = readonly [since: string, schema: number, compat: number | null];

// The region below is project data generated once from the public list of releases; never edit it by hand.
// BEGIN GENERATED (test/upgrade/schema-versions.gen.ts)
/** The change points, oldest first. */
export const SYNAPSE_SCHEMA_CHANGES: readonly SchemaChange[] = [
  ['1.0.0', 55, null],
  ['1.3.0', 56, null],
  ['1.9.0', 57, null],
  ['1.13.0', 58, null],
  ['1.26.0', 59, null],
  ['1.37.0', 59, 59],
  ['1.38.0', 60, 59],
  ['1.39.0', 61, 59],
  ['1.41.0', 63, 59],
  ['1.44.0', 64, 59],
  ['1.45.0', 64, 60],
  ['1.46.0', 65, 60],
  ['1.48.0', 65, 61],
  ['1.49.0', 66, 61],
  ['1.50.0', 67, 61],
  ['1.52.0', 68, 66],
  ['1.57.0', 69, 66],
  ['1.58.0', 69, 69],
  ['1.60.0', 70, 69],
  ['1.61.0', 71, 69],
  ['1.62.0', 72, 71],
  ['1.64.0', 72, 72],
  ['1.68.0', 73, 72],
  ['1.70.0', 73, 73],
  ['1.77.0', 74, 73],
  ['1.83.0', 76, 74],
  ['1.85.0', 77, 76],
  ['1.86.0', 78, 76],
  ['1.89.0', 79, 76],
  ['1.90.0', 80, 76],
  ['1.92.0', 81, 80],
  ['1.93.0', 82, 80],
  ['1.96.0', 83, 80],
  ['1.98.0', 83, 83],
  ['1.100.0', 84, 83],
  ['1.105.1', 84, 84],
  ['1.107.0', 85, 84],
  ['1.112.0', 86, 84],
  ['1.114.0', 87, 84],
  ['1.116.0', 88, 84],
  ['1.124.0', 89, 84],
  ['1.128.0', 91, 84],
  ['1.129.0', 92, 84],
  ['1.143.0', 93, 84],
  ['1.151.0', 94, 84],
];

/** Oldest and newest Synapse release the table knows. */
export const SYNAPSE_SCHEMA_TABLE_RANGE = { first: '1.0.0', last: '1.157.1' } as const;
// END GENERATED

/** What the table says about one Synapse version. */
export interface SynapseSchemaFacts {
  /** The version looked up, normalised to `X.Y.Z`. */
  version: string;
  /** SCHEMA_VERSION of that release (a lower bound when `exact` is false). */
  schemaVersion: number;
  /** SCHEMA_COMPAT_VERSION of that release; null before Synapse 1.37. */
  compatVersion: number | null;
  /** False when the version is newer than the newest release in the table: then schemaVersion is a lower bound. */
  exact: boolean;
}

/** Extracts `X.Y.Z` from a Synapse version or image tag: `v1.129.0`, `1.129.0rc1`, `v1.157.1-ess.2`, `v1.2.3@sha…`. */
export function parseSynapseVersion(text: string | undefined): string | undefined {
  const match = text?.trim().match(/^v?(\d+)\.(\d+)\.(\d+)/);
  return match ? `${Number(match[1])}.${Number(match[2])}.${Number(match[3])}` : undefined;
}

/** Compares dotted numeric versions. */
export function compareVersions(a: string, b: string): number {
  const x = a.split('.').map((p) => Number.parseInt(p, 10) || 0);
  const y = b.split('.').map((p) => Number.parseInt(p, 10) || 0);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/**
 * Looks up the schema facts of a Synapse version (or image tag). Undefined when it cannot be parsed or is older than
 * the table. A version newer than the table gets the newest row's facts with `exact: false`.
 */
export function synapseSchemaFacts(versionOrTag: string): SynapseSchemaFacts | undefined {
  const version = parseSynapseVersion(versionOrTag);
  if (!version || compareVersions(version, SYNAPSE_SCHEMA_TABLE_RANGE.first) < 0) return undefined;
  let row: SchemaChange | undefined;
  for (const change of SYNAPSE_SCHEMA_CHANGES) {
    if (compareVersions(change[0], version) > 0) break;
    row = change;
  }
  if (!row) return undefined;
  return {
    version,
    schemaVersion: row[1],
    compatVersion: row[2],
    exact: compareVersions(version, SYNAPSE_SCHEMA_TABLE_RANGE.last) <= 0,
  };
}
