/**
 * The sandbox's Kubernetes API server: plain HTTP on 127.0.0.1 speaking the real REST API (discovery, CRUD,
 * patch, scale, watch, server-side Table printing, Status errors) over the in-memory store, and handing pod
 * exec/attach/portforward upgrades to the process runtime.
 */
import { randomBytes } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import YAML from 'yaml';
import {
  apiVersionOf,
  findResource,
  groupVersions,
  isCustom,
  isVirtual,
  printerFor,
  RESOURCES,
  resourceForKind,
  SUBRESOURCE_INFO,
} from './resources.js';
import {
  badRequest,
  conflict,
  forbidden,
  invalid,
  kubeTime,
  labelSelectorToString,
  type MemoryStore,
  matchesRequirements,
  notFound,
  parseLabelSelector,
  reasonForCode,
  StatusError,
  stableStringify,
} from './store.js';
import type { ChangeEvent, KubeObject, ResourceType, RuntimeContext, SandboxFaults, UpgradeHandler } from './types.js';

/** Options for {@link startApiServer}. */
export interface ApiServerOptions {
  store: MemoryStore;
  faults: SandboxFaults;
  /** Handler for pod exec/attach/portforward upgrades (engineer B's `handlePodUpgrade`). */
  upgradeHandler?: UpgradeHandler;
  /** Context passed to the upgrade handler. */
  runtime?: RuntimeContext;
  /** TCP port on 127.0.0.1 (0 = any free port). */
  port?: number;
  /** Kubernetes version reported by /version, e.g. 'v1.31.0'. */
  gitVersion?: string;
  log?: (line: string) => void;
}

/** One API request as the sandbox saw it. */
export interface ApiRequestRecord {
  method: string;
  path: string;
  query: string;
  verb?: string;
  resource?: string;
  subresource?: string;
  namespace?: string;
  name?: string;
  status: number;
  userAgent?: string;
  token?: string;
  contentType?: string;
}

/** A running API server. */
export interface ApiServer {
  url: string;
  port: number;
  /** Every request so far (newest last, at most 10,000). */
  requests: ApiRequestRecord[];
  /** Bearer tokens seen. */
  tokens: Set<string>;
  stop(): Promise<void>;
}

interface Target {
  resource: ResourceType;
  namespace?: string;
  name?: string;
  subresource?: string;
  watchPath: boolean;
}

type Obj = Record<string, unknown>;
const rec = (v: unknown): Obj => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

const NAMESPACE = resourceForKind('Namespace', 'v1');
const POD = resourceForKind('Pod', 'v1');
const MAX_BODY = 3 * 1024 * 1024;
const PROTECTED_NAMESPACES = new Set(['default', 'kube-system', 'kube-public', 'kube-node-lease']);
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const SAFE = 'bcdfghjklmnpqrstvwxz2456789';

/** Starts the API server; resolves once it listens. */
export async function startApiServer(opts: ApiServerOptions): Promise<ApiServer> {
  const log = opts.log ?? (() => {});
  const requests: ApiRequestRecord[] = [];
  const tokens = new Set<string>();
  const watches = new Set<() => void>();
  const upgraded = new Set<Duplex>();
  const gitVersion = opts.gitVersion ?? 'v1.31.0';
  let port = 0;
  const CRD = resourceForKind('CustomResourceDefinition');
  // Custom resources are served only while their CustomResourceDefinition exists, as on a real cluster.
  const served = (r: ResourceType) =>
    !isCustom(r) || opts.store.get(CRD, undefined, `${r.plural}.${r.group}`) !== undefined;

  const record = (r: ApiRequestRecord) => {
    requests.push(r);
    if (requests.length > 10_000) requests.splice(0, requests.length - 10_000);
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://sandbox');
    const token = bearer(req);
    if (token) tokens.add(token);
    const entry: ApiRequestRecord = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.search,
      status: 0,
      userAgent: req.headers['user-agent'],
      token,
      contentType: req.headers['content-type'],
    };
    res.on('finish', () => {
      entry.status = res.statusCode;
      record(entry);
    });
    handle(req, res, url, entry).catch((err: unknown) => {
      const status =
        err instanceof StatusError
          ? err
          : new StatusError(500, `Internal error occurred: ${(err as Error).message}`, 'InternalError');
      if (!(err instanceof StatusError)) log(`api: ${req.method} ${req.url}: ${(err as Error).stack ?? String(err)}`);
      if (res.headersSent) res.destroy();
      else sendStatus(res, status);
    });
  });

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(req.url ?? '/', 'http://sandbox');
    const token = bearer(req);
    if (token) tokens.add(token);
    const entry: ApiRequestRecord = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.search,
      status: 101,
      userAgent: req.headers['user-agent'],
      token,
    };
    upgraded.add(socket);
    socket.on('close', () => upgraded.delete(socket));
    socket.on('error', () => {});
    try {
      const target = parseTarget(url.pathname);
      if (!target || target.resource !== POD || !target.name || !isStreamSub(target.subresource)) {
        throw new StatusError(404, 'the server could not find the requested resource', 'NotFound', {});
      }
      Object.assign(entry, {
        verb: 'create',
        resource: 'pods',
        subresource: target.subresource,
        namespace: target.namespace,
        name: target.name,
      });
      applyFault(entry);
      const pod = opts.store.get(POD, target.namespace, target.name);
      if (!pod) throw notFound(POD, target.name);
      checkStreamable(pod, target.subresource, url.searchParams);
      if (!opts.upgradeHandler || !opts.runtime) {
        throw new StatusError(500, 'Internal error occurred: no process runtime is attached', 'InternalError');
      }
      record(entry);
      opts.upgradeHandler(
        req,
        socket,
        head,
        {
          namespace: target.namespace as string,
          pod: target.name,
          subresource: target.subresource,
          query: url.searchParams,
        },
        opts.runtime,
      );
    } catch (err) {
      const status =
        err instanceof StatusError
          ? err
          : new StatusError(500, `Internal error occurred: ${(err as Error).message}`, 'InternalError');
      entry.status = status.code;
      record(entry);
      const body = JSON.stringify(status.body);
      socket.end(
        `HTTP/1.1 ${status.code} ${http.STATUS_CODES[status.code] ?? 'Error'}\r\n` +
          'Content-Type: application/json\r\n' +
          `Content-Length: ${Buffer.byteLength(body)}\r\n` +
          'Connection: close\r\n\r\n' +
          body,
      );
    }
  });

  function applyFault(entry: ApiRequestRecord): void {
    if (!entry.verb || entry.resource === undefined) return;
    const fault = opts.faults.takeApiFault({
      verb: entry.verb,
      resource: entry.resource,
      subresource: entry.subresource,
      name: entry.name,
      namespace: entry.namespace,
    });
    if (!fault) return;
    log(
      `api: fault ${fault.status} on ${entry.verb} ${entry.resource}${entry.subresource ? `/${entry.subresource}` : ''}`,
    );
    throw faultStatus(fault.status, fault.message, entry);
  }

  async function handle(req: IncomingMessage, res: ServerResponse, url: URL, entry: ApiRequestRecord): Promise<void> {
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    const discovery = discoveryDoc(path, port, served);
    if (discovery !== undefined) {
      // Only faults without a resource can hit discovery (`{status: 503}` fails every request, kubectl's too).
      Object.assign(entry, { verb: 'get', resource: '' });
      applyFault(entry);
      if (method !== 'GET' && method !== 'HEAD') throw methodNotAllowed();
      if (discovery === null)
        throw new StatusError(404, 'the server could not find the requested resource', 'NotFound', {});
      if (typeof discovery === 'string') {
        res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
        res.end(discovery);
        return;
      }
      if (path === '/version') (discovery as Obj).gitVersion = gitVersion;
      if (path === '/version') Object.assign(discovery as Obj, versionParts(gitVersion));
      sendJson(res, 200, discovery);
      return;
    }
    const target = parseTarget(path);
    if (!target || !served(target.resource)) {
      throw new StatusError(404, 'the server could not find the requested resource', 'NotFound', {});
    }
    const q = url.searchParams;
    const watch = target.watchPath || q.get('watch') === 'true' || q.get('watch') === '1';
    const verb = verbFor(method, target, watch);
    Object.assign(entry, {
      verb,
      resource: target.resource.plural,
      subresource: target.subresource,
      namespace: target.namespace,
      name: target.name,
    });
    applyFault(entry);
    const r = target.resource;
    if (verb !== 'create' && isVirtual(r)) throw methodNotAllowed();
    if (target.subresource && !(r.subresources ?? []).includes(target.subresource)) {
      throw new StatusError(404, 'the server could not find the requested resource', 'NotFound', {});
    }
    const dryRun = q.getAll('dryRun').includes('All');
    switch (verb) {
      case 'get':
        return doGet(req, res, target, q);
      case 'list':
        return doList(req, res, target, q);
      case 'watch':
        return doWatch(req, res, target, q);
      case 'create':
        return doCreate(req, res, target, dryRun);
      case 'update':
        return doUpdate(req, res, target, dryRun);
      case 'patch':
        return doPatch(req, res, target, dryRun);
      case 'delete':
        return doDelete(req, res, target, q, dryRun);
      case 'deletecollection':
        return doDeleteCollection(req, res, target, q, dryRun);
      default:
        throw methodNotAllowed();
    }
  }

  // ------------------------------------------------------------------------------------------------------
  // Verbs

  function doGet(req: IncomingMessage, res: ServerResponse, t: Target, q: URLSearchParams): void {
    const r = t.resource;
    const name = t.name as string;
    if (t.subresource && isStreamSub(t.subresource)) {
      throw badRequest('Upgrade request required');
    }
    const obj = opts.store.get(r, t.namespace, name);
    if (!obj) throw notFound(r, name);
    if (t.subresource === 'log') {
      const container = checkLogContainer(obj, q.get('container'));
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end(podLog(obj, container, q));
      return;
    }
    if (t.subresource === 'scale') {
      sendJson(res, 200, toScale(obj));
      return;
    }
    if (wantsTable(req)) {
      sendJson(res, 200, toTable(r, [obj], q, opts.store.resourceVersion(), true));
      return;
    }
    sendJson(res, 200, obj);
  }

  function selectObjects(t: Target, q: URLSearchParams): KubeObject[] {
    const r = t.resource;
    const labelReqs = parseLabelSelector(q.get('labelSelector') ?? '');
    const fieldReqs = parseFieldSelector(r, q.get('fieldSelector') ?? '');
    return opts.store
      .list(r, r.namespaced ? t.namespace : undefined)
      .filter((o) => matchesRequirements(o.metadata.labels, labelReqs) && matchesFields(o, fieldReqs));
  }

  function doList(req: IncomingMessage, res: ServerResponse, t: Target, q: URLSearchParams): void {
    const r = t.resource;
    let items = selectObjects(t, q);
    const rv = opts.store.resourceVersion();
    const listMeta: Obj = { resourceVersion: rv };
    const cont = q.get('continue');
    if (cont) {
      const after = decodeContinue(cont);
      items = items.filter((o) => itemKey(o) > after);
    }
    const limit = Number(q.get('limit') ?? 0);
    if (limit > 0 && items.length > limit) {
      const page = items.slice(0, limit);
      listMeta.continue = Buffer.from(JSON.stringify({ v: 'sandbox', after: itemKey(page[page.length - 1]) })).toString(
        'base64url',
      );
      listMeta.remainingItemCount = items.length - limit;
      items = page;
    }
    if (wantsTable(req)) {
      const table = toTable(r, items, q, rv, true);
      (table.metadata as Obj).continue = listMeta.continue;
      sendJson(res, 200, table);
      return;
    }
    sendJson(res, 200, {
      kind: r.listKind,
      apiVersion: apiVersionOf(r),
      metadata: listMeta,
      items: items.map((o) => listItem(r, o)),
    });
  }

  function doWatch(req: IncomingMessage, res: ServerResponse, t: Target, q: URLSearchParams): void {
    const r = t.resource;
    const labelReqs = parseLabelSelector(q.get('labelSelector') ?? '');
    const fieldReqs = parseFieldSelector(r, q.get('fieldSelector') ?? '');
    if (t.name) fieldReqs.push({ path: 'metadata.name', op: '=', value: t.name });
    const matches = (o: KubeObject) =>
      (!r.namespaced || t.namespace === undefined || o.metadata.namespace === t.namespace) &&
      matchesRequirements(o.metadata.labels, labelReqs) &&
      matchesFields(o, fieldReqs);
    const table = wantsTable(req);
    let headersSent = false;
    const write = (type: string, object: unknown) => {
      let payload = object;
      if (table && type !== 'ERROR' && type !== 'BOOKMARK') {
        payload = toTable(
          r,
          [object as KubeObject],
          q,
          (object as KubeObject).metadata.resourceVersion ?? '',
          !headersSent,
        );
        headersSent = true;
      }
      res.write(`${JSON.stringify({ type, object: payload })}\n`);
    };
    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Transfer-Encoding': 'chunked',
      'Cache-Control': 'no-cache, private',
    });
    res.flushHeaders();

    let lastRv = 0;
    const buffered: ChangeEvent[] = [];
    let replaying = true;
    const send = (e: ChangeEvent) => {
      const rv = Number(e.object.metadata.resourceVersion ?? 0);
      if (rv <= lastRv) return;
      lastRv = rv;
      if (matches(e.object)) write(e.type, e.object);
    };
    const unsubscribe = opts.store.subscribe((e) => {
      if (e.resource !== r) return;
      if (replaying) buffered.push(e);
      else send(e);
    });
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      unsubscribe();
      watches.delete(close);
      clearTimeout(timer);
      res.end();
    };
    watches.add(close);
    res.on('close', close);
    res.on('error', close);
    const timeout = Number(q.get('timeoutSeconds') ?? 0);
    const timer = setTimeout(close, timeout > 0 ? timeout * 1000 : 30 * 60 * 1000);

    const rvParam = q.get('resourceVersion') ?? '';
    const sendInitial = q.get('sendInitialEvents') === 'true';
    if (rvParam === '' || rvParam === '0' || sendInitial) {
      lastRv = Number(opts.store.resourceVersion());
      for (const o of opts.store.list(r, r.namespaced ? t.namespace : undefined)) if (matches(o)) write('ADDED', o);
      if (sendInitial) {
        write('BOOKMARK', {
          kind: r.kind,
          apiVersion: apiVersionOf(r),
          metadata: { resourceVersion: String(lastRv), annotations: { 'k8s.io/initial-events-end': 'true' } },
        });
      }
    } else {
      const since = Number(rvParam);
      const events = Number.isFinite(since) ? opts.store.eventsSince(since) : undefined;
      if (!events) {
        write(
          'ERROR',
          new StatusError(410, `too old resource version: ${rvParam} (${opts.store.resourceVersion()})`, 'Expired')
            .body,
        );
        close();
        return;
      }
      lastRv = since;
      for (const e of events) if (e.resource === r) send(e);
    }
    replaying = false;
    for (const e of buffered.splice(0)) send(e);
  }

  async function doCreate(req: IncomingMessage, res: ServerResponse, t: Target, dryRun: boolean): Promise<void> {
    const r = t.resource;
    if (t.subresource) {
      if (isStreamSub(t.subresource)) throw badRequest('Upgrade request required');
      throw methodNotAllowed();
    }
    const body = await readObject(req);
    if (r.plural === 'selfsubjectaccessreviews') {
      sendJson(res, 201, {
        kind: 'SelfSubjectAccessReview',
        apiVersion: 'authorization.k8s.io/v1',
        metadata: { creationTimestamp: null },
        spec: body.spec ?? {},
        status: { allowed: true, reason: 'the sandbox allows everything' },
      });
      return;
    }
    checkKind(r, body);
    const meta = rec(body.metadata);
    if (r.namespaced) {
      if (meta.namespace && meta.namespace !== t.namespace) {
        throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
      }
      meta.namespace = t.namespace;
    } else delete meta.namespace;
    if (!meta.name && typeof meta.generateName === 'string' && meta.generateName) {
      meta.name = `${meta.generateName}${randomSafe(5)}`;
    }
    for (const k of [
      'uid',
      'resourceVersion',
      'creationTimestamp',
      'deletionTimestamp',
      'generation',
      'managedFields',
      'selfLink',
    ]) {
      delete meta[k];
    }
    body.metadata = meta;
    const obj = body as KubeObject;
    validate(r, obj);
    if (r.namespaced) {
      const ns = opts.store.get(NAMESPACE, undefined, t.namespace as string);
      if (!ns) throw notFound(NAMESPACE, t.namespace as string);
      if (ns.metadata.deletionTimestamp) {
        throw forbidden(
          r,
          obj.metadata.name,
          `unable to create new content in namespace ${t.namespace} because it is being terminated`,
        );
      }
    }
    prepareForCreate(r, obj);
    if (dryRun) {
      if (opts.store.get(r, t.namespace, obj.metadata.name)) {
        throw new StatusError(
          409,
          `${r.group ? `${r.plural}.${r.group}` : r.plural} "${obj.metadata.name}" already exists`,
          'AlreadyExists',
        );
      }
      sendJson(res, 201, { ...obj, apiVersion: apiVersionOf(r), kind: r.kind });
      return;
    }
    sendJson(res, 201, opts.store.create(r, obj));
  }

  async function doUpdate(req: IncomingMessage, res: ServerResponse, t: Target, dryRun: boolean): Promise<void> {
    const r = t.resource;
    const name = t.name as string;
    const body = await readObject(req);
    const cur = opts.store.get(r, t.namespace, name);
    if (t.subresource === 'scale') {
      if (!cur) throw notFound(r, name);
      const scale = body;
      checkScaleMeta(r, cur, scale, name);
      sendJson(res, 200, applyScale(r, cur, scale, dryRun));
      return;
    }
    if (t.subresource && t.subresource !== 'status' && t.subresource !== 'finalize') throw methodNotAllowed();
    checkKind(r, body);
    const meta = rec(body.metadata);
    if (meta.name !== undefined && meta.name !== name) {
      throw badRequest(`the name of the object (${String(meta.name)}) does not match the name on the URL (${name})`);
    }
    if (r.namespaced && meta.namespace !== undefined && meta.namespace !== t.namespace) {
      throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
    }
    if (!cur) throw notFound(r, name);
    meta.name = name;
    if (r.namespaced) meta.namespace = t.namespace;
    body.metadata = meta;
    if (isCustom(r) && !meta.resourceVersion) {
      throw invalid(r, name, [
        {
          field: 'metadata.resourceVersion',
          type: 'FieldValueInvalid',
          message: 'Invalid value: 0x0: must be specified for an update',
        },
      ]);
    }
    sendJson(res, 200, save(r, cur, mergeForSubresource(r, cur, body as KubeObject, t.subresource), dryRun));
  }

  async function doPatch(req: IncomingMessage, res: ServerResponse, t: Target, dryRun: boolean): Promise<void> {
    const r = t.resource;
    const name = t.name as string;
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim();
    const accepted = isCustom(r)
      ? ['application/json-patch+json', 'application/merge-patch+json', 'application/apply-patch+yaml']
      : [
          'application/json-patch+json',
          'application/merge-patch+json',
          'application/strategic-merge-patch+json',
          'application/apply-patch+yaml',
        ];
    if (!accepted.includes(type) || type === 'application/apply-patch+yaml') {
      throw new StatusError(
        415,
        `the body of the request was in an unknown format - accepted media types include: ${accepted.join(', ')}`,
        'UnsupportedMediaType',
      );
    }
    const raw = await readBody(req);
    let patch: unknown;
    try {
      patch = JSON.parse(raw.toString('utf8'));
    } catch (err) {
      throw badRequest(`error decoding patch: ${(err as Error).message}`);
    }
    const cur = opts.store.get(r, t.namespace, name);
    if (!cur) throw notFound(r, name);
    const apply = (doc: unknown): unknown => {
      if (type === 'application/json-patch+json') return jsonPatch(doc, patch);
      if (type === 'application/merge-patch+json') return mergePatch(doc, patch);
      return strategicMerge(doc, patch);
    };
    if (t.subresource === 'scale') {
      const scale = rec(apply(toScale(cur)));
      checkScaleMeta(r, cur, scale, name);
      sendJson(res, 200, applyScale(r, cur, scale, dryRun));
      return;
    }
    if (t.subresource && t.subresource !== 'status') throw methodNotAllowed();
    const patched = rec(apply(structuredClone(cur)));
    const meta = rec(patched.metadata);
    if (meta.name !== name) {
      throw badRequest(`the name of the object (${String(meta.name)}) does not match the name on the URL (${name})`);
    }
    if (r.namespaced && meta.namespace !== t.namespace) {
      throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
    }
    patched.apiVersion = apiVersionOf(r);
    patched.kind = r.kind;
    sendJson(res, 200, save(r, cur, mergeForSubresource(r, cur, patched as KubeObject, t.subresource), dryRun));
  }

  async function doDelete(
    req: IncomingMessage,
    res: ServerResponse,
    t: Target,
    q: URLSearchParams,
    dryRun: boolean,
  ): Promise<void> {
    const r = t.resource;
    const name = t.name as string;
    if (t.subresource) throw methodNotAllowed();
    const options = await deleteOptions(req, q);
    const cur = opts.store.get(r, t.namespace, name);
    if (!cur) throw notFound(r, name);
    const pre = rec(options.preconditions);
    if (typeof pre.uid === 'string' && pre.uid !== cur.metadata.uid) {
      throw conflict(
        r,
        name,
        `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${cur.metadata.uid}`,
      );
    }
    if (typeof pre.resourceVersion === 'string' && pre.resourceVersion !== cur.metadata.resourceVersion) {
      throw conflict(
        r,
        name,
        `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${cur.metadata.resourceVersion}`,
      );
    }
    if (r === NAMESPACE && PROTECTED_NAMESPACES.has(name)) {
      throw forbidden(r, name, 'this namespace may not be deleted');
    }
    if (dryRun) {
      sendJson(res, 200, cur);
      return;
    }
    sendJson(res, 200, deleteObject(r, cur, options));
  }

  async function doDeleteCollection(
    req: IncomingMessage,
    res: ServerResponse,
    t: Target,
    q: URLSearchParams,
    dryRun: boolean,
  ): Promise<void> {
    const r = t.resource;
    if (r === NAMESPACE) throw methodNotAllowed();
    const options = await deleteOptions(req, q);
    const items = selectObjects(t, q);
    const deleted = dryRun ? items : items.map((o) => deleteObject(r, o, options));
    sendJson(res, 200, {
      kind: r.listKind,
      apiVersion: apiVersionOf(r),
      metadata: { resourceVersion: opts.store.resourceVersion() },
      items: deleted
        .filter((o): o is KubeObject => (o as KubeObject).metadata !== undefined && (o as Obj).kind !== 'Status')
        .map((o) => listItem(r, o)),
    });
  }

  // ------------------------------------------------------------------------------------------------------
  // Helpers that need the store

  function deleteObject(r: ResourceType, cur: KubeObject, options: Obj): unknown {
    const name = cur.metadata.name;
    if (options.propagationPolicy === 'Orphan' || options.orphanDependents === true) orphanDependents(cur);
    if (r === NAMESPACE) {
      if (cur.metadata.deletionTimestamp) return cur;
      return opts.store.update(r, {
        ...cur,
        metadata: { ...cur.metadata, deletionTimestamp: kubeTime() },
        spec: { finalizers: ['kubernetes'] },
        status: { phase: 'Terminating' },
      });
    }
    if (r === POD) {
      const grace = typeof options.gracePeriodSeconds === 'number' ? options.gracePeriodSeconds : undefined;
      if (grace === 0 || !rec(cur.spec).nodeName) {
        return opts.store.delete(r, cur.metadata.namespace, name) ?? cur;
      }
      if (cur.metadata.deletionTimestamp) return cur;
      const specGrace = rec(cur.spec).terminationGracePeriodSeconds;
      const seconds = grace ?? (typeof specGrace === 'number' ? specGrace : 30);
      return opts.store.update(r, {
        ...cur,
        metadata: {
          ...cur.metadata,
          deletionTimestamp: kubeTime(Date.now() + seconds * 1000),
          deletionGracePeriodSeconds: seconds,
        },
      });
    }
    if (arr(cur.metadata.finalizers).length) {
      if (cur.metadata.deletionTimestamp) return cur;
      return opts.store.update(r, {
        ...cur,
        metadata: { ...cur.metadata, deletionTimestamp: kubeTime(), deletionGracePeriodSeconds: 0 },
      });
    }
    const gone = opts.store.delete(r, cur.metadata.namespace, name) ?? cur;
    if (isCustom(r) || r.plural === 'services') return gone;
    const details: Obj = { name, kind: r.plural, uid: cur.metadata.uid };
    if (r.group) details.group = r.group;
    return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details };
  }

  function orphanDependents(owner: KubeObject): void {
    for (const r of opts.store.resources()) {
      for (const o of opts.store.list(r, undefined)) {
        const refs = o.metadata.ownerReferences ?? [];
        if (!refs.some((ref) => ref.uid === owner.metadata.uid)) continue;
        const rest = refs.filter((ref) => ref.uid !== owner.metadata.uid);
        const metadata: KubeObject['metadata'] = { ...o.metadata, ownerReferences: rest };
        if (!rest.length) delete metadata.ownerReferences;
        opts.store.update(r, { ...o, metadata });
      }
    }
  }

  function save(r: ResourceType, cur: KubeObject, next: KubeObject, dryRun: boolean): KubeObject {
    validate(r, next);
    validateUpdate(r, cur, next);
    if (r.plural === 'secrets') foldStringData(next);
    if (dryRun) {
      if (next.metadata.resourceVersion && next.metadata.resourceVersion !== cur.metadata.resourceVersion) {
        throw conflict(r, cur.metadata.name);
      }
      return next;
    }
    return opts.store.update(r, next);
  }

  function applyScale(r: ResourceType, cur: KubeObject, scale: Obj, dryRun: boolean): Obj {
    const replicas = rec(scale.spec).replicas;
    if (typeof replicas !== 'number' || !Number.isInteger(replicas) || replicas < 0) {
      const scaleRes = { ...r, group: 'autoscaling', kind: 'Scale' };
      throw invalid(scaleRes, cur.metadata.name, [
        {
          field: 'spec.replicas',
          type: 'FieldValueInvalid',
          message: `Invalid value: ${JSON.stringify(replicas ?? null)}: must be greater than or equal to 0`,
        },
      ]);
    }
    const next = { ...cur, spec: { ...rec(cur.spec), replicas } };
    const meta = rec(scale.metadata);
    if (typeof meta.resourceVersion === 'string' && meta.resourceVersion)
      next.metadata = { ...cur.metadata, resourceVersion: meta.resourceVersion };
    return toScale(dryRun ? next : opts.store.update(r, next));
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  port = (server.address() as AddressInfo).port;
  let stopping: Promise<void> | undefined;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    tokens,
    stop(): Promise<void> {
      stopping ??= new Promise<void>((resolve) => {
        for (const close of [...watches]) close();
        for (const s of upgraded) s.destroy();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return stopping;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Pure helpers

function bearer(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  return h?.startsWith('Bearer ') ? h.slice(7) : undefined;
}

function isStreamSub(s: string | undefined): s is 'exec' | 'attach' | 'portforward' {
  return s === 'exec' || s === 'attach' || s === 'portforward';
}

function methodNotAllowed(): StatusError {
  return new StatusError(
    405,
    'the server does not allow this method on the requested resource',
    'MethodNotAllowed',
    {},
  );
}

function randomSafe(n: number): string {
  return [...randomBytes(n)].map((b) => SAFE[b % SAFE.length]).join('');
}

function versionParts(gitVersion: string): Obj {
  const m = /^v(\d+)\.(\d+)/.exec(gitVersion);
  return { major: m?.[1] ?? '1', minor: m?.[2] ?? '31' };
}

function faultStatus(code: number, message: string | undefined, e: ApiRequestRecord): StatusError {
  const r = e.resource ? RESOURCES.find((x) => x.plural === e.resource) : undefined;
  const qualified = r?.group ? `${r.plural}.${r.group}` : (e.resource ?? '');
  const details: NonNullable<StatusError['body']['details']> = {};
  if (e.name) details.name = e.name;
  if (r?.group) details.group = r.group;
  if (e.resource) details.kind = e.resource;
  let text = message;
  if (!text) {
    const subject = e.name ? `${qualified} "${e.name}"` : qualified;
    switch (code) {
      case 403:
        if (!e.resource) {
          text = `forbidden: User "system:serviceaccount:ess:ess-ops" cannot get path "${e.path}"`;
          break;
        }
        text = `${subject} is forbidden: User "system:serviceaccount:ess:ess-ops" cannot ${e.verb} resource "${e.resource}${e.subresource ? `/${e.subresource}` : ''}" in API group "${r?.group ?? ''}"${e.namespace ? ` in the namespace "${e.namespace}"` : ''}`;
        break;
      case 404:
        text = `${subject} not found`;
        break;
      case 409:
        text = `Operation cannot be fulfilled on ${subject}: the object has been modified; please apply your changes to the latest version and try again`;
        break;
      case 429:
        text = 'Too many requests, please try again later.';
        details.retryAfterSeconds = 1;
        break;
      case 500:
        text = 'Internal error occurred: injected sandbox fault';
        break;
      case 503:
        text = 'the server is currently unable to handle the request';
        break;
      case 504:
        text =
          'the server was unable to return a response in the time allotted, but may still be processing the request';
        break;
      default:
        text = `injected sandbox fault (${code})`;
    }
  }
  return new StatusError(code, text, reasonForCode(code), details);
}

/** Parses /api/v1/... and /apis/g/v/... resource paths. */
function parseTarget(path: string): Target | undefined {
  const seg = path.split('/').filter(Boolean).map(decodeURIComponent);
  let group: string;
  let version: string;
  let rest: string[];
  if (seg[0] === 'api' && seg.length >= 2) {
    group = '';
    version = seg[1];
    rest = seg.slice(2);
  } else if (seg[0] === 'apis' && seg.length >= 3) {
    group = seg[1];
    version = seg[2];
    rest = seg.slice(3);
  } else return undefined;
  let watchPath = false;
  if (rest[0] === 'watch') {
    watchPath = true;
    rest = rest.slice(1);
  }
  let namespace: string | undefined;
  if (rest[0] === 'namespaces' && rest.length >= 3) {
    const inner = findResource(group, version, rest[2]);
    if (inner?.namespaced) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
  }
  if (rest.length === 0 || rest.length > 3) return undefined;
  const resource = findResource(group, version, rest[0]);
  if (!resource) return undefined;
  if (resource.namespaced && namespace === undefined && rest.length > 1) return undefined;
  if (!resource.namespaced && namespace !== undefined) return undefined;
  return { resource, namespace, name: rest[1], subresource: rest[2], watchPath };
}

function verbFor(method: string, t: Target, watch: boolean): string {
  switch (method) {
    case 'GET':
    case 'HEAD':
      if (watch) return 'watch';
      return t.name ? 'get' : 'list';
    case 'POST':
      if (t.name && !t.subresource) throw methodNotAllowed();
      return 'create';
    case 'PUT':
      if (!t.name) throw methodNotAllowed();
      return 'update';
    case 'PATCH':
      if (!t.name) throw methodNotAllowed();
      return 'patch';
    case 'DELETE':
      return t.name ? 'delete' : 'deletecollection';
    default:
      throw methodNotAllowed();
  }
}

function discoveryDoc(
  path: string,
  port: number,
  served: (r: ResourceType) => boolean,
): Obj | string | null | undefined {
  if (path === '/version') {
    return {
      major: '1',
      minor: '31',
      gitVersion: 'v1.31.0',
      gitCommit: '0000000000000000000000000000000000000000',
      gitTreeState: 'clean',
      buildDate: '2024-08-13T07:28:49Z',
      goVersion: 'go1.22.5',
      compiler: 'gc',
      platform: 'linux/amd64',
    };
  }
  if (path === '/healthz' || path === '/livez' || path === '/readyz') return 'ok';
  if (path === '/openapi/v2') return null;
  if (path === '/openapi/v3' || path.startsWith('/openapi/v3/'))
    return openApiV3(path.slice('/openapi/v3'.length), served);
  if (path === '/api') {
    return {
      kind: 'APIVersions',
      versions: ['v1'],
      serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `127.0.0.1:${port}` }],
    };
  }
  const groups = new Map<string, string[]>();
  for (const gv of groupVersions()) {
    if (!gv.group || !RESOURCES.some((r) => r.group === gv.group && r.version === gv.version && served(r))) continue;
    groups.set(gv.group, [...(groups.get(gv.group) ?? []), gv.version]);
  }
  const groupDoc = (name: string, versions: string[]) => ({
    name,
    versions: versions.map((v) => ({ groupVersion: `${name}/${v}`, version: v })),
    preferredVersion: { groupVersion: `${name}/${versions[0]}`, version: versions[0] },
  });
  if (path === '/apis') {
    return { kind: 'APIGroupList', apiVersion: 'v1', groups: [...groups].map(([n, v]) => groupDoc(n, v)) };
  }
  let m = /^\/apis\/([^/]+)$/.exec(path);
  if (m) {
    const versions = groups.get(m[1]);
    return versions ? { kind: 'APIGroup', apiVersion: 'v1', ...groupDoc(m[1], versions) } : null;
  }
  m = /^\/api\/(v1)$/.exec(path) ?? /^\/apis\/([^/]+\/[^/]+)$/.exec(path);
  if (m) {
    const gv = m[1];
    const list = RESOURCES.filter((r) => apiVersionOf(r) === gv && served(r));
    if (!list.length) return null;
    const resources: Obj[] = [];
    for (const r of list) {
      const entry: Obj = {
        name: r.plural,
        singularName: r.singular,
        namespaced: r.namespaced,
        kind: r.kind,
        verbs: r.verbs,
      };
      if (r.shortNames) entry.shortNames = r.shortNames;
      if (r.categories) entry.categories = r.categories;
      entry.storageVersionHash = Buffer.from(`${gv}/${r.plural}`).toString('base64').slice(0, 11);
      resources.push(entry);
      for (const sub of r.subresources ?? []) {
        const info = SUBRESOURCE_INFO[sub];
        const s: Obj = {
          name: `${r.plural}/${sub}`,
          singularName: '',
          namespaced: r.namespaced,
          kind: info.kind || r.kind,
          verbs: info.verbs,
        };
        if (info.group) {
          s.group = info.group;
          s.version = info.version;
        }
        resources.push(s);
      }
    }
    return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: gv, resources };
  }
  return undefined;
}

/**
 * A minimal OpenAPI v3: per group/version the item paths with their `x-kubernetes-group-version-kind` and the
 * `fieldValidation` query parameter. That is what kubectl (≥ 1.27) looks for to leave validation to the server,
 * so `kubectl apply` works; there are no schemas (`kubectl explain` does not work).
 */
function openApiV3(sub: string, served: (r: ResourceType) => boolean): Obj | null {
  const gvs = groupVersions().filter((gv) =>
    RESOURCES.some((r) => r.group === gv.group && r.version === gv.version && served(r)),
  );
  const pathOf = (gv: { group: string; version: string }) =>
    gv.group ? `apis/${gv.group}/${gv.version}` : `api/${gv.version}`;
  if (sub === '' || sub === '/') {
    const paths: Obj = {};
    for (const gv of gvs) {
      paths[pathOf(gv)] = { serverRelativeURL: `/openapi/v3/${pathOf(gv)}?hash=${stableHash(pathOf(gv))}` };
    }
    return { paths };
  }
  const gv = gvs.find((x) => `/${pathOf(x)}` === sub);
  if (!gv) return null;
  const paths: Obj = {};
  const queryParams = ['dryRun', 'fieldManager', 'fieldValidation', 'force', 'pretty'].map((name) => ({
    name,
    in: 'query',
    schema: { type: name === 'force' ? 'boolean' : 'string', uniqueItems: true },
  }));
  for (const r of RESOURCES.filter((x) => x.group === gv.group && x.version === gv.version && served(x))) {
    const gvk = { group: r.group, version: r.version, kind: r.kind };
    const base = `/${pathOf(gv)}${r.namespaced ? '/namespaces/{namespace}' : ''}/${r.plural}`;
    const op = (action: string) => ({
      operationId: `${action}${r.kind}`,
      parameters: queryParams,
      responses: { '200': { description: 'OK' } },
      'x-kubernetes-action': action,
      'x-kubernetes-group-version-kind': gvk,
    });
    paths[base] = { post: op('post'), get: op('list') };
    paths[`${base}/{name}`] = { get: op('get'), put: op('put'), patch: op('patch'), delete: op('delete') };
  }
  return {
    openapi: '3.0.0',
    info: { title: 'Kubernetes', version: 'v1.31.0' },
    paths,
    components: { schemas: {} },
  };
}

function stableHash(s: string): string {
  return Buffer.from(s).toString('hex').slice(0, 32).padEnd(32, '0').toUpperCase();
}

function wantsTable(req: IncomingMessage): boolean {
  const accept = req.headers.accept ?? '';
  const first = accept.split(',')[0] ?? '';
  return /as=Table/.test(first) && /g=meta\.k8s\.io/.test(first);
}

function toTable(r: ResourceType, items: KubeObject[], q: URLSearchParams, rv: string, withColumns: boolean): Obj {
  const printer = printerFor(r);
  const include = q.get('includeObject') ?? 'Metadata';
  const now = Date.now();
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: { resourceVersion: rv },
    columnDefinitions: withColumns ? printer.columns : [],
    rows: items.map((o) => {
      const row: Obj = { cells: printer.cells(o, now) };
      if (include === 'Object') row.object = o;
      else if (include !== 'None') {
        row.object = { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: o.metadata };
      }
      return row;
    }),
  };
}

function listItem(r: ResourceType, o: KubeObject): unknown {
  if (isCustom(r)) return o;
  const { apiVersion: _a, kind: _k, ...rest } = o;
  return rest;
}

function itemKey(o: KubeObject): string {
  return `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
}

function decodeContinue(token: string): string {
  try {
    const parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { after?: unknown };
    if (typeof parsed.after === 'string') return parsed.after;
  } catch {
    // fall through
  }
  throw badRequest('continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)');
}

interface FieldReq {
  path: string;
  op: '=' | '!=';
  value: string;
}

const COMMON_FIELDS = ['metadata.name', 'metadata.namespace'];
const EXTRA_FIELDS: Record<string, string[]> = {
  pods: [
    'spec.nodeName',
    'spec.restartPolicy',
    'spec.schedulerName',
    'spec.serviceAccountName',
    'spec.hostNetwork',
    'status.phase',
    'status.podIP',
    'status.nominatedNodeName',
  ],
  secrets: ['type'],
  events: [
    'involvedObject.kind',
    'involvedObject.namespace',
    'involvedObject.name',
    'involvedObject.uid',
    'involvedObject.apiVersion',
    'involvedObject.resourceVersion',
    'involvedObject.fieldPath',
    'reason',
    'reportingComponent',
    'source',
    'type',
  ],
  namespaces: ['status.phase'],
  jobs: ['status.successful'],
  nodes: ['spec.unschedulable'],
  replicasets: ['status.replicas'],
  persistentvolumes: ['name'],
};

function parseFieldSelector(r: ResourceType, sel: string): FieldReq[] {
  const out: FieldReq[] = [];
  for (const part of sel
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const m = /^([^=!]+?)\s*(==|=|!=)\s*(.*)$/.exec(part);
    if (!m) throw badRequest(`invalid field selector: '${part}'`);
    const path = m[1].trim();
    if (!COMMON_FIELDS.includes(path) && !(EXTRA_FIELDS[r.plural] ?? []).includes(path)) {
      throw badRequest(`field label not supported: ${path}`);
    }
    out.push({ path, op: m[2] === '!=' ? '!=' : '=', value: m[3] });
  }
  return out;
}

function fieldValue(o: KubeObject, path: string): string {
  if (path === 'name') return o.metadata.name;
  let cur: unknown = o;
  for (const p of path.split('.')) cur = rec(cur)[p];
  if (cur === undefined || cur === null) return path === 'type' ? 'Opaque' : '';
  return String(cur);
}

function matchesFields(o: KubeObject, reqs: FieldReq[]): boolean {
  return reqs.every((f) => (fieldValue(o, f.path) === f.value) === (f.op === '='));
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) {
      throw new StatusError(413, `Request entity too large: limit is ${MAX_BODY}`, 'RequestEntityTooLarge');
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

async function readObject(req: IncomingMessage): Promise<Obj> {
  const body = await readBody(req);
  const type = req.headers['content-type'] ?? 'application/json';
  if (type.startsWith('application/vnd.kubernetes.protobuf')) return decodeKubeProtobuf(body);
  const raw = body.toString('utf8');
  let parsed: unknown;
  try {
    parsed = /yaml/.test(type) ? YAML.parse(raw) : JSON.parse(raw);
  } catch (err) {
    throw badRequest(`the body of the request was in an unknown format: ${(err as Error).message}`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw badRequest('the body of the request was in an unknown format - it must be an object');
  }
  return parsed as Obj;
}

async function deleteOptions(req: IncomingMessage, q: URLSearchParams): Promise<Obj> {
  const raw = (await readBody(req)).toString('utf8').trim();
  let body: Obj = {};
  if (raw) {
    try {
      body = rec(JSON.parse(raw));
    } catch (err) {
      throw badRequest(`error decoding DeleteOptions: ${(err as Error).message}`);
    }
  }
  const grace = q.get('gracePeriodSeconds');
  if (grace !== null) body.gracePeriodSeconds = Number(grace);
  const prop = q.get('propagationPolicy');
  if (prop) body.propagationPolicy = prop;
  if (q.get('orphanDependents') === 'true') body.orphanDependents = true;
  return body;
}

function checkKind(r: ResourceType, body: Obj): void {
  if (body.kind !== undefined && body.kind !== r.kind) {
    throw badRequest(`the kind in the body (${String(body.kind)}) does not match the resource (${r.kind})`);
  }
  if (body.apiVersion !== undefined && body.apiVersion !== apiVersionOf(r)) {
    throw badRequest(
      `the API version in the data (${String(body.apiVersion)}) does not match the expected API version (${apiVersionOf(r)})`,
    );
  }
}

function validate(r: ResourceType, o: KubeObject): void {
  const name = o.metadata?.name;
  if (!name) {
    throw invalid(r, '', [
      {
        field: 'metadata.name',
        type: 'FieldValueRequired',
        message: 'Required value: name or generateName is required',
      },
    ]);
  }
  const re = r === NAMESPACE ? DNS1123_LABEL : DNS1123_SUBDOMAIN;
  if (!re.test(name) || name.length > 253) {
    throw invalid(r, name, [
      {
        field: 'metadata.name',
        type: 'FieldValueInvalid',
        message: `Invalid value: "${name}": a lowercase RFC 1123 ${r === NAMESPACE ? 'label' : 'subdomain'} must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`,
      },
    ]);
  }
  if (['statefulsets', 'deployments', 'replicasets'].includes(r.plural)) {
    const spec = rec(o.spec);
    if (
      spec.replicas !== undefined &&
      (typeof spec.replicas !== 'number' || !Number.isInteger(spec.replicas) || spec.replicas < 0)
    ) {
      throw invalid(r, name, [
        {
          field: 'spec.replicas',
          type: 'FieldValueInvalid',
          message: `Invalid value: ${JSON.stringify(spec.replicas)}: must be greater than or equal to 0`,
        },
      ]);
    }
    const selector = labelSelectorToString(spec.selector);
    const labels = rec(rec(rec(spec.template).metadata).labels) as Record<string, string>;
    if (!selector || !matchesRequirements(labels, parseLabelSelector(selector))) {
      throw invalid(r, name, [
        {
          field: 'spec.template.metadata.labels',
          type: 'FieldValueInvalid',
          message: `Invalid value: ${JSON.stringify(labels)}: \`selector\` does not match template \`labels\``,
        },
      ]);
    }
  }
}

const STS_MUTABLE = [
  'replicas',
  'ordinals',
  'template',
  'updateStrategy',
  'persistentVolumeClaimRetentionPolicy',
  'minReadySeconds',
];

function validateUpdate(r: ResourceType, cur: KubeObject, next: KubeObject): void {
  if (r.plural === 'statefulsets') {
    const strip = (o: KubeObject) => {
      const s = { ...rec(o.spec) };
      for (const k of STS_MUTABLE) delete s[k];
      return stableStringify(s);
    };
    if (strip(cur) !== strip(next)) {
      throw invalid(r, cur.metadata.name, [
        {
          field: 'spec',
          type: 'FieldValueForbidden',
          message: `Forbidden: updates to statefulset spec for fields other than ${STS_MUTABLE.slice(0, -1)
            .map((f) => `'${f}'`)
            .join(', ')} and 'minReadySeconds' are forbidden`,
        },
      ]);
    }
  }
  if (r.plural === 'deployments' || r.plural === 'replicasets') {
    if (stableStringify(rec(cur.spec).selector) !== stableStringify(rec(next.spec).selector)) {
      throw invalid(r, cur.metadata.name, [
        {
          field: 'spec.selector',
          type: 'FieldValueInvalid',
          message: `Invalid value: ${JSON.stringify(rec(next.spec).selector)}: field is immutable`,
        },
      ]);
    }
  }
  if ((r.plural === 'secrets' || r.plural === 'configmaps') && cur.immutable === true) {
    if (stableStringify(cur.data) !== stableStringify(next.data) || next.immutable !== true) {
      throw invalid(r, cur.metadata.name, [
        {
          field: 'data',
          type: 'FieldValueForbidden',
          message: 'Forbidden: field is immutable when `immutable` is set',
        },
      ]);
    }
  }
}

function mergeForSubresource(r: ResourceType, cur: KubeObject, next: KubeObject, sub: string | undefined): KubeObject {
  if (sub === 'status') {
    const out = { ...cur, status: next.status };
    if (next.metadata.resourceVersion)
      out.metadata = { ...cur.metadata, resourceVersion: next.metadata.resourceVersion };
    return out;
  }
  if (sub === 'finalize')
    return { ...cur, spec: next.spec, metadata: { ...cur.metadata, resourceVersion: next.metadata.resourceVersion } };
  if ((r.subresources ?? []).includes('status')) return { ...next, status: cur.status };
  return next;
}

function prepareForCreate(r: ResourceType, o: KubeObject): void {
  if ((r.subresources ?? []).includes('status')) delete o.status;
  switch (r.plural) {
    case 'secrets':
      o.type ??= 'Opaque';
      foldStringData(o);
      break;
    case 'namespaces':
      o.spec = { finalizers: ['kubernetes'] };
      o.status = { phase: 'Active' };
      o.metadata.labels = { ...(o.metadata.labels ?? {}), 'kubernetes.io/metadata.name': o.metadata.name };
      break;
    case 'services': {
      const spec = rec(o.spec);
      spec.type ??= 'ClusterIP';
      if (spec.clusterIP === undefined) {
        const ip = `10.96.${randomBytes(1)[0]}.${1 + (randomBytes(1)[0] % 250)}`;
        spec.clusterIP = ip;
        spec.clusterIPs = [ip];
      }
      spec.sessionAffinity ??= 'None';
      o.spec = spec;
      o.status = { loadBalancer: {} };
      break;
    }
    case 'pods':
      o.status = { phase: 'Pending', qosClass: 'BestEffort' };
      break;
    case 'serviceaccounts':
      break;
  }
}

function foldStringData(o: KubeObject): void {
  const sd = rec(o.stringData);
  if (Object.keys(sd).length) {
    const data = { ...rec(o.data) };
    for (const [k, v] of Object.entries(sd)) data[k] = Buffer.from(String(v), 'utf8').toString('base64');
    o.data = data;
  }
  delete o.stringData;
}

function toScale(o: KubeObject): Obj {
  const spec = rec(o.spec);
  const status = rec(o.status);
  const replicas = typeof spec.replicas === 'number' ? spec.replicas : 1;
  return {
    kind: 'Scale',
    apiVersion: 'autoscaling/v1',
    metadata: {
      name: o.metadata.name,
      namespace: o.metadata.namespace,
      uid: o.metadata.uid,
      resourceVersion: o.metadata.resourceVersion,
      creationTimestamp: o.metadata.creationTimestamp,
    },
    spec: { replicas },
    status: {
      replicas: typeof status.replicas === 'number' ? status.replicas : 0,
      selector: labelSelectorToString(spec.selector),
    },
  };
}

function checkScaleMeta(r: ResourceType, cur: KubeObject, scale: Obj, name: string): void {
  const meta = rec(scale.metadata);
  if (meta.name !== undefined && meta.name !== name) {
    throw badRequest(`the name of the object (${String(meta.name)}) does not match the name on the URL (${name})`);
  }
  if (typeof meta.uid === 'string' && meta.uid && meta.uid !== cur.metadata.uid) {
    throw conflict(
      r,
      name,
      `Precondition failed: UID in precondition: ${meta.uid}, UID in object meta: ${cur.metadata.uid}`,
    );
  }
}

function podContainers(pod: KubeObject): { main: string[]; init: string[] } {
  const spec = rec(pod.spec);
  return {
    main: arr(spec.containers).map((c) => String(rec(c).name)),
    init: arr(spec.initContainers).map((c) => String(rec(c).name)),
  };
}

/** Validates the pod and container of an exec/attach/portforward request the way the real API server does. */
function checkStreamable(pod: KubeObject, sub: 'exec' | 'attach' | 'portforward', q: URLSearchParams): void {
  const name = pod.metadata.name;
  if (sub !== 'portforward') {
    const { main, init } = podContainers(pod);
    const container = q.get('container');
    if (!container) {
      if (main.length !== 1) {
        throw badRequest(
          `a container name must be specified for pod ${name}, choose one of: [${main.join(' ')}]` +
            (init.length ? ` or one of the init containers: [${init.join(' ')}]` : ''),
        );
      }
    } else if (!main.includes(container) && !init.includes(container)) {
      throw badRequest(`container ${container} is not valid for pod ${name}`);
    }
  }
  if (!rec(pod.spec).nodeName) throw badRequest(`pod ${name} does not have a host assigned`);
  const phase = rec(pod.status).phase;
  if (phase === 'Succeeded' || phase === 'Failed') {
    throw badRequest(`cannot exec into a container in a completed pod; current phase is ${String(phase)}`);
  }
  if (phase !== 'Running') {
    // Scheduled but not started: the kubelet does not know the container yet.
    const container = q.get('container') ?? podContainers(pod).main[0] ?? '';
    throw badRequest(sub === 'portforward' ? `pod ${name} is not running` : `container not found ("${container}")`);
  }
}

function checkLogContainer(pod: KubeObject, container: string | null): string {
  const name = pod.metadata.name;
  const { main, init } = podContainers(pod);
  let chosen = container;
  if (!chosen) {
    const dflt = pod.metadata.annotations?.['kubectl.kubernetes.io/default-container'];
    if (main.length === 1) chosen = main[0];
    else if (dflt && main.includes(dflt)) chosen = dflt;
    else {
      throw badRequest(
        `a container name must be specified for pod ${name}, choose one of: [${main.join(' ')}]` +
          (init.length ? ` or one of the init containers: [${init.join(' ')}]` : ''),
      );
    }
  } else if (!main.includes(chosen) && !init.includes(chosen)) {
    throw badRequest(`container ${chosen} is not valid for pod ${name}`);
  }
  if (rec(pod.status).phase !== 'Running') {
    throw badRequest(`container "${chosen}" in pod "${name}" is waiting to start: ContainerCreating`);
  }
  return chosen;
}

function podLog(pod: KubeObject, container: string, q: URLSearchParams): string {
  const started = String(rec(pod.status).startTime ?? kubeTime());
  const ts = q.get('timestamps') === 'true';
  const lines = [
    `sandbox: container ${container} of pod ${pod.metadata.namespace}/${pod.metadata.name} started`,
    `sandbox: image ${String(
      arr(rec(pod.spec).containers)
        .map(rec)
        .find((c) => c.name === container)?.image ?? '',
    )}`,
  ].map((l) => (ts ? `${started.replace('Z', '.000000000Z')} ${l}` : l));
  const tail = q.get('tailLines');
  const shown = tail === null ? lines : lines.slice(Math.max(0, lines.length - Number(tail)));
  return shown.map((l) => `${l}\n`).join('');
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
    'Cache-Control': 'no-cache, private',
  });
  res.end(text);
}

function sendStatus(res: ServerResponse, err: StatusError): void {
  if (err.code === 429) res.setHeader('Retry-After', '1');
  sendJson(res, err.code, err.body);
}

// ---------------------------------------------------------------------------------------------------------
// Patches

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!patch || typeof patch !== 'object' || Array.isArray(patch)) return structuredClone(patch);
  const out: Obj = target && typeof target === 'object' && !Array.isArray(target) ? { ...(target as Obj) } : {};
  for (const [k, v] of Object.entries(patch as Obj)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

const MERGE_KEYS: Record<string, string> = {
  containers: 'name',
  initContainers: 'name',
  ephemeralContainers: 'name',
  env: 'name',
  volumes: 'name',
  volumeMounts: 'mountPath',
  volumeDevices: 'devicePath',
  imagePullSecrets: 'name',
  ownerReferences: 'uid',
  conditions: 'type',
  hostAliases: 'ip',
  topologySpreadConstraints: 'topologyKey',
  resourceClaims: 'name',
};
const PRIMITIVE_MERGE = new Set(['finalizers']);

/** Kubernetes strategic merge patch, for the list merge keys of the core and apps types. */
export function strategicMerge(target: unknown, patch: unknown): unknown {
  if (!patch || typeof patch !== 'object' || Array.isArray(patch)) return structuredClone(patch);
  const p = patch as Obj;
  if (p.$patch === 'replace') {
    const { $patch: _x, ...rest } = p;
    return structuredClone(rest);
  }
  if (p.$patch === 'delete') return undefined;
  let out: Obj = target && typeof target === 'object' && !Array.isArray(target) ? { ...(target as Obj) } : {};
  if (Array.isArray(p.$retainKeys)) {
    const keep = new Set(p.$retainKeys.map(String));
    out = Object.fromEntries(Object.entries(out).filter(([k]) => keep.has(k)));
  }
  for (const [k, v] of Object.entries(p)) {
    if (k === '$patch' || k === '$retainKeys' || k.startsWith('$setElementOrder/')) continue;
    if (k.startsWith('$deleteFromPrimitiveList/')) {
      const field = k.slice('$deleteFromPrimitiveList/'.length);
      const drop = new Set(arr(v).map((x) => stableStringify(x)));
      if (Array.isArray(out[field]))
        out[field] = (out[field] as unknown[]).filter((x) => !drop.has(stableStringify(x)));
      continue;
    }
    if (v === null) {
      delete out[k];
      continue;
    }
    if (Array.isArray(v)) {
      out[k] = mergeList(k, out[k], v);
      continue;
    }
    const merged = strategicMerge(out[k], v);
    if (merged === undefined) delete out[k];
    else out[k] = merged;
  }
  return out;
}

function mergeList(field: string, current: unknown, patch: unknown[]): unknown[] {
  const cur = Array.isArray(current) ? current : [];
  if (PRIMITIVE_MERGE.has(field)) {
    const out = [...cur];
    for (const x of patch) if (!out.some((y) => stableStringify(y) === stableStringify(x))) out.push(x);
    return out;
  }
  const objects = patch.every((x) => x && typeof x === 'object' && !Array.isArray(x));
  let key = MERGE_KEYS[field];
  if (!key && field === 'ports' && objects) {
    key =
      patch.some((x) => 'containerPort' in rec(x)) || cur.some((x) => 'containerPort' in rec(x))
        ? 'containerPort'
        : 'port';
  }
  if (!key || !objects) return structuredClone(patch.filter((x) => rec(x).$patch !== 'delete'));
  if (patch.length === 1 && rec(patch[0]).$patch === 'replace') return [];
  const out = cur.map((x) => structuredClone(x));
  for (const item of patch) {
    const it = rec(item);
    const idx = out.findIndex((x) => rec(x)[key] === it[key]);
    if (it.$patch === 'delete') {
      if (idx >= 0) out.splice(idx, 1);
      continue;
    }
    if (idx >= 0) out[idx] = strategicMerge(out[idx], it);
    else out.push(strategicMerge({}, it));
  }
  return out;
}

/** RFC 6902 JSON patch; throws a 422 StatusError when an operation fails. */
export function jsonPatch(doc: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw badRequest('json patch must be an array of operations');
  let root = structuredClone(doc);
  const fail = (msg: string) => new StatusError(422, msg, 'Invalid');
  const parse = (ptr: unknown): string[] => {
    if (typeof ptr !== 'string' || (ptr !== '' && !ptr.startsWith('/')))
      throw fail(`invalid JSON pointer: ${String(ptr)}`);
    return ptr === ''
      ? []
      : ptr
          .slice(1)
          .split('/')
          .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  };
  const parentOf = (path: string[]): { parent: unknown; key: string } => {
    let cur: unknown = root;
    for (const seg of path.slice(0, -1)) {
      if (Array.isArray(cur)) cur = cur[Number(seg)];
      else if (cur && typeof cur === 'object') cur = (cur as Obj)[seg];
      else cur = undefined;
      if (cur === undefined) throw fail(`doc is missing path: "/${path.join('/')}": missing value`);
    }
    return { parent: cur, key: path[path.length - 1] };
  };
  const get = (path: string[]): unknown => {
    if (!path.length) return root;
    const { parent, key } = parentOf(path);
    const v = Array.isArray(parent) ? parent[Number(key)] : rec(parent)[key];
    if (v === undefined) throw fail(`doc is missing path: "/${path.join('/')}": missing value`);
    return v;
  };
  const remove = (path: string[]): unknown => {
    const v = get(path);
    const { parent, key } = parentOf(path);
    if (Array.isArray(parent)) parent.splice(Number(key), 1);
    else delete (parent as Obj)[key];
    return v;
  };
  const add = (path: string[], value: unknown) => {
    if (!path.length) {
      root = value;
      return;
    }
    const { parent, key } = parentOf(path);
    if (Array.isArray(parent)) {
      const idx = key === '-' ? parent.length : Number(key);
      if (!Number.isInteger(idx) || idx < 0 || idx > parent.length)
        throw fail(`add operation does not apply: index out of range: ${key}`);
      parent.splice(idx, 0, value);
    } else if (parent && typeof parent === 'object') (parent as Obj)[key] = value;
    else throw fail(`doc is missing path: "/${path.join('/')}": missing value`);
  };
  for (const raw of ops) {
    const op = rec(raw);
    const path = parse(op.path);
    switch (op.op) {
      case 'add':
        add(path, structuredClone(op.value));
        break;
      case 'remove':
        remove(path);
        break;
      case 'replace':
        get(path);
        if (!path.length) root = structuredClone(op.value);
        else {
          remove(path);
          add(path, structuredClone(op.value));
        }
        break;
      case 'move':
        add(path, remove(parse(op.from)));
        break;
      case 'copy':
        add(path, structuredClone(get(parse(op.from))));
        break;
      case 'test':
        if (stableStringify(get(path)) !== stableStringify(op.value))
          throw fail(`testing value /${path.join('/')} failed: test failed`);
        break;
      default:
        throw badRequest(`Unexpected kind: ${String(op.op)}`);
    }
  }
  return root;
}

// ---------------------------------------------------------------------------------------------------------
// Protobuf request bodies. kubectl ≥ 1.32 sends typed-client bodies (`kubectl create secret|configmap|namespace`,
// `kubectl auth can-i`) as application/vnd.kubernetes.protobuf; responses may be JSON (clients negotiate by the
// response Content-Type). Only the types below are decoded; field numbers follow k8s.io/api generated.proto.

type PbKind = 'string' | 'bytes' | 'varint' | 'bool' | 'time' | 'mapString' | 'mapBytes' | PbSchema;
interface PbField {
  name: string;
  kind: PbKind;
  repeated?: boolean;
}
type PbSchema = { [field: number]: PbField };

const PB_OWNER_REF: PbSchema = {
  1: { name: 'kind', kind: 'string' },
  3: { name: 'name', kind: 'string' },
  4: { name: 'uid', kind: 'string' },
  5: { name: 'apiVersion', kind: 'string' },
  6: { name: 'controller', kind: 'bool' },
  7: { name: 'blockOwnerDeletion', kind: 'bool' },
};
const PB_OBJECT_META: PbSchema = {
  1: { name: 'name', kind: 'string' },
  2: { name: 'generateName', kind: 'string' },
  3: { name: 'namespace', kind: 'string' },
  5: { name: 'uid', kind: 'string' },
  6: { name: 'resourceVersion', kind: 'string' },
  7: { name: 'generation', kind: 'varint' },
  8: { name: 'creationTimestamp', kind: 'time' },
  11: { name: 'labels', kind: 'mapString' },
  12: { name: 'annotations', kind: 'mapString' },
  13: { name: 'ownerReferences', kind: PB_OWNER_REF, repeated: true },
  14: { name: 'finalizers', kind: 'string', repeated: true },
};
const PB_TYPES: Record<string, PbSchema> = {
  'v1/Namespace': {
    1: { name: 'metadata', kind: PB_OBJECT_META },
    2: { name: 'spec', kind: { 1: { name: 'finalizers', kind: 'string', repeated: true } } },
  },
  'v1/Secret': {
    1: { name: 'metadata', kind: PB_OBJECT_META },
    2: { name: 'data', kind: 'mapBytes' },
    3: { name: 'type', kind: 'string' },
    4: { name: 'stringData', kind: 'mapString' },
    5: { name: 'immutable', kind: 'bool' },
  },
  'v1/ConfigMap': {
    1: { name: 'metadata', kind: PB_OBJECT_META },
    2: { name: 'data', kind: 'mapString' },
    3: { name: 'binaryData', kind: 'mapBytes' },
    4: { name: 'immutable', kind: 'bool' },
  },
  'v1/ServiceAccount': {
    1: { name: 'metadata', kind: PB_OBJECT_META },
    3: { name: 'imagePullSecrets', kind: { 1: { name: 'name', kind: 'string' } }, repeated: true },
    4: { name: 'automountServiceAccountToken', kind: 'bool' },
  },
  'authorization.k8s.io/v1/SelfSubjectAccessReview': {
    1: { name: 'metadata', kind: PB_OBJECT_META },
    2: {
      name: 'spec',
      kind: {
        1: {
          name: 'resourceAttributes',
          kind: {
            1: { name: 'namespace', kind: 'string' },
            2: { name: 'verb', kind: 'string' },
            3: { name: 'group', kind: 'string' },
            4: { name: 'version', kind: 'string' },
            5: { name: 'resource', kind: 'string' },
            6: { name: 'subresource', kind: 'string' },
            7: { name: 'name', kind: 'string' },
          },
        },
        2: {
          name: 'nonResourceAttributes',
          kind: { 1: { name: 'path', kind: 'string' }, 2: { name: 'verb', kind: 'string' } },
        },
      },
    },
  },
};

interface PbReader {
  buf: Buffer;
  pos: number;
}

function pbVarint(r: PbReader): number {
  let result = 0;
  let mul = 1;
  for (;;) {
    if (r.pos >= r.buf.length) throw new Error('truncated varint');
    const b = r.buf[r.pos++];
    result += (b & 0x7f) * mul;
    if (b < 0x80) return result;
    mul *= 128;
  }
}

/** Reads all fields of one message: [fieldNumber, wireType, value] where value is a number or a Buffer. */
function pbFields(buf: Buffer): [number, number, number | Buffer][] {
  const r: PbReader = { buf, pos: 0 };
  const out: [number, number, number | Buffer][] = [];
  while (r.pos < buf.length) {
    const key = pbVarint(r);
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) out.push([field, wire, pbVarint(r)]);
    else if (wire === 2) {
      const len = pbVarint(r);
      out.push([field, wire, buf.subarray(r.pos, r.pos + len)]);
      r.pos += len;
    } else if (wire === 1) r.pos += 8;
    else if (wire === 5) r.pos += 4;
    else throw new Error(`unsupported wire type ${wire}`);
  }
  return out;
}

function pbMessage(buf: Buffer, schema: PbSchema): Obj {
  const out: Obj = {};
  for (const [num, , value] of pbFields(buf)) {
    const f = schema[num];
    if (!f) continue;
    let v: unknown;
    if (f.kind === 'string') {
      v = (value as Buffer).toString('utf8');
      // Go's protobuf writes empty strings; JSON (omitempty) would not have them.
      if (v === '' && !f.repeated) continue;
    } else if (f.kind === 'bytes') v = (value as Buffer).toString('base64');
    else if (f.kind === 'varint') v = value as number;
    else if (f.kind === 'bool') v = value === 1;
    else if (f.kind === 'time') {
      const t = pbMessage(value as Buffer, { 1: { name: 's', kind: 'varint' } });
      v = kubeTime(Number(t.s ?? 0) * 1000);
    } else if (f.kind === 'mapString' || f.kind === 'mapBytes') {
      const entry = pbMessage(value as Buffer, {
        1: { name: 'k', kind: 'string' },
        2: { name: 'v', kind: f.kind === 'mapString' ? 'string' : 'bytes' },
      });
      const map = rec(out[f.name]);
      map[String(entry.k ?? '')] = entry.v ?? '';
      out[f.name] = map;
      continue;
    } else v = pbMessage(value as Buffer, f.kind);
    if (f.repeated) out[f.name] = [...arr(out[f.name]), v];
    else out[f.name] = v;
  }
  return out;
}

/** Decodes a `k8s\0`-framed protobuf object of one of the supported types; throws 415 for others. */
export function decodeKubeProtobuf(body: Buffer): Obj {
  const magic = Buffer.from([0x6b, 0x38, 0x73, 0x00]);
  if (body.length < 4 || !body.subarray(0, 4).equals(magic)) throw badRequest('protobuf body without the k8s magic');
  const unknown = pbMessage(body.subarray(4), {
    1: { name: 'typeMeta', kind: { 1: { name: 'apiVersion', kind: 'string' }, 2: { name: 'kind', kind: 'string' } } },
    2: { name: 'raw', kind: 'bytes' },
  });
  const tm = rec(unknown.typeMeta);
  const typeKey = `${String(tm.apiVersion)}/${String(tm.kind)}`;
  const schema = PB_TYPES[typeKey];
  if (!schema) {
    throw new StatusError(
      415,
      `the sandbox cannot decode protobuf bodies of ${typeKey}; send application/json`,
      'UnsupportedMediaType',
    );
  }
  const obj = pbMessage(Buffer.from(String(unknown.raw ?? ''), 'base64'), schema);
  return { apiVersion: tm.apiVersion, kind: tm.kind, ...obj };
}
