/**
 * Port-forwarding over the WebSocket protocol `v4.channel.k8s.io` (one WebSocket per forwarded TCP connection, as
 * kubectl's WebSocket tunnel fallback and client-node do): channel 0 carries the data, channel 1 the errors, and
 * the first frame on each channel from the server starts with the port number (2 bytes, little-endian).
 * Backpressure in both directions; an error frame from the kubelet ends the connection with that message.
 */
import net from 'node:net';
import WebSocket from 'ws';
import type { ClusterAccess } from './access.js';
import type { PortForwardHandle } from './client.js';
import { requestTarget, webSocketOptions } from './http-client.js';

export const PORT_FORWARD_PROTOCOL = 'v4.channel.k8s.io';
const DATA = 0;
const ERROR = 1;
/** Pause reading the local socket while this much is queued towards the API server. */
const SEND_HIGH_WATER = 1024 * 1024;

/** Forwards one accepted local connection to `port` of the pod; `onError` hears the kubelet's error, if any. */
export async function forwardConnection(
  access: ClusterAccess,
  target: { namespace: string; pod: string; port: number },
  socket: net.Socket,
  onError: (message: string) => void,
): Promise<void> {
  const path = `/api/v1/namespaces/${encodeURIComponent(target.namespace)}/pods/${encodeURIComponent(target.pod)}/portforward`;
  const { url, options } = await requestTarget(access, path, { ports: String(target.port) });
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(url, [PORT_FORWARD_PROTOCOL], webSocketOptions(options));
  const seenPort = new Set<number>();
  let errorText = '';
  let waitingForDrain = false;
  ws.on('message', (data: Buffer) => {
    if (data.length === 0) return;
    const channel = data[0] as number;
    let payload = data.subarray(1);
    if (!seenPort.has(channel)) {
      // The port-number prefix of the channel's first frame.
      seenPort.add(channel);
      payload = payload.subarray(2);
    }
    if (payload.length === 0) return;
    if (channel === DATA) {
      // Frames already read still arrive after pause(): one drain listener, not one per frame.
      if (!socket.write(payload) && !waitingForDrain) {
        waitingForDrain = true;
        ws.pause();
        socket.once('drain', () => {
          waitingForDrain = false;
          ws.resume();
        });
      }
    } else if (channel === ERROR) {
      errorText += payload.toString('utf8');
    }
  });
  let inflight = 0;
  let paused = false;
  socket.on('data', (chunk: Buffer) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    const frame = Buffer.concat([Buffer.from([DATA]), chunk]);
    inflight += frame.length;
    ws.send(frame, () => {
      inflight -= frame.length;
      if (paused && inflight <= SEND_HIGH_WATER / 4) {
        paused = false;
        socket.resume();
      }
    });
    if (inflight > SEND_HIGH_WATER && !paused) {
      paused = true;
      socket.pause();
    }
  });
  // Hold the local side until the tunnel is open.
  socket.pause();
  ws.on('open', () => socket.resume());
  socket.on('end', () => ws.close());
  socket.on('close', () => ws.terminate());
  socket.on('error', () => ws.terminate());
  ws.on('close', () => {
    if (errorText) onError(errorText.trim());
    socket.destroy();
  });
  ws.on('error', (error) => {
    onError(error.message);
    socket.destroy();
  });
}

/** A local listener on 127.0.0.1 (random port) whose every connection is forwarded to the pod's port. */
export async function listenForward(
  access: ClusterAccess,
  target: { namespace: string; pod: string; port: number },
  onError: (message: string) => void = () => {},
): Promise<PortForwardHandle> {
  const sockets = new Set<net.Socket>();
  let lastError: string | undefined;
  const report = (message: string) => {
    lastError = message;
    onError(message);
  };
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    forwardConnection(access, target, socket, report).catch((error: Error) => {
      report(error.message);
      socket.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address() as net.AddressInfo;
  return {
    localPort: address.port,
    lastError: () => lastError,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
