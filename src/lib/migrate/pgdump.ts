/**
 * A reader for PostgreSQL custom-format archives (`pg_dump -Fc`), following postgres
 * src/bin/pg_dump/pg_backup_archiver.c (ReadHead, ReadToc) and pg_backup_custom.c (block layout).
 *
 * Why not only `pg_restore`: `ess migrate import` runs on an operator's workstation, which may have no PostgreSQL
 * client tools, or older ones than the dump (pg_restore refuses newer archive versions). Everything the preflight
 * needs (header, table of contents, a few small tables' COPY data, truncation) is read here with bounded memory:
 * the TOC is read once, data blocks are streamed and inflated chunk by chunk. The restore itself always runs the
 * real pg_restore inside the Postgres pod.
 *
 * Layout: "PGDMP", version bytes, int/offset sizes, format, compression, creation time, three strings, the TOC
 * (one entry per object, each with the file offset of its data block), then the data blocks. Integers are a sign
 * byte plus `intSize` little-endian bytes; strings are an int length (-1 = NULL) plus bytes; offsets are a flag byte
 * plus `offSize` little-endian bytes. A data block is a type byte, the dump id, then chunks (int length + bytes)
 * up to a zero length.
 */
import { type FileHandle, open } from 'node:fs/promises';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createInflate } from 'node:zlib';

export const PGDMP_MAGIC = 'PGDMP';

/** Archive versions (major, minor, rev) packed as pg_dump does: ((maj*256)+min)*256+rev. */
const vers = (maj: number, min: number, rev = 0) => (maj * 256 + min) * 256 + rev;
const K_VERS_1_3 = vers(1, 3);
const K_VERS_1_4 = vers(1, 4);
const K_VERS_1_5 = vers(1, 5);
const K_VERS_1_6 = vers(1, 6);
const K_VERS_1_7 = vers(1, 7);
const K_VERS_1_8 = vers(1, 8);
const K_VERS_1_9 = vers(1, 9);
const K_VERS_1_10 = vers(1, 10);
const K_VERS_1_11 = vers(1, 11);
const K_VERS_1_14 = vers(1, 14);
const K_VERS_1_15 = vers(1, 15);
const K_VERS_1_16 = vers(1, 16);
/** Oldest archive version this reader handles (PostgreSQL 8.4 wrote 1.11). */
const OLDEST_SUPPORTED = K_VERS_1_11;

const ARCH_CUSTOM = 1;
const BLK_DATA = 1;
const BLK_BLOBS = 3;
const K_OFFSET_POS_NOT_SET = 1;
const K_OFFSET_POS_SET = 2;
const K_OFFSET_NO_DATA = 3;

export type DumpCompression = 'none' | 'gzip' | 'lz4' | 'zstd';
const COMPRESSION_BY_ID: DumpCompression[] = ['none', 'gzip', 'lz4', 'zstd'];

export type DumpSection = 'none' | 'pre-data' | 'data' | 'post-data';
const SECTION_BY_ID: Record<number, DumpSection> = { 1: 'none', 2: 'pre-data', 3: 'data', 4: 'post-data' };

/** The archive header. */
export interface DumpHeader {
  /** e.g. "1.14-0" (what `pg_restore -l` prints as "Dump Version"). */
  archiveVersion: string;
  version: number;
  intSize: number;
  offSize: number;
  compression: DumpCompression;
  /** Compression level for archives older than 1.15 (-1 = default). */
  compressionLevel?: number;
  createdAt?: Date;
  database?: string;
  serverVersion?: string;
  pgDumpVersion?: string;
}

/** One TOC entry. */
export interface TocEntry {
  dumpId: number;
  hadDumper: boolean;
  tableOid: string;
  oid: string;
  tag: string;
  desc: string;
  section: DumpSection;
  namespace: string;
  owner: string;
  /** For TABLE DATA: `COPY schema.table (col, …) FROM stdin;`. */
  copyStmt: string;
  dependencies: number[];
  /** Where the data block is: offset set, not set (dump written to a pipe), or no data. */
  dataState: 'set' | 'not-set' | 'none';
  /** Absolute file offset of the data block when dataState is 'set'. */
  dataOffset?: number;
}

export interface DumpToc {
  header: DumpHeader;
  entries: TocEntry[];
  /** Absolute file offset just after the TOC: where data blocks start. */
  dataStart: number;
}

/** A dump that cannot be read: not a custom-format archive, unsupported version, truncated or corrupt. */
export class DumpFormatError extends Error {
  constructor(
    message: string,
    readonly reason: 'not-custom' | 'unsupported' | 'truncated' | 'corrupt',
  ) {
    super(message);
    this.name = 'DumpFormatError';
  }
}

/** A region of a file: the whole file, or one member of a tar (an export bundle). */
export interface FileRange {
  path: string;
  /** Byte offset where the dump starts (0 for a plain file). */
  start?: number;
  /** Length of the dump in bytes. */
  length: number;
}

const BUFFER_BYTES = 128 * 1024;
/** Read size while walking every data chunk in file order (a dump streamed through a pipe has no offsets). */
const SEQUENTIAL_BUFFER_BYTES = 1024 * 1024;
/** Compressed bytes handed to zlib at a time when inflating a data block (pg_dump writes ~4 KiB chunks). */
const INFLATE_BATCH_BYTES = 1024 * 1024;

/** Buffered sequential reader over a byte range of a file, with seek. */
class RangeReader {
  private buf: Buffer = Buffer.alloc(0);
  private bufPos = 0; // position (relative to range start) of buf[0]
  private pos = 0; // current relative position
  /** Bytes read at a time: small for seeks to scattered offsets, large for a walk through the whole file. */
  bufferBytes = BUFFER_BYTES;
  /**
   * Read into one buffer again and again instead of a new one per read (a walk through a whole dump would leave
   * hundreds of MiB of dead buffers to the GC). Only when no caller keeps what bytes() returned across reads.
   */
  reuseBuffer = false;
  private spare: Buffer | undefined;

  private constructor(
    private readonly fh: FileHandle,
    private readonly start: number,
    readonly length: number,
  ) {}

  static async open(range: FileRange): Promise<RangeReader> {
    return new RangeReader(await open(range.path, 'r'), range.start ?? 0, range.length);
  }

  close(): Promise<void> {
    return this.fh.close();
  }

  get position(): number {
    return this.pos;
  }

  seek(pos: number): void {
    this.pos = pos;
  }

  skip(n: number): void {
    this.pos += n;
  }

  /** Makes `n` bytes from the current position available; throws a truncation error when the range ends first. */
  private async ensure(n: number): Promise<void> {
    const offsetInBuf = this.pos - this.bufPos;
    if (offsetInBuf >= 0 && offsetInBuf + n <= this.buf.length) return;
    if (this.pos + n > this.length) {
      throw new DumpFormatError(
        `the dump ends at byte ${this.length} while reading ${n} bytes at ${this.pos}: it is truncated`,
        'truncated',
      );
    }
    const size = Math.min(Math.max(n, this.bufferBytes), this.length - this.pos);
    let buf: Buffer;
    if (this.reuseBuffer) {
      if (!this.spare || this.spare.length < size) this.spare = Buffer.allocUnsafe(Math.max(size, this.bufferBytes));
      buf = this.spare;
    } else buf = Buffer.allocUnsafe(size);
    let filled = 0;
    while (filled < size) {
      const { bytesRead } = await this.fh.read(buf, filled, size - filled, this.start + this.pos + filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    if (filled < n) {
      throw new DumpFormatError(`the file ended early at byte ${this.pos + filled}: it is truncated`, 'truncated');
    }
    this.buf = buf.subarray(0, filled);
    this.bufPos = this.pos;
  }

  async bytes(n: number): Promise<Buffer> {
    await this.ensure(n);
    const from = this.pos - this.bufPos;
    this.pos += n;
    return this.buf.subarray(from, from + n);
  }

  async byte(): Promise<number> {
    return (await this.bytes(1))[0] as number;
  }

  /** The next `n` bytes when they are already buffered (advancing past them), else undefined: no await per call. */
  bufferedBytes(n: number): Buffer | undefined {
    const from = this.pos - this.bufPos;
    if (from < 0 || from + n > this.buf.length) return undefined;
    this.pos += n;
    return this.buf.subarray(from, from + n);
  }
}

/** Integer/string/offset decoding with the archive's sizes. */
class ArchiveDecoder {
  intSize = 4;
  offSize = 8;
  version = 0;

  constructor(readonly r: RangeReader) {}

  async int(): Promise<number> {
    const sign = this.version > vers(1, 0) ? await this.r.byte() : 0;
    const bytes = await this.r.bytes(this.intSize);
    let value = 0;
    for (let i = bytes.length - 1; i >= 0; i--) value = value * 256 + (bytes[i] as number);
    return sign ? -value : value;
  }

  /**
   * {@link int} without awaiting when its bytes are buffered (the chunk walk reads tens of thousands of them);
   * undefined otherwise.
   */
  intBuffered(): number | undefined {
    const signed = this.version > vers(1, 0);
    const bytes = this.r.bufferedBytes(this.intSize + (signed ? 1 : 0));
    if (!bytes) return undefined;
    let value = 0;
    for (let i = bytes.length - 1; i >= (signed ? 1 : 0); i--) value = value * 256 + (bytes[i] as number);
    return signed && bytes[0] ? -value : value;
  }

  async str(): Promise<string | null> {
    const len = await this.int();
    if (len < 0) return null;
    if (len > 512 * 1024 * 1024) throw new DumpFormatError(`implausible string length ${len}`, 'corrupt');
    return len === 0 ? '' : (await this.r.bytes(len)).toString('utf8');
  }

  /** Reads an offset: [state, value]. */
  async offset(): Promise<[number, number]> {
    const flag = this.version >= K_VERS_1_7 ? await this.r.byte() : K_OFFSET_POS_SET;
    const bytes = await this.r.bytes(this.offSize);
    let value = 0;
    for (let i = bytes.length - 1; i >= 0; i--) value = value * 256 + (bytes[i] as number);
    return [flag, value];
  }
}

async function readHeader(d: ArchiveDecoder): Promise<DumpHeader> {
  const magic = (await d.r.bytes(5)).toString('latin1');
  if (magic !== PGDMP_MAGIC) throw new DumpFormatError('not a PostgreSQL custom-format archive', 'not-custom');
  const vmaj = await d.r.byte();
  const vmin = await d.r.byte();
  const vrev = vmaj > 1 || (vmaj === 1 && vmin > 0) ? await d.r.byte() : 0;
  const version = vers(vmaj, vmin, vrev);
  d.version = version;
  if (version < OLDEST_SUPPORTED || version > vers(1, 16, 255)) {
    throw new DumpFormatError(
      `unsupported archive version ${vmaj}.${vmin}-${vrev} (supported: 1.11 to 1.16, PostgreSQL 8.4 to 18)`,
      'unsupported',
    );
  }
  d.intSize = await d.r.byte();
  if (d.intSize < 1 || d.intSize > 8) throw new DumpFormatError(`implausible integer size ${d.intSize}`, 'corrupt');
  d.offSize = version >= K_VERS_1_7 ? await d.r.byte() : d.intSize;
  if (d.offSize < 1 || d.offSize > 8) throw new DumpFormatError(`implausible offset size ${d.offSize}`, 'corrupt');
  const format = await d.r.byte();
  if (format !== ARCH_CUSTOM) {
    throw new DumpFormatError(`archive format ${format} is not the custom format (-Fc)`, 'not-custom');
  }
  let compression: DumpCompression;
  let compressionLevel: number | undefined;
  if (version >= K_VERS_1_15) {
    const id = await d.r.byte();
    const known = COMPRESSION_BY_ID[id];
    if (!known) throw new DumpFormatError(`unknown compression algorithm ${id}`, 'unsupported');
    compression = known;
  } else {
    compressionLevel = await d.int();
    compression = compressionLevel !== 0 ? 'gzip' : 'none';
  }
  let createdAt: Date | undefined;
  let database: string | undefined;
  if (version >= K_VERS_1_4) {
    const [sec, min, hour, mday, mon, year] = [
      await d.int(),
      await d.int(),
      await d.int(),
      await d.int(),
      await d.int(),
      await d.int(),
    ];
    await d.int(); // isdst
    // struct tm in pg_dump's local time zone; good enough for a "created at" line.
    createdAt = new Date(1900 + year, mon, mday, hour, min, sec);
    database = (await d.str()) ?? undefined;
  }
  let serverVersion: string | undefined;
  let pgDumpVersion: string | undefined;
  if (version >= K_VERS_1_10) {
    serverVersion = (await d.str()) ?? undefined;
    pgDumpVersion = (await d.str()) ?? undefined;
  }
  return {
    archiveVersion: `${vmaj}.${vmin}-${vrev}`,
    version,
    intSize: d.intSize,
    offSize: d.offSize,
    compression,
    compressionLevel,
    createdAt,
    database,
    serverVersion,
    pgDumpVersion,
  };
}

async function readEntries(d: ArchiveDecoder, baseLength: number): Promise<TocEntry[]> {
  const count = await d.int();
  if (count < 0 || count > 10_000_000) throw new DumpFormatError(`implausible TOC entry count ${count}`, 'corrupt');
  const entries: TocEntry[] = [];
  const v = d.version;
  for (let i = 0; i < count; i++) {
    const dumpId = await d.int();
    if (dumpId <= 0) throw new DumpFormatError(`TOC entry id ${dumpId} out of range: corrupt TOC`, 'corrupt');
    const hadDumper = (await d.int()) !== 0;
    const tableOid = v >= K_VERS_1_8 ? ((await d.str()) ?? '0') : '0';
    const oid = (await d.str()) ?? '0';
    const tag = (await d.str()) ?? '';
    const desc = (await d.str()) ?? '';
    const section = SECTION_BY_ID[await d.int()] ?? 'none';
    await d.str(); // defn
    await d.str(); // dropStmt
    const copyStmt = v >= K_VERS_1_3 ? ((await d.str()) ?? '') : '';
    const namespace = v >= K_VERS_1_6 ? ((await d.str()) ?? '') : '';
    if (v >= K_VERS_1_10) await d.str(); // tablespace
    if (v >= K_VERS_1_14) await d.str(); // tableam
    if (v >= K_VERS_1_16) await d.int(); // relkind
    const owner = (await d.str()) ?? '';
    if (v >= K_VERS_1_9) await d.str(); // "false" (WITH OIDS)
    const dependencies: number[] = [];
    if (v >= K_VERS_1_5) {
      for (;;) {
        const dep = await d.str();
        if (dep === null) break;
        dependencies.push(Number.parseInt(dep, 10));
      }
    }
    const [flag, offset] = await d.offset();
    let dataState: TocEntry['dataState'];
    if (flag === K_OFFSET_POS_SET) dataState = 'set';
    else if (flag === K_OFFSET_POS_NOT_SET) dataState = 'not-set';
    else if (flag === K_OFFSET_NO_DATA) dataState = 'none';
    else throw new DumpFormatError(`unexpected data offset flag ${flag} in TOC entry ${dumpId}`, 'corrupt');
    if (dataState === 'set' && offset >= baseLength) {
      throw new DumpFormatError(
        `TOC entry ${dumpId} (${desc} ${tag}) has its data at byte ${offset}, but the dump has only ${baseLength} bytes: it is truncated`,
        'truncated',
      );
    }
    entries.push({
      dumpId,
      hadDumper,
      tableOid,
      oid,
      tag,
      desc,
      section,
      namespace,
      owner,
      copyStmt,
      dependencies,
      dataState,
      dataOffset: dataState === 'set' ? offset : undefined,
    });
  }
  return entries;
}

/** Reads the header and table of contents of a custom-format dump. Throws {@link DumpFormatError}. */
export async function readDumpToc(range: FileRange): Promise<DumpToc> {
  const reader = await RangeReader.open(range);
  try {
    const d = new ArchiveDecoder(reader);
    const header = await readHeader(d);
    const entries = await readEntries(d, range.length);
    return { header, entries, dataStart: reader.position };
  } finally {
    await reader.close();
  }
}

/**
 * Checks the length of the next chunk of a data block (0 ends the block) against the dump's size. Synchronous: the
 * callers read the length with `intBuffered()` first, so walking a block costs no await per chunk.
 */
function checkedChunkLength(d: ArchiveDecoder, len: number): number {
  if (len < 0) throw new DumpFormatError(`negative chunk length at byte ${d.r.position}`, 'corrupt');
  if (d.r.position + len > d.r.length) {
    throw new DumpFormatError(
      `a data chunk at byte ${d.r.position} runs past the end of the dump (${d.r.length} bytes): it is truncated`,
      'truncated',
    );
  }
  return len;
}

/** Walks one data block's chunks from the current position; returns the position after it. */
async function skipBlockBody(d: ArchiveDecoder, blockType: number): Promise<void> {
  const skipChunks = async () => {
    for (;;) {
      const len = checkedChunkLength(d, d.intBuffered() ?? (await d.int()));
      if (len === 0) return;
      d.r.skip(len);
    }
  };
  if (blockType === BLK_BLOBS) {
    for (;;) {
      const oid = await d.int();
      if (oid === 0) return;
      await skipChunks();
    }
  }
  await skipChunks();
}

async function readBlockHeader(d: ArchiveDecoder): Promise<{ type: number; id: number }> {
  const type = await d.r.byte();
  if (type !== BLK_DATA && type !== BLK_BLOBS) {
    throw new DumpFormatError(`unexpected data block type ${type} at byte ${d.r.position - 1}`, 'corrupt');
  }
  return { type, id: await d.int() };
}

/**
 * The compressed bytes of one zlib stream (a TABLE DATA block, or one large object of a BLOBS block): its chunks
 * from the current position up to the zero length, copied into batches (the reader's buffer is reused).
 */
async function* compressedStream(d: ArchiveDecoder): AsyncGenerator<Buffer> {
  let batch = Buffer.allocUnsafe(INFLATE_BATCH_BYTES);
  let fill = 0;
  for (;;) {
    const len = checkedChunkLength(d, d.intBuffered() ?? (await d.int()));
    if (len === 0) break;
    const bytes = await d.r.bytes(len);
    if (fill + len > batch.length) {
      if (fill > 0) yield batch.subarray(0, fill);
      batch = Buffer.allocUnsafe(Math.max(INFLATE_BATCH_BYTES, len));
      fill = 0;
    }
    bytes.copy(batch, fill);
    fill += len;
  }
  if (fill > 0) yield batch.subarray(0, fill);
}

/** Inflates one zlib stream of the dump, keeping nothing of the output; a stream that does not inflate is corrupt. */
async function inflateStream(d: ArchiveDecoder, what: string): Promise<void> {
  const start = d.r.position;
  const zlibErrors = new WeakSet<Error>();
  const inflate = createInflate({ chunkSize: 256 * 1024 });
  inflate.on('error', (error) => zlibErrors.add(error));
  try {
    await pipeline(
      Readable.from(compressedStream(d), { objectMode: false }),
      inflate,
      new Writable({
        write(_chunk, _encoding, done) {
          done();
        },
      }),
    );
  } catch (error) {
    if (error instanceof DumpFormatError || !zlibErrors.has(error as Error)) throw error;
    throw new DumpFormatError(
      `the data of ${what} (starting at byte ${start}) does not decompress (zlib: ${(error as Error).message})`,
      'corrupt',
    );
  }
}

/** Walks (and with `inflate`, decompresses) one data block's body from the current position. */
async function checkBlockBody(d: ArchiveDecoder, blockType: number, what: string, inflate: boolean): Promise<void> {
  if (!inflate) return skipBlockBody(d, blockType);
  if (blockType === BLK_BLOBS) {
    for (;;) {
      const oid = await d.int();
      if (oid === 0) return;
      await inflateStream(d, `large object ${oid} of ${what}`);
    }
  }
  await inflateStream(d, what);
}

/**
 * Reads every data block in file order up to the end of the dump: each must belong to a TOC entry (at the offset the
 * TOC says, when it has offsets), every entry must have its block, and with `decompress` each block's zlib stream
 * must decompress completely (its Adler-32 check included). Bounded memory: batches of compressed bytes go through
 * zlib and its output is dropped.
 */
async function walkAllBlocks(
  d: ArchiveDecoder,
  toc: DumpToc,
  withData: TocEntry[],
  decompress: boolean,
  onProgress?: (done: number, total: number) => void,
): Promise<void> {
  const byId = new Map(withData.map((e) => [e.dumpId, e]));
  const wanted = new Set(byId.keys());
  const length = d.r.length;
  d.r.seek(toc.dataStart);
  let reported = 0;
  while (d.r.position < length) {
    const at = d.r.position;
    const block = await readBlockHeader(d);
    const entry = byId.get(block.id);
    if (!entry || !wanted.has(block.id)) {
      throw new DumpFormatError(
        `data block at byte ${at} belongs to no TOC entry (id ${block.id}): corrupt dump`,
        'corrupt',
      );
    }
    if (entry.dataState === 'set' && entry.dataOffset !== at) {
      throw new DumpFormatError(
        `the data of TOC entry ${entry.dumpId} is at byte ${at}, but the TOC says ${entry.dataOffset}: corrupt dump`,
        'corrupt',
      );
    }
    const what = `TOC entry ${entry.dumpId} (${entry.desc} ${entry.namespace}.${entry.tag})`;
    await checkBlockBody(d, block.type, what, decompress);
    wanted.delete(block.id);
    if (onProgress && d.r.position - reported >= 64 * 1024 * 1024) {
      reported = d.r.position;
      onProgress(reported, length);
    }
  }
  if (wanted.size > 0) {
    throw new DumpFormatError(
      `the dump ends before the data of ${wanted.size} TOC entries: it is truncated`,
      'truncated',
    );
  }
  onProgress?.(length, length);
}

export interface VerifyDataOptions {
  /**
   * Also read every data block and decompress it (gzip dumps; uncompressed ones have their chunks walked), so that a
   * dump with damaged bytes in the middle is refused, not only a truncated one. Reads the whole dump.
   */
  inflate?: boolean;
  /** Called every 64 MiB of a full read (`inflate`), and once at the end. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Checks that every data block the TOC announces is present and complete, so that a truncated dump is refused
 * before anything is changed. With offsets in the TOC (a dump written to a file) only the block that ends last is
 * walked, and its end must be the end of the dump; without offsets (a dump written to a pipe) all blocks are walked
 * (chunk headers only, no decompression). With `inflate`, every block is read and decompressed (see
 * {@link VerifyDataOptions}); lz4 and zstd blocks are walked but not decompressed.
 */
export async function verifyDataBlocks(
  range: FileRange,
  toc: DumpToc,
  options: VerifyDataOptions = {},
): Promise<{ blocks: number }> {
  const withData = toc.entries.filter((e) => e.dataState !== 'none');
  if (withData.length === 0) return { blocks: 0 };
  const reader = await RangeReader.open(range);
  try {
    const d = new ArchiveDecoder(reader);
    d.intSize = toc.header.intSize;
    d.offSize = toc.header.offSize;
    d.version = toc.header.version;
    if (options.inflate) {
      reader.bufferBytes = SEQUENTIAL_BUFFER_BYTES;
      reader.reuseBuffer = true;
      await walkAllBlocks(d, toc, withData, toc.header.compression === 'gzip', options.onProgress);
      return { blocks: withData.length };
    }
    if (withData.every((e) => e.dataState === 'set')) {
      for (const entry of withData) {
        reader.seek(entry.dataOffset as number);
        const block = await readBlockHeader(d);
        if (block.id !== entry.dumpId) {
          throw new DumpFormatError(
            `data block at byte ${entry.dataOffset} belongs to entry ${block.id}, not ${entry.dumpId}: corrupt dump`,
            'corrupt',
          );
        }
      }
      const last = withData.reduce((a, b) => ((a.dataOffset as number) > (b.dataOffset as number) ? a : b));
      reader.seek(last.dataOffset as number);
      const block = await readBlockHeader(d);
      await skipBlockBody(d, block.type);
      if (reader.position !== range.length) {
        throw new DumpFormatError(
          `the last data block ends at byte ${reader.position} but the file has ${range.length} bytes`,
          'corrupt',
        );
      }
      return { blocks: withData.length };
    }
    // Sequential scan: blocks follow the TOC in file order.
    reader.bufferBytes = SEQUENTIAL_BUFFER_BYTES;
    reader.reuseBuffer = true;
    const wanted = new Set(withData.map((e) => e.dumpId));
    reader.seek(toc.dataStart);
    while (wanted.size > 0) {
      if (reader.position >= range.length) {
        throw new DumpFormatError(
          `the dump ends before the data of ${wanted.size} TOC entries: it is truncated`,
          'truncated',
        );
      }
      const block = await readBlockHeader(d);
      await skipBlockBody(d, block.type);
      wanted.delete(block.id);
    }
    return { blocks: withData.length };
  } finally {
    await reader.close();
  }
}

/** Finds the data block of `entry` (seeking, or scanning when the dump has no offsets) and yields its raw chunks. */
async function* rawChunks(range: FileRange, toc: DumpToc, entry: TocEntry): AsyncGenerator<Buffer> {
  if (entry.dataState === 'none') return;
  const reader = await RangeReader.open(range);
  try {
    const d = new ArchiveDecoder(reader);
    d.intSize = toc.header.intSize;
    d.offSize = toc.header.offSize;
    d.version = toc.header.version;
    let block: { type: number; id: number };
    if (entry.dataState === 'set') {
      reader.seek(entry.dataOffset as number);
      block = await readBlockHeader(d);
    } else {
      reader.seek(toc.dataStart);
      for (;;) {
        block = await readBlockHeader(d);
        if (block.id === entry.dumpId) break;
        await skipBlockBody(d, block.type);
      }
    }
    if (block.id !== entry.dumpId || block.type !== BLK_DATA) {
      throw new DumpFormatError(`no table data block for entry ${entry.dumpId}`, 'corrupt');
    }
    for (;;) {
      const len = d.intBuffered() ?? (await d.int());
      if (len === 0) return;
      if (len < 0) throw new DumpFormatError(`negative chunk length at byte ${reader.position}`, 'corrupt');
      // Copy: the reader's buffer is reused by the next read.
      yield Buffer.from(await reader.bytes(len));
    }
  } finally {
    await reader.close();
  }
}

/**
 * Streams the COPY text of one TABLE DATA entry (what `pg_restore --data-only -t TABLE -f -` prints between the
 * COPY line and `\.`), decompressed. Supports uncompressed and gzip archives (the default of `pg_dump -Fc`);
 * lz4/zstd archives throw 'unsupported'.
 */
export function openTableData(range: FileRange, toc: DumpToc, entry: TocEntry): Readable {
  const raw = Readable.from(rawChunks(range, toc, entry), { objectMode: false });
  switch (toc.header.compression) {
    case 'none':
      return raw;
    case 'gzip': {
      const inflate = createInflate();
      raw.on('error', (error) => inflate.destroy(error));
      return raw.pipe(inflate);
    }
    default:
      throw new DumpFormatError(
        `the dump is compressed with ${toc.header.compression}; ess reads gzip or uncompressed dumps`,
        'unsupported',
      );
  }
}

/** The TABLE DATA entry of `schema.table`, if the dump has one. */
export function findTableData(toc: DumpToc, table: string, schema = 'public'): TocEntry | undefined {
  return toc.entries.find((e) => e.desc === 'TABLE DATA' && e.tag === table && e.namespace === schema);
}

/** The TABLE entry of `schema.table`, if the dump has one. */
export function findTable(toc: DumpToc, table: string, schema = 'public'): TocEntry | undefined {
  return toc.entries.find((e) => e.desc === 'TABLE' && e.tag === table && e.namespace === schema);
}

function sanitize(text: string): string {
  return text.replace(/[\r\n]/g, ' ');
}

/** One `pg_restore -l` line: `ID; TABLEOID OID DESC NAMESPACE TAG OWNER`. */
export function tocLine(entry: TocEntry): string {
  const parts = [`${entry.dumpId};`, entry.tableOid, entry.oid, entry.desc, sanitize(entry.namespace) || '-'];
  parts.push(sanitize(entry.tag));
  if (entry.owner) parts.push(sanitize(entry.owner));
  return parts.join(' ');
}

/** Entries pg_restore always processes (or, for DATABASE, only with --create): `pg_restore -l` does not list them. */
const SPECIAL_ENTRIES = new Set(['ENCODING', 'STDSTRINGS', 'SEARCHPATH', 'DATABASE', 'DATABASE PROPERTIES']);

/**
 * A list file for `pg_restore -L`, in TOC order: every entry pg_restore would list, minus those for which `exclude`
 * returns true (written as `;`-commented lines, which pg_restore skips, so the file still documents them).
 */
export function tocList(toc: DumpToc, exclude: (entry: TocEntry) => boolean = () => false): string {
  const lines = [';', `; TOC written by ess from a ${toc.header.archiveVersion} archive`, ';'];
  for (const entry of toc.entries) {
    if (SPECIAL_ENTRIES.has(entry.desc)) continue;
    const line = tocLine(entry);
    lines.push(exclude(entry) ? `;${line}` : line);
  }
  return `${lines.join('\n')}\n`;
}

/** Where one data block lies in the dump (relative to the dump's start). */
export interface BlockRange {
  entry: TocEntry;
  start: number;
  end: number;
}

/**
 * The byte range of every data block, from the TOC offsets (each block ends where the next one starts, the last at
 * the end of the dump). Undefined for a dump written to a pipe (no offsets): it can only be read front to back.
 */
export function dataBlockRanges(toc: DumpToc, length: number): Map<number, BlockRange> | undefined {
  const withData = toc.entries.filter((e) => e.dataState !== 'none');
  if (withData.some((e) => e.dataState !== 'set')) return undefined;
  const byOffset = [...withData].sort((a, b) => (a.dataOffset as number) - (b.dataOffset as number));
  const ranges = new Map<number, BlockRange>();
  byOffset.forEach((entry, i) => {
    const next = byOffset[i + 1];
    ranges.set(entry.dumpId, {
      entry,
      start: entry.dataOffset as number,
      end: next ? (next.dataOffset as number) : length,
    });
  });
  return ranges;
}

/**
 * Splits data blocks into `parts` groups of similar byte size (largest first, each to the lightest group), each
 * group in TOC order, which is the order pg_restore asks for them when it reads a stream front to back.
 */
export function partitionBlocks(toc: DumpToc, blocks: BlockRange[], parts: number): BlockRange[][] {
  const groups: BlockRange[][] = Array.from({ length: Math.max(1, parts) }, () => []);
  const load = groups.map(() => 0);
  for (const block of [...blocks].sort((a, b) => b.end - b.start - (a.end - a.start))) {
    const lightest = load.indexOf(Math.min(...load));
    groups[lightest]?.push(block);
    load[lightest] = (load[lightest] ?? 0) + block.end - block.start;
  }
  const position = new Map(toc.entries.map((e, i) => [e.dumpId, i]));
  return groups
    .filter((g) => g.length > 0)
    .map((g) => g.sort((a, b) => (position.get(a.entry.dumpId) ?? 0) - (position.get(b.entry.dumpId) ?? 0)));
}
