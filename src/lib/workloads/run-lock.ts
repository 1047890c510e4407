import { hostname } from 'node:os';
import { names } from '../deployment/components.js';
import type { KubeClient } from '../kube/client.js';
import type { Lease } from '../kube/types.js';
import { acquireLock, activeHolder, type HeldLock, type LockOptions } from '../lock.js';
import type { Reporter } from '../output/log.js';

/** True when `holder` (host:pid) names a process on this host that no longer exists. */
export function isDeadLocalHolder(holder: string, host = hostname()): boolean {
  const at = holder.lastIndexOf(':');
  if (at <= 0 || holder.slice(0, at) !== host) return false;
  const pid = Number(holder.slice(at + 1));
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/**
 * {@link acquireLock}, except that a lock left by a process of THIS host that has died (e.g. a backup killed with
 * SIGKILL) is taken over at once with a warning instead of waiting for its TTL. A holder on another host is only
 * broken by `force` (--force-unlock).
 */
export async function acquireRunLock(kube: KubeClient, options: LockOptions, reporter: Reporter): Promise<HeldLock> {
  if (!options.force) {
    const lease = await kube.get<Lease>('Lease', options.namespace, names.essLock(options.release));
    const active = activeHolder(lease, options.now?.() ?? new Date());
    if (active && isDeadLocalHolder(active.holder)) {
      reporter.warn(`Taking over the ess lock from ${active.holder}: that process has exited.`);
      return acquireLock(kube, { ...options, force: true });
    }
  }
  return acquireLock(kube, options);
}
