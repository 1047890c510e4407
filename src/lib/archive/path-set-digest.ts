/**
 * Order-independent digest of a multiset of (path, size) pairs: a sum of SHA-256 values modulo 2^256. Compares a
 * media index with the members actually read without holding either file list in memory.
 */
import { createHash } from 'node:crypto';

const MOD = 1n << 256n;

export class PathSetDigest {
  private sum = 0n;
  count = 0;
  bytes = 0;

  add(path: string, size: number): void {
    const digest = createHash('sha256').update(`${path}\0${size}`).digest('hex');
    this.sum = (this.sum + BigInt(`0x${digest}`)) % MOD;
    this.count++;
    this.bytes += size;
  }

  equals(other: PathSetDigest): boolean {
    return this.sum === other.sum && this.count === other.count && this.bytes === other.bytes;
  }
}
