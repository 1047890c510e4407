/**
 * Step 4 of the import: the old server's identity into the cluster. By default a Secret of ess's own plus the Helm
 * values that point the chart at it; with `--update-generated-secret` the keys go into `<release>-generated`
 * instead, following the init-secrets rules (ess-deployment.md §5).
 */
import { INIT_SECRETS_MANAGED_BY, LABELS, names } from '../../lib/deployment/components.js';
import { PreconditionError } from '../../lib/errors.js';
import { isNotFound, type KubeClient } from '../../lib/kube/client.js';
import type { Secret } from '../../lib/kube/types.js';
import { isRotatedByInitSecrets } from '../../lib/migrate/signing-key.js';
import type { ImportIdentity } from './import-source.js';

/** Name of the Secret ess writes the imported identity into (default mode). */
export function identitySecretName(release: string): string {
  return `${release}-imported-synapse-identity`;
}

/** Keys of that Secret. */
export const IDENTITY_KEYS = {
  signingKey: 'SIGNING_KEY',
  macaroon: 'MACAROON',
  registrationSharedSecret: 'REGISTRATION_SHARED_SECRET',
  /** A Synapse config fragment `form_secret: …`, for `synapse.additional`. */
  formSecretConfig: 'FORM_SECRET_CONFIG',
} as const;

/** Keys of `<release>-generated` that the init-secrets job fills for Synapse. */
export const GENERATED_KEYS = {
  signingKey: 'SYNAPSE_SIGNING_KEY',
  macaroon: 'SYNAPSE_MACAROON',
  registrationSharedSecret: 'SYNAPSE_REGISTRATION_SHARED_SECRET',
} as const;

export interface IdentityPlan {
  mode: 'own-secret' | 'generated-secret';
  secret: string;
  /** Secret keys that will be written (never their values). */
  keys: string[];
  /** The Helm values to add (own-secret mode), or undefined. */
  valuesFragment?: string;
  warnings: string[];
}

function data(identity: ImportIdentity, mode: IdentityPlan['mode']): Record<string, string> {
  const out: Record<string, string> = {};
  const k = mode === 'own-secret' ? IDENTITY_KEYS : GENERATED_KEYS;
  if (identity.signingKey) out[k.signingKey] = `${identity.signingKey.line}\n`;
  if (identity.secrets.macaroonSecretKey) out[k.macaroon] = identity.secrets.macaroonSecretKey;
  if (identity.secrets.registrationSharedSecret)
    out[k.registrationSharedSecret] = identity.secrets.registrationSharedSecret;
  if (mode === 'own-secret' && identity.secrets.formSecret) {
    out[IDENTITY_KEYS.formSecretConfig] = `form_secret: ${JSON.stringify(identity.secrets.formSecret)}\n`;
  }
  return out;
}

function valuesFragment(secret: string, keys: string[]): string {
  const ref = (key: string) => [`    secret: ${secret}`, `    secretKey: ${key}`];
  const lines = ['synapse:'];
  if (keys.includes(IDENTITY_KEYS.signingKey)) lines.push('  signingKey:', ...ref(IDENTITY_KEYS.signingKey));
  if (keys.includes(IDENTITY_KEYS.macaroon)) lines.push('  macaroon:', ...ref(IDENTITY_KEYS.macaroon));
  if (keys.includes(IDENTITY_KEYS.registrationSharedSecret)) {
    lines.push('  registrationSharedSecret:', ...ref(IDENTITY_KEYS.registrationSharedSecret));
  }
  if (keys.includes(IDENTITY_KEYS.formSecretConfig)) {
    lines.push(
      '  additional:',
      '    imported-form-secret:',
      `      configSecret: ${secret}`,
      `      configSecretKey: ${IDENTITY_KEYS.formSecretConfig}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

/** Decides what will be written where, and checks the target Secret is usable (preflight; changes nothing). */
export async function planIdentity(
  kube: KubeClient,
  options: { namespace: string; release: string; updateGeneratedSecret: boolean },
  identity: ImportIdentity,
): Promise<IdentityPlan | undefined> {
  const mode: IdentityPlan['mode'] = options.updateGeneratedSecret ? 'generated-secret' : 'own-secret';
  const keys = Object.keys(data(identity, mode));
  const warnings: string[] = [];
  if (keys.length === 0) return undefined;
  if (mode === 'generated-secret') {
    const secret = names.generatedSecret(options.release);
    const existing = await kube.get<Secret>('Secret', options.namespace, secret);
    if (!existing) {
      throw new PreconditionError(
        `--update-generated-secret: the Secret ${options.namespace}/${secret} does not exist.`,
        {
          code: 'GENERATED_SECRET_MISSING',
          next: ['Run without --update-generated-secret: ess writes its own Secret and prints the Helm values to use'],
        },
      );
    }
    if (existing.metadata.labels?.[LABELS.managedBy] !== INIT_SECRETS_MANAGED_BY) {
      throw new PreconditionError(
        `--update-generated-secret: ${secret} lacks the label ${LABELS.managedBy}=${INIT_SECRETS_MANAGED_BY}; the init-secrets job would refuse to manage it.`,
        { code: 'GENERATED_SECRET_UNMANAGED', next: ['Run without --update-generated-secret'] },
      );
    }
    if (identity.signingKey && isRotatedByInitSecrets(identity.signingKey)) {
      warnings.push(
        `The signing key's id is "0" (ed25519 0 …): since chart 25.12.2 the init-secrets job replaces such a key in ${secret} on the next helm upgrade (CVE-2026-24044) and revokes the old one; remote servers will then see a new key. Use the default mode (own Secret) to keep it, or accept the rotation.`,
      );
    }
    return { mode, secret, keys, warnings };
  }
  const secret = identitySecretName(options.release);
  if (identity.signingKey && isRotatedByInitSecrets(identity.signingKey)) {
    warnings.push(
      `The signing key's id is "0" (ed25519 0 …), the kind chart 25.12.2+ rotates in its generated Secret (CVE-2026-24044). It is kept as-is in ${secret}; plan a key rotation.`,
    );
  }
  return { mode, secret, keys, valuesFragment: valuesFragment(secret, keys), warnings };
}

/** Writes the planned identity. Values are base64 in the API; labels of the generated Secret are left untouched. */
export async function writeIdentity(
  kube: KubeClient,
  options: { namespace: string; release: string },
  plan: IdentityPlan,
  identity: ImportIdentity,
): Promise<void> {
  const encoded = Object.fromEntries(
    Object.entries(data(identity, plan.mode)).map(([k, v]) => [k, Buffer.from(v, 'utf8').toString('base64')]),
  );
  if (plan.mode === 'generated-secret') {
    // A merge patch of data only: the init-secrets labels stay, other keys stay.
    await kube.patch('Secret', options.namespace, plan.secret, { data: encoded }, 'merge');
    return;
  }
  const body: Secret = {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: {
      name: plan.secret,
      namespace: options.namespace,
      labels: { [LABELS.managedBy]: 'ess' },
      annotations: { 'ess.element.io/written-by': 'ess migrate import' },
    },
    data: encoded,
  };
  const existing = await kube.get<Secret>('Secret', options.namespace, plan.secret).catch((error: unknown) => {
    if (isNotFound(error)) return undefined;
    throw error;
  });
  if (existing) {
    await kube.replace<Secret>('Secret', options.namespace, {
      ...body,
      metadata: { ...body.metadata, resourceVersion: existing.metadata.resourceVersion },
    });
  } else {
    await kube.create<Secret>('Secret', options.namespace, body);
  }
}
