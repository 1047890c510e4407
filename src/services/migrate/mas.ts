/**
 * Step 6 of the import: when ESS delegates logins to MAS but the old server used Synapse's own logins, the imported
 * users exist only in Synapse's database and cannot log in until the chart's syn2mas migration copies them into
 * MAS. ess checks whether that job is enabled and says exactly what to do; it never leaves this silent.
 */

import { names } from '../../lib/deployment/components.js';
import type { Deployment } from '../../lib/deployment/model.js';
import { AUTH_MARKER_KEY, mergedValues } from '../../lib/helm/inspect.js';
import { decodeRecord, listReleaseRecords } from '../../lib/helm/release.js';
import type { KubeClient } from '../../lib/kube/client.js';
import type { ConfigMap } from '../../lib/kube/types.js';
import type { DumpFacts } from '../../lib/migrate/dump-facts.js';
import type { ImportIdentity } from './import-source.js';

export interface MasCheck {
  /** ESS runs the Matrix Authentication Service. */
  masEnabled: boolean;
  /** How the old server's users logged in. */
  oldAuth: 'synapse' | 'mas' | 'unknown';
  /** Active local users with a password hash in the dump. */
  usersWithPassword: number;
  /** matrixAuthenticationService.syn2mas.enabled in the release values. */
  syn2masEnabled?: boolean;
  /** The live MATRIX_STACK_MSC3861 deployment marker. */
  marker?: string;
  /** What the user has to do next (undefined: nothing). */
  followUp?: string;
  needsAttention: boolean;
}

function path(values: Record<string, unknown>, ...keys: string[]): unknown {
  let current: unknown = values;
  for (const key of keys) current = (current as Record<string, unknown> | undefined)?.[key];
  return current;
}

/** Works out the MAS situation (read-only). */
export async function checkMas(
  kube: KubeClient,
  deployment: Deployment,
  identity: ImportIdentity,
  facts: DumpFacts,
): Promise<MasCheck> {
  const masEnabled = deployment.workloads.some((w) => w.component === 'mas');
  const usersWithPassword = facts.users?.withPassword ?? 0;
  let oldAuth: MasCheck['oldAuth'] = 'unknown';
  if (identity.delegatedToMas) oldAuth = 'mas';
  else if (identity.passwordLogin === true || (identity.sso?.length ?? 0) > 0 || usersWithPassword > 0)
    oldAuth = 'synapse';
  const result: MasCheck = { masEnabled, oldAuth, usersWithPassword, needsAttention: false };
  if (!masEnabled) {
    if (oldAuth === 'mas') {
      result.needsAttention = true;
      result.followUp =
        'The old server delegated logins to MAS, but this ESS does not run MAS: ess does not move the old MAS database, so users cannot log in. Enable matrixAuthenticationService and import the old MAS database before opening the server.';
    }
    return result;
  }
  const [markers, records] = await Promise.all([
    kube
      .get<ConfigMap>('ConfigMap', deployment.namespace, names.markersConfigMap(deployment.release))
      .catch(() => undefined),
    listReleaseRecords(kube, deployment.namespace, deployment.release).catch(() => []),
  ]);
  result.marker = markers?.data?.[AUTH_MARKER_KEY];
  const latest = records.at(-1);
  if (latest) {
    try {
      result.syn2masEnabled =
        path(mergedValues(decodeRecord(latest)), 'matrixAuthenticationService', 'syn2mas', 'enabled') === true;
    } catch {
      result.syn2masEnabled = undefined;
    }
  }
  if (oldAuth === 'mas') {
    result.needsAttention = true;
    result.followUp =
      'The old server already delegated logins to MAS: ess imported only the Synapse database. Import the old MAS database into matrixauthenticationservice (with the old MAS secrets) before users log in.';
    return result;
  }
  if (oldAuth === 'unknown' && (facts.users?.total ?? 0) - (facts.users?.deactivated ?? 0) === 0) return result;
  if (oldAuth === 'unknown') {
    result.followUp =
      "No local user of the dump has a password and the old login setup is unknown (no bundle or --homeserver-config): if users logged in through Synapse (passwords or SSO), run the chart's syn2mas migration so that MAS knows them.";
    result.needsAttention = true;
    return result;
  }
  result.needsAttention = true;
  const who = `${usersWithPassword} user(s) with Synapse passwords${identity.sso?.length ? ` and SSO (${identity.sso.join(', ')}) logins` : ''}`;
  const markerNote =
    result.marker && result.marker !== 'legacy_auth'
      ? ` The deployment marker ${AUTH_MARKER_KEY} is "${result.marker}": the chart's pre-upgrade check only runs syn2mas from "legacy_auth", so ask Element support how to reset it for this migration.`
      : '';
  result.followUp = result.syn2masEnabled
    ? `ESS runs MAS and the old server used Synapse's own logins (${who}). The chart's syn2mas job is enabled: run helm upgrade with your values now; it copies users, passwords and sessions into MAS. Until it has run, these users cannot log in.${markerNote}`
    : `ESS runs MAS and the old server used Synapse's own logins (${who}). They cannot log in until they are migrated: set matrixAuthenticationService.syn2mas.enabled: true (see the chart's docs/syn2mas.md) and run helm upgrade.${markerNote}`;
  return result;
}
