import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  parseSynapseVersion,
  SYNAPSE_SCHEMA_CHANGES,
  SYNAPSE_SCHEMA_TABLE_RANGE,
  synapseSchemaFacts,
} from '../../src/lib/synapse/schema-versions.js';
import { hasShared, repoRoot, sharedDir } from '../helpers/cli.js';
import { regenerate } from './schema-versions.gen.js';

describe('Synapse schema versions table', () => {
  it('maps releases and image tags to SCHEMA_VERSION and SCHEMA_COMPAT_VERSION', () => {
    expect(synapseSchemaFacts('v1.157.1')).toEqual({
      version: '1.157.1',
      schemaVersion: 94,
      compatVersion: 84,
      exact: true,
    });
    expect(synapseSchemaFacts('1.151.0')).toMatchObject({ schemaVersion: 94, compatVersion: 84 });
    expect(synapseSchemaFacts('1.150.0')).toMatchObject({ schemaVersion: 93, compatVersion: 84 });
    expect(synapseSchemaFacts('v1.129.0')).toMatchObject({ schemaVersion: 92 });
    expect(synapseSchemaFacts('v1.128.5-ess.1')).toMatchObject({ schemaVersion: 91 });
    expect(synapseSchemaFacts('1.36.0')).toMatchObject({ schemaVersion: 59, compatVersion: null });
    expect(synapseSchemaFacts('1.100.0')).toMatchObject({ schemaVersion: 84, compatVersion: 83 });
  });

  it('treats versions newer than the table as a lower bound and rejects what it cannot read', () => {
    expect(synapseSchemaFacts('v1.999.0')).toMatchObject({ schemaVersion: 94, exact: false });
    expect(synapseSchemaFacts('0.99.5')).toBeUndefined();
    expect(synapseSchemaFacts('latest')).toBeUndefined();
    expect(parseSynapseVersion('v1.2.3@sha256:abc')).toBe('1.2.3');
    expect(parseSynapseVersion('1.130.0rc1')).toBe('1.130.0');
  });

  it('is sorted with non-decreasing schema and compat versions', () => {
    for (let i = 1; i < SYNAPSE_SCHEMA_CHANGES.length; i++) {
      const [, schema, compat] = SYNAPSE_SCHEMA_CHANGES[i];
      const [, prevSchema, prevCompat] = SYNAPSE_SCHEMA_CHANGES[i - 1];
      expect(schema).toBeGreaterThanOrEqual(prevSchema);
      expect(compat ?? 0).toBeGreaterThanOrEqual(prevCompat ?? 0);
    }
    expect(SYNAPSE_SCHEMA_TABLE_RANGE.first).toBe(SYNAPSE_SCHEMA_CHANGES[0][0]);
  });
});

const csv = join(sharedDir, 'fixtures', 'synapse-schema', 'synapse-schema-versions.csv');
describe.skipIf(!hasShared || !existsSync(csv))('Synapse schema table against the CSV (../shared)', () => {
  it('the committed table is exactly what the generator makes from the CSV', () => {
    const file = join(repoRoot, 'src', 'lib', 'synapse', 'schema-versions.ts');
    const source = readFileSync(file, 'utf8');
    expect(regenerate(source, readFileSync(csv, 'utf8'))).toBe(source);
  });

  it('agrees with every row of the CSV', () => {
    const rows = readFileSync(csv, 'utf8').trim().split('\n').slice(1);
    expect(rows.length).toBeGreaterThan(200);
    for (const row of rows) {
      const [version, schema, compat] = row.split(',');
      expect(synapseSchemaFacts(version), version).toEqual({
        version,
        schemaVersion: Number(schema),
        compatVersion: compat ? Number(compat) : null,
        exact: true,
      });
    }
  });
});
