/**
 * A small streaming tar writer whose output size is known before the first byte is written: the media upload runs
 * `head -c SIZE | tar -x` in the pod (exec protocol v4 cannot half-close stdin), so the size must be exact.
 * ustar headers, with a pax `path` record for names that do not fit.
 */
import { Readable } from 'node:stream';

const BLOCK = 512;

export interface TarFileEntry {
  name: string;
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  mode?: number;
  uid?: number;
  gid?: number;
  type?: 'file' | 'directory';
  open?: () => Readable;
}

function writeString(buf: Buffer, offset: number, length: number, value: string): void {
  buf.write(value, offset, Math.min(length, Buffer.byteLength(value)), 'utf8');
}

function writeOctal(buf: Buffer, offset: number, length: number, value: number): void {
  buf.write(
    `${Math.floor(value)
      .toString(8)
      .padStart(length - 1, '0')}\0`,
    offset,
    length,
    'latin1',
  );
}

/** Splits a long name into ustar prefix + name, or undefined when it cannot be split. */
function splitUstar(name: string): [string, string] | undefined {
  if (Buffer.byteLength(name) <= 100) return ['', name];
  for (let i = name.indexOf('/'); i >= 0; i = name.indexOf('/', i + 1)) {
    const prefix = name.slice(0, i);
    const rest = name.slice(i + 1);
    if (Buffer.byteLength(prefix) <= 155 && Buffer.byteLength(rest) <= 100 && rest.length > 0) return [prefix, rest];
  }
  return undefined;
}

function header(entry: {
  name: string;
  size: number;
  mtime: number;
  mode: number;
  uid: number;
  gid: number;
  typeflag: string;
  prefix?: string;
}): Buffer {
  const buf = Buffer.alloc(BLOCK);
  writeString(buf, 0, 100, entry.name);
  writeOctal(buf, 100, 8, entry.mode);
  writeOctal(buf, 108, 8, entry.uid);
  writeOctal(buf, 116, 8, entry.gid);
  writeOctal(buf, 124, 12, entry.size);
  writeOctal(buf, 136, 12, entry.mtime);
  buf.fill(0x20, 148, 156);
  buf.write(entry.typeflag, 156, 1, 'latin1');
  buf.write('ustar\0', 257, 6, 'latin1');
  buf.write('00', 263, 2, 'latin1');
  if (entry.prefix) writeString(buf, 345, 155, entry.prefix);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += buf[i] as number;
  buf.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return buf;
}

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body) + 1;
  while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body);
  return `${len}${body}`;
}

/** The header bytes (pax + ustar) for one entry. */
export function entryHeaders(entry: TarFileEntry): Buffer[] {
  const isDir = entry.type === 'directory';
  const common = {
    size: isDir ? 0 : entry.size,
    mtime: entry.mtime,
    mode: entry.mode ?? (isDir ? 0o755 : 0o644),
    uid: entry.uid ?? 0,
    gid: entry.gid ?? 0,
    typeflag: isDir ? '5' : '0',
  };
  const name = isDir && !entry.name.endsWith('/') ? `${entry.name}/` : entry.name;
  const split = splitUstar(name);
  if (split) return [header({ ...common, name: split[1], prefix: split[0] })];
  const pax = Buffer.from(paxRecord('path', name), 'utf8');
  const paxHeader = header({ ...common, name: 'PaxHeader', size: pax.length, typeflag: 'x', mode: 0o644 });
  const paxBody = Buffer.concat([pax, Buffer.alloc(padding(pax.length))]);
  return [paxHeader, paxBody, header({ ...common, name: name.slice(0, 100) })];
}

/** Exact size in bytes of the tar {@link packTar} writes for `entries` (with the two end-of-archive blocks). */
export function tarSize(entries: readonly TarFileEntry[]): number {
  let total = 2 * BLOCK;
  for (const entry of entries) {
    total += entryHeaders(entry).reduce((n, b) => n + b.length, 0);
    if (entry.type !== 'directory') total += entry.size + padding(entry.size);
  }
  return total;
}

/**
 * Streams a tar of `entries`. Each file's data comes from `open()` and must be exactly `size` bytes; a file that
 * changed size since it was listed fails the stream (rather than writing a tar whose size was announced wrongly).
 */
export function packTar(
  entries: Iterable<TarFileEntry> | AsyncIterable<TarFileEntry>,
  onFile?: (entry: TarFileEntry) => void,
): Readable {
  async function* generate(): AsyncGenerator<Buffer> {
    for await (const entry of entries) {
      for (const b of entryHeaders(entry)) yield b;
      if (entry.type === 'directory') continue;
      let written = 0;
      if (entry.size > 0) {
        if (!entry.open) throw new Error(`no data for ${entry.name}`);
        for await (const chunk of entry.open()) {
          const buf = chunk as Buffer;
          written += buf.length;
          if (written > entry.size) throw new Error(`${entry.name} grew while it was being sent`);
          yield buf;
        }
      }
      if (written !== entry.size)
        throw new Error(`${entry.name} changed size while it was being sent (${written} of ${entry.size} bytes)`);
      const pad = padding(entry.size);
      if (pad) yield Buffer.alloc(pad);
      onFile?.(entry);
    }
    yield Buffer.alloc(2 * BLOCK);
  }
  return Readable.from(generate(), { objectMode: false, highWaterMark: 1024 * 1024 });
}
