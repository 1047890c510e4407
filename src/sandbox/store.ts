/**
 * In-memory object store of the sandbox API server: one global resourceVersion counter, uids, generations,
 * optimistic concurrency, label selectors and change events (with a short history for watches).
 */
import { randomUUID } from 'node:crypto';
import { apiVersionOf, qualifiedName, RESOURCES, resourceForKind, tracksGeneration } from './resources.js';
import type { ChangeEvent, ChangeType, KubeObject, ResourceType, SandboxStore } from './types.js';

/** A `metav1.Status` failure body, as the real API server sends it. */
export interface StatusBody {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure';
  message: string;
  reason: string;
  details?: {
    name?: string;
    group?: string;
    kind?: string;
    uid?: string;
    causes?: { reason?: string; message?: string; field?: string }[];
    retryAfterSeconds?: number;
  };
  code: number;
}

const REASONS: Record<number, string> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  405: 'MethodNotAllowed',
  406: 'NotAcceptable',
  409: 'Conflict',
  410: 'Expired',
  413: 'RequestEntityTooLarge',
  415: 'UnsupportedMediaType',
  422: 'Invalid',
  429: 'TooManyRequests',
  500: 'InternalError',
  503: 'ServiceUnavailable',
  504: 'Timeout',
};

/** The Status `reason` the real API server uses for an HTTP status code. */
export function reasonForCode(code: number): string {
  return REASONS[code] ?? 'Unknown';
}

/** An API error that the server turns into a Status response. */
export class StatusError extends Error {
  readonly body: StatusBody;
  constructor(code: number, message: string, reason = reasonForCode(code), details?: StatusBody['details']) {
    super(message);
    this.name = 'StatusError';
    this.body = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
    if (details) this.body.details = details;
  }
  get code(): number {
    return this.body.code;
  }
}

function details(r: ResourceType, name: string): NonNullable<StatusBody['details']> {
  return r.group ? { name, group: r.group, kind: r.plural } : { name, kind: r.plural };
}

/** 404 `statefulsets.apps "x" not found`. */
export function notFound(r: ResourceType, name: string): StatusError {
  return new StatusError(404, `${qualifiedName(r)} "${name}" not found`, 'NotFound', details(r, name));
}

/** 409 `secrets "x" already exists`. */
export function alreadyExists(r: ResourceType, name: string): StatusError {
  return new StatusError(409, `${qualifiedName(r)} "${name}" already exists`, 'AlreadyExists', details(r, name));
}

/** 409 Conflict: stale resourceVersion. */
export function conflict(r: ResourceType, name: string, why?: string): StatusError {
  const reason = why ?? 'the object has been modified; please apply your changes to the latest version and try again';
  return new StatusError(
    409,
    `Operation cannot be fulfilled on ${qualifiedName(r)} "${name}": ${reason}`,
    'Conflict',
    details(r, name),
  );
}

/** 422 Invalid with field causes. */
export function invalid(
  r: ResourceType,
  name: string,
  causes: {
    field: string;
    type: 'FieldValueInvalid' | 'FieldValueRequired' | 'FieldValueForbidden';
    message: string;
  }[],
): StatusError {
  const kind = r.group ? `${r.kind}.${r.group}` : r.kind;
  const list = causes.map((c) => `${c.field}: ${c.message}`);
  const text = list.length === 1 ? list[0] : `[${list.join(', ')}]`;
  const d: NonNullable<StatusBody['details']> = r.group
    ? { name, group: r.group, kind: r.kind }
    : { name, kind: r.kind };
  d.causes = causes.map((c) => ({ reason: c.type, message: c.message, field: c.field }));
  return new StatusError(422, `${kind} "${name}" is invalid: ${text}`, 'Invalid', d);
}

/** 400 BadRequest. */
export function badRequest(message: string): StatusError {
  return new StatusError(400, message, 'BadRequest');
}

/** 403 Forbidden about one object. */
export function forbidden(r: ResourceType, name: string, why: string): StatusError {
  const subject = name ? `${qualifiedName(r)} "${name}"` : qualifiedName(r);
  return new StatusError(403, `${subject} is forbidden: ${why}`, 'Forbidden', details(r, name));
}

// ---------------------------------------------------------------------------------------------------------------
// Label selectors

type Requirement =
  | { op: 'exists' | 'notexists'; key: string }
  | { op: 'in' | 'notin'; key: string; values: string[] }
  | { op: 'gt' | 'lt'; key: string; value: number };

const KEY_RE =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const VALUE_RE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;

function checkKey(key: string): string {
  if (!KEY_RE.test(key) || key.length > 317) {
    throw badRequest(`unable to parse requirement: invalid label key "${key}"`);
  }
  return key;
}
function checkValue(value: string): string {
  if (!VALUE_RE.test(value) || value.length > 63) {
    throw badRequest(`unable to parse requirement: invalid label value: "${value}"`);
  }
  return value;
}

function splitTopLevel(selector: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of selector) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  parts.push(cur);
  return parts.map((p) => p.trim()).filter((p) => p.length > 0);
}

/** Parses a label selector (`a=b,c!=d,e in (f,g),h notin (i),j,!k,l>3`); throws a 400 StatusError when invalid. */
export function parseLabelSelector(selector: string): Requirement[] {
  const reqs: Requirement[] = [];
  for (const part of splitTopLevel(selector)) {
    let m = /^!\s*(\S+)$/.exec(part);
    if (m) {
      reqs.push({ op: 'notexists', key: checkKey(m[1]) });
      continue;
    }
    m = /^(\S+?)\s+(in|notin)\s*\(([^)]*)\)$/.exec(part);
    if (m) {
      const values = m[3]
        .split(',')
        .map((v) => v.trim())
        .filter((v, _i, all) => v.length > 0 || all.length === 1)
        .map(checkValue);
      reqs.push({ op: m[2] as 'in' | 'notin', key: checkKey(m[1]), values });
      continue;
    }
    m = /^([^=!<>\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(part);
    if (m) {
      const key = checkKey(m[1]);
      const value = checkValue(m[3]);
      reqs.push({ op: m[2] === '!=' ? 'notin' : 'in', key, values: [value] });
      continue;
    }
    m = /^([^=!<>\s]+)\s*([<>])\s*(-?\d+)$/.exec(part);
    if (m) {
      reqs.push({ op: m[2] === '>' ? 'gt' : 'lt', key: checkKey(m[1]), value: Number(m[3]) });
      continue;
    }
    m = /^([^=!<>()\s]+)$/.exec(part);
    if (m) {
      reqs.push({ op: 'exists', key: checkKey(m[1]) });
      continue;
    }
    throw badRequest(`unable to parse requirement: found '${part}', expected: in, notin, =, ==, !=, gt, lt`);
  }
  return reqs;
}

/** True when the labels satisfy every requirement. */
export function matchesRequirements(labels: Record<string, string> | undefined, reqs: Requirement[]): boolean {
  const l = labels ?? {};
  return reqs.every((r) => {
    const has = Object.hasOwn(l, r.key);
    switch (r.op) {
      case 'exists':
        return has;
      case 'notexists':
        return !has;
      case 'in':
        return has && r.values.includes(l[r.key]);
      case 'notin':
        return !has || !r.values.includes(l[r.key]);
      case 'gt':
        return has && /^-?\d+$/.test(l[r.key]) && Number(l[r.key]) > r.value;
      case 'lt':
        return has && /^-?\d+$/.test(l[r.key]) && Number(l[r.key]) < r.value;
    }
    return false;
  });
}

/** True when the labels match the selector string (empty selector matches everything). */
export function matchesLabelSelector(labels: Record<string, string> | undefined, selector: string): boolean {
  return matchesRequirements(labels, parseLabelSelector(selector));
}

/** Converts a `metav1.LabelSelector` object to its string form. */
export function labelSelectorToString(sel: unknown): string {
  if (!sel || typeof sel !== 'object') return '';
  const s = sel as { matchLabels?: Record<string, string>; matchExpressions?: Record<string, unknown>[] };
  const parts = Object.entries(s.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
  for (const e of s.matchExpressions ?? []) {
    const values = Array.isArray(e.values) ? e.values.join(',') : '';
    if (e.operator === 'In') parts.push(`${String(e.key)} in (${values})`);
    else if (e.operator === 'NotIn') parts.push(`${String(e.key)} notin (${values})`);
    else if (e.operator === 'Exists') parts.push(String(e.key));
    else if (e.operator === 'DoesNotExist') parts.push(`!${String(e.key)}`);
  }
  return parts.join(',');
}

// ---------------------------------------------------------------------------------------------------------------

/** Deterministic JSON (sorted keys), for comparing objects. */
export function stableStringify(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableStringify).join(',')}]`;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableStringify(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

function specPart(o: KubeObject): string {
  const { metadata: _m, status: _s, ...rest } = o;
  return stableStringify(rest);
}

/** RFC 3339 timestamp with second precision, as Kubernetes writes metadata timestamps. */
export function kubeTime(ms = Date.now()): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

/** A change event with the resourceVersion it happened at. */
export interface StoredEvent extends ChangeEvent {
  rv: number;
}

const HISTORY_LIMIT = 10_000;
/** Resources whose terminating objects are removed by a controller (kubelet, namespace controller), not finalizers. */
const OWN_TERMINATION = new Set(['pods', 'namespaces']);

/** The sandbox's object store (implements SandboxStore, plus helpers the API server uses). */
export class MemoryStore implements SandboxStore {
  private readonly data = new Map<string, Map<string, KubeObject>>();
  private readonly listeners = new Set<(event: ChangeEvent) => void>();
  private readonly history: StoredEvent[] = [];
  private rv = 0;
  private readonly pending: ChangeEvent[] = [];
  private delivering = false;

  constructor(private readonly log: (line: string) => void = () => {}) {}

  /** The current global resourceVersion. */
  resourceVersion(): string {
    return String(this.rv);
  }

  get(resource: ResourceType, namespace: string | undefined, name: string): KubeObject | undefined {
    const o = this.bucket(resource).get(key(resource, namespace, name));
    return o ? structuredClone(o) : undefined;
  }

  list(resource: ResourceType, namespace: string | undefined, labelSelector?: string): KubeObject[] {
    const reqs = labelSelector ? parseLabelSelector(labelSelector) : [];
    const out: KubeObject[] = [];
    for (const o of this.bucket(resource).values()) {
      if (resource.namespaced && namespace !== undefined && o.metadata.namespace !== namespace) continue;
      if (!matchesRequirements(o.metadata.labels, reqs)) continue;
      out.push(structuredClone(o));
    }
    return out.sort(
      (a, b) => cmp(a.metadata.namespace ?? '', b.metadata.namespace ?? '') || cmp(a.metadata.name, b.metadata.name),
    );
  }

  /**
   * Stores a new object. Assigns uid, creationTimestamp, resourceVersion and generation; a uid or
   * creationTimestamp already present is kept (seeding uses this), the API server strips them first.
   */
  create(resource: ResourceType, object: KubeObject): KubeObject {
    const o = structuredClone(object);
    if (!o.metadata?.name) throw invalid(resource, '', [nameRequired]);
    if (resource.namespaced && !o.metadata.namespace) {
      throw badRequest(`an empty namespace may not be set during creation of ${qualifiedName(resource)}`);
    }
    if (!resource.namespaced) delete o.metadata.namespace;
    const k = key(resource, o.metadata.namespace, o.metadata.name);
    const bucket = this.bucket(resource);
    if (bucket.has(k)) throw alreadyExists(resource, o.metadata.name);
    o.apiVersion = apiVersionOf(resource);
    o.kind = resource.kind;
    o.metadata.uid ??= randomUUID();
    o.metadata.creationTimestamp ??= kubeTime();
    if (tracksGeneration(resource)) o.metadata.generation = 1;
    else delete o.metadata.generation;
    o.metadata.resourceVersion = String(++this.rv);
    bucket.set(k, o);
    this.emit('ADDED', resource, o);
    return structuredClone(o);
  }

  /**
   * Replaces an object. A metadata.resourceVersion that is set must equal the stored one (409 otherwise).
   * uid and creationTimestamp are kept; generation grows when anything outside metadata/status changed.
   */
  update(resource: ResourceType, object: KubeObject): KubeObject {
    const o = structuredClone(object);
    const ns = resource.namespaced ? o.metadata.namespace : undefined;
    const k = key(resource, ns, o.metadata.name);
    const bucket = this.bucket(resource);
    const cur = bucket.get(k);
    if (!cur) throw notFound(resource, o.metadata.name);
    if (o.metadata.resourceVersion && o.metadata.resourceVersion !== cur.metadata.resourceVersion) {
      throw conflict(resource, o.metadata.name);
    }
    o.apiVersion = apiVersionOf(resource);
    o.kind = resource.kind;
    o.metadata.uid = cur.metadata.uid;
    o.metadata.creationTimestamp = cur.metadata.creationTimestamp;
    if (!resource.namespaced) delete o.metadata.namespace;
    if (cur.metadata.deletionTimestamp) {
      o.metadata.deletionTimestamp = cur.metadata.deletionTimestamp;
      if (cur.metadata.deletionGracePeriodSeconds !== undefined) {
        o.metadata.deletionGracePeriodSeconds = cur.metadata.deletionGracePeriodSeconds;
      }
    }
    if (tracksGeneration(resource)) {
      const gen = cur.metadata.generation ?? 1;
      o.metadata.generation = specPart(o) === specPart(cur) ? gen : gen + 1;
    } else delete o.metadata.generation;
    if (!Array.isArray(o.metadata.finalizers) || o.metadata.finalizers.length === 0) delete o.metadata.finalizers;
    if (o.metadata.deletionTimestamp && !o.metadata.finalizers && !OWN_TERMINATION.has(resource.plural)) {
      // The last finalizer of a terminating object is gone: the object goes with it.
      bucket.delete(k);
      o.metadata.resourceVersion = String(++this.rv);
      this.emit('DELETED', resource, o);
      return structuredClone(o);
    }
    const candidate = { ...o, metadata: { ...o.metadata, resourceVersion: cur.metadata.resourceVersion } };
    if (stableStringify(candidate) === stableStringify(cur)) {
      // A no-op update keeps the resourceVersion and sends no event, like the real server.
      return structuredClone(cur);
    }
    o.metadata.resourceVersion = String(++this.rv);
    bucket.set(k, o);
    this.emit('MODIFIED', resource, o);
    return structuredClone(o);
  }

  delete(resource: ResourceType, namespace: string | undefined, name: string): KubeObject | undefined {
    const bucket = this.bucket(resource);
    const k = key(resource, namespace, name);
    const cur = bucket.get(k);
    if (!cur) return undefined;
    bucket.delete(k);
    cur.metadata.resourceVersion = String(++this.rv);
    this.emit('DELETED', resource, cur);
    return structuredClone(cur);
  }

  subscribe(listener: (event: ChangeEvent) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  resourceByKind(kind: string, apiVersion?: string): ResourceType {
    return resourceForKind(kind, apiVersion);
  }

  /**
   * Events after resourceVersion `since` (exclusive), oldest first; undefined when the history no longer
   * reaches back that far (the API server answers 410 Gone then).
   */
  eventsSince(since: number): StoredEvent[] | undefined {
    if (since >= this.rv) return [];
    const first = this.history[0];
    if (!first || first.rv > since + 1) return undefined;
    return this.history.filter((e) => e.rv > since).map((e) => ({ ...e, object: structuredClone(e.object) }));
  }

  /** Every resource type that currently holds objects. */
  resources(): ResourceType[] {
    return RESOURCES.filter((r) => (this.data.get(bucketKey(r))?.size ?? 0) > 0);
  }

  private bucket(resource: ResourceType): Map<string, KubeObject> {
    const bk = bucketKey(resource);
    let b = this.data.get(bk);
    if (!b) {
      b = new Map();
      this.data.set(bk, b);
    }
    return b;
  }

  private emit(type: ChangeType, resource: ResourceType, object: KubeObject): void {
    const snapshot = structuredClone(object);
    this.history.push({ type, resource, object: snapshot, rv: this.rv });
    if (this.history.length > HISTORY_LIMIT) this.history.splice(0, this.history.length - HISTORY_LIMIT);
    // Listeners that write to the store from inside a callback must not make others see events out of order.
    this.pending.push({ type, resource, object: snapshot });
    if (this.delivering) return;
    this.delivering = true;
    try {
      for (let ev = this.pending.shift(); ev; ev = this.pending.shift()) {
        for (const l of [...this.listeners]) {
          try {
            l({ type: ev.type, resource: ev.resource, object: structuredClone(ev.object) });
          } catch (err) {
            this.log(`store listener failed: ${(err as Error).stack ?? String(err)}`);
          }
        }
      }
    } finally {
      this.delivering = false;
    }
  }
}

const nameRequired = {
  field: 'metadata.name',
  type: 'FieldValueRequired' as const,
  message: 'Required value: name or generateName is required',
};

function bucketKey(r: ResourceType): string {
  return `${r.group}/${r.plural}`;
}

function key(r: ResourceType, namespace: string | undefined, name: string): string {
  return r.namespaced ? `${namespace ?? ''}/${name}` : name;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
