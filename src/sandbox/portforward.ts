/**
 * `pods/portforward` of the sandbox: WebSocket (v4.channel.k8s.io, as @kubernetes/client-node's PortForward
 * uses it: per port a data and an error channel, each starting with the port as 2 little-endian bytes),
 * SPDY/3.1 (`portforward.k8s.io`, kubectl < 1.31) and SPDY tunnelled in WebSocket messages
 * (`SPDY/3.1+portforward.k8s.io`, kubectl ≥ 1.31; only in 'v5' mode, older clusters lack it and kubectl falls
 * back to plain SPDY).
 *
 * What listens in a pod: the postgres image's port 5432 is the sandbox's real PostgreSQL server. Nothing else
 * listens (the sandbox runs no Synapse/MAS servers), so other ports fail the way containerd reports a refused
 * connection inside the pod's network namespace, on the error channel/stream.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { createWebSocketStream, type WebSocket } from 'ws';
import {
  acceptWebSocket,
  httpStatus,
  imageKey,
  offeredWebSocketProtocols,
  RuntimeError,
  WsSender,
  writeWithBackpressure,
} from './runtime.js';
import { acceptSpdy, isSpdyUpgrade, negotiateStreamProtocol, SpdyServerConnection, type SpdyStream } from './spdy.js';
import type { ExecFault, KubeObject, RuntimeContext } from './types.js';

const WS_V4 = 'v4.channel.k8s.io';
/** kubectl ≥ 1.31: SPDY framing inside WebSocket binary messages. */
export const SPDY_TUNNEL_PROTOCOL = 'SPDY/3.1+portforward.k8s.io';
const SPDY_PORTFORWARD = 'portforward.k8s.io';

/** Where a pod port leads on this machine, or undefined when nothing listens there. */
export function portTarget(
  ctx: RuntimeContext,
  pod: KubeObject,
  port: number,
): { host: string; port: number } | undefined {
  const containers = ((pod.spec ?? {}) as { containers?: { image?: string }[] }).containers ?? [];
  if (port === 5432 && containers.some((c) => imageKey(c.image ?? '') === 'postgres')) {
    return { host: ctx.postgres.host, port: ctx.postgres.port };
  }
  return undefined;
}

/** Parses `ports` (client-facing) or `port` (kubelet-facing) query values, comma lists allowed. */
export function parsePorts(query: URLSearchParams): number[] {
  const raw = [...query.getAll('ports'), ...query.getAll('port')];
  if (raw.length === 0) throw new RuntimeError(httpStatus(400, 'query parameter "port" is required'), true);
  const ports: number[] = [];
  for (const value of raw) {
    if (value === '') throw new RuntimeError(httpStatus(400, 'query parameter "port" cannot be empty'), true);
    for (const p of value.split(',')) {
      const n = /^\d+$/.test(p) ? Number(p) : Number.NaN;
      if (!Number.isInteger(n) || n > 65535) {
        throw new RuntimeError(
          httpStatus(400, `unable to parse "${value}" as a port: strconv.ParseUint: parsing "${p}": invalid syntax`),
          true,
        );
      }
      if (n < 1) throw new RuntimeError(httpStatus(400, `port "${value}" must be > 0`), true);
      ports.push(n);
    }
  }
  return ports;
}

function sandboxId(pod: KubeObject): string {
  return createHash('sha256')
    .update(`sandbox:${pod.metadata.namespace}/${pod.metadata.name}/${pod.metadata.uid ?? ''}`)
    .digest('hex');
}

/** containerd's error for a port nobody listens on, as the kubelet forwards it. */
function refusedMessage(pod: KubeObject, port: number): string {
  const id = sandboxId(pod);
  const netns = `/var/run/netns/cni-${id.slice(0, 8)}-${id.slice(8, 12)}-${id.slice(12, 16)}-${id.slice(16, 20)}-${id.slice(20, 32)}`;
  return (
    `error forwarding port ${port} to pod ${id}, uid : failed to execute portforward in network namespace "${netns}": ` +
    `failed to connect to localhost:${port} inside namespace "${id}", IPv4: dial tcp4 127.0.0.1:${port}: connect: ` +
    `connection refused IPv6 dial tcp6 [::1]:${port}: connect: connection refused `
  );
}

function connectTarget(
  ctx: RuntimeContext,
  pod: KubeObject,
  port: number,
  onReady: (sock: net.Socket) => void,
  onError: (message: string) => void,
): void {
  const t = portTarget(ctx, pod, port);
  if (!t) {
    setImmediate(() => onError(refusedMessage(pod, port)));
    return;
  }
  const sock = net.connect(t.port, t.host);
  let ready = false;
  sock.once('connect', () => {
    ready = true;
    onReady(sock);
  });
  sock.on('error', (err) => {
    if (!ready) onError(`error forwarding port ${port} to pod ${sandboxId(pod)}, uid : ${err.message}`);
    sock.destroy();
  });
}

/** Handles a port-forward upgrade (WebSocket or SPDY). The pod exists and is Running. */
export function handlePortForward(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  target: { namespace: string; pod: string; query: URLSearchParams },
  ctx: RuntimeContext,
  pod: KubeObject,
): void {
  if (isSpdyUpgrade(req)) {
    const protocol = negotiateStreamProtocol(req, socket, [SPDY_PORTFORWARD]);
    if (!protocol) return;
    serveSpdyPortForward(acceptSpdy(socket, head, protocol), ctx, pod);
    return;
  }
  const supported = ctx.execProtocol === 'v5' ? [WS_V4, SPDY_TUNNEL_PROTOCOL] : [WS_V4];
  // The tunnel names its ports in SPDY stream headers; the plain WebSocket protocol needs them in the query.
  const tunnel = offeredWebSocketProtocols(req).find((p) => supported.includes(p)) === SPDY_TUNNEL_PROTOCOL;
  const ports = tunnel ? [] : parsePorts(target.query);
  acceptWebSocket(req, socket, head, supported, (ws, protocol) => {
    if (protocol === SPDY_TUNNEL_PROTOCOL) {
      const duplex = createWebSocketStream(ws);
      duplex.on('error', () => duplex.destroy());
      serveSpdyPortForward(new SpdyServerConnection(duplex, Buffer.alloc(0)), ctx, pod);
      return;
    }
    forwardOverWebSocket(ws, ctx, pod, ports);
  });
}

function portPrefix(port: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(port);
  return b;
}

/** Cut a forwarded stream after N bytes towards the client (an exec fault on argv ['portforward', PORT]). */
function takeFault(ctx: RuntimeContext, pod: KubeObject, port: number): ExecFault | undefined {
  return ctx.faults.takeExecFault(pod.metadata.name, ['portforward', String(port)]);
}

function forwardOverWebSocket(ws: WebSocket, ctx: RuntimeContext, pod: KubeObject, ports: number[]): void {
  const sender = new WsSender(ws);
  const targets: (net.Socket | undefined)[] = ports.map(() => undefined);
  const pendingInput: Buffer[][] = ports.map(() => []);
  let open = ports.length;
  let closed = false;
  ports.forEach((port, i) => {
    sender.send(2 * i, portPrefix(port));
    sender.send(2 * i + 1, portPrefix(port));
  });
  const finishOne = (): void => {
    if (--open > 0 || closed) return;
    closed = true;
    sender.onIdle(() => ws.close(1000));
  };
  ports.forEach((port, i) => {
    const fault = takeFault(ctx, pod, port);
    let sent = 0;
    connectTarget(
      ctx,
      pod,
      port,
      (sock) => {
        if (closed) return sock.destroy();
        targets[i] = sock;
        for (const b of pendingInput[i] ?? []) sock.write(b);
        pendingInput[i] = [];
        sock.on('data', (chunk: Buffer) => {
          const data = chunk;
          if (fault) {
            const left = fault.cutAfterBytes - sent;
            if (data.length >= left) {
              sender.send(2 * i, data.subarray(0, Math.max(0, left)));
              closed = true;
              sock.destroy();
              sender.onIdle(() => ws.terminate());
              return;
            }
            sent += data.length;
          }
          if (!sender.send(2 * i, data)) {
            sock.pause();
            sender.onDrain(() => sock.resume());
          }
        });
        // containerd: when one direction ends, the other gets a second, then the forward is over.
        sock.on('end', () => setTimeout(() => sock.destroy(), 1000).unref());
        sock.on('close', finishOne);
      },
      (message) => {
        sender.send(2 * i + 1, Buffer.from(message));
        finishOne();
      },
    );
  });
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (!isBinary || data.length === 0) return;
    const channel = data[0] as number;
    if (channel % 2 !== 0 || channel / 2 >= ports.length) return;
    const i = channel / 2;
    const sock = targets[i];
    const payload = Buffer.from(data.subarray(1));
    if (sock) writeWithBackpressure(ws, sock, payload);
    else pendingInput[i]?.push(payload);
  });
  ws.on('error', () => ws.terminate());
  ws.on('close', () => {
    closed = true;
    for (const s of targets) {
      s?.end();
      setTimeout(() => s?.destroy(), 1000).unref();
    }
  });
}

/** kubelet's SPDY port-forward: streams paired by `requestid`, one target connection per pair. */
function serveSpdyPortForward(conn: SpdyServerConnection, ctx: RuntimeContext, pod: KubeObject): void {
  const pairs = new Map<string, { data?: SpdyStream; error?: SpdyStream }>();
  const sockets = new Set<net.Socket>();
  conn.on('stream', (stream: SpdyStream) => {
    stream.on('error', () => {});
    const type = stream.header('streamtype');
    const port = Number(stream.header('port'));
    const key = `${stream.header('requestid') ?? ''}/${stream.header('port') ?? ''}`;
    if ((type !== 'data' && type !== 'error') || !Number.isInteger(port) || port < 1 || port > 65535) {
      conn.reset(stream.id);
      return;
    }
    const pair = pairs.get(key) ?? {};
    pair[type] = stream;
    pairs.set(key, pair);
    if (type === 'error') stream.resume();
    if (!pair.data || !pair.error) return;
    pairs.delete(key);
    const { data, error } = pair as { data: SpdyStream; error: SpdyStream };
    const fault = takeFault(ctx, pod, port);
    connectTarget(
      ctx,
      pod,
      port,
      (sock) => {
        sockets.add(sock);
        let sent = 0;
        data.on('data', (chunk: Buffer) => {
          if (!sock.write(chunk)) {
            data.pause();
            sock.once('drain', () => data.resume());
          }
        });
        data.on('end', () => {
          sock.end();
          setTimeout(() => sock.destroy(), 1000).unref();
        });
        data.on('close', () => sock.destroy());
        sock.on('data', (chunk: Buffer) => {
          if (fault) {
            const left = fault.cutAfterBytes - sent;
            if (chunk.length >= left) {
              data.write(chunk.subarray(0, Math.max(0, left)), () => conn.flushed(() => conn.destroy()));
              sock.destroy();
              return;
            }
            sent += chunk.length;
          }
          if (!data.write(chunk)) {
            sock.pause();
            data.once('drain', () => sock.resume());
          }
        });
        sock.on('end', () => setTimeout(() => sock.destroy(), 1000).unref());
        sock.on('close', () => {
          sockets.delete(sock);
          if (!data.writableEnded) data.end();
          if (!error.writableEnded) error.end();
        });
      },
      (message) => {
        error.end(message);
        data.end();
      },
    );
  });
  conn.on('close', () => {
    for (const s of sockets) s.destroy();
  });
}
