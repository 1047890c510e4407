/**
 * Keeps the resident size of a long byte stream flat. Every chunk sent over exec is copied into a new frame (and
 * masked by the WebSocket client), so a 1 GB upload makes about 2 GB of short-lived Buffers. Their memory lives
 * outside the JavaScript heap, and V8 collects them only when the young generation fills (which tiny Buffer handles
 * hardly do) or when external memory has grown by tens of megabytes: without help the process keeps 30–60 MB of
 * dead buffers. A scavenge (minor GC) every few megabytes frees them at a cost of well under a millisecond each.
 */
import { Transform } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type GcFunction = (options?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;

let gcFunction: GcFunction | null | undefined;

/** The V8 gc() function, exposed on first use (undefined when the runtime refuses). */
function gc(): GcFunction | undefined {
  if (gcFunction === undefined) {
    try {
      const existing = (globalThis as { gc?: GcFunction }).gc;
      if (existing) gcFunction = existing;
      else {
        setFlagsFromString('--expose-gc');
        gcFunction = runInNewContext('gc') as GcFunction;
      }
    } catch {
      gcFunction = null;
    }
  }
  return gcFunction ?? undefined;
}

const MINOR_EVERY_BYTES = 2 * 1024 * 1024;
const MAJOR_EVERY_BYTES = 16 * 1024 * 1024;

// Shared by every stream in the process: concurrent streams (parallel restore) add up to one allocation rate.
let minorBytes = 0;
let majorBytes = 0;

/**
 * A pass-through that, counting the bytes of all such streams together, runs a scavenge every 2 MiB and a full
 * collection every 16 MiB (chunks that waited in a socket's send queue have been promoted out of the young
 * generation by then).
 */
export function collectingPassThrough(): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      minorBytes += chunk.length;
      majorBytes += chunk.length;
      if (majorBytes >= MAJOR_EVERY_BYTES) {
        majorBytes = 0;
        minorBytes = 0;
        // A plain gc() call: Node 20's V8 ignores { type: 'major' } and would leave the buffers in place.
        gc()?.();
      } else if (minorBytes >= MINOR_EVERY_BYTES) {
        minorBytes = 0;
        gc()?.({ type: 'minor' });
      }
      cb(null, chunk);
    },
  });
}

/** One full collection, e.g. between the preflight (which parses table data) and a long stream. */
export function collectNow(): void {
  gc()?.();
}
