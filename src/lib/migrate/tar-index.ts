/**
 * An index of a tar file on disk: member names, types, sizes and data offsets, read from the 512-byte headers
 * alone (data is skipped by seeking). This gives random access to the members of an export bundle, so the dump can
 * be read in place and media files streamed one by one, without extracting anything. Handles ustar, GNU long names
 * (`L`/`K`) and pax headers (`path`, `linkpath`, `size`).
 */
import { open } from 'node:fs/promises';

export interface TarMember {
  name: string;
  type: 'file' | 'directory' | 'symlink' | 'hardlink' | 'other';
  size: number;
  /** Absolute offset of the member's data in the tar file. */
  offset: number;
  mode: number;
  mtime: number;
  linkName?: string;
}

/** The tar is malformed or ends early. */
export class TarFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TarFormatError';
  }
}

const BLOCK = 512;

function cString(buf: Buffer, start: number, length: number): string {
  const slice = buf.subarray(start, start + length);
  const nul = slice.indexOf(0);
  return slice.subarray(0, nul < 0 ? slice.length : nul).toString('utf8');
}

function octal(buf: Buffer, start: number, length: number): number {
  const field = buf.subarray(start, start + length);
  if ((field[0] as number) & 0x80) {
    // GNU base-256 for large values.
    let value = (field[0] as number) & 0x7f;
    for (let i = 1; i < field.length; i++) value = value * 256 + (field[i] as number);
    return value;
  }
  const text = cString(buf, start, length).trim();
  return text ? Number.parseInt(text, 8) : 0;
}

function checksumOk(header: Buffer): boolean {
  const stored = octal(header, 148, 8);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : (header[i] as number);
  return sum === stored;
}

function parsePax(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  let pos = 0;
  const buf = Buffer.from(text, 'utf8');
  while (pos < buf.length) {
    const space = buf.indexOf(0x20, pos);
    if (space < 0) break;
    const len = Number.parseInt(buf.subarray(pos, space).toString('latin1'), 10);
    if (!Number.isFinite(len) || len <= 0) break;
    const record = buf.subarray(space + 1, pos + len - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq > 0) out[record.slice(0, eq)] = record.slice(eq + 1);
    pos += len;
  }
  return out;
}

const TYPES: Record<string, TarMember['type']> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '5': 'directory',
  '2': 'symlink',
  '1': 'hardlink',
};

/** Strips a leading "./" and trailing "/" so names compare like paths. */
export function normaliseMemberName(name: string): string {
  return name.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
}

/**
 * Reads every header of the tar at `path` (starting at byte `start`). Stops at the end-of-archive blocks. Throws
 * {@link TarFormatError} on a bad checksum or a member that runs past the end of the file (truncation).
 */
export async function indexTar(path: string, start = 0): Promise<TarMember[]> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    const members: TarMember[] = [];
    const header = Buffer.alloc(BLOCK);
    let pos = start;
    let longName: string | undefined;
    let longLink: string | undefined;
    let pax: Record<string, string> = {};
    let globalPax: Record<string, string> = {};
    const readAt = async (buf: Buffer, at: number) => {
      const { bytesRead } = await fh.read(buf, 0, buf.length, at);
      return bytesRead;
    };
    for (;;) {
      if (pos + BLOCK > size) {
        if (pos === size && members.length > 0) return members; // no end-of-archive blocks: tolerated
        throw new TarFormatError(`the tar ends inside a header at byte ${pos}: it is truncated`);
      }
      await readAt(header, pos);
      if (header.every((b) => b === 0)) return members;
      if (!checksumOk(header)) throw new TarFormatError(`bad tar header checksum at byte ${pos}`);
      const typeflag = String.fromCharCode(header[156] as number);
      let memberSize = octal(header, 124, 12);
      const dataOffset = pos + BLOCK;
      const next = () => dataOffset + Math.ceil(memberSize / BLOCK) * BLOCK;
      if (typeflag === 'L' || typeflag === 'K' || typeflag === 'x' || typeflag === 'g') {
        if (dataOffset + memberSize > size) throw new TarFormatError(`the tar is truncated at byte ${size}`);
        if (memberSize > 1024 * 1024) throw new TarFormatError(`implausible extended header of ${memberSize} bytes`);
        const data = Buffer.alloc(memberSize);
        await readAt(data, dataOffset);
        if (typeflag === 'L') longName = cString(data, 0, data.length);
        else if (typeflag === 'K') longLink = cString(data, 0, data.length);
        else if (typeflag === 'x') pax = parsePax(data.toString('utf8'));
        else globalPax = { ...globalPax, ...parsePax(data.toString('utf8')) };
        pos = next();
        continue;
      }
      const merged = { ...globalPax, ...pax };
      const prefix = header.subarray(257, 262).toString('latin1') === 'ustar' ? cString(header, 345, 155) : '';
      const baseName = cString(header, 0, 100);
      const name = merged.path ?? longName ?? (prefix ? `${prefix}/${baseName}` : baseName);
      if (merged.size !== undefined) memberSize = Number(merged.size);
      const linkName = merged.linkpath ?? longLink ?? (cString(header, 157, 100) || undefined);
      if (dataOffset + memberSize > size) {
        throw new TarFormatError(`member ${name} runs past the end of the tar (byte ${size}): it is truncated`);
      }
      members.push({
        name,
        type: TYPES[typeflag] ?? 'other',
        size: memberSize,
        offset: dataOffset,
        mode: octal(header, 100, 8),
        mtime: merged.mtime ? Math.floor(Number(merged.mtime)) : octal(header, 136, 12),
        linkName,
      });
      longName = undefined;
      longLink = undefined;
      pax = {};
      pos = next();
    }
  } finally {
    await fh.close();
  }
}
