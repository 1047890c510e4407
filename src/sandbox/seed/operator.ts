/**
 * The older operator-based ESS ("ESS Classic", ess-deployment.md §12): namespaces `element-onprem` (workloads)
 * and `operator-onprem` (Deployment `element-operator-controller-manager`), the `ElementDeployment`
 * `first-element-deployment` with its per-component custom resources, and the workloads the operator made from
 * them, owned (ownerReferences) by their custom resource.
 *
 * Choices where the sources are UNCERTAIN:
 * - CR API group/version `matrix.element.io/v1alpha1` (the sandbox's resource table); CRDs are seeded so
 *   `kubectl api-resources` and `kubectl get crd` show them.
 * - `.status.dependentCRs` maps `Kind/name` (the runbook's listing format) to the CR's apiVersion.
 * - No updater Deployment is seeded (its namespace is unknown); the sandbox controller plays the updater.
 * - The installer-managed PostgreSQL `synapse-postgres` (pod `synapse-postgres-0`) has NO owner: deleting the
 *   Synapse CR (the runbook's "stop Synapse") must leave the database running, as the migration runbook relies on.
 *   Its data lives in PVC `synapse-postgres-data` mounted at /var/lib/postgresql/data; PGDATA is
 *   /var/lib/postgresql/data/pgdata. Its image's bootstrap superuser is POSTGRES_USER=synapse_user.
 * - The media PVC `first-element-deployment-synapse-media` has no owner either (deleting a CR keeps data).
 * - Labels on operator-made objects: `app.kubernetes.io/managed-by=element-operator`, `part-of=matrix-stack`,
 *   component/name/instance in the chart's style; the operator Deployment is labelled `control-plane=controller-manager`.
 * - Secret `synapse` (installer secrets.yml) holds keys macaroon, registrationSharedSecret, signingKey,
 *   postgresPassword; Secret `global` holds genericSharedSecret.
 */
import type { KubeObject, SeedOptions } from '../types.js';
import {
  DAY_MS,
  databasePasswords,
  deriveBytes,
  deriveString,
  IMAGES,
  imageString,
  isoSeconds,
  stableUid,
  toSecretData,
} from './common.js';
import { bindVolume } from './objects.js';

/** Name of the ElementDeployment. */
export const ELEMENT_DEPLOYMENT = 'first-element-deployment';
/** Namespace of the operator Deployment. */
export const OPERATOR_NAMESPACE = 'operator-onprem';
/** API version of the Element custom resources. */
export const ELEMENT_API_VERSION = 'matrix.element.io/v1alpha1';

/** The `.status.dependentCRs` keys of the ElementDeployment (`Kind/name`), as the runbook lists them. */
export const DEPENDENT_CRS: readonly string[] = [
  `ElementWeb/${ELEMENT_DEPLOYMENT}`,
  `Hookshot/${ELEMENT_DEPLOYMENT}`,
  `Integrator/${ELEMENT_DEPLOYMENT}`,
  `MatrixAuthenticationService/${ELEMENT_DEPLOYMENT}`,
  `Synapse/${ELEMENT_DEPLOYMENT}`,
  `SynapseAdminUI/${ELEMENT_DEPLOYMENT}`,
  `SynapseUser/${ELEMENT_DEPLOYMENT}-adminuser-donotdelete`,
  `SynapseUser/${ELEMENT_DEPLOYMENT}-telemetry-donotdelete`,
  `WellKnownDelegation/${ELEMENT_DEPLOYMENT}`,
];

const CR_KINDS = [
  'ElementDeployment',
  'ElementWeb',
  'Hookshot',
  'Integrator',
  'MatrixAuthenticationService',
  'Synapse',
  'SynapseAdminUI',
  'SynapseUser',
  'WellKnownDelegation',
];

function crd(kind: string, createdAt: string): KubeObject {
  const plural = `${kind.toLowerCase()}s`;
  const name = `${plural}.matrix.element.io`;
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name, uid: stableUid('CustomResourceDefinition', name), creationTimestamp: createdAt, generation: 1 },
    spec: {
      group: 'matrix.element.io',
      names: { kind, listKind: `${kind}List`, plural, singular: kind.toLowerCase() },
      scope: 'Namespaced',
      versions: [
        {
          name: 'v1alpha1',
          served: true,
          storage: true,
          schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } },
          subresources: { status: {} },
        },
      ],
    },
    status: {
      acceptedNames: { kind, listKind: `${kind}List`, plural, singular: kind.toLowerCase() },
      storedVersions: ['v1alpha1'],
      conditions: [
        { type: 'Established', status: 'True', reason: 'InitialNamesAccepted', lastTransitionTime: createdAt },
      ],
    },
  };
}

function crSpec(kind: string, opts: SeedOptions): Record<string, unknown> {
  switch (kind) {
    case 'Synapse':
      return {
        config: {
          maxMauUsers: 500,
          media: { volume: { size: '10Gi' } },
          postgresql: {
            host: `synapse-postgres.${opts.namespace}.svc.cluster.local`,
            database: 'synapse',
            user: 'synapse_user',
            passwordSecretKey: 'postgresPassword',
          },
        },
        secretName: 'synapse',
      };
    case 'SynapseUser':
      return { config: { admin: true } };
    default:
      return { config: {} };
  }
}

/** Every object of the operator flavour. */
export function operatorObjects(opts: SeedOptions): KubeObject[] {
  const NS = opts.namespace;
  const installed = opts.nowMs - 120 * DAY_MS;
  const created = isoSeconds(installed);
  const out: KubeObject[] = [];
  for (const ns of [NS, OPERATOR_NAMESPACE]) {
    out.push({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: {
        name: ns,
        uid: stableUid('Namespace', ns),
        creationTimestamp: created,
        labels: { 'kubernetes.io/metadata.name': ns },
      },
      spec: { finalizers: ['kubernetes'] },
      status: { phase: 'Active' },
    });
    out.push({
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      metadata: {
        name: 'default',
        namespace: ns,
        uid: stableUid(ns, 'ServiceAccount', 'default'),
        creationTimestamp: created,
      },
    });
  }
  for (const k of CR_KINDS) out.push(crd(k, created));

  // The operator.
  const opLabels = {
    'app.kubernetes.io/name': 'element-operator',
    'app.kubernetes.io/managed-by': 'Helm',
    'control-plane': 'controller-manager',
  };
  out.push({
    apiVersion: 'v1',
    kind: 'ServiceAccount',
    metadata: {
      name: 'element-operator-controller-manager',
      namespace: OPERATOR_NAMESPACE,
      uid: stableUid(OPERATOR_NAMESPACE, 'ServiceAccount', 'element-operator-controller-manager'),
      creationTimestamp: created,
      labels: opLabels,
    },
  });
  out.push({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: {
      name: 'element-operator-controller-manager',
      namespace: OPERATOR_NAMESPACE,
      uid: stableUid(OPERATOR_NAMESPACE, 'Deployment', 'element-operator-controller-manager'),
      creationTimestamp: created,
      generation: 1,
      labels: opLabels,
    },
    spec: {
      replicas: 1,
      selector: { matchLabels: { 'control-plane': 'controller-manager' } },
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: '25%', maxUnavailable: '25%' } },
      revisionHistoryLimit: 10,
      progressDeadlineSeconds: 600,
      template: {
        metadata: { labels: { 'control-plane': 'controller-manager', 'app.kubernetes.io/name': 'element-operator' } },
        spec: {
          serviceAccountName: 'element-operator-controller-manager',
          restartPolicy: 'Always',
          dnsPolicy: 'ClusterFirst',
          schedulerName: 'default-scheduler',
          terminationGracePeriodSeconds: 10,
          securityContext: { runAsNonRoot: true },
          containers: [
            {
              name: 'manager',
              image: 'registry.element.io/element-operator:2.24.0',
              imagePullPolicy: 'IfNotPresent',
              command: ['/manager'],
              args: ['--leader-elect'],
              resources: { limits: { memory: '256Mi' }, requests: { cpu: '10m', memory: '64Mi' } },
            },
          ],
        },
      },
    },
  });

  // Secrets written by the installer.
  const seed = `ess-sandbox:${NS}:operator`;
  const pw = databasePasswords(opts);
  out.push({
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: { name: 'synapse', namespace: NS, uid: stableUid(NS, 'Secret', 'synapse'), creationTimestamp: created },
    data: toSecretData({
      macaroon: deriveString(seed, 'macaroon', 32),
      postgresPassword: pw.synapse,
      registrationSharedSecret: deriveString(seed, 'registrationSharedSecret', 32),
      signingKey: `ed25519 0 ${deriveBytes(seed, 'signingKey', 32).toString('base64').replace(/=+$/, '')}`,
    }),
  });
  out.push({
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: { name: 'global', namespace: NS, uid: stableUid(NS, 'Secret', 'global'), creationTimestamp: created },
    data: toSecretData({ genericSharedSecret: deriveString(seed, 'genericSharedSecret', 32) }),
  });

  // The ElementDeployment and its component CRs.
  const edUid = stableUid(NS, 'ElementDeployment', ELEMENT_DEPLOYMENT);
  const dependent: Record<string, string> = {};
  for (const key of DEPENDENT_CRS) dependent[key] = ELEMENT_API_VERSION;
  out.push({
    apiVersion: ELEMENT_API_VERSION,
    kind: 'ElementDeployment',
    metadata: { name: ELEMENT_DEPLOYMENT, namespace: NS, uid: edUid, creationTimestamp: created, generation: 1 },
    spec: {
      global: {
        k8s: { ingresses: { ingressClassName: 'public' }, storage: { storageClassName: 'local-path' } },
        config: {
          domainName: opts.serverName,
          genericSharedSecretSecretKey: 'genericSharedSecret',
          supportDomain: opts.serverName,
        },
        secretName: 'global',
      },
      components: {
        elementWeb: { k8s: { ingress: { fqdn: `chat.${opts.serverName}` } } },
        hookshot: { k8s: { ingress: { fqdn: `hookshot.${opts.serverName}` } } },
        integrator: { k8s: { ingress: { fqdn: `integrator.${opts.serverName}` } } },
        matrixAuthenticationService: { k8s: { ingress: { fqdn: `account.${opts.serverName}` } } },
        synapse: {
          k8s: { ingress: { fqdn: `matrix.${opts.serverName}` } },
          config: { maxMauUsers: 500 },
          secretName: 'synapse',
        },
        synapseAdmin: { k8s: { ingress: { fqdn: `admin.${opts.serverName}` } } },
        wellKnownDelegation: { k8s: { ingress: { fqdn: opts.serverName } } },
      },
    },
    status: {
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'Reconciled',
          lastTransitionTime: created,
          message: 'All components are ready',
        },
      ],
      dependentCRs: dependent,
      observedGeneration: 1,
    },
  });
  const crUids: Record<string, string> = {};
  for (const key of DEPENDENT_CRS) {
    const [kind, name] = key.split('/');
    const uid = stableUid(NS, kind, name);
    crUids[key] = uid;
    out.push({
      apiVersion: ELEMENT_API_VERSION,
      kind,
      metadata: {
        name,
        namespace: NS,
        uid,
        creationTimestamp: created,
        generation: 1,
        labels: { 'app.kubernetes.io/managed-by': 'element-updater', 'app.kubernetes.io/part-of': 'matrix-stack' },
        ownerReferences: [
          {
            apiVersion: ELEMENT_API_VERSION,
            kind: 'ElementDeployment',
            name: ELEMENT_DEPLOYMENT,
            uid: edUid,
            controller: true,
            blockOwnerDeletion: true,
          },
        ],
      },
      spec: crSpec(kind, opts),
      status: {
        conditions: [{ type: 'Ready', status: 'True', reason: 'Reconciled', lastTransitionTime: created }],
        observedGeneration: 1,
      },
    });
  }
  const owner = (kind: string) => [
    {
      apiVersion: ELEMENT_API_VERSION,
      kind,
      name: ELEMENT_DEPLOYMENT,
      uid: crUids[`${kind}/${ELEMENT_DEPLOYMENT}`],
      controller: true,
      blockOwnerDeletion: true,
    },
  ];
  const labels = (component: string, name: string, instance: string, version: string) => ({
    'app.kubernetes.io/component': component,
    'app.kubernetes.io/instance': instance,
    'app.kubernetes.io/managed-by': 'element-operator',
    'app.kubernetes.io/name': name,
    'app.kubernetes.io/part-of': 'matrix-stack',
    'app.kubernetes.io/version': version,
  });

  // PostgreSQL (installer-managed, no owner).
  const pgL = labels('matrix-stack-db', 'postgres', 'synapse-postgres', IMAGES.postgres.tag);
  const pgPvc: KubeObject = {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: {
      name: 'synapse-postgres-data',
      namespace: NS,
      uid: stableUid(NS, 'PersistentVolumeClaim', 'synapse-postgres-data'),
      creationTimestamp: created,
      labels: pgL,
    },
    spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '20Gi' } }, volumeMode: 'Filesystem' },
  };
  out.push(pgPvc, bindVolume(pgPvc, 20, installed));
  out.push({
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: {
      name: 'synapse-postgres',
      namespace: NS,
      uid: stableUid(NS, 'StatefulSet', 'synapse-postgres'),
      creationTimestamp: created,
      generation: 1,
      labels: pgL,
    },
    spec: {
      replicas: 1,
      selector: { matchLabels: { 'app.kubernetes.io/instance': 'synapse-postgres' } },
      serviceName: 'synapse-postgres',
      podManagementPolicy: 'OrderedReady',
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { partition: 0 } },
      revisionHistoryLimit: 10,
      persistentVolumeClaimRetentionPolicy: { whenDeleted: 'Retain', whenScaled: 'Retain' },
      template: {
        metadata: { labels: pgL },
        spec: {
          restartPolicy: 'Always',
          dnsPolicy: 'ClusterFirst',
          schedulerName: 'default-scheduler',
          terminationGracePeriodSeconds: 30,
          securityContext: { fsGroup: 999, runAsUser: 999, runAsGroup: 999 },
          containers: [
            {
              name: 'postgres',
              image: imageString(IMAGES.postgres),
              imagePullPolicy: 'IfNotPresent',
              env: [
                { name: 'POSTGRES_USER', value: 'synapse_user' },
                { name: 'POSTGRES_DB', value: 'synapse' },
                {
                  name: 'POSTGRES_PASSWORD',
                  valueFrom: { secretKeyRef: { name: 'synapse', key: 'postgresPassword' } },
                },
                { name: 'POSTGRES_INITDB_ARGS', value: '--encoding=UTF8 --locale=C' },
                { name: 'PGDATA', value: '/var/lib/postgresql/data/pgdata' },
              ],
              ports: [{ containerPort: 5432, name: 'postgres', protocol: 'TCP' }],
              readinessProbe: {
                exec: { command: ['pg_isready', '-U', 'synapse_user', '-d', 'synapse'] },
                periodSeconds: 10,
              },
              volumeMounts: [{ name: 'data', mountPath: '/var/lib/postgresql/data' }],
            },
          ],
          volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'synapse-postgres-data' } }],
        },
      },
    },
  });
  out.push({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name: 'synapse-postgres',
      namespace: NS,
      uid: stableUid(NS, 'Service', 'synapse-postgres'),
      creationTimestamp: created,
      labels: pgL,
    },
    spec: {
      type: 'ClusterIP',
      clusterIP: 'None',
      clusterIPs: ['None'],
      ports: [{ name: 'postgres', port: 5432, protocol: 'TCP', targetPort: 5432 }],
      selector: { 'app.kubernetes.io/instance': 'synapse-postgres' },
      sessionAffinity: 'None',
    },
  });

  // Synapse (owned by the Synapse CR), media PVC kept out of garbage collection.
  const synName = `${ELEMENT_DEPLOYMENT}-synapse-main`;
  const synL = {
    ...labels('matrix-server', 'synapse-main', synName, IMAGES.synapse.tag),
    'k8s.element.io/crkind': 'Synapse',
  };
  const mediaPvc: KubeObject = {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: {
      name: `${ELEMENT_DEPLOYMENT}-synapse-media`,
      namespace: NS,
      uid: stableUid(NS, 'PersistentVolumeClaim', `${ELEMENT_DEPLOYMENT}-synapse-media`),
      creationTimestamp: created,
      labels: labels('matrix-server', 'synapse', `${ELEMENT_DEPLOYMENT}-synapse`, IMAGES.synapse.tag),
    },
    spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '10Gi' } }, volumeMode: 'Filesystem' },
  };
  out.push(mediaPvc, bindVolume(mediaPvc, 10, installed));
  out.push({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      name: `${ELEMENT_DEPLOYMENT}-synapse`,
      namespace: NS,
      uid: stableUid(NS, 'ConfigMap', `${ELEMENT_DEPLOYMENT}-synapse`),
      creationTimestamp: created,
      labels: synL,
      ownerReferences: owner('Synapse'),
    },
    data: {
      'homeserver.yaml': [
        `server_name: ${opts.serverName}`,
        'public_baseurl: https://matrix.' + opts.serverName + '/',
        'media_store_path: /media/media_store',
        'report_stats: false',
        'database:',
        '  name: psycopg2',
        '  args:',
        '    user: synapse_user',
        '    database: synapse',
        `    host: synapse-postgres.${NS}.svc.cluster.local`,
        '    port: 5432',
        '',
      ].join('\n'),
    },
  });
  out.push({
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: {
      name: synName,
      namespace: NS,
      uid: stableUid(NS, 'StatefulSet', synName),
      creationTimestamp: created,
      generation: 1,
      labels: synL,
      ownerReferences: owner('Synapse'),
    },
    spec: {
      replicas: 1,
      selector: { matchLabels: { 'app.kubernetes.io/instance': synName } },
      serviceName: synName,
      podManagementPolicy: 'Parallel',
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { partition: 0 } },
      revisionHistoryLimit: 10,
      persistentVolumeClaimRetentionPolicy: { whenDeleted: 'Retain', whenScaled: 'Retain' },
      template: {
        metadata: { labels: synL },
        spec: {
          restartPolicy: 'Always',
          dnsPolicy: 'ClusterFirst',
          schedulerName: 'default-scheduler',
          terminationGracePeriodSeconds: 30,
          securityContext: { fsGroup: 10991, runAsUser: 10991, runAsGroup: 10991 },
          containers: [
            {
              name: 'synapse',
              image: imageString(IMAGES.synapse),
              imagePullPolicy: 'IfNotPresent',
              command: ['python3', '-m', 'synapse.app.homeserver', '-c', '/config/homeserver.yaml'],
              ports: [
                { containerPort: 8008, name: 'synapse-http', protocol: 'TCP' },
                { containerPort: 9093, name: 'synapse-repl', protocol: 'TCP' },
              ],
              volumeMounts: [
                { name: 'config', mountPath: '/config', readOnly: true },
                { name: 'media', mountPath: '/media' },
                { name: 'tmp', mountPath: '/tmp' },
              ],
            },
          ],
          volumes: [
            { name: 'config', configMap: { defaultMode: 420, name: `${ELEMENT_DEPLOYMENT}-synapse` } },
            { name: 'media', persistentVolumeClaim: { claimName: `${ELEMENT_DEPLOYMENT}-synapse-media` } },
            { name: 'tmp', emptyDir: {} },
          ],
        },
      },
    },
  });

  const deployment = (
    kind: string,
    suffix: string,
    component: string,
    name: string,
    image: string,
    version: string,
    port: number,
  ) => {
    const n = `${ELEMENT_DEPLOYMENT}-${suffix}`;
    const l = { ...labels(component, name, n, version), 'k8s.element.io/crkind': kind };
    out.push({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: {
        name: n,
        namespace: NS,
        uid: stableUid(NS, 'Deployment', n),
        creationTimestamp: created,
        generation: 1,
        labels: l,
        ownerReferences: owner(kind),
      },
      spec: {
        replicas: 1,
        selector: { matchLabels: { 'app.kubernetes.io/instance': n } },
        strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: '25%', maxUnavailable: '25%' } },
        revisionHistoryLimit: 10,
        progressDeadlineSeconds: 600,
        template: {
          metadata: { labels: l },
          spec: {
            restartPolicy: 'Always',
            dnsPolicy: 'ClusterFirst',
            schedulerName: 'default-scheduler',
            terminationGracePeriodSeconds: 30,
            containers: [
              {
                name,
                image,
                imagePullPolicy: 'IfNotPresent',
                ports: [{ containerPort: port, name: 'http', protocol: 'TCP' }],
              },
            ],
          },
        },
      },
    });
  };
  deployment(
    'ElementWeb',
    'element-web',
    'matrix-client',
    'element-web',
    imageString(IMAGES.elementWeb),
    IMAGES.elementWeb.tag,
    8080,
  );
  deployment(
    'MatrixAuthenticationService',
    'matrix-authentication-service',
    'matrix-authentication',
    'matrix-authentication-service',
    imageString(IMAGES.mas),
    IMAGES.mas.tag,
    8080,
  );
  deployment(
    'WellKnownDelegation',
    'well-known',
    'matrix-delegation',
    'well-known-delegation',
    imageString(IMAGES.haproxy),
    IMAGES.haproxy.tag,
    8010,
  );
  return out;
}
