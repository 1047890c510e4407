import WebSocket from 'ws';
import type { ClusterAccess } from './access.js';
import type { ExecIO, ExecResult, ExecTarget } from './client.js';
import { ExecStreamError, KubeApiError, KubeConnectionError } from './client.js';
import { requestTarget, webSocketOptions } from './http-client.js';
import type { Status } from './types.js';

/** Channel subprotocols offered, newest first. Only v5 can half-close stdin. */
export const EXEC_PROTOCOLS = ['v5.channel.k8s.io', 'v4.channel.k8s.io'];

const STDIN = 0;
const STDOUT = 1;
const STDERR = 2;
const STATUS = 3;
const CLOSE = 255;
const STDERR_TAIL_BYTES = 64 * 1024;
/** Pause reading stdin while this much is queued on the socket. */
const SEND_HIGH_WATER = 4 * 1024 * 1024;

/** Exit code from a v1 Status sent on the status channel; undefined when the status is not an exit code. */
export function exitCodeFromStatus(status: Status): number | undefined {
  if (status.status === 'Success') return 0;
  if (status.reason === 'NonZeroExitCode') {
    const cause = status.details?.causes?.find((c) => c.reason === 'ExitCode');
    const code = Number(cause?.message);
    return Number.isInteger(code) ? code : 1;
  }
  return undefined;
}

/**
 * Runs a command in a pod over the WebSocket exec protocol with backpressure in both directions (unlike the client
 * library's Exec, whose handler ignores it). Memory stays bounded by socket buffers however large the stream.
 */
export async function execStream(
  kc: ClusterAccess,
  target: ExecTarget,
  argv: string[],
  io: ExecIO = {},
): Promise<ExecResult> {
  const query = new URLSearchParams();
  for (const arg of argv) query.append('command', arg);
  if (target.container) query.set('container', target.container);
  query.set('stdin', io.stdin ? 'true' : 'false');
  query.set('stdout', 'true');
  query.set('stderr', 'true');
  query.set('tty', 'false');
  const path = `/api/v1/namespaces/${encodeURIComponent(target.namespace)}/pods/${encodeURIComponent(target.pod)}/exec`;
  const { url, options } = await requestTarget(kc, path);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = query.toString();

  return new Promise<ExecResult>((resolve, reject) => {
    let stderrTail = Buffer.alloc(0);
    let status: Status | undefined;
    let waitingForDrain = false;
    let settled = false;
    const ws = new WebSocket(url, EXEC_PROTOCOLS, webSocketOptions(options));
    const finish = (error?: Error) => {
      if (settled) return;
      settled = true;
      io.signal?.removeEventListener('abort', onAbort);
      io.stdin?.unpipe?.();
      const tail = stderrTail.toString('utf8');
      if (error) return reject(error);
      if (!status) {
        return reject(
          new ExecStreamError(`exec ${argv[0]} in ${target.pod}: connection closed without an exit status`, tail),
        );
      }
      const exitCode = exitCodeFromStatus(status);
      if (exitCode === undefined) {
        return reject(
          new ExecStreamError(`exec ${argv[0]} in ${target.pod}: ${status.message ?? status.reason}`, tail),
        );
      }
      resolve({ exitCode, stderrTail: tail, protocol: ws.protocol });
    };
    const onAbort = () => {
      ws.terminate();
      finish(new ExecStreamError(`exec ${argv[0]} in ${target.pod}: aborted`, stderrTail.toString('utf8')));
    };
    io.signal?.addEventListener('abort', onAbort, { once: true });

    ws.on('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        let body: Status | undefined;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Status;
        } catch {
          body = undefined;
        }
        finish(new KubeApiError(res.statusCode ?? 0, body?.kind === 'Status' ? body : undefined, 'GET', path));
      });
    });
    ws.on('error', (error) => {
      finish(new KubeConnectionError(`exec in ${target.pod}: ${error.message}`, url.origin, { cause: error }));
    });
    ws.on('message', (data: Buffer) => {
      if (data.length === 0) return;
      const channel = data[0];
      const payload = data.subarray(1);
      if (channel === STDOUT && payload.length > 0) {
        // ws may still deliver frames it had already read after pause(): wait for one drain, not one per frame.
        if (io.stdout && !io.stdout.write(payload) && !waitingForDrain) {
          waitingForDrain = true;
          ws.pause();
          io.stdout.once('drain', () => {
            waitingForDrain = false;
            ws.resume();
          });
        }
      } else if (channel === STDERR && payload.length > 0) {
        io.stderr?.write(payload);
        stderrTail = Buffer.concat([stderrTail, payload]);
        if (stderrTail.length > STDERR_TAIL_BYTES) stderrTail = stderrTail.subarray(-STDERR_TAIL_BYTES);
      } else if (channel === STATUS) {
        try {
          status = JSON.parse(payload.toString('utf8')) as Status;
        } catch {
          status = { kind: 'Status', status: 'Failure', message: payload.toString('utf8') };
        }
      }
    });
    ws.on('close', () => {
      // A stdout consumer that is still draining must see every byte before we report success.
      if (io.stdout?.writableNeedDrain) io.stdout.once('drain', () => finish());
      else finish();
    });
    ws.on('open', () => {
      if (!io.stdin) return;
      pumpStdin(ws, io.stdin).catch((error: Error) => {
        ws.terminate();
        finish(new ExecStreamError(`exec ${argv[0]} in ${target.pod}: reading stdin failed: ${error.message}`, ''));
      });
    });
  });
}

async function pumpStdin(ws: WebSocket, stdin: NodeJS.ReadableStream): Promise<void> {
  for await (const chunk of stdin) {
    if (ws.readyState !== WebSocket.OPEN) return;
    const data = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    const frame = Buffer.allocUnsafe(data.length + 1);
    frame[0] = STDIN;
    data.copy(frame, 1);
    if (ws.bufferedAmount > SEND_HIGH_WATER) {
      await new Promise<void>((resolve, reject) => ws.send(frame, (err) => (err ? reject(err) : resolve())));
    } else {
      ws.send(frame);
    }
  }
  // Only v5 can half-close stdin. On v4 the caller must make the remote side stop reading on its own (e.g. `head -c N`).
  if (ws.readyState === WebSocket.OPEN && ws.protocol === 'v5.channel.k8s.io') ws.send(Buffer.from([CLOSE, STDIN]));
}
