/**
 * Recognises what a user handed to `ess migrate import` from its first bytes, so that a wrong file is refused with
 * a message that says what it is and how to get the right one.
 */
import { open } from 'node:fs/promises';

export type InputKind =
  | 'pg-custom' // pg_dump -Fc: what ess imports
  | 'bundle' // an `ess migrate export` bundle (a tar whose first member is manifest.json)
  | 'pg-tar' // pg_dump -Ft
  | 'tar' // some other tar
  | 'plain-sql' // pg_dump -Fp / pg_dumpall
  | 'sqlite'
  | 'gzip'
  | 'zstd'
  | 'empty'
  | 'unknown';

const SNIFF_BYTES = 1024;

/** Reads the first bytes of a file and classifies it. */
export async function sniffInput(path: string): Promise<{ kind: InputKind; size: number }> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    const head = Buffer.alloc(Math.min(SNIFF_BYTES, size));
    if (head.length > 0) await fh.read(head, 0, head.length, 0);
    return { kind: classify(head), size };
  } finally {
    await fh.close();
  }
}

/** Classifies the first bytes of a file (see {@link sniffInput}). */
export function classify(head: Buffer): InputKind {
  if (head.length === 0) return 'empty';
  if (head.subarray(0, 5).toString('latin1') === 'PGDMP') return 'pg-custom';
  if (head.subarray(0, 16).toString('latin1') === 'SQLite format 3\0') return 'sqlite';
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  if (head.length >= 512 && head.subarray(257, 262).toString('latin1') === 'ustar') {
    const name = head.subarray(0, 100).toString('utf8').replace(/\0.*$/s, '');
    if (name === 'manifest.json' || name === './manifest.json') return 'bundle';
    if (name === 'toc.dat') return 'pg-tar';
    return 'tar';
  }
  const text = head.toString('utf8');
  if (/^(--|SET |CREATE |\\connect|BEGIN;|SELECT pg_catalog)/m.test(text) && !text.includes('\0')) return 'plain-sql';
  return 'unknown';
}
