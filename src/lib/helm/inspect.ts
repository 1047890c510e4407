/**
 * Reading facts out of decoded Helm releases: the history row of a revision, whether its operation completed, which
 * Synapse it runs, and which auth-mode deployment marker its configuration requires.
 */
import { componentById, LABELS, names } from '../deployment/components.js';
import { decodeRecord, type HelmRelease, type ReleaseRecord } from './release.js';

/** One row of `helm history`, plus what ess needs to reason about it. */
export interface RevisionSummary {
  revision: number;
  /** Status inside the release body (authoritative); the label's status when the body cannot be decoded. */
  status: string;
  /** Status on the Secret label. */
  labelStatus: string;
  /** When the revision was last deployed (ISO 8601), like helm's UPDATED column. */
  updated?: string;
  /** `<chart name>-<chart version>`, like helm's CHART column. */
  chart?: string;
  chartVersion?: string;
  /** `chart.metadata.appVersion`; always present, `''` when the chart has none (like `helm history -o json`). */
  appVersion: string;
  description?: string;
  /** Set when the release body could not be decoded. */
  decodeError?: string;
}

/** A revision's summary and, when decodable, its release body. */
export interface DecodedRevision {
  record: ReleaseRecord;
  summary: RevisionSummary;
  release?: HelmRelease;
}

/** Decodes a record into a history row; never throws (a broken body is reported in `decodeError`). */
export function decodeRevision(record: ReleaseRecord): DecodedRevision {
  const labelTime = record.modifiedAt ?? record.createdAt;
  const base: RevisionSummary = {
    revision: record.revision,
    status: record.labelStatus,
    labelStatus: record.labelStatus,
    updated: labelTime?.toISOString(),
    appVersion: '',
  };
  let release: HelmRelease;
  try {
    release = decodeRecord(record);
  } catch (error) {
    return { record, summary: { ...base, decodeError: (error as Error).message } };
  }
  const meta = release.chart?.metadata;
  const lastDeployed = release.info?.last_deployed || release.info?.first_deployed;
  const updated = lastDeployed && !Number.isNaN(Date.parse(lastDeployed)) ? new Date(lastDeployed) : undefined;
  return {
    record,
    release,
    summary: {
      ...base,
      status: release.info?.status ?? record.labelStatus,
      updated: updated?.toISOString() ?? base.updated,
      chart: meta?.name && meta.version ? `${meta.name}-${meta.version}` : meta?.name,
      chartVersion: meta?.version,
      appVersion: meta?.appVersion ?? '',
      description: release.info?.description,
    },
  };
}

/**
 * True when a revision's description says its operation finished: Helm writes "Install complete", "Upgrade
 * complete" or "Rollback to N" on success, and "… failed: …" or "Preparing upgrade" otherwise.
 */
export function operationCompleted(description: string | undefined): boolean {
  const text = description?.trim() ?? '';
  if (/^Rollback to \d+$/.test(text)) return true;
  return /\bcomplete\b/i.test(text) && !/fail/i.test(text);
}

function asRecord(value: unknown): Record<string, unknown> | undefined {
  return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

/** Helm-style deep merge: user values (`config`) over chart defaults (`chart.values`). */
export function mergedValues(release: HelmRelease): Record<string, unknown> {
  const merge = (base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> => {
    const out: Record<string, unknown> = { ...base };
    for (const [key, value] of Object.entries(over)) {
      const b = asRecord(out[key]);
      const o = asRecord(value);
      out[key] = b && o ? merge(b, o) : value;
    }
    return out;
  };
  const chartValues = asRecord(release.chart?.values) ?? {};
  return merge(chartValues, asRecord(release.config) ?? {});
}

function path(values: Record<string, unknown>, ...keys: string[]): unknown {
  let current: unknown = values;
  for (const key of keys) current = asRecord(current)?.[key];
  return current;
}

/**
 * The YAML documents of a manifest whose `kind:` is `kind` and whose text contains one of `hints`, `first` ones
 * first. Kept as text: reading two fields with patterns is much cheaper than parsing a 100 KB manifest.
 */
function manifestChunks(manifest: string | undefined, kind: string, hints: string[], first: (c: string) => boolean) {
  if (!manifest) return [];
  const kindLine = new RegExp(`^kind:\\s*${kind}\\s*$`, 'm');
  return manifest
    .split(/^---[ \t]*$/m)
    .filter((chunk) => kindLine.test(chunk) && hints.some((h) => chunk.includes(h)))
    .sort((a, b) => Number(first(b)) - Number(first(a)));
}

/** `name:` of the top-level metadata of a rendered object (the first `  name:` line, two-space indented). */
function objectName(chunk: string): string | undefined {
  return chunk.match(/^ {2}name:\s*"?([^"\s]+)"?\s*$/m)?.[1];
}

/** The Synapse version a release runs and where ess found it. */
export interface ReleaseSynapseVersion {
  /** Image tag or version label as found, e.g. `v1.129.0`; undefined when not found. */
  version?: string;
  source?: string;
}

function imageTag(image: string | undefined): string | undefined {
  if (!image) return undefined;
  const noDigest = image.split('@')[0];
  const slash = noDigest.lastIndexOf('/');
  const colon = noDigest.lastIndexOf(':');
  return colon > slash ? noDigest.slice(colon + 1) : undefined;
}

/**
 * Finds the Synapse version a release deploys: the image tag (or `app.kubernetes.io/version` label) of its Synapse
 * StatefulSets in the rendered manifest, then `synapse.image.tag` in its values, then the chart's appVersion.
 */
export function synapseVersionOfRelease(release: HelmRelease, releaseName: string): ReleaseSynapseVersion {
  const synapseLabels = componentById('synapse')?.componentLabels ?? [];
  const main = names.synapseMainStatefulSet(releaseName);
  const hints = synapseLabels.map((l) => `${LABELS.component}: ${l}`);
  for (const chunk of manifestChunks(release.manifest, 'StatefulSet', hints, (c) => objectName(c) === main)) {
    const name = objectName(chunk);
    // The Synapse image: a repository named `synapse` (oci.element.io/synapse, ghcr.io/element-hq/synapse, …).
    const image = chunk.match(/^\s*(?:- )?image:\s*"?([^"\s]*\/synapse(?:[:@][^"\s]*)?)"?\s*$/m)?.[1];
    const tag = imageTag(image);
    if (tag && /\d+\.\d+\.\d+/.test(tag)) {
      return { version: tag, source: `image of StatefulSet ${name} in the release manifest` };
    }
    const label = chunk.match(
      new RegExp(`^\\s*${LABELS.version.replace(/\./g, '\\.')}:\\s*"?([^"\\s]+)"?\\s*$`, 'm'),
    )?.[1];
    if (label) return { version: label, source: `${LABELS.version} label of StatefulSet ${name}` };
  }
  const valuesTag = path(mergedValues(release), 'synapse', 'image', 'tag');
  if (typeof valuesTag === 'string' && valuesTag) return { version: valuesTag, source: 'synapse.image.tag in values' };
  const appVersion = release.chart?.metadata?.appVersion;
  if (appVersion) return { version: appVersion, source: 'chart appVersion' };
  return {};
}

/** The value of the MATRIX_STACK_MSC3861 deployment marker a release's configuration sets, and what it accepts. */
export interface AuthMarkerRequirement {
  /** The value the release's deployment-markers job would record. */
  value: string;
  /** Live marker values the release's deployment-markers job would accept. */
  allowed: string[];
  source: string;
}

/** The deployment-marker key that records the auth mode (legacy_auth, syn2mas_migrated, delegated_auth). */
export const AUTH_MARKER_KEY = 'MATRIX_STACK_MSC3861';

/**
 * Reads the auth-mode marker requirement of a release: from the `-markers` argument of its deployment-markers hook
 * (formats `<cm>:KEY:<value>:<allowed;…>` and the older `<cm>:KEY:<step>:<value>:<allowed>`), else derived from its
 * values the way the chart does. Undefined when the release sets no such marker (markers off, or no Synapse).
 */
export function authMarkerOfRelease(release: HelmRelease, releaseName: string): AuthMarkerRequirement | undefined {
  const hooks = Array.isArray(release.hooks) ? (release.hooks as { manifest?: string; name?: string }[]) : [];
  const texts = [...hooks.map((h) => ({ text: h.manifest, where: `hook ${h.name ?? '?'}` }))];
  texts.push({ text: release.manifest, where: 'release manifest' });
  const marker = `${names.markersConfigMap(releaseName)}:${AUTH_MARKER_KEY}:`;
  for (const { text, where } of texts) {
    const at = text?.indexOf(marker) ?? -1;
    if (!text || at < 0) continue;
    const rest = text.slice(at + marker.length).match(/^[^",\s]+/)?.[0] ?? '';
    const parts = rest.split(':');
    const [value, allowed] = parts.length >= 3 ? parts.slice(1) : parts;
    if (value) return { value, allowed: (allowed ?? '').split(';').filter(Boolean), source: where };
  }
  const values = mergedValues(release);
  if (path(values, 'deploymentMarkers', 'enabled') === false) return undefined;
  if (path(values, 'synapse', 'enabled') === false) return undefined;
  const source = 'derived from the release values';
  if (path(values, 'matrixAuthenticationService', 'enabled') !== true) {
    return { value: 'legacy_auth', allowed: ['legacy_auth'], source };
  }
  if (path(values, 'matrixAuthenticationService', 'syn2mas', 'enabled') === true) {
    return path(values, 'matrixAuthenticationService', 'syn2mas', 'dryRun') === false
      ? { value: 'syn2mas_migrated', allowed: ['legacy_auth', 'syn2mas_migrated'], source }
      : { value: 'legacy_auth', allowed: ['legacy_auth'], source };
  }
  return { value: 'delegated_auth', allowed: ['delegated_auth', 'syn2mas_migrated'], source };
}

/** True when a release with this marker requirement can run on a cluster whose marker is `live`. */
export function markerAllows(requirement: AuthMarkerRequirement, live: string | undefined): boolean {
  return live === undefined || live === requirement.value || requirement.allowed.includes(live);
}
