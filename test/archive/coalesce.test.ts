/** The spool's Coalesce transform: small chunks (one per exec message) leave as few large writes, bytes unchanged. */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Coalesce } from '../../src/lib/archive/spool.js';

describe('Coalesce', () => {
  it('gathers 4 KiB chunks into writes of at least 64 KiB, the last one short, with the same bytes in order', async () => {
    const input = Array.from({ length: 100 }, () => randomBytes(4096));
    input.push(randomBytes(123));
    const out: Buffer[] = [];
    for await (const chunk of Readable.from(input).pipe(new Coalesce(64 * 1024))) out.push(chunk as Buffer);
    expect(Buffer.concat(out)).toEqual(Buffer.concat(input));
    expect(out.length).toBe(7); // 6 × 16 chunks, then 4 chunks + 123 bytes at the end
    for (const chunk of out.slice(0, -1)) expect(chunk.length).toBe(64 * 1024);
    expect(out.at(-1)?.length).toBe(4 * 4096 + 123);
  });

  it('passes an empty stream through as empty', async () => {
    const out: Buffer[] = [];
    for await (const chunk of Readable.from([]).pipe(new Coalesce())) out.push(chunk as Buffer);
    expect(out).toEqual([]);
  });
});
