/**
 * ess's own WebSocket exec client (src/lib/kube/exec-stream.ts) against the sandbox's API server: a slow stdout
 * consumer gets every byte, and waiting for it adds one 'drain' listener at a time (ws still delivers the frames it
 * had read when it was paused; one listener per frame leaked and made Node print MaxListenersExceededWarning).
 */
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KubeClient } from '../../src/lib/kube/client.js';
import { connectKube } from '../../src/lib/kube/load.js';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';

describe('exec over WebSocket (ess)', () => {
  let sandbox: Sandbox;
  let kube: KubeClient;
  beforeAll(async () => {
    sandbox = await startSandbox({ users: 5, mediaMb: 0 });
    kube = await connectKube({ kubeconfig: sandbox.kubeconfigPath });
  });
  afterAll(async () => {
    await sandbox?.stop();
  });

  it('feeds a slow consumer every byte with at most one drain listener waiting', async () => {
    const total = 40_000_000;
    const hash = createHash('sha256');
    let received = 0;
    let maxDrainListeners = 0;
    let stalls = 0;
    const slow = new Writable({
      highWaterMark: 64 * 1024,
      write(chunk: Buffer, _encoding, callback) {
        received += chunk.length;
        hash.update(chunk);
        maxDrainListeners = Math.max(maxDrainListeners, slow.listenerCount('drain'));
        if (received % (4 * 1024 * 1024) < chunk.length) {
          stalls++;
          setTimeout(callback, 20);
        } else setImmediate(callback);
      },
    });
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on('warning', onWarning);
    try {
      const result = await kube.exec(
        { namespace: sandbox.namespace, pod: 'ess-postgres-0', container: 'postgres' },
        ['head', '-c', String(total), '/dev/zero'],
        { stdout: slow },
      );
      expect(result.exitCode).toBe(0);
    } finally {
      process.off('warning', onWarning);
    }
    expect(received).toBe(total);
    expect(hash.digest('hex')).toBe(createHash('sha256').update(Buffer.alloc(total)).digest('hex'));
    expect(stalls).toBeGreaterThan(5);
    // The consumer was full many times; each time exactly one listener waited for it.
    expect(maxDrainListeners).toBe(1);
    expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
  });
});
