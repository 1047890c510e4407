import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import {
  decodeRelease,
  decodeReleaseText,
  encodeRelease,
  encodeReleaseText,
  goJsonStringify,
  type HelmRelease,
} from '../../src/lib/helm/release.js';
import { setReleaseStatusText } from '../../src/lib/helm/release-edit.js';
import { hasShared, sharedDir } from '../helpers/cli.js';

/** A release shaped like Helm's (field order of pkg/release/release.go), with the awkward bits of real ones. */
function sampleRelease(): HelmRelease {
  return {
    name: 'ess',
    info: {
      first_deployed: '2025-02-03T10:12:41.123456789Z',
      last_deployed: '2025-05-21T14:55:14.5Z',
      deleted: '',
      description: 'Preparing upgrade',
      status: 'pending-upgrade',
      notes: 'Visit <https://chat.example> & log in.\n',
    },
    chart: {
      metadata: { name: 'matrix-stack', version: '25.4.2', apiVersion: 'v2' },
      lock: null,
      templates: [{ name: 'templates/x.yaml', data: 'e3sgLlJlbGVhc2UuTmFtZSB9fQ==' }],
      values: { synapse: { enabled: true, replicas: 1, ratio: 0.25 }, status: 'pending-upgrade' },
      schema: null,
      files: [],
    },
    config: { serverName: 'ess.example', extra: { status: 'deployed', 'a"b': 'x\\y', unicode: 'é\u2028' } },
    manifest: '---\n# Source: matrix-stack/templates/a.yaml\nkind: ConfigMap\ndata:\n  status: "failed"\n',
    hooks: [],
    version: 15,
    namespace: 'ess',
  };
}

function withoutStatus(release: HelmRelease): HelmRelease {
  const copy = structuredClone(release);
  delete (copy.info as Partial<HelmRelease['info']>).status;
  return copy;
}

describe('Helm release codec', () => {
  it('encodes like Helm: gzip with the H4sI prefix inside a second base64, Go escaping of <, > and &', () => {
    const encoded = encodeRelease(sampleRelease());
    const helmString = Buffer.from(encoded, 'base64').toString('utf8');
    expect(helmString.startsWith('H4sI')).toBe(true);
    const json = gunzipSync(Buffer.from(helmString, 'base64')).toString('utf8');
    expect(json).toContain('Visit \\u003chttps://chat.example\\u003e \\u0026 log in.');
    expect(json).toContain('\\u2028');
    expect(json).not.toMatch(/[<>&\u2028]/);
    expect(decodeRelease(encoded)).toEqual(sampleRelease());
  });

  it('goJsonStringify matches Go encoding/json for the characters Go escapes', () => {
    expect(goJsonStringify({ a: '<b>&\u2029' })).toBe('{"a":"\\u003cb\\u003e\\u0026\\u2029"}');
  });

  it('decodes releases stored without gzip (old Helm 3)', () => {
    const json = JSON.stringify(sampleRelease());
    const apiData = Buffer.from(Buffer.from(json).toString('base64')).toString('base64');
    expect(decodeRelease(apiData)).toEqual(sampleRelease());
  });

  it('mark-failed round trip: decode, set status, re-encode: only info.status differs', () => {
    const original = encodeRelease(sampleRelease());
    const text = decodeReleaseText(original);
    const edited = setReleaseStatusText(text, 'failed');
    const reencoded = encodeReleaseText(edited);
    const before = decodeRelease(original);
    const after = decodeRelease(reencoded);
    expect(after.info.status).toBe('failed');
    expect(withoutStatus(after)).toEqual(withoutStatus(before));
    // Byte for byte, the JSON text only changed inside the status value (other "status" keys are untouched).
    expect(edited).toBe(text.replace('"status":"pending-upgrade","notes"', '"status":"failed","notes"'));
    expect(after.chart?.values).toMatchObject({ status: 'pending-upgrade' });
    expect(after.config).toMatchObject({ extra: { status: 'deployed' } });
  });

  it('keeps bytes that a JSON.parse/stringify round trip would change (big integers, number formats)', () => {
    const text =
      '{"name":"ess","info":{"description":"Preparing upgrade","status":"pending-install"},' +
      '"config":{"id":12345678901234567890,"f":1.50,"e":1E+3},"version":1}';
    const edited = setReleaseStatusText(text, 'failed', "Release unlocked from stale 'pending-install' state");
    expect(edited).toBe(
      '{"name":"ess","info":{"description":"Release unlocked from stale \'pending-install\' state","status":"failed"},' +
        '"config":{"id":12345678901234567890,"f":1.50,"e":1E+3},"version":1}',
    );
  });

  it('refuses JSON without info.status instead of guessing', () => {
    expect(() => setReleaseStatusText('{"name":"x","info":{}}', 'failed')).toThrow(/info.status/);
    expect(() => setReleaseStatusText('{"name":"x"}', 'failed')).toThrow(/info/);
  });
});

// Extra tier: the real fixtures next to the repository (skipped on a fresh clone).
const fixtureDir = join(sharedDir, 'fixtures', 'helm-release');
describe.skipIf(!hasShared || !existsSync(fixtureDir))('Helm release fixtures (../shared)', () => {
  interface SecretList {
    items: { metadata: { name: string; labels: Record<string, string> }; data: { release: string } }[];
  }
  const load = () => ({
    list: JSON.parse(
      readFileSync(join(fixtureDir, 'ess-release-secrets.kubectl-get-secrets.json'), 'utf8'),
    ) as SecretList,
    decoded: JSON.parse(readFileSync(join(fixtureDir, 'ess-release-secrets.decoded.json'), 'utf8')) as Record<
      string,
      HelmRelease
    >,
  });

  it('decodes every release Secret to the published decoded JSON', () => {
    const { list, decoded } = load();
    expect(list.items).toHaveLength(3);
    for (const item of list.items) {
      const release = decodeRelease(item.data.release);
      expect(release).toEqual(decoded[item.metadata.name]);
      expect(release.info.status).toBe(item.metadata.labels.status);
      expect(release.version).toBe(Number(item.metadata.labels.version));
    }
  });

  it('marks a real release failed with every other field unchanged', () => {
    const { list } = load();
    for (const item of list.items) {
      const text = decodeReleaseText(item.data.release);
      const after = decodeRelease(encodeReleaseText(setReleaseStatusText(text, 'failed')));
      const before = decodeRelease(item.data.release);
      expect(after.info.status).toBe('failed');
      expect(withoutStatus(after)).toEqual(withoutStatus(before));
    }
  });
});
