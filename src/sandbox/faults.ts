/**
 * Fault injection for the sandbox: failing API calls, cut exec streams, slow readiness and vanishing pods.
 */
import { resourceForKind } from './resources.js';
import type { ApiFault, ExecFault, SandboxFaults, SandboxStore } from './types.js';

interface Armed<T> {
  fault: T;
  remaining: number;
}

/** The sandbox's SandboxFaults implementation. */
export class Faults implements SandboxFaults {
  private api: Armed<ApiFault>[] = [];
  private exec: Armed<ExecFault>[] = [];
  private readiness = new Map<string, number>();

  constructor(private readonly store: SandboxStore) {}

  /**
   * Arms an API fault. Unset fields match anything; an unset `subresource` also matches calls on subresources
   * (a fault on `statefulsets` + `patch` therefore also fails `kubectl scale`, which patches `statefulsets/scale`).
   */
  addApiFault(fault: ApiFault): void {
    this.api.push({ fault: { ...fault }, remaining: fault.times ?? 1 });
  }

  addExecFault(fault: ExecFault): void {
    this.exec.push({ fault: { ...fault }, remaining: fault.times ?? 1 });
  }

  delayReadiness(podPrefix: string, ms: number): void {
    this.readiness.set(podPrefix, ms);
  }

  /** Extra readiness delay for a pod: the largest delay among the matching prefixes (0 when none). */
  readinessDelay(podName: string): number {
    let ms = 0;
    for (const [prefix, delay] of this.readiness) if (podName.startsWith(prefix)) ms = Math.max(ms, delay);
    return ms;
  }

  disappearPod(namespace: string, name: string): void {
    this.store.delete(resourceForKind('Pod', 'v1'), namespace, name);
  }

  takeExecFault(podName: string, argv: string[]): ExecFault | undefined {
    const hit = this.exec.find(
      (a) =>
        a.remaining > 0 &&
        (a.fault.pod === undefined || a.fault.pod === podName) &&
        (a.fault.commandIncludes === undefined || argv.some((arg) => arg.includes(a.fault.commandIncludes as string))),
    );
    return hit ? consume(hit, this.exec, (l) => (this.exec = l)) : undefined;
  }

  takeApiFault(call: {
    verb: string;
    resource: string;
    subresource?: string;
    name?: string;
    namespace?: string;
  }): ApiFault | undefined {
    const hit = this.api.find((a) => {
      const f = a.fault;
      return (
        a.remaining > 0 &&
        (f.verb === undefined || f.verb === call.verb) &&
        (f.resource === undefined || f.resource === call.resource) &&
        (f.subresource === undefined || f.subresource === call.subresource) &&
        (f.name === undefined || f.name === call.name) &&
        (f.namespace === undefined || f.namespace === call.namespace)
      );
    });
    return hit ? consume(hit, this.api, (l) => (this.api = l)) : undefined;
  }

  clear(): void {
    this.api = [];
    this.exec = [];
    this.readiness.clear();
  }
}

function consume<T>(hit: Armed<T>, list: Armed<T>[], set: (l: Armed<T>[]) => void): T {
  hit.remaining--;
  if (hit.remaining <= 0) set(list.filter((a) => a !== hit));
  return hit.fault;
}
