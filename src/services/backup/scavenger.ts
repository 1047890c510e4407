/**
 * Keeps the resident memory of a long streaming run flat. Every chunk that flows (exec frames, tar entries, file
 * writes) is a Buffer whose bytes live outside the V8 heap, while its small JavaScript wrapper sits in the young
 * generation. V8 scavenges only when the young generation fills, which takes tens of MB of chunks, so dead chunks
 * pile up between collections. A young-generation collection every 30 ms while data flows frees them: measured on a
 * 200 MB media copy, peak RSS 180–186 MB → 139–148 MB with no measurable change in wall time (50 ms: ~150 MB,
 * 100 ms: ~170 MB).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type GcFunction = (options?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;

let gc: GcFunction | undefined | null;

function gcFunction(): GcFunction | undefined {
  if (gc === undefined) {
    try {
      setFlagsFromString('--expose_gc');
      gc = runInNewContext('gc') as GcFunction;
    } catch {
      gc = null;
    }
  }
  return gc ?? undefined;
}

/**
 * Starts periodic young-generation collections; returns the function that stops them. A no-op when the runtime
 * does not allow it. The timer never keeps the process alive.
 */
export function startScavenger(intervalMs = 30): () => void {
  const collect = gcFunction();
  if (!collect) return () => {};
  const timer = setInterval(() => collect({ type: 'minor' }), intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
