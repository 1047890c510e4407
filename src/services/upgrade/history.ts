import { PreconditionError } from '../../lib/errors.js';
import { decodeRevision, type RevisionSummary } from '../../lib/helm/inspect.js';
import { listReleaseNames, listReleaseRecords } from '../../lib/helm/release.js';
import type { KubeClient } from '../../lib/kube/client.js';
import type { Reporter } from '../../lib/output/log.js';

/** Which release's history to read. */
export interface HistoryOptions {
  namespace: string;
  release: string;
  /** Show at most this many revisions (the newest ones), like `helm history --max`. */
  max: number;
}

/** `ess upgrade history` result (also its --json output). */
export interface HistoryResult {
  namespace: string;
  release: string;
  /** Oldest first, like `helm history`. */
  revisions: RevisionSummary[];
  warnings: string[];
}

/** Throws the "no such release" error, suggesting the releases that do exist in the namespace. */
export async function releaseNotFound(kube: KubeClient, namespace: string, release: string): Promise<never> {
  const others = await listReleaseNames(kube, namespace).catch(() => []);
  throw new PreconditionError(`No Helm release "${release}" in namespace ${namespace}.`, {
    code: 'RELEASE_NOT_FOUND',
    next: [
      others.length
        ? `Releases in ${namespace}: ${others.join(', ')} (pass --release NAME)`
        : `No Helm releases in ${namespace}: check the namespace (-n/--namespace) and the context (--context)`,
    ],
  });
}

/** Reads the Helm history of a release from its release Secrets (no helm binary needed). */
export async function getHistory(
  kube: KubeClient,
  options: HistoryOptions,
  reporter: Reporter,
): Promise<HistoryResult> {
  const records = await listReleaseRecords(kube, options.namespace, options.release);
  if (records.length === 0) return releaseNotFound(kube, options.namespace, options.release);
  const shown = records.slice(-Math.max(1, options.max));
  const warnings: string[] = [];
  const revisions = shown.map((record) => {
    const { summary } = decodeRevision(record);
    if (summary.decodeError) {
      warnings.push(`Revision ${summary.revision}: could not decode ${record.secretName}: ${summary.decodeError}`);
    } else if (summary.labelStatus !== summary.status) {
      warnings.push(
        `Revision ${summary.revision}: the Secret label says "${summary.labelStatus}" but the release says ` +
          `"${summary.status}" (Helm goes by the release; was only the label edited?).`,
      );
    }
    return summary;
  });
  reporter.debug(`read ${records.length} release Secrets, showing ${shown.length}`);
  return { namespace: options.namespace, release: options.release, revisions, warnings };
}
