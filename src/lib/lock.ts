import { hostname } from 'node:os';
import { names } from './deployment/components.js';
import { PreconditionError } from './errors.js';
import type { KubeClient } from './kube/client.js';
import { isConflict, KubeApiError } from './kube/client.js';
import type { Lease } from './kube/types.js';

export interface LockOptions {
  namespace: string;
  release: string;
  /** What the holder is doing, e.g. 'backup'. Stored in an annotation for "who holds it" messages. */
  operation: string;
  /** Seconds without renewal after which the lock is considered abandoned. */
  ttlSeconds?: number;
  /** Break an existing lock (--force-unlock). */
  force?: boolean;
  now?: () => Date;
  /** Renewal period in ms (default ttl/3). */
  renewEveryMs?: number;
}

export interface HeldLock {
  holder: string;
  /** Stops renewing and deletes the Lease (only if we still hold it). Idempotent. */
  release(): Promise<void>;
}

export const LOCK_OPERATION_ANNOTATION = 'ess.element.io/operation';

/** Describes the current holder of a lease, or undefined when it is free or expired. */
export function activeHolder(
  lease: Lease | undefined,
  now: Date,
): { holder: string; since?: string; operation?: string } | undefined {
  if (!lease?.spec.holderIdentity) return undefined;
  const renew = lease.spec.renewTime ?? lease.spec.acquireTime;
  const ttl = lease.spec.leaseDurationSeconds ?? 0;
  if (renew && new Date(renew).getTime() + ttl * 1000 < now.getTime()) return undefined;
  return {
    holder: lease.spec.holderIdentity,
    since: lease.spec.acquireTime,
    operation: lease.metadata.annotations?.[LOCK_OPERATION_ANNOTATION],
  };
}

/** Kubernetes MicroTime format (RFC3339 with microseconds). */
function microTime(date: Date): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

/**
 * Takes the per-release ess lock: a coordination.k8s.io Lease held by host+pid, renewed while running and expiring
 * after a TTL so that a crashed run does not block forever. A second run fails fast (exit 4) naming the holder.
 */
export async function acquireLock(kube: KubeClient, options: LockOptions): Promise<HeldLock> {
  const now = options.now ?? (() => new Date());
  const ttl = options.ttlSeconds ?? 120;
  const name = names.essLock(options.release);
  const holder = `${hostname()}:${process.pid}`;
  const spec = () => ({
    holderIdentity: holder,
    leaseDurationSeconds: ttl,
    acquireTime: microTime(now()),
    renewTime: microTime(now()),
  });
  const existing = await kube.get<Lease>('Lease', options.namespace, name);
  const active = activeHolder(existing, now());
  if (active && !options.force) {
    throw new PreconditionError(
      `Another ess run holds the lock ${options.namespace}/${name}: ${active.holder}` +
        `${active.operation ? ` (${active.operation})` : ''}${active.since ? ` since ${active.since}` : ''}.`,
      {
        code: 'LOCKED',
        next: [
          'Wait for it to finish (the lock expires by itself if that run crashed)',
          'If you are sure no other run is active: re-run with --force-unlock',
        ],
      },
    );
  }
  const metadata = {
    name,
    namespace: options.namespace,
    annotations: { [LOCK_OPERATION_ANNOTATION]: options.operation },
  };
  try {
    if (existing) {
      await kube.replace<Lease>('Lease', options.namespace, {
        metadata: { ...metadata, resourceVersion: existing.metadata.resourceVersion },
        spec: spec(),
      });
    } else {
      await kube.create<Lease>('Lease', options.namespace, { metadata, spec: spec() });
    }
  } catch (error) {
    if (isConflict(error)) {
      throw new PreconditionError(`Another ess run took the lock ${options.namespace}/${name} at the same moment.`, {
        code: 'LOCKED',
        next: ['Re-run when it has finished'],
      });
    }
    throw error;
  }

  let released = false;
  const timer = setInterval(
    () => {
      kube
        .patch<Lease>('Lease', options.namespace, name, { spec: { renewTime: microTime(now()) } })
        .catch(() => undefined);
    },
    options.renewEveryMs ?? Math.max(1000, (ttl * 1000) / 3),
  );
  timer.unref();
  return {
    holder,
    async release() {
      if (released) return;
      released = true;
      clearInterval(timer);
      const current = await kube.get<Lease>('Lease', options.namespace, name).catch(() => undefined);
      if (current?.spec.holderIdentity !== holder) return;
      await kube.delete('Lease', options.namespace, name).catch((error: unknown) => {
        if (!(error instanceof KubeApiError && error.statusCode === 404)) throw error;
      });
    },
  };
}
