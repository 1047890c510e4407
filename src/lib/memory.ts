/**
 * Keeps the resident size of a long byte stream flat. Every chunk that flows (exec frames, tar entries, file reads
 * and writes) is a Buffer whose bytes live outside the V8 heap while its small JavaScript handle sits in the young
 * generation. V8 collects them only when the young generation fills (which tiny handles hardly do) or when external
 * memory has grown by tens of megabytes, so without help a streaming run keeps 30–60 MB of dead buffers.
 *
 * Two ways to help, both no-ops when the runtime refuses to expose gc():
 * - startScavenger(): a young-generation collection every 30 ms while a run streams. Measured on a 200 MB media copy
 *   (ess backup): peak RSS 180–186 MB → 139–148 MB with no measurable change in wall time (50 ms: ~150 MB, 100 ms:
 *   ~170 MB).
 * - collectingPassThrough(): collections paced by bytes, for streams whose chunks wait in a socket's send queue long
 *   enough to be promoted out of the young generation (uploads into a pod: ess migrate import).
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

/**
 * Starts periodic young-generation collections, and a full collection every `fullEveryMs` (chunks that survived
 * two scavenges while queued are promoted, and V8 lets promoted garbage grow the old space for minutes on a long
 * run: a 10 GB backup peaked at 152 MiB without it); returns the function that stops them. The timers never keep
 * the process alive.
 */
export function startScavenger(intervalMs = 30, fullEveryMs = 5_000): () => void {
  const collect = gc();
  if (!collect) return () => {};
  const minor = setInterval(() => collect({ type: 'minor' }), intervalMs);
  // A plain gc() call: Node 20's V8 ignores { type: 'major' }.
  const full = setInterval(() => collect(), fullEveryMs);
  minor.unref();
  full.unref();
  return () => {
    clearInterval(minor);
    clearInterval(full);
  };
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
