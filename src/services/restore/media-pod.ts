/**
 * Where the media goes: the running pod that mounts the media volume when Synapse is up (`--only media`), or — while
 * Synapse is scaled to 0 for the database restore — a short-lived helper Pod that mounts the media PVC, runs the
 * media StatefulSet's own image (it has tar, or at least Python) as the Synapse UID, and is deleted afterwards.
 */
import { ESS_MANAGED_BY, LABELS, MEDIA_MOUNT_PATH, SYNAPSE_UID } from '../../lib/deployment/components.js';
import type { MediaInfo } from '../../lib/deployment/model.js';
import { EssError } from '../../lib/errors.js';
import type { ExecTarget, KubeClient } from '../../lib/kube/client.js';
import type { KubeObject, Pod, Workload } from '../../lib/kube/types.js';

/** The helper pod's container name. */
export const HELPER_CONTAINER = 'media';
/** How long the helper pod's `sleep` lasts: a crashed ess leaves a pod that ends by itself and releases the PVC. */
export const HELPER_LIFETIME_SECONDS = 6 * 3600;

/** Name of the helper pod of a release. */
export function helperPodName(release: string): string {
  return `${release}-ess-restore-media`;
}

/** The Pod manifest of the helper; see the module comment. */
export function helperPodManifest(options: {
  namespace: string;
  release: string;
  claimName: string;
  image: string;
}): KubeObject & { spec: Record<string, unknown> } {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: helperPodName(options.release),
      namespace: options.namespace,
      labels: { [LABELS.managedBy]: ESS_MANAGED_BY, [LABELS.name]: 'ess-restore-media' },
    },
    spec: {
      restartPolicy: 'Never',
      terminationGracePeriodSeconds: 1,
      securityContext: {
        runAsUser: SYNAPSE_UID,
        runAsGroup: SYNAPSE_UID,
        fsGroup: SYNAPSE_UID,
        runAsNonRoot: true,
      },
      containers: [
        {
          name: HELPER_CONTAINER,
          image: options.image,
          command: ['sleep', String(HELPER_LIFETIME_SECONDS)],
          volumeMounts: [{ name: 'media', mountPath: MEDIA_MOUNT_PATH }],
        },
      ],
      volumes: [{ name: 'media', persistentVolumeClaim: { claimName: options.claimName } }],
    },
  };
}

/** The image of the container that mounts the media volume, from its StatefulSet. */
export async function mediaImage(kube: KubeClient, namespace: string, media: MediaInfo): Promise<string | undefined> {
  const sts = await kube.get<Workload>('StatefulSet', namespace, media.statefulSet);
  return sts?.spec.template.spec.containers.find((c) => c.name === media.container)?.image;
}

function isRunning(pod: Pod | undefined): boolean {
  return pod?.status?.phase === 'Running' && !pod.metadata.deletionTimestamp;
}

async function waitUntil(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    signal?.throwIfAborted();
    if (Date.now() > deadline) throw new EssError(`Timed out waiting for ${what}.`, { code: 'HELPER_POD_TIMEOUT' });
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** A running helper pod; {@link remove} it in `finally`. */
export interface HelperPod {
  target: ExecTarget;
  name: string;
  /** Deletes the pod and waits until it is gone (the PVC is then free for Synapse). Safe to call twice. */
  remove(): Promise<void>;
}

/** Creates the helper pod (replacing a leftover one) and waits until it runs. */
export async function startHelperPod(
  kube: KubeClient,
  options: {
    namespace: string;
    release: string;
    claimName: string;
    image: string;
    timeoutMs?: number;
    signal?: AbortSignal;
  },
): Promise<HelperPod> {
  const { namespace } = options;
  const name = helperPodName(options.release);
  const timeoutMs = options.timeoutMs ?? 5 * 60_000;
  const gone = () =>
    waitUntil(`pod ${name} to go away`, async () => !(await kube.get('Pod', namespace, name)), timeoutMs);
  if (await kube.get('Pod', namespace, name)) {
    await kube.delete('Pod', namespace, name);
    await gone();
  }
  await kube.create('Pod', namespace, helperPodManifest(options));
  let removed = false;
  const remove = async () => {
    if (removed) return;
    removed = true;
    await kube.delete('Pod', namespace, name);
    await gone();
  };
  try {
    await waitUntil(
      `the helper pod ${name} to run`,
      async () => {
        const pod = await kube.get<Pod>('Pod', namespace, name);
        if (pod?.status?.phase === 'Failed' || pod?.status?.phase === 'Succeeded') {
          throw new EssError(`The helper pod ${name} stopped (${pod.status.phase}) before it was used.`, {
            code: 'HELPER_POD_FAILED',
            next: [`kubectl describe pod -n ${namespace} ${name}`],
          });
        }
        return isRunning(pod);
      },
      timeoutMs,
      options.signal,
    );
  } catch (error) {
    await remove().catch(() => undefined);
    throw error;
  }
  return { target: { namespace, pod: name, container: HELPER_CONTAINER }, name, remove };
}
