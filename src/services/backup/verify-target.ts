/**
 * Where `ess backup verify --restore-test` restores: the cluster's bundled Postgres pod (found by discovery), or a
 * server given by URL. Also reads the decryption keys the verify command was given.
 */
import type { ArchiveKeys } from '../../lib/archive/transfer.js';
import { readIdentityFile, readPassphraseFile } from '../../lib/crypto/keys.js';
import { discoverDeployment } from '../../lib/deployment/discover.js';
import { PreconditionError } from '../../lib/errors.js';
import type { KubeClient } from '../../lib/kube/client.js';
import type { Reporter } from '../../lib/output/log.js';
import { podThrowawayServer, type ThrowawayServer, urlThrowawayServer } from '../../lib/postgres/throwaway.js';

/** Where to run the restore test. */
export type RestoreTestTarget =
  | { kind: 'cluster'; kube: () => Promise<KubeClient>; namespace: string; release: string }
  | { kind: 'url'; url: string };

/** Opens the throwaway-database server for a restore test. Throws PreconditionError when there is none. */
export async function openRestoreTestServer(target: RestoreTestTarget): Promise<ThrowawayServer> {
  if (target.kind === 'url') return urlThrowawayServer(target.url);
  const kube = await target.kube();
  const deployment = await discoverDeployment(kube, { namespace: target.namespace, release: target.release });
  const pg = deployment.postgres;
  if (pg?.mode !== 'bundled') {
    throw new PreconditionError(
      `The deployment in namespace ${target.namespace} has no bundled Postgres to run the restore test in.`,
      {
        code: 'RESTORE_TEST_NO_POSTGRES',
        next: ['Pass --restore-test-url postgres://USER:PASSWORD@HOST:PORT/postgres (a local pg_restore is used)'],
      },
    );
  }
  return podThrowawayServer(kube, {
    namespace: target.namespace,
    pod: pg.pod,
    container: pg.container,
    superuser: pg.superuser,
  });
}

/** Reads --identity files and a --passphrase-file into archive keys (undefined when none were given). */
export async function readArchiveKeys(
  options: { identityFiles?: string[]; passphraseFile?: string },
  reporter: Reporter,
): Promise<ArchiveKeys | undefined> {
  const identities: string[] = [];
  for (const file of options.identityFiles ?? []) identities.push(...(await readIdentityFile(file)));
  const passphrases: string[] = [];
  if (options.passphraseFile) {
    const { passphrase, looselyProtected } = await readPassphraseFile(options.passphraseFile);
    if (looselyProtected) reporter.warn(`${options.passphraseFile} is readable by other users (chmod 600 it).`);
    passphrases.push(passphrase);
  }
  return identities.length + passphrases.length > 0 ? { identities, passphrases } : undefined;
}
