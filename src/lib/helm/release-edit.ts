import { PreconditionError } from '../errors.js';
import type { KubeClient } from '../kube/client.js';
import { isConflict } from '../kube/client.js';
import type { Secret } from '../kube/types.js';
import { decodeReleaseText, encodeReleaseText, type ReleaseRecord, type ReleaseStatus } from './release.js';

/** Index just past the JSON value that starts at (or after whitespace from) `i`. */
function skipValue(text: string, start: number): number {
  let i = skipSpace(text, start);
  const c = text[i];
  if (c === '"') return skipString(text, i);
  if (c === '{' || c === '[') {
    let depth = 0;
    for (; i < text.length; i++) {
      const ch = text[i];
      if (ch === '"') i = skipString(text, i) - 1;
      else if (ch === '{' || ch === '[') depth++;
      else if (ch === '}' || ch === ']') {
        depth--;
        if (depth === 0) return i + 1;
      }
    }
    throw new Error('unterminated JSON container');
  }
  while (i < text.length && !/[\s,}\]]/.test(text[i])) i++;
  return i;
}

function skipString(text: string, start: number): number {
  for (let i = start + 1; i < text.length; i++) {
    if (text[i] === '\\') i++;
    else if (text[i] === '"') return i + 1;
  }
  throw new Error('unterminated JSON string');
}

function skipSpace(text: string, i: number): number {
  while (i < text.length && /\s/.test(text[i])) i++;
  return i;
}

/** Spans [valueStart, valueEnd) of the members of the JSON object starting at `start`, by key. */
function objectMembers(text: string, start: number): Map<string, [number, number]> {
  const members = new Map<string, [number, number]>();
  let i = skipSpace(text, start);
  if (text[i] !== '{') throw new Error('expected a JSON object');
  i = skipSpace(text, i + 1);
  while (text[i] !== '}') {
    const keyEnd = skipString(text, i);
    const key = JSON.parse(text.slice(i, keyEnd)) as string;
    i = skipSpace(text, keyEnd);
    if (text[i] !== ':') throw new Error('expected ":" in JSON object');
    const valueStart = skipSpace(text, i + 1);
    const valueEnd = skipValue(text, valueStart);
    members.set(key, [valueStart, valueEnd]);
    i = skipSpace(text, valueEnd);
    if (text[i] === ',') i = skipSpace(text, i + 1);
    else if (text[i] !== '}') throw new Error('expected "," or "}" in JSON object');
  }
  return members;
}

/**
 * Changes `info.status` (and `info.description` when given and present) in release JSON text without re-serialising
 * anything else, so every other byte stays exactly as Helm wrote it (Go escaping, number formats, key order).
 */
export function setReleaseStatusText(json: string, status: ReleaseStatus, description?: string): string {
  const info = objectMembers(json, 0).get('info');
  if (!info) throw new Error('release JSON has no "info" object');
  const members = objectMembers(json, info[0]);
  const statusSpan = members.get('status');
  if (!statusSpan) throw new Error('release JSON has no "info.status"');
  const edits: [number, number, string][] = [[statusSpan[0], statusSpan[1], JSON.stringify(status)]];
  const descriptionSpan = members.get('description');
  if (description !== undefined && descriptionSpan) {
    edits.push([descriptionSpan[0], descriptionSpan[1], JSON.stringify(description)]);
  }
  let out = json;
  for (const [from, to, value] of edits.sort((a, b) => b[0] - a[0])) out = out.slice(0, from) + value + out.slice(to);
  return out;
}

/** What {@link setRecordStatus} writes. */
export interface SetRecordStatusOptions {
  namespace: string;
  status: ReleaseStatus;
  /** New `info.description` (Flux writes e.g. "Release unlocked from stale 'pending-upgrade' state"). */
  description?: string;
  now: Date;
}

/**
 * Rewrites one release Secret with a new status, the way Helm's storage driver updates a revision: the `status` label,
 * the `modifiedAt` label AND the status inside the encoded release (the label alone changes nothing, helm/helm#5595).
 * Uses the resourceVersion of the record as read: if the Secret changed since, nothing is written and a
 * PreconditionError (RELEASE_CHANGED) is thrown.
 */
export async function setRecordStatus(
  kube: KubeClient,
  record: ReleaseRecord,
  options: SetRecordStatusOptions,
): Promise<Secret> {
  const secret = record.secret;
  const data = secret.data?.release;
  if (!data) throw new Error(`Secret ${record.secretName} has no release data`);
  const json = setReleaseStatusText(decodeReleaseText(data), options.status, options.description);
  const body: Secret = {
    ...secret,
    metadata: {
      ...secret.metadata,
      labels: {
        ...secret.metadata.labels,
        status: options.status,
        modifiedAt: String(Math.floor(options.now.getTime() / 1000)),
      },
    },
    data: { ...secret.data, release: encodeReleaseText(json) },
  };
  try {
    return await kube.replace<Secret>('Secret', options.namespace, body);
  } catch (error) {
    if (isConflict(error)) {
      throw new PreconditionError(
        `Release Secret ${record.secretName} changed while ess was working on it (another helm or ess run?). Nothing was written.`,
        { code: 'RELEASE_CHANGED', next: ['Check the history again: ess upgrade history', 'Then re-run the command'] },
      );
    }
    throw error;
  }
}
