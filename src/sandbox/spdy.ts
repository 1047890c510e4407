/**
 * Server side of SPDY/3.1 as Kubernetes uses it for `exec` and `portforward` (kubectl < 1.30, the fallback of newer
 * clients, and the tunnel inside kubectl ≥ 1.31's port-forward WebSocket). Peers are moby/spdystream clients:
 * header blocks are zlib-compressed with the SPDY/3 dictionary (one stream per direction for the whole
 * connection); flow control (WINDOW_UPDATE, SETTINGS) is not used by spdystream and is ignored here too, so
 * backpressure is TCP's: a stream's readable side pauses reading the socket, its writable side waits for the
 * socket to drain. Only client-initiated streams are supported (servers never open streams in these protocols).
 */
import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import { Duplex } from 'node:stream';
import zlib from 'node:zlib';

/** The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1), 1423 bytes. */
export const SPDY_DICTIONARY = Buffer.from(
  'AAAAB29wdGlvbnMAAAAEaGVhZAAAAARwb3N0AAAAA3B1dAAAAAZkZWxldGUAAAAFdHJhY2UAAAAGYWNjZXB0AAAADmFjY2VwdC1jaGFyc2V0AAAAD2' +
    'FjY2VwdC1lbmNvZGluZwAAAA9hY2NlcHQtbGFuZ3VhZ2UAAAANYWNjZXB0LXJhbmdlcwAAAANhZ2UAAAAFYWxsb3cAAAANYXV0aG9yaXphdGlvbgAA' +
    'AA1jYWNoZS1jb250cm9sAAAACmNvbm5lY3Rpb24AAAAMY29udGVudC1iYXNlAAAAEGNvbnRlbnQtZW5jb2RpbmcAAAAQY29udGVudC1sYW5ndWFnZQ' +
    'AAAA5jb250ZW50LWxlbmd0aAAAABBjb250ZW50LWxvY2F0aW9uAAAAC2NvbnRlbnQtbWQ1AAAADWNvbnRlbnQtcmFuZ2UAAAAMY29udGVudC10eXBl' +
    'AAAABGRhdGUAAAAEZXRhZwAAAAZleHBlY3QAAAAHZXhwaXJlcwAAAARmcm9tAAAABGhvc3QAAAAIaWYtbWF0Y2gAAAARaWYtbW9kaWZpZWQtc2luY2' +
    'UAAAANaWYtbm9uZS1tYXRjaAAAAAhpZi1yYW5nZQAAABNpZi11bm1vZGlmaWVkLXNpbmNlAAAADWxhc3QtbW9kaWZpZWQAAAAIbG9jYXRpb24AAAAM' +
    'bWF4LWZvcndhcmRzAAAABnByYWdtYQAAABJwcm94eS1hdXRoZW50aWNhdGUAAAATcHJveHktYXV0aG9yaXphdGlvbgAAAAVyYW5nZQAAAAdyZWZlcm' +
    'VyAAAAC3JldHJ5LWFmdGVyAAAABnNlcnZlcgAAAAJ0ZQAAAAd0cmFpbGVyAAAAEXRyYW5zZmVyLWVuY29kaW5nAAAAB3VwZ3JhZGUAAAAKdXNlci1h' +
    'Z2VudAAAAAR2YXJ5AAAAA3ZpYQAAAAd3YXJuaW5nAAAAEHd3dy1hdXRoZW50aWNhdGUAAAAGbWV0aG9kAAAAA2dldAAAAAZzdGF0dXMAAAAGMjAwIE' +
    '9LAAAAB3ZlcnNpb24AAAAISFRUUC8xLjEAAAADdXJsAAAABnB1YmxpYwAAAApzZXQtY29va2llAAAACmtlZXAtYWxpdmUAAAAGb3JpZ2luMTAwMTAx' +
    'MjAxMjAyMjA1MjA2MzAwMzAyMzAzMzA0MzA1MzA2MzA3NDAyNDA1NDA2NDA3NDA4NDA5NDEwNDExNDEyNDEzNDE0NDE1NDE2NDE3NTAyNTA0NTA1Mj' +
    'AzIE5vbi1BdXRob3JpdGF0aXZlIEluZm9ybWF0aW9uMjA0IE5vIENvbnRlbnQzMDEgTW92ZWQgUGVybWFuZW50bHk0MDAgQmFkIFJlcXVlc3Q0MDEg' +
    'VW5hdXRob3JpemVkNDAzIEZvcmJpZGRlbjQwNCBOb3QgRm91bmQ1MDAgSW50ZXJuYWwgU2VydmVyIEVycm9yNTAxIE5vdCBJbXBsZW1lbnRlZDUwMy' +
    'BTZXJ2aWNlIFVuYXZhaWxhYmxlSmFuIEZlYiBNYXIgQXByIE1heSBKdW4gSnVsIEF1ZyBTZXB0IE9jdCBOb3YgRGVjIDAwOjAwOjAwIE1vbiwgVHVl' +
    'LCBXZWQsIFRodSwgRnJpLCBTYXQsIFN1biwgR01UY2h1bmtlZCx0ZXh0L2h0bWwsaW1hZ2UvcG5nLGltYWdlL2pwZyxpbWFnZS9naWYsYXBwbGljYX' +
    'Rpb24veG1sLGFwcGxpY2F0aW9uL3hodG1sK3htbCx0ZXh0L3BsYWluLHRleHQvamF2YXNjcmlwdCxwdWJsaWNwcml2YXRlbWF4LWFnZT1nemlwLGRl' +
    'ZmxhdGUsc2RjaGNoYXJzZXQ9dXRmLThjaGFyc2V0PWlzby04ODU5LTEsdXRmLSwqLGVucT0wLg==',
  'base64',
);

const VERSION = 3;
const SYN_STREAM = 1;
const SYN_REPLY = 2;
const RST_STREAM = 3;
const PING = 6;
const GOAWAY = 7;
const HEADERS = 8;
const FLAG_FIN = 0x01;
const MAX_DATA = 0xffffff;
/** RST_STREAM status codes used here. */
export const RST_CANCEL = 5;
export const RST_REFUSED_STREAM = 3;
const EMPTY = Buffer.alloc(0);

/** Header name (lower case) → values. */
export type SpdyHeaders = Record<string, string[]>;

/** Encodes an (uncompressed) SPDY/3 name/value header block. */
export function encodeHeaderBlock(headers: SpdyHeaders): Buffer {
  const parts: Buffer[] = [];
  const count = Buffer.alloc(4);
  count.writeUInt32BE(Object.keys(headers).length);
  parts.push(count);
  for (const [name, values] of Object.entries(headers)) {
    const n = Buffer.from(name.toLowerCase());
    const v = Buffer.from(values.join('\0'));
    const ln = Buffer.alloc(4);
    ln.writeUInt32BE(n.length);
    const lv = Buffer.alloc(4);
    lv.writeUInt32BE(v.length);
    parts.push(ln, n, lv, v);
  }
  return Buffer.concat(parts);
}

/** Decodes an (uncompressed) SPDY/3 name/value header block. */
export function decodeHeaderBlock(block: Buffer): SpdyHeaders {
  const out: SpdyHeaders = {};
  let off = 0;
  const u32 = (): number => {
    if (off + 4 > block.length) throw new Error('spdy: truncated header block');
    const v = block.readUInt32BE(off);
    off += 4;
    return v;
  };
  const bytes = (n: number): string => {
    if (off + n > block.length) throw new Error('spdy: truncated header block');
    const s = block.toString('utf8', off, off + n);
    off += n;
    return s;
  };
  const count = u32();
  for (let i = 0; i < count; i++) {
    const name = bytes(u32()).toLowerCase();
    const value = bytes(u32());
    out[name] = [...(out[name] ?? []), ...value.split('\0')];
  }
  return out;
}

/** One direction of the connection's header compression (a single zlib stream, sync-flushed per block). */
class HeaderCodec {
  private readonly z: zlib.Inflate | zlib.Deflate;
  private failed: Error | undefined;
  constructor(mode: 'inflate' | 'deflate') {
    this.z =
      mode === 'inflate'
        ? zlib.createInflate({ dictionary: SPDY_DICTIONARY })
        : zlib.createDeflate({ dictionary: SPDY_DICTIONARY });
    this.z.on('error', (err) => {
      this.failed = err;
    });
  }
  process(input: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.failed) return reject(this.failed);
      this.z.write(input);
      this.z.flush(zlib.constants.Z_SYNC_FLUSH, () => {
        if (this.failed) return reject(this.failed);
        const chunks: Buffer[] = [];
        for (let c = this.z.read() as Buffer | null; c !== null; c = this.z.read() as Buffer | null) chunks.push(c);
        resolve(Buffer.concat(chunks));
      });
    });
  }
  close(): void {
    this.z.destroy();
  }
}

function controlFrame(type: number, flags: number, payload: Buffer): Buffer {
  const f = Buffer.allocUnsafe(8 + payload.length);
  f.writeUInt16BE(0x8000 | VERSION, 0);
  f.writeUInt16BE(type, 2);
  f.writeUInt32BE(((flags & 0xff) << 24) | payload.length, 4);
  payload.copy(f, 8);
  return f;
}

/**
 * A client-initiated SPDY stream. Readable side: the client's DATA frames (ends at the client's FIN). Writable
 * side: DATA frames to the client; end() sends FIN.
 */
export class SpdyStream extends Duplex {
  /** Set once the client half-closed (FIN) or the stream was reset. */
  remoteClosed = false;
  constructor(
    private readonly conn: SpdyServerConnection,
    readonly id: number,
    readonly headers: SpdyHeaders,
  ) {
    super({ allowHalfOpen: true });
  }
  /** First value of a header (names are lower case). */
  header(name: string): string | undefined {
    return this.headers[name.toLowerCase()]?.[0];
  }
  override _read(): void {
    this.conn.resumeReading();
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.conn.writeData(this.id, chunk, false, cb);
  }
  override _final(cb: (err?: Error | null) => void): void {
    this.conn.writeData(this.id, EMPTY, true, cb);
  }
  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.conn.forget(this.id);
    cb(err);
  }
}

/**
 * A SPDY/3.1 server session on an upgraded socket. Emits `stream` (SpdyStream) for each SYN_STREAM after its
 * SYN_REPLY went out, and `close` once the socket is gone.
 */
export class SpdyServerConnection extends EventEmitter {
  private readonly inflater = new HeaderCodec('inflate');
  private readonly deflater = new HeaderCodec('deflate');
  private readonly streams = new Map<number, SpdyStream>();
  private drainWaiters: ((err?: Error | null) => void)[] = [];
  private readPaused = false;
  private resumeRead: (() => void) | undefined;
  private lastStreamId = 0;
  private closed = false;
  private endTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly socket: Duplex,
    head: Buffer,
  ) {
    super();
    socket.on('error', () => this.onGone());
    socket.on('close', () => this.onGone());
    socket.on('drain', () => this.flushDrainWaiters());
    void this.readLoop(head);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Writes one DATA frame (split when larger than the frame limit); `cb` once the socket can take more. */
  writeData(streamId: number, data: Buffer, fin: boolean, cb: (err?: Error | null) => void): void {
    if (this.closed) {
      cb(new Error('spdy connection closed'));
      return;
    }
    let off = 0;
    let ok = true;
    do {
      const piece = data.subarray(off, off + MAX_DATA);
      off += piece.length;
      const last = off >= data.length;
      const h = Buffer.allocUnsafe(8);
      h.writeUInt32BE(streamId & 0x7fffffff, 0);
      h.writeUInt32BE((((fin && last ? FLAG_FIN : 0) & 0xff) << 24) | piece.length, 4);
      ok = this.socket.write(piece.length > 0 ? Buffer.concat([h, piece]) : h);
    } while (off < data.length);
    if (ok) cb();
    else this.drainWaiters.push(cb);
  }

  /** Resets a stream (RST_STREAM). */
  reset(streamId: number, status = RST_CANCEL): void {
    const p = Buffer.alloc(8);
    p.writeUInt32BE(streamId & 0x7fffffff, 0);
    p.writeUInt32BE(status, 4);
    this.writeRaw(controlFrame(RST_STREAM, 0, p));
    this.streams.get(streamId)?.destroy();
  }

  /** Calls `cb` once everything written so far has been handed to the kernel. */
  flushed(cb: () => void): void {
    if (this.closed || this.socket.destroyed) cb();
    else this.socket.write(EMPTY, () => cb());
  }

  /**
   * Graceful close like spdystream's Connection.Close: GOAWAY, then end the socket once written; the client
   * closes its side when it has read everything. Destroys the socket if the client lingers.
   */
  end(lingerMs = 10_000): void {
    if (this.closed) return;
    const p = Buffer.alloc(8);
    p.writeUInt32BE(this.lastStreamId, 0);
    p.writeUInt32BE(0, 4);
    this.writeRaw(controlFrame(GOAWAY, 0, p));
    this.socket.end();
    this.endTimer = setTimeout(() => this.destroy(), lingerMs);
    this.endTimer.unref();
  }

  /** Abrupt close: the socket is destroyed, pending data is lost. */
  destroy(): void {
    this.socket.destroy();
    this.onGone();
  }

  /** @internal */
  resumeReading(): void {
    if (!this.readPaused) return;
    this.readPaused = false;
    const r = this.resumeRead;
    this.resumeRead = undefined;
    r?.();
  }

  /** @internal */
  forget(id: number): void {
    this.streams.delete(id);
  }

  private writeRaw(frame: Buffer): void {
    if (!this.closed && !this.socket.destroyed) this.socket.write(frame);
  }

  private flushDrainWaiters(err?: Error): void {
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const cb of w) cb(err);
  }

  private onGone(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.endTimer) clearTimeout(this.endTimer);
    this.flushDrainWaiters(new Error('spdy connection closed'));
    for (const s of [...this.streams.values()]) {
      if (!s.remoteClosed) {
        s.remoteClosed = true;
        s.push(null);
      }
      s.destroy();
    }
    this.streams.clear();
    this.inflater.close();
    this.deflater.close();
    this.resumeReading();
    this.emit('close');
  }

  private async readLoop(head: Buffer): Promise<void> {
    let buf = head;
    const iter = this.socket[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    try {
      for (;;) {
        while (buf.length >= 8 && !this.closed) {
          const len = buf.readUInt32BE(4) & 0xffffff;
          if (buf.length < 8 + len) break;
          const frame = buf.subarray(0, 8 + len);
          buf = buf.subarray(8 + len);
          await this.handleFrame(frame);
          while (this.readPaused && !this.closed) {
            await new Promise<void>((resolve) => {
              this.resumeRead = resolve;
            });
          }
        }
        if (this.closed) break;
        const r = await iter.next();
        if (r.done) break;
        buf = buf.length > 0 ? Buffer.concat([buf, r.value]) : r.value;
      }
    } catch {
      // socket error or protocol error: the connection is finished either way
    }
    if (!this.closed) {
      // The client closed its side: streams it did not finish end here, as with spdystream.
      this.socket.destroy();
      this.onGone();
    }
  }

  private async handleFrame(frame: Buffer): Promise<void> {
    const w0 = frame.readUInt32BE(0);
    const flags = frame[4] as number;
    if ((w0 & 0x80000000) === 0) {
      const stream = this.streams.get(w0 & 0x7fffffff);
      if (!stream || stream.remoteClosed) return;
      const data = frame.subarray(8);
      if (data.length > 0 && !stream.push(Buffer.from(data))) this.readPaused = true;
      if (flags & FLAG_FIN) {
        stream.remoteClosed = true;
        stream.push(null);
      }
      return;
    }
    const type = w0 & 0xffff;
    switch (type) {
      case SYN_STREAM: {
        const id = frame.readUInt32BE(8) & 0x7fffffff;
        const headers = decodeHeaderBlock(await this.inflater.process(frame.subarray(18)));
        this.lastStreamId = Math.max(this.lastStreamId, id);
        const stream = new SpdyStream(this, id, headers);
        this.streams.set(id, stream);
        const reply = Buffer.alloc(4);
        reply.writeUInt32BE(id, 0);
        const block = await this.deflater.process(encodeHeaderBlock({}));
        this.writeRaw(controlFrame(SYN_REPLY, 0, Buffer.concat([reply, block])));
        if (flags & FLAG_FIN) {
          stream.remoteClosed = true;
          stream.push(null);
        }
        this.emit('stream', stream);
        return;
      }
      case HEADERS: {
        // Keep the shared decompression state in step; the headers themselves are not used.
        await this.inflater.process(frame.subarray(12));
        if (flags & FLAG_FIN) {
          const stream = this.streams.get(frame.readUInt32BE(8) & 0x7fffffff);
          if (stream && !stream.remoteClosed) {
            stream.remoteClosed = true;
            stream.push(null);
          }
        }
        return;
      }
      case RST_STREAM: {
        const stream = this.streams.get(frame.readUInt32BE(8) & 0x7fffffff);
        if (stream) {
          stream.remoteClosed = true;
          stream.destroy();
        }
        return;
      }
      case PING: {
        // Client pings have odd ids; answering means echoing the frame.
        if (frame.length >= 12 && (frame.readUInt32BE(8) & 1) === 1) this.writeRaw(Buffer.from(frame));
        return;
      }
      case GOAWAY:
        this.emit('goaway');
        return;
      default:
        // SYN_REPLY (we open no streams), SETTINGS, WINDOW_UPDATE (no flow control), unknown: ignored.
        return;
    }
  }
}

/** The X-Stream-Protocol-Version values a client offered, in its order. */
export function offeredStreamProtocols(req: IncomingMessage): string[] {
  const raw = req.headersDistinct['x-stream-protocol-version'] ?? [];
  return raw.flatMap((v) => v.split(',').map((s) => s.trim())).filter((s) => s.length > 0);
}

/** True for an HTTP Upgrade to SPDY/3.1. */
export function isSpdyUpgrade(req: IncomingMessage): boolean {
  return (req.headers.upgrade ?? '').toLowerCase().includes('spdy/3.1');
}

/**
 * Picks the first protocol in the client's order that the server supports (httpstream.Handshake). On failure
 * answers 400/403 like the kubelet and returns undefined.
 */
export function negotiateStreamProtocol(req: IncomingMessage, socket: Duplex, supported: string[]): string | undefined {
  const offered = offeredStreamProtocols(req);
  if (offered.length === 0) {
    writeHttpText(socket, 400, 'unable to upgrade: X-Stream-Protocol-Version is required');
    return undefined;
  }
  const chosen = offered.find((p) => supported.includes(p));
  if (!chosen) {
    writeHttpText(
      socket,
      403,
      `unable to upgrade: unable to negotiate protocol: client supports [${offered.join(' ')}], server accepts [${supported.join(' ')}]`,
      supported.map((p) => ['X-Accepted-Stream-Protocol-Versions', p] as [string, string]),
    );
    return undefined;
  }
  return chosen;
}

/** Writes the 101 response and starts a SPDY session on the socket. */
export function acceptSpdy(socket: Duplex, head: Buffer, protocol: string): SpdyServerConnection {
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\n' +
      'Connection: Upgrade\r\n' +
      'Upgrade: SPDY/3.1\r\n' +
      `X-Stream-Protocol-Version: ${protocol}\r\n` +
      `Date: ${new Date().toUTCString()}\r\n\r\n`,
  );
  return new SpdyServerConnection(socket, head);
}

/** A plain-text HTTP error like Go's http.Error, then close. */
export function writeHttpText(socket: Duplex, code: number, text: string, extraHeaders: [string, string][] = []): void {
  const body = `${text}\n`;
  const reason = code === 400 ? 'Bad Request' : code === 403 ? 'Forbidden' : code === 404 ? 'Not Found' : 'Error';
  const head = [
    `HTTP/1.1 ${code} ${reason}`,
    'Content-Type: text/plain; charset=utf-8',
    'X-Content-Type-Options: nosniff',
    ...extraHeaders.map(([k, v]) => `${k}: ${v}`),
    `Content-Length: ${Buffer.byteLength(body)}`,
    `Date: ${new Date().toUTCString()}`,
    'Connection: close',
  ];
  if (!socket.destroyed) socket.end(`${head.join('\r\n')}\r\n\r\n${body}`);
}
