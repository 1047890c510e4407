/**
 * `pods/exec`, `pods/attach` and `pods/portforward` upgrades of the sandbox API server: WebSocket (the
 * channel.k8s.io family, v5 only in 'v5' mode) and SPDY/3.1 (kubectl < 1.30 and fallbacks), backed by real local
 * processes (runtime.ts).
 *
 * What the client sees, as on a real cluster (kubelet + containerd):
 * - exit 0 → `{"metadata":{},"status":"Success"}` on the status channel (v4/v5), then the connection closes;
 * - exit N → the NonZeroExitCode Status with an `ExitCode` cause;
 * - argv[0] missing from the image → containerd's InternalError Status ("… OCI runtime exec failed: exec failed:
 *   unable to start container process: exec: "foo": executable file not found in $PATH: unknown"); modern
 *   containerd reports no exit code for this (the Docker-era "exit code 126" came from dockershim);
 * - pod deleted while the command runs → the process group is SIGKILLed, as when the container dies, and the
 *   client gets exit code 137 (NonZeroExitCode) after the output produced so far;
 * - client closes the connection → the process group is killed (a real kubelet may leave a non-tty process
 *   running; the sandbox does not, so tests leave no strays);
 * - exec fault → exactly N stdout bytes are delivered, then the connection is destroyed without a status
 *   (client-go's SPDY executor, i.e. kubectl < 1.30, then exits 0 with the truncated output; v5 clients fail).
 * Protocol v4 and older have no stdin half-close over WebSocket: stdin stays open until the socket closes.
 * tty=true gets no pseudo-terminal: stderr is merged into stdout and resize messages are ignored.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex, Writable } from 'node:stream';
import { handlePortForward } from './portforward.js';
import {
  acceptWebSocket,
  type ContainerProcess,
  httpStatus,
  type KubeStatus,
  nonZeroExitStatus,
  type ResolvedContainer,
  RuntimeError,
  resolveContainer,
  spawnInContainer,
  successStatus,
  WsSender,
  watchPod,
  writeHttpStatus,
  writeWithBackpressure,
} from './runtime.js';
import { acceptSpdy, isSpdyUpgrade, negotiateStreamProtocol, type SpdyStream } from './spdy.js';
import type { ExecFault, ExecProtocolMode, KubeObject, RuntimeContext, UpgradeHandler } from './types.js';

const V5 = 'v5.channel.k8s.io';
const V4 = 'v4.channel.k8s.io';
/** WebSocket subprotocols and SPDY X-Stream-Protocol-Version values alike (v5 over SPDY behaves as v4). */
const EXEC_PROTOCOLS = [V5, V4, 'v3.channel.k8s.io', 'v2.channel.k8s.io', 'channel.k8s.io'];

/** The exec protocols the server accepts in a mode, best first ('v4-only' never accepts v5). */
export function execProtocols(mode: ExecProtocolMode): string[] {
  return mode === 'v5' ? [...EXEC_PROTOCOLS] : EXEC_PROTOCOLS.filter((p) => p !== V5);
}

function statusAsJson(protocol: string): boolean {
  return protocol === V5 || protocol === V4;
}

// ---------------------------------------------------------------------------------------------------------------
// Exec options

/** The query of an exec request. */
export interface ExecRequest {
  argv: string[];
  container: string | undefined;
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  tty: boolean;
}

function parseBool(v: string | null): boolean {
  return v !== null && ['1', 't', 'T', 'true', 'TRUE', 'True'].includes(v);
}

/** Parses and validates the exec query; throws a 400 RuntimeError like the API server. */
export function parseExecQuery(query: URLSearchParams): ExecRequest {
  const req: ExecRequest = {
    argv: query.getAll('command'),
    container: query.get('container') || undefined,
    stdin: parseBool(query.get('stdin')),
    stdout: parseBool(query.get('stdout')),
    stderr: parseBool(query.get('stderr')),
    tty: parseBool(query.get('tty')),
  };
  if (!req.stdin && !req.stdout && !req.stderr) {
    throw new RuntimeError(httpStatus(400, 'you must specify at least 1 of stdin, stdout, stderr'), true);
  }
  if (req.argv.length === 0) throw new RuntimeError(httpStatus(400, 'you must specify at least 1 command'), true);
  return req;
}

// ---------------------------------------------------------------------------------------------------------------
// The process side of an exec, independent of the wire protocol

/** What an exec session needs from the wire protocol. */
export interface ExecTransport {
  /** Sends process output; false = congested, wait for onDrain before sending more. */
  send(channel: 1 | 2, data: Buffer): boolean;
  onDrain(cb: () => void): void;
  /** Sends the final Status (JSON or text, per protocol) and closes the connection gracefully. */
  finish(status: KubeStatus): void;
  /** Destroys the connection once the data queued so far has been written (no status). */
  cut(): void;
}

/** One exec: spawns the process, moves its output to the transport, reports the exit. */
export class ExecSession {
  private proc: ContainerProcess | undefined;
  private ended = false;
  private stopWatch: (() => void) | undefined;
  private fault: ExecFault | undefined;
  private stdoutBytes = 0;

  constructor(
    private readonly ctx: RuntimeContext,
    private readonly container: ResolvedContainer,
    private readonly req: ExecRequest,
    private readonly transport: ExecTransport,
  ) {}

  /** Starts the process; returns its stdin (null without stdin, or when it could not start). */
  start(): Writable | null {
    const c = this.container;
    try {
      this.proc = spawnInContainer(c, this.req.argv, {
        ctx: this.ctx,
        stdin: this.req.stdin,
        stdout: this.req.stdout,
        stderr: this.req.stderr || (this.req.tty && this.req.stdout),
      });
    } catch (err) {
      const status =
        err instanceof RuntimeError
          ? err.status
          : httpStatus(500, `error executing command in container: ${String(err)}`);
      this.ended = true;
      this.transport.finish(status);
      return null;
    }
    const proc = this.proc;
    this.fault = this.ctx.faults.takeExecFault(c.podName, this.req.argv);
    this.stopWatch = watchPod(this.ctx, c.podNamespace, c.podName, c.podUid, () => proc.kill('SIGKILL'));
    if (proc.stdout) this.pump(proc.stdout, 1);
    if (proc.stderr) this.pump(proc.stderr, this.req.tty ? 1 : 2);
    void proc.done.then((info) => {
      this.stopWatch?.();
      if (this.ended) return;
      this.ended = true;
      this.transport.finish(info.exitCode === 0 ? successStatus() : nonZeroExitStatus(this.req.argv, info.exitCode));
    });
    return proc.stdin;
  }

  /** The client went away: kill the process group. */
  clientGone(): void {
    this.ended = true;
    this.stopWatch?.();
    this.proc?.kill('SIGKILL');
  }

  private pump(source: NodeJS.ReadableStream & { pause(): void; resume(): void }, channel: 1 | 2): void {
    source.on('data', (chunk: Buffer) => {
      if (this.ended) return;
      let data = chunk;
      let cutNow = false;
      if (this.fault && channel === 1) {
        const left = this.fault.cutAfterBytes - this.stdoutBytes;
        if (data.length >= left) {
          data = data.subarray(0, Math.max(0, left));
          cutNow = true;
        }
        this.stdoutBytes += data.length;
      }
      const ok = data.length > 0 ? this.transport.send(channel, data) : true;
      if (cutNow) {
        this.ended = true;
        source.pause();
        this.stopWatch?.();
        this.proc?.kill('SIGKILL');
        this.transport.cut();
        return;
      }
      if (!ok) {
        source.pause();
        this.transport.onDrain(() => source.resume());
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// WebSocket

function execOverWebSocket(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  ctx: RuntimeContext,
  container: ResolvedContainer,
  execReq: ExecRequest,
): void {
  acceptWebSocket(req, socket, head, execProtocols(ctx.execProtocol), (ws, protocol) => {
    const sender = new WsSender(ws);
    const jsonStatus = statusAsJson(protocol);
    let finished = false;
    const transport: ExecTransport = {
      send: (channel, data) => sender.send(channel, data),
      onDrain: (cb) => sender.onDrain(cb),
      finish: (status) => {
        finished = true;
        if (jsonStatus) sender.send(3, Buffer.from(JSON.stringify(status)));
        else if (status.status === 'Failure') sender.send(3, Buffer.from(status.message ?? 'error'));
        if (ws.isPaused) ws.resume();
        ws.close(1000);
      },
      cut: () => {
        finished = true;
        sender.onIdle(() => ws.terminate());
      },
    };
    const session = new ExecSession(ctx, container, execReq, transport);
    const stdin = session.start();
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary || data.length === 0) return;
      const channel = data[0];
      if (channel === 0) {
        if (stdin) writeWithBackpressure(ws, stdin, data.subarray(1));
      } else if (channel === 255 && protocol === V5 && data[1] === 0) {
        stdin?.end();
      }
      // 4 (resize) and anything else: ignored.
    });
    ws.on('error', () => ws.terminate());
    ws.on('close', () => {
      if (!finished) session.clientGone();
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// SPDY

function execOverSpdy(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  ctx: RuntimeContext,
  container: ResolvedContainer,
  execReq: ExecRequest,
): void {
  const negotiated = negotiateStreamProtocol(req, socket, execProtocols(ctx.execProtocol));
  if (!negotiated) return;
  const protocol: string = negotiated;
  const conn = acceptSpdy(socket, head, protocol);
  const streams = new Map<string, SpdyStream>();
  const expected = ['error'];
  if (execReq.stdin) expected.push('stdin');
  if (execReq.stdout) expected.push('stdout');
  if (execReq.stderr && !execReq.tty) expected.push('stderr');
  if (execReq.tty && protocol !== 'channel.k8s.io' && protocol !== 'v2.channel.k8s.io') expected.push('resize');
  let session: ExecSession | undefined;
  let finished = false;
  // The kubelet's streamCreationTimeout.
  const timer = setTimeout(() => conn.destroy(), 30_000);
  timer.unref();

  conn.on('stream', (stream: SpdyStream) => {
    const type = stream.header('streamtype') ?? '';
    stream.on('error', () => {});
    if (!expected.includes(type) || streams.has(type)) {
      conn.reset(stream.id);
      return;
    }
    streams.set(type, stream);
    if (type !== 'stdin') stream.resume(); // nothing to read from error/stdout/stderr/resize
    if (expected.every((t) => streams.has(t))) {
      clearTimeout(timer);
      start();
    }
  });
  conn.on('close', () => {
    clearTimeout(timer);
    if (!finished) session?.clientGone();
  });

  function start(): void {
    const out = streams.get('stdout');
    const err = streams.get('stderr');
    const errorStream = streams.get('error') as SpdyStream;
    const transport: ExecTransport = {
      send: (channel, data) => {
        const s = channel === 1 ? out : (err ?? out);
        return s ? s.write(data) : true;
      },
      onDrain: (cb) => {
        const pending = [out, err].filter((s): s is SpdyStream => !!s && s.writableNeedDrain);
        if (pending.length === 0) return cb();
        let left = pending.length;
        for (const s of pending) {
          s.once('drain', () => {
            if (--left === 0) cb();
          });
        }
      },
      finish: (status) => {
        finished = true;
        if (statusAsJson(protocol)) {
          errorStream.write(JSON.stringify(status));
        } else if (status.status === 'Failure') {
          errorStream.write(status.message ?? 'error');
        }
        const toEnd = [out, err, errorStream].filter((s): s is SpdyStream => !!s);
        let left = toEnd.length;
        for (const s of toEnd) {
          s.end(() => {
            if (--left === 0) conn.end();
          });
        }
      },
      cut: () => {
        finished = true;
        const last = out ?? errorStream;
        last.write(Buffer.alloc(0), () => conn.flushed(() => conn.destroy()));
      },
    };
    session = new ExecSession(ctx, container, execReq, transport);
    const stdin = session.start();
    const stdinStream = streams.get('stdin');
    if (stdinStream) {
      if (stdin) stdinStream.pipe(stdin);
      else stdinStream.resume();
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Dispatch

function findPod(ctx: RuntimeContext, namespace: string, name: string): KubeObject | undefined {
  return ctx.store.get(ctx.store.resourceByKind('Pod', 'v1'), namespace, name);
}

/**
 * Handles an HTTP upgrade on /api/v1/namespaces/N/pods/P/{exec,attach,portforward}. The API server has already
 * checked that the pod exists and is Running; this validates the request (400 Status on errors, before any
 * upgrade), negotiates the protocol and runs the command or the forward.
 */
export const handlePodUpgrade: UpgradeHandler = (req, socket, head, target, ctx) => {
  socket.on('error', () => socket.destroy());
  try {
    const pod = findPod(ctx, target.namespace, target.pod);
    if (!pod) {
      writeHttpStatus(socket, {
        ...httpStatus(404, `pods "${target.pod}" not found`, 'NotFound'),
        details: { name: target.pod, kind: 'pods' },
      });
      return;
    }
    const upgrade = (req.headers.upgrade ?? '').toLowerCase();
    const spdy = isSpdyUpgrade(req);
    if (upgrade !== 'websocket' && !spdy) {
      writeHttpStatus(socket, httpStatus(400, 'Upgrade request required'));
      return;
    }
    if (target.subresource === 'attach') {
      writeHttpStatus(socket, httpStatus(400, 'attach is not supported in the sandbox'));
      return;
    }
    if (target.subresource === 'portforward') {
      handlePortForward(req, socket, head, target, ctx, pod);
      return;
    }
    const execReq = parseExecQuery(target.query);
    const container = resolveContainer(pod, execReq.container, ctx);
    if (spdy) execOverSpdy(req, socket, head, ctx, container, execReq);
    else execOverWebSocket(req, socket, head, ctx, container, execReq);
  } catch (err) {
    const status = err instanceof RuntimeError ? err.status : httpStatus(500, String((err as Error)?.message ?? err));
    writeHttpStatus(socket, status.code ? status : { ...status, code: 500 });
  }
};
