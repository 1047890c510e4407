/**
 * Kubernetes objects of a `matrix-stack` Helm install (release R in namespace NS), modelled on the chart
 * templates described in ess-deployment.md: names, labels, selectors, pod templates, volumes, Secrets,
 * ConfigMaps, PVCs/PVs, hook Jobs and the Helm release Secrets.
 *
 * Choices where the reference marks things UNCERTAIN or leaves them open:
 * - Synapse image `oci.element.io/synapse:v1.157.1` (the chart at 26.8.x ships v1.159.0; 1.157.1 matches the
 *   schema version 94 the seeded database carries).
 * - PostgreSQL image `docker.io/postgres:15-alpine` (the chart ships 17-alpine) because the sandbox's real
 *   server is PostgreSQL 15.
 * - Storage class `local-path` with k3s-style hostPath PVs, node `ess-sandbox-node`.
 * - Secret `<R>-postgres` is NOT created: the chart renders it only when passwords are given inline in values;
 *   with the defaults every password lives in `<R>-generated`. `<R>-synapse` and
 *   `<R>-matrix-authentication-service` exist but hold no data (no inline credentials).
 * - For charts older than 25.6.0 (the stuck-release history ends at 0.12.0) worker StatefulSets, Services and
 *   pods use the long worker type names and the check-config hook Job is `<R>-synapse-check-config-hook`.
 */
import { createHash } from 'node:crypto';
import type { KubeObject, SeedOptions } from '../types.js';
import {
  chartLabels,
  compareVersions,
  generatedSecretData,
  IMAGES,
  type ImageRef,
  imageString,
  isoSeconds,
  Rng,
  stableUid,
  templateSources,
  toSecretData,
} from './common.js';

/** One rendering of the chart: the values and times that vary between revisions. */
export interface ChartRender {
  opts: SeedOptions;
  chartVersion: string;
  /** When the release was first installed (objects' creationTimestamp). */
  installedMs: number;
  /** When the hook Jobs last ran. */
  hooksMs: number;
}

/** Synapse worker types the seeded install enables (besides main). */
export function enabledWorkers(opts: SeedOptions): string[] {
  const w = ['event-persister', 'federation-sender', 'synchrotron'];
  if (opts.mediaWorker) w.push('media-repository');
  return w.sort();
}

const SHORT_WORKER_NAMES: Record<string, string> = {
  'event-persister': 'event-persist',
  'federation-inbound': 'fed-inbound',
  'federation-reader': 'fed-reader',
  'federation-sender': 'fed-sender',
  'initial-synchrotron': 'initial-sync',
  'media-repository': 'media-repo',
  'presence-writer': 'presence-write',
  'typing-persister': 'typing',
};

/** True for charts that still used the long worker names and the `-check-config-hook` Job name. */
export function usesLegacyNames(chartVersion: string): boolean {
  return compareVersions(chartVersion, '25.6.0') < 0;
}

/** The name part of a Synapse process's StatefulSet/Service (`main`, `event-persist`, …). */
export function workerTypeName(processType: string, chartVersion: string): string {
  if (usesLegacyNames(chartVersion)) return processType;
  return SHORT_WORKER_NAMES[processType] ?? processType;
}

function hasHttp(processType: string): boolean {
  return ['main', 'synchrotron', 'media-repository', 'initial-synchrotron', 'client-reader'].includes(processType);
}

function hasReplication(processType: string): boolean {
  return ['main', 'event-persister'].includes(processType);
}

function sha1(s: string): string {
  return createHash('sha1').update(s).digest('hex');
}

function secretVolumeName(secretName: string): string {
  return `secret-${createHash('sha256').update(secretName).digest('hex').slice(0, 12)}`;
}

const POD_SECURITY = {
  fsGroup: 10091,
  fsGroupChangePolicy: 'Always',
  runAsGroup: 10091,
  runAsNonRoot: true,
  runAsUser: 10091,
  seccompProfile: { type: 'RuntimeDefault' },
  supplementalGroups: [],
};

const CONTAINER_SECURITY = {
  allowPrivilegeEscalation: false,
  capabilities: { drop: ['ALL'] },
  readOnlyRootFilesystem: true,
};

function container(name: string, image: ImageRef, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name,
    image: imageString(image),
    imagePullPolicy: 'Always',
    securityContext: CONTAINER_SECURITY,
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
    ...extra,
  };
}

function podSpec(serviceAccountName: string, extra: Record<string, unknown>, restartPolicy = 'Always') {
  return {
    automountServiceAccountToken: false,
    serviceAccountName,
    securityContext: POD_SECURITY,
    restartPolicy,
    dnsPolicy: 'ClusterFirst',
    schedulerName: 'default-scheduler',
    terminationGracePeriodSeconds: 30,
    ...extra,
  };
}

function httpProbe(port: string, p = '/health') {
  return { httpGet: { path: p, port, scheme: 'HTTP' }, periodSeconds: 10, failureThreshold: 3, timeoutSeconds: 1 };
}

/** Builds the chart objects of one rendering. */
class Renderer {
  readonly R: string;
  readonly NS: string;
  readonly cv: string;
  readonly created: string;
  readonly hooks: string;
  readonly rng: Rng;
  readonly objects: KubeObject[] = [];
  readonly hookObjects: KubeObject[] = [];

  constructor(readonly r: ChartRender) {
    this.R = r.opts.release;
    this.NS = r.opts.namespace;
    this.cv = r.chartVersion;
    this.created = isoSeconds(r.installedMs);
    this.hooks = isoSeconds(r.hooksMs);
    this.rng = new Rng(`objects:${this.NS}:${this.R}`);
  }

  meta(
    name: string,
    labels: Record<string, string>,
    extra: Record<string, unknown> = {},
    kind = '',
  ): {
    name: string;
    namespace: string;
    uid: string;
    creationTimestamp: string;
    labels: Record<string, string>;
    annotations: Record<string, string>;
    [key: string]: unknown;
  } {
    return {
      name,
      namespace: this.NS,
      uid: stableUid(this.NS, kind, name),
      creationTimestamp: this.created,
      labels,
      annotations: {
        'meta.helm.sh/release-name': this.R,
        'meta.helm.sh/release-namespace': this.NS,
        ...((extra.annotations as Record<string, string>) ?? {}),
      },
      ...Object.fromEntries(Object.entries(extra).filter(([k]) => k !== 'annotations')),
    };
  }

  add(obj: KubeObject, source: string, hook = false): KubeObject {
    templateSources.set(obj, `matrix-stack/templates/${source}`);
    if (hook) {
      const ann = obj.metadata.annotations ?? {};
      delete ann['meta.helm.sh/release-name'];
      delete ann['meta.helm.sh/release-namespace'];
      obj.metadata.annotations = ann;
      this.hookObjects.push(obj);
    } else {
      this.objects.push(obj);
    }
    return obj;
  }

  clusterIP(): string {
    return `10.43.${this.rng.int(0, 255)}.${this.rng.int(2, 254)}`;
  }

  service(
    name: string,
    labels: Record<string, string>,
    selector: Record<string, string>,
    ports: { name: string; port: number; targetPort?: number | string; protocol?: string; nodePort?: number }[],
    source: string,
    o: { headless?: boolean; type?: string } = {},
  ): KubeObject {
    const type = o.type ?? 'ClusterIP';
    const ip = o.headless ? 'None' : this.clusterIP();
    return this.add(
      {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: this.meta(name, labels, {}, 'Service'),
        spec: {
          type,
          clusterIP: ip,
          clusterIPs: [ip],
          internalTrafficPolicy: 'Cluster',
          ...(type === 'NodePort' ? { externalTrafficPolicy: 'Cluster' } : {}),
          ipFamilies: ['IPv4'],
          ipFamilyPolicy: o.headless ? 'PreferDualStack' : 'SingleStack',
          ports: ports.map((p) => ({
            name: p.name,
            port: p.port,
            protocol: p.protocol ?? 'TCP',
            targetPort: p.targetPort ?? p.port,
            ...(p.nodePort ? { nodePort: p.nodePort } : {}),
          })),
          selector,
          sessionAffinity: 'None',
        },
        status: { loadBalancer: {} },
      },
      source,
    );
  }

  serviceAccount(name: string, labels: Record<string, string>, source: string, hook = false): KubeObject {
    const meta = this.meta(name, labels, {}, 'ServiceAccount');
    if (hook) meta.annotations = { 'helm.sh/hook': 'pre-install,pre-upgrade', 'helm.sh/hook-weight': '-20' };
    return this.add(
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta, automountServiceAccountToken: false },
      source,
      hook,
    );
  }

  configMap(name: string, labels: Record<string, string>, data: Record<string, string>, source: string, hook = false) {
    const meta = this.meta(name, labels, {}, 'ConfigMap');
    if (hook) meta.annotations = { 'helm.sh/hook': 'pre-install,pre-upgrade', 'helm.sh/hook-weight': '-10' };
    return this.add({ apiVersion: 'v1', kind: 'ConfigMap', metadata: meta, data }, source, hook);
  }

  deployment(
    name: string,
    labels: (chart: boolean) => Record<string, string>,
    replicas: number,
    spec: Record<string, unknown>,
    source: string,
  ): KubeObject {
    return this.add(
      {
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: this.meta(name, labels(true), { generation: 1 }, 'Deployment'),
        spec: {
          replicas,
          selector: { matchLabels: { 'app.kubernetes.io/instance': labels(false)['app.kubernetes.io/instance'] } },
          strategy: {
            type: 'RollingUpdate',
            rollingUpdate: { maxSurge: 2, maxUnavailable: Math.min(Math.max(0, replicas - 1), 1) },
          },
          revisionHistoryLimit: 10,
          progressDeadlineSeconds: 600,
          template: { metadata: { labels: labels(false) }, spec },
        },
      },
      source,
    );
  }

  statefulSet(
    name: string,
    labels: Record<string, string>,
    templateLabels: Record<string, string>,
    selectorInstance: string,
    serviceName: string,
    replicas: number,
    spec: Record<string, unknown>,
    source: string,
    parallel: boolean,
  ): KubeObject {
    return this.add(
      {
        apiVersion: 'apps/v1',
        kind: 'StatefulSet',
        metadata: this.meta(name, labels, { generation: 1 }, 'StatefulSet'),
        spec: {
          replicas,
          selector: { matchLabels: { 'app.kubernetes.io/instance': selectorInstance } },
          serviceName,
          updateStrategy: { type: 'RollingUpdate', rollingUpdate: { partition: 0 } },
          podManagementPolicy: parallel ? 'Parallel' : 'OrderedReady',
          revisionHistoryLimit: 10,
          persistentVolumeClaimRetentionPolicy: { whenDeleted: 'Retain', whenScaled: 'Retain' },
          template: { metadata: { labels: templateLabels }, spec },
        },
      },
      source,
    );
  }
}

function host(sub: string, serverName: string): string {
  return `${sub}.${serverName}`;
}

/** Synapse/MAS config placeholders filled in by the render-config init container, not by JavaScript. */
const env = (name: string) => `\${${name}}`;

/** The homeserver overrides file (ConfigMap `<R>-synapse`, key `04-homeserver-overrides.yaml`). */
export function homeserverOverrides(opts: SeedOptions, workers: string[], chartVersion: string): string {
  const R = opts.release;
  const NS = opts.namespace;
  const wn = (t: string) => workerTypeName(t, chartVersion);
  const lines = [
    `public_baseurl: https://${host('matrix', opts.serverName)}/`,
    `server_name: ${opts.serverName}`,
    `signing_key_path: /secrets/${R}-generated/SYNAPSE_SIGNING_KEY`,
    'enable_metrics: true',
    'log_config: "/conf/log_config.yaml"',
    `macaroon_secret_key_path:  /secrets/${R}-generated/SYNAPSE_MACAROON`,
    `registration_shared_secret_path: /secrets/${R}-generated/SYNAPSE_REGISTRATION_SHARED_SECRET`,
    '',
    'database:',
    '  name: psycopg2',
    '  args:',
    '    user: "synapse_user"',
    `    password: ${env('SYNAPSE_POSTGRES_PASSWORD')}`,
    '    dbname: "synapse"',
    `    host: "${R}-postgres.${NS}.svc.cluster.local."`,
    '    port: 5432',
    '    sslmode: prefer',
    '',
    `    application_name: ${env('APPLICATION_NAME')}`,
    '',
    'matrix_authentication_service:',
    '  enabled: true',
    `  secret_path: /secrets/${R}-generated/MAS_SYNAPSE_SHARED_SECRET`,
    `  endpoint: http://${R}-matrix-authentication-service.${NS}.svc.cluster.local.:8080/`,
    '  force_http2: true',
    'experimental_features:',
    '  msc4143_enabled: true',
    '  msc4222_enabled: true',
    '',
    'password_config:',
    '  localdb_enabled: false',
    '  enabled: false',
    '',
    'matrix_rtc:',
    '  transports:',
    '  - type: livekit',
    `    livekit_service_url: https://${host('mrtc', opts.serverName)}`,
  ];
  if (workers.includes('federation-sender')) {
    lines.push(
      '',
      'send_federation: false',
      'federation_sender_instances:',
      `- ${R}-synapse-${wn('federation-sender')}-0`,
    );
  } else {
    lines.push('', 'send_federation: true');
  }
  lines.push(
    '',
    '# This is still required despite media_storage_providers as otherwise Synapse attempts to mkdir media_store at the root of the container',
    'media_store_path: "/media/media_store"',
    'max_upload_size: "100M"',
  );
  if (workers.includes('media-repository')) {
    lines.push(`media_instance_running_background_jobs: "${R}-synapse-${wn('media-repository')}-0"`);
  }
  lines.push('', 'start_pushers: true', '', 'instance_map:', '  main:');
  lines.push(`    host: ${R}-synapse-main.${NS}.svc.cluster.local.`, '    port: 9093');
  for (const w of workers.filter(hasReplication)) {
    const n = `${R}-synapse-${wn(w)}`;
    lines.push(`  ${n}-0:`, `    host: ${n}-0.${n}.${NS}.svc.cluster.local.`, '    port: 9093');
  }
  if (workers.length > 0) {
    lines.push('', 'redis:', '  enabled: true', `  host: "${R}-redis.${NS}.svc.cluster.local."`);
  }
  if (workers.includes('event-persister')) {
    lines.push('', 'stream_writers:', '  events:', `  - ${R}-synapse-${wn('event-persister')}-0`);
  }
  return `${lines.join('\n')}\n`;
}

function processFile(processType: string): string {
  const app =
    processType === 'main'
      ? 'synapse.app.homeserver'
      : processType === 'media-repository'
        ? 'synapse.app.media_repository'
        : 'synapse.app.generic_worker';
  const lines = [`worker_app: ${app}`];
  lines.push(processType === 'main' ? 'listeners:' : `worker_name: ${env('APPLICATION_NAME')}\n\nworker_listeners:`);
  if (hasHttp(processType)) {
    lines.push(
      '- port: 8008',
      '  tls: false',
      '  bind_addresses:',
      '  - "0.0.0.0"',
      '  type: http',
      '  x_forwarded: true',
      '  resources:',
      '  - names:',
      '    - client',
      '    - federation',
    );
    if (processType === 'media-repository') lines.push('    - media');
    lines.push('    compress: false');
  }
  if (hasReplication(processType)) {
    lines.push(
      '- port: 9093',
      '  tls: false',
      '  bind_addresses:',
      '  - "0.0.0.0"',
      '  type: http',
      '  x_forwarded: false',
      '  resources:',
      '  - names: [replication]',
      '    compress: false',
    );
  }
  lines.push('- type: metrics', '  port: 9001', '  bind_addresses:', '  - "0.0.0.0"');
  lines.push(
    '- port: 8080',
    '  tls: false',
    '  bind_addresses:',
    '  - "0.0.0.0"',
    '  type: http',
    '  resources:',
    '  - names: [health]',
  );
  return `${lines.join('\n')}\n`;
}

function sharedUnderrides(opts: SeedOptions): string {
  return [
    `web_client_location: https://${host('chat', opts.serverName)}/`,
    '',
    'report_stats: false',
    '',
    'mau_stats_only: true',
    '',
    'require_auth_for_profile_requests: true',
    '',
    "federation_client_minimum_tls_version: '1.2'",
    '',
    'experimental_features:',
    '  msc4028_push_encrypted_events: true',
    '  msc4108_enabled: true',
    '',
    'url_preview_enabled: true',
    'url_preview_ip_range_whitelist: []',
    '',
  ].join('\n');
}

const LOG_CONFIG = `version: 1

formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'

handlers:
  console:
    class: logging.StreamHandler
    formatter: precise

loggers:
  synapse.storage.SQL:
    level: INFO

root:
  level: INFO
  handlers: [console]

disable_existing_loggers: false
`;

function configureDbsScript(R: string): string {
  return `#!/bin/sh
set -e;
# Function to create or ensure a user and database
create_or_ensure_db() {
  user="$1"
  db="$2"
  password="$3"
  admin_password="$4"

  # Check if user exists, if so update password; otherwise create user
  if echo -n "$admin_password" | psql -W -U postgres -tc "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '$user'" | grep -q 1; then
    echo -n "$admin_password" | psql -W -U postgres -c "ALTER USER $user PASSWORD '$password'"
  else
    echo -n "$admin_password" | psql -W -U postgres -c "CREATE ROLE $user LOGIN PASSWORD '$password'"
  fi

  # Check if database exists, if not create it
  if ! echo -n "$admin_password" | psql -W -U postgres -tc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    echo -n "$admin_password" | createdb --encoding=UTF8 --locale=C --template=template0 --owner=$user $db -U postgres
  fi
}

export POSTGRES_PASSWORD=\`cat /secrets/${R}-generated/POSTGRES_ADMIN_PASSWORD\`;
export ESS_PASSWORD=\`cat /secrets/${R}-generated/POSTGRES_MATRIX_AUTHENTICATION_SERVICE_PASSWORD\`;
create_or_ensure_db "matrixauthenticationservice_user" "matrixauthenticationservice" "$ESS_PASSWORD" "$POSTGRES_PASSWORD"
export ESS_PASSWORD=\`cat /secrets/${R}-generated/POSTGRES_SYNAPSE_PASSWORD\`;
create_or_ensure_db "synapse_user" "synapse" "$ESS_PASSWORD" "$POSTGRES_PASSWORD"
`;
}

function masOverrides(opts: SeedOptions): string {
  const R = opts.release;
  return `http:
  public_base: "https://${host('account', opts.serverName)}"
  listeners:
  - name: web
    binds:
    - port: 8080
    resources:
    - name: human
    - name: discovery
    - name: oauth
    - name: compat
    - name: assets
    - name: graphql
      undocumented_oauth2_access: true
    - name: adminapi
  - name: internal
    binds:
    - port: 8081
    resources:
    - name: health
    - name: prometheus
    - name: connection-info

database:
  host: ${R}-postgres.${opts.namespace}.svc.cluster.local.
  port: 5432
  username: matrixauthenticationservice_user
  password_file: /secrets/${R}-generated/POSTGRES_MATRIX_AUTHENTICATION_SERVICE_PASSWORD
  database: matrixauthenticationservice

matrix:
  kind: synapse_modern
  homeserver: "${opts.serverName}"
  secret_file: /secrets/${R}-generated/MAS_SYNAPSE_SHARED_SECRET
  endpoint: "http://${R}-synapse-main.${opts.namespace}.svc.cluster.local.:8008"

secrets:
  encryption_file: /secrets/${R}-generated/MAS_ENCRYPTION_SECRET
  keys:
  - kid: rsa
    key_file: /secrets/${R}-generated/MAS_RSA_PRIVATE_KEY
  - kid: prime256v1
    key_file: /secrets/${R}-generated/MAS_ECDSA_PRIME256V1_PRIVATE_KEY
`;
}

function elementWebConfig(opts: SeedOptions): string {
  return `${JSON.stringify(
    {
      bug_report_endpoint_url: 'https://element.io/bugreports/submit',
      default_server_config: {
        'm.homeserver': { base_url: `https://${host('matrix', opts.serverName)}`, server_name: opts.serverName },
      },
      embedded_pages: { login_for_welcome: true },
      element_call: { use_exclusively: true },
      features: { feature_element_call_video_rooms: true, feature_group_calls: true, feature_video_rooms: true },
      setting_defaults: { 'UIFeature.registration': false, 'UIFeature.passwordReset': false },
      sso_redirect_options: { immediate: false, on_welcome_page: true, on_login_page: true },
    },
    null,
    2,
  )}\n`;
}

/** Renders all chart objects (non-hook ones in `objects`, hook ones in `hooks`). */
export function renderChart(r: ChartRender): { objects: KubeObject[]; hooks: KubeObject[] } {
  const g = new Renderer(r);
  const { opts } = r;
  const R = g.R;
  const NS = g.NS;
  const cv = g.cv;
  const workers = enabledWorkers(opts);
  const legacy = usesLegacyNames(cv);
  const generated = `${R}-generated`;
  const genVol = secretVolumeName(generated);
  const synapseVersion = IMAGES.synapse.tag;
  const pgPasswordHashLabel = { 'k8s.element.io/postgres-password-synapse-hash': sha1(`${R}-generated`) };

  // ---------------------------------------------------------------- Synapse
  const synapseLabels = (chart: boolean) =>
    chartLabels({
      component: 'matrix-server',
      name: 'synapse',
      instance: `${R}-synapse`,
      version: synapseVersion,
      chartVersion: chart ? cv : undefined,
      extra: { 'k8s.element.io/synapse-instance': `${R}-synapse` },
    });
  const synapseCmData: Record<string, string> = {
    '01-homeserver-underrides.yaml': sharedUnderrides(opts),
    '04-homeserver-overrides.yaml': homeserverOverrides(opts, workers, cv),
    '05-main.yaml': processFile('main'),
  };
  for (const w of workers) synapseCmData[`05-${w}.yaml`] = processFile(w);
  synapseCmData['log_config.yaml'] = LOG_CONFIG;
  g.configMap(`${R}-synapse`, synapseLabels(true), synapseCmData, 'synapse/synapse_configmap.yaml');
  const configHash = sha1(JSON.stringify(synapseCmData));
  const secretHash = sha1('data:\n');
  g.add(
    {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'Opaque',
      metadata: g.meta(`${R}-synapse`, synapseLabels(true), {}, 'Secret'),
    },
    'synapse/synapse_secret.yaml',
  );
  g.serviceAccount(`${R}-synapse`, synapseLabels(true), 'synapse/synapse_serviceaccount.yaml');

  const mediaWorker = workers.includes('media-repository');
  for (const processType of ['main', ...workers]) {
    const typeName = workerTypeName(processType, cv);
    const name = `${R}-synapse-${typeName}`;
    const procLabels = (chart: boolean) =>
      chartLabels({
        component: 'matrix-server',
        name: `synapse-${processType}`,
        instance: `${R}-synapse-${processType}`,
        version: synapseVersion,
        chartVersion: chart ? cv : undefined,
        extra: { 'k8s.element.io/synapse-instance': `${R}-synapse` },
      });
    const hashLabels = {
      'k8s.element.io/synapse-config-hash': configHash,
      'k8s.element.io/synapse-secret-hash': secretHash,
      ...pgPasswordHashLabel,
    };
    const responsibleForMedia = mediaWorker ? processType === 'media-repository' : processType === 'main';
    const ports: Record<string, unknown>[] = [];
    if (hasHttp(processType)) ports.push({ containerPort: 8008, name: 'synapse-http', protocol: 'TCP' });
    if (hasReplication(processType)) ports.push({ containerPort: 9093, name: 'synapse-repl', protocol: 'TCP' });
    ports.push({ containerPort: 8080, name: 'synapse-health', protocol: 'TCP' });
    ports.push({ containerPort: 9001, name: 'synapse-metrics', protocol: 'TCP' });
    const app =
      processType === 'main'
        ? 'synapse.app.homeserver'
        : processType === 'media-repository'
          ? 'synapse.app.media_repository'
          : 'synapse.app.generic_worker';
    const spec = podSpec(`${R}-synapse`, {
      initContainers: [
        container('render-config', IMAGES.matrixTools, {
          args: [
            'render-config',
            '-output',
            '/conf/homeserver.yaml',
            '/config-templates/01-homeserver-underrides.yaml',
            `/secrets/${generated}/SYNAPSE_EXTRA`,
            '/config-templates/04-homeserver-overrides.yaml',
            `/config-templates/05-${processType}.yaml`,
          ],
          env: [
            { name: 'APPLICATION_NAME', value: '{{ hostname }}' },
            {
              name: 'SYNAPSE_POSTGRES_PASSWORD',
              value: `{{ readfile "/secrets/${generated}/POSTGRES_SYNAPSE_PASSWORD" | quote }}`,
            },
          ],
          resources: { limits: { memory: '200Mi' }, requests: { cpu: '50m', memory: '50Mi' } },
          volumeMounts: [
            { mountPath: '/config-templates', name: 'plain-config', readOnly: true },
            { mountPath: `/secrets/${generated}`, name: genVol, readOnly: true },
            { mountPath: '/conf', name: 'rendered-config' },
          ],
        }),
        container('db-wait', IMAGES.matrixTools, {
          args: ['tcpwait', '-address', `${R}-postgres.${NS}.svc.cluster.local.:5432`],
          resources: { limits: { memory: '200Mi' }, requests: { cpu: '50m', memory: '50Mi' } },
        }),
      ],
      containers: [
        container('synapse', IMAGES.synapse, {
          command: ['python3', '-m', app, '-c', '/conf/homeserver.yaml'],
          env: [{ name: 'LD_PRELOAD', value: 'libjemalloc.so.2' }],
          ports,
          startupProbe: { ...httpProbe('synapse-health'), failureThreshold: 54, periodSeconds: 2 },
          livenessProbe: { ...httpProbe('synapse-health'), failureThreshold: 8, timeoutSeconds: 2 },
          readinessProbe: { ...httpProbe('synapse-health'), failureThreshold: 8, periodSeconds: 2, timeoutSeconds: 2 },
          resources: { limits: { memory: '4Gi' }, requests: { cpu: '100m', memory: '100Mi' } },
          volumeMounts: [
            { mountPath: '/conf/homeserver.yaml', name: 'rendered-config', subPath: 'homeserver.yaml', readOnly: true },
            { mountPath: `/secrets/${generated}`, name: genVol, readOnly: true },
            { mountPath: '/conf/log_config.yaml', name: 'plain-config', subPath: 'log_config.yaml' },
            { mountPath: '/media', name: 'media' },
            { mountPath: '/tmp', name: 'tmp' },
          ],
        }),
      ],
      volumes: [
        { name: 'plain-config', configMap: { defaultMode: 420, name: `${R}-synapse` } },
        { name: genVol, secret: { defaultMode: 420, secretName: generated } },
        { name: 'rendered-config', emptyDir: { medium: 'Memory' } },
        responsibleForMedia
          ? { name: 'media', persistentVolumeClaim: { claimName: `${R}-synapse-media` } }
          : { name: 'media', emptyDir: { medium: 'Memory' } },
        { name: 'tmp', emptyDir: { medium: 'Memory' } },
      ],
    });
    g.statefulSet(
      name,
      { ...procLabels(true), ...hashLabels },
      { ...procLabels(false), ...hashLabels },
      `${R}-synapse-${processType}`,
      name,
      1,
      spec,
      'synapse/synapse_statefulset.yaml',
      true,
    );
    const svcPorts: { name: string; port: number; targetPort: string }[] = [];
    if (hasHttp(processType)) svcPorts.push({ name: 'synapse-http', port: 8008, targetPort: 'synapse-http' });
    if (hasReplication(processType)) svcPorts.push({ name: 'synapse-repl', port: 9093, targetPort: 'synapse-repl' });
    svcPorts.push({ name: 'synapse-health', port: 8080, targetPort: 'synapse-health' });
    svcPorts.push({ name: 'synapse-metrics', port: 9001, targetPort: 'synapse-metrics' });
    g.service(
      name,
      procLabels(true),
      { 'app.kubernetes.io/instance': `${R}-synapse-${processType}` },
      svcPorts,
      'synapse/synapse_service.yaml',
      { headless: true },
    );
  }
  // Service `<R>-synapse` is HAProxy in front of Synapse, not Synapse itself.
  g.service(
    `${R}-synapse`,
    chartLabels({
      component: 'matrix-stack-ingress',
      name: 'synapse',
      instance: `${R}-synapse`,
      version: IMAGES.haproxy.tag,
      chartVersion: cv,
      extra: {
        'k8s.element.io/target-name': 'haproxy',
        'k8s.element.io/target-instance': `${R}-haproxy`,
        'k8s.element.io/synapse-instance': `${R}-synapse`,
      },
    }),
    { 'app.kubernetes.io/instance': `${R}-haproxy` },
    [
      { name: 'haproxy-synapse', port: 8008, targetPort: 'haproxy-synapse' },
      { name: 'haproxy-403', port: 8009, targetPort: 'haproxy-403' },
    ],
    'synapse/synapse_http_service.yaml',
  );
  g.add(
    {
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: g.meta(
        `${R}-synapse-media`,
        synapseLabels(true),
        { annotations: { 'helm.sh/resource-policy': 'keep' } },
        'PersistentVolumeClaim',
      ),
      spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '10Gi' } }, volumeMode: 'Filesystem' },
    },
    'synapse/synapse_persistentvolumeclaim.yaml',
  );
  g.configMap(
    `${R}-synapse-haproxy`,
    chartLabels({
      component: 'matrix-stack-ingress',
      name: 'synapse-haproxy',
      instance: `${R}-synapse-haproxy`,
      version: IMAGES.haproxy.tag,
      chartVersion: cv,
    }),
    {
      '429.http':
        'HTTP/1.0 429 Too Many Requests\nCache-Control: no-cache\nConnection: close\nContent-Type: application/json\n\n{"errcode":"M_UNKNOWN","error":"Server is unavailable"}\n',
      path_map_file:
        '^/_matrix/client/(r0|v3|unstable)/sync$ synchrotron\n^/_matrix/client/(api/v1|r0|v3)/events$ synchrotron\n',
      path_map_file_get: '',
      'ess-version.json': `{"version": "${cv}", "edition": "community"}\n`,
    },
    'synapse/synapse_haproxy_configmap.yaml',
  );
  g.add(
    {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'Ingress',
      metadata: g.meta(
        `${R}-synapse`,
        chartLabels({
          component: 'matrix-stack-ingress',
          name: 'synapse',
          instance: `${R}-synapse`,
          version: IMAGES.haproxy.tag,
          chartVersion: cv,
        }),
        { generation: 1 },
        'Ingress',
      ),
      spec: ingressSpec(host('matrix', opts.serverName), `${R}-synapse`, 'haproxy-synapse'),
      status: { loadBalancer: { ingress: [{ ip: '172.18.0.2' }] } },
    },
    'synapse/synapse_ingress.yaml',
  );

  // ---------------------------------------------------------------- PostgreSQL
  const pgLabels = (chart: boolean) =>
    chartLabels({
      component: 'matrix-stack-db',
      name: 'postgres',
      instance: `${R}-postgres`,
      version: IMAGES.postgres.tag,
      chartVersion: chart ? cv : undefined,
    });
  const dbScript = configureDbsScript(R);
  const pgHash = {
    'k8s.element.io/postgres-secret-hash': sha1('type: Opaque\ndata:\n'),
    'k8s.element.io/postgres-config-hash': sha1(dbScript),
  };
  g.configMap(`${R}-postgres`, pgLabels(true), { 'configure-dbs.sh': dbScript }, 'postgres/configmap.yaml');
  g.serviceAccount(`${R}-postgres`, pgLabels(true), 'postgres/serviceaccount.yaml');
  g.service(
    `${R}-postgres`,
    pgLabels(true),
    { 'app.kubernetes.io/instance': `${R}-postgres` },
    [
      { name: 'postgres', port: 5432 },
      { name: 'metrics', port: 9187 },
    ],
    'postgres/service.yaml',
    { headless: true },
  );
  g.add(
    {
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: g.meta(
        `${R}-postgres-data`,
        pgLabels(true),
        { annotations: { 'helm.sh/resource-policy': 'keep' } },
        'PersistentVolumeClaim',
      ),
      spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '10Gi' } }, volumeMode: 'Filesystem' },
    },
    'postgres/pvc.yaml',
  );
  const pgArgs = ['-c', 'max_connections=256', '-c', 'shared_buffers=1024MB', '-c', 'effective_cache_size=3840MB'];
  const pgSecretMounts = [
    'POSTGRES_ADMIN_PASSWORD',
    'POSTGRES_MATRIX_AUTHENTICATION_SERVICE_PASSWORD',
    'POSTGRES_SYNAPSE_PASSWORD',
  ].map((k) => ({ mountPath: `/secrets/${generated}/${k}`, name: 'secret-generated', subPath: k, readOnly: true }));
  const preStop = {
    exec: { command: ['pg_ctl', 'stop', '-D', '/var/lib/postgres/data', '-w', '-t', '55', '-m', 'fast'] },
  };
  const psqlProbe = {
    exec: { command: ['psql', '-w', '-U', 'postgres', '-d', 'postgres', '-h', 'localhost', '-c', 'SELECT 1'] },
    periodSeconds: 10,
    failureThreshold: 3,
    timeoutSeconds: 1,
  };
  const readyProbe = {
    exec: { command: ['pg_isready', '-U', 'postgres', '-d', 'postgres', '-h', 'localhost'] },
    periodSeconds: 10,
    failureThreshold: 3,
    timeoutSeconds: 1,
  };
  const pgResources = { limits: { memory: '4Gi' }, requests: { cpu: '100m', memory: '100Mi' } };
  g.statefulSet(
    `${R}-postgres`,
    { ...pgLabels(true), ...pgHash },
    { ...pgLabels(false), ...pgHash },
    `${R}-postgres`,
    `${R}-postgres`,
    1,
    podSpec(`${R}-postgres`, {
      terminationGracePeriodSeconds: 60,
      containers: [
        container('postgres', IMAGES.postgres, {
          args: pgArgs,
          env: [
            { name: 'LC_COLLATE', value: 'C' },
            { name: 'LC_CTYPE', value: 'C' },
            { name: 'PGDATA', value: '/var/lib/postgres/data/pgdata' },
            { name: 'POSTGRES_INITDB_ARGS', value: '-E UTF8' },
            { name: 'POSTGRES_PASSWORD_FILE', value: `/secrets/${generated}/POSTGRES_ADMIN_PASSWORD` },
          ],
          lifecycle: { preStop },
          startupProbe: psqlProbe,
          readinessProbe: readyProbe,
          livenessProbe: psqlProbe,
          resources: pgResources,
          volumeMounts: [
            ...pgSecretMounts,
            { name: 'config', mountPath: '/docker-entrypoint-initdb.d/init-ess-dbs.sh', subPath: 'configure-dbs.sh' },
            { name: 'database', mountPath: '/var/lib/postgres/data' },
            { name: 'temp', mountPath: '/tmp' },
            { name: 'var-run', mountPath: '/var/run/postgresql' },
          ],
        }),
        container('postgres-ess-updater', IMAGES.postgres, {
          command: [
            '/bin/sh',
            '-c',
            'while ! pg_isready -d postgres -U postgres -h localhost; do echo "Postgres not yet ready"; sleep 1; done; echo "Postgres now ready, so changing password"; /bin/sh /var/run/configure-ess-dbs.sh; echo "Done"; trap : TERM INT; sleep infinity & wait\n',
          ],
          args: pgArgs,
          env: [
            { name: 'PGDATA', value: '/var/lib/postgres/data/pgdata' },
            { name: 'PGHOST', value: 'localhost' },
            { name: 'POSTGRES_PASSWORD_FILE', value: `/secrets/${generated}/POSTGRES_ADMIN_PASSWORD` },
          ],
          lifecycle: { preStop },
          startupProbe: psqlProbe,
          readinessProbe: readyProbe,
          livenessProbe: psqlProbe,
          resources: pgResources,
          ports: [{ containerPort: 5432, name: 'postgres', protocol: 'TCP' }],
          volumeMounts: [
            ...pgSecretMounts,
            { name: 'config', mountPath: '/var/run/configure-ess-dbs.sh', subPath: 'configure-dbs.sh' },
            { name: 'database', mountPath: '/var/lib/postgres/data' },
          ],
        }),
        container('postgres-exporter', IMAGES.postgresExporter, {
          env: [
            { name: 'DATA_SOURCE_URI', value: 'localhost?sslmode=disable' },
            { name: 'DATA_SOURCE_USER', value: 'postgres' },
          ],
          ports: [{ containerPort: 9187, name: 'metrics', protocol: 'TCP' }],
          startupProbe: httpProbe('metrics', '/metrics'),
          livenessProbe: httpProbe('metrics', '/metrics'),
          readinessProbe: httpProbe('metrics', '/metrics'),
          resources: { limits: { memory: '500Mi' }, requests: { cpu: '10m', memory: '20Mi' } },
        }),
      ],
      volumes: [
        { name: 'temp', emptyDir: { medium: 'Memory' } },
        { name: 'var-run', emptyDir: { medium: 'Memory' } },
        { name: 'secret-generated', secret: { defaultMode: 420, secretName: generated } },
        { name: 'config', configMap: { defaultMode: 420, name: `${R}-postgres` } },
        { name: 'database', persistentVolumeClaim: { claimName: `${R}-postgres-data` } },
      ],
    }),
    'postgres/statefulset.yaml',
    false,
  );

  // ---------------------------------------------------------------- MAS
  const masLabels = (chart: boolean) =>
    chartLabels({
      component: 'matrix-authentication',
      name: 'matrix-authentication-service',
      instance: `${R}-matrix-authentication-service`,
      version: IMAGES.mas.tag,
      chartVersion: chart ? cv : undefined,
    });
  const masCm = {
    'mas-config-underrides.yaml': 'policy:\n  data:\n    admin_clients: []\n',
    'mas-config-overrides.yaml': masOverrides(opts),
  };
  g.configMap(
    `${R}-matrix-authentication-service`,
    masLabels(true),
    masCm,
    'matrix-authentication-service/configmap.yaml',
  );
  g.add(
    {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'Opaque',
      metadata: g.meta(`${R}-matrix-authentication-service`, masLabels(true), {}, 'Secret'),
    },
    'matrix-authentication-service/secret.yaml',
  );
  g.serviceAccount(
    `${R}-matrix-authentication-service`,
    masLabels(true),
    'matrix-authentication-service/serviceaccount.yaml',
  );
  g.deployment(
    `${R}-matrix-authentication-service`,
    (chart) => ({
      ...masLabels(chart),
      'k8s.element.io/postgres-password-matrixauthenticationservice-hash': sha1(`${R}-generated`),
    }),
    1,
    podSpec(`${R}-matrix-authentication-service`, {
      initContainers: [
        container('render-config', IMAGES.matrixTools, {
          args: [
            'render-config',
            '-output',
            '/conf/mas-config.yaml',
            '/config-templates/mas-config-underrides.yaml',
            '/config-templates/mas-config-overrides.yaml',
          ],
          volumeMounts: [
            { mountPath: '/config-templates', name: 'plain-config', readOnly: true },
            { mountPath: `/secrets/${generated}`, name: genVol, readOnly: true },
            { mountPath: '/conf', name: 'rendered-config' },
          ],
        }),
        container('db-wait', IMAGES.matrixTools, {
          args: ['tcpwait', '-address', `${R}-postgres.${NS}.svc.cluster.local.:5432`],
        }),
        container('database-migrate', IMAGES.mas, {
          args: ['database', 'migrate'],
          env: [{ name: 'MAS_CONFIG', value: '/conf/mas-config.yaml' }],
          volumeMounts: [
            { mountPath: '/conf/mas-config.yaml', name: 'rendered-config', subPath: 'mas-config.yaml', readOnly: true },
            { mountPath: `/secrets/${generated}`, name: genVol, readOnly: true },
          ],
        }),
      ],
      containers: [
        container('matrix-authentication-service', IMAGES.mas, {
          args: ['server', '--no-migrate'],
          env: [{ name: 'MAS_CONFIG', value: '/conf/mas-config.yaml' }],
          ports: [
            { containerPort: 8080, name: 'http', protocol: 'TCP' },
            { containerPort: 8081, name: 'internal', protocol: 'TCP' },
          ],
          readinessProbe: httpProbe('internal'),
          livenessProbe: httpProbe('internal'),
          resources: { limits: { memory: '350Mi' }, requests: { cpu: '50m', memory: '50Mi' } },
          volumeMounts: [
            { mountPath: '/conf/mas-config.yaml', name: 'rendered-config', subPath: 'mas-config.yaml', readOnly: true },
            { mountPath: `/secrets/${generated}`, name: genVol, readOnly: true },
            { mountPath: '/tmp', name: 'tmp' },
          ],
        }),
      ],
      volumes: [
        { name: 'plain-config', configMap: { defaultMode: 420, name: `${R}-matrix-authentication-service` } },
        { name: genVol, secret: { defaultMode: 420, secretName: generated } },
        { name: 'rendered-config', emptyDir: { medium: 'Memory' } },
        { name: 'tmp', emptyDir: { medium: 'Memory' } },
      ],
    }),
    'matrix-authentication-service/deployment.yaml',
  );
  g.service(
    `${R}-matrix-authentication-service`,
    masLabels(true),
    { 'app.kubernetes.io/instance': `${R}-matrix-authentication-service` },
    [
      { name: 'http', port: 8080, targetPort: 'http' },
      { name: 'internal', port: 8081, targetPort: 'internal' },
    ],
    'matrix-authentication-service/service.yaml',
  );
  g.add(
    {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'Ingress',
      metadata: g.meta(`${R}-matrix-authentication-service`, masLabels(true), { generation: 1 }, 'Ingress'),
      spec: ingressSpec(host('account', opts.serverName), `${R}-matrix-authentication-service`, 'http'),
      status: { loadBalancer: { ingress: [{ ip: '172.18.0.2' }] } },
    },
    'matrix-authentication-service/ingress.yaml',
  );

  // ---------------------------------------------------------------- small web/infra components
  const simple = (p: {
    key: string;
    component: string;
    name: string;
    image: ImageRef;
    containerName: string;
    ports: { name: string; containerPort: number; protocol?: string }[];
    serviceName?: string;
    dir: string;
    volumes?: Record<string, unknown>[];
    mounts?: Record<string, unknown>[];
    args?: string[];
  }) => {
    const labels = (chart: boolean) =>
      chartLabels({
        component: p.component,
        name: p.name,
        instance: `${R}-${p.key}`,
        version: p.image.tag,
        chartVersion: chart ? cv : undefined,
      });
    g.serviceAccount(`${R}-${p.key}`, labels(true), `${p.dir}/serviceaccount.yaml`);
    g.deployment(
      `${R}-${p.key}`,
      labels,
      1,
      podSpec(`${R}-${p.key}`, {
        containers: [
          container(p.containerName, p.image, {
            ...(p.args ? { args: p.args } : {}),
            ports: p.ports.map((x) => ({ protocol: 'TCP', ...x })),
            resources: { limits: { memory: '200Mi' }, requests: { cpu: '50m', memory: '50Mi' } },
            volumeMounts: [...(p.mounts ?? []), { mountPath: '/tmp', name: 'tmp' }],
          }),
        ],
        volumes: [...(p.volumes ?? []), { name: 'tmp', emptyDir: { medium: 'Memory' } }],
      }),
      `${p.dir}/deployment.yaml`,
    );
    g.service(
      p.serviceName ?? `${R}-${p.key}`,
      labels(true),
      { 'app.kubernetes.io/instance': `${R}-${p.key}` },
      p.ports.map((x) => ({ name: x.name, port: x.containerPort, targetPort: x.name, protocol: x.protocol })),
      `${p.dir}/service.yaml`,
    );
    return labels;
  };

  const ewLabels = simple({
    key: 'element-web',
    component: 'matrix-client',
    name: 'element-web',
    image: IMAGES.elementWeb,
    containerName: 'element-web',
    ports: [{ name: 'element', containerPort: 8080 }],
    dir: 'element-web',
    volumes: [{ name: 'config', configMap: { defaultMode: 420, name: `${R}-element-web` } }],
    mounts: [{ mountPath: '/app/config.json', name: 'config', subPath: 'config.json', readOnly: true }],
  });
  g.configMap(
    `${R}-element-web`,
    ewLabels(true),
    { 'config.json': elementWebConfig(opts) },
    'element-web/configmap.yaml',
  );
  g.add(
    {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'Ingress',
      metadata: g.meta(`${R}-element-web`, ewLabels(true), { generation: 1 }, 'Ingress'),
      spec: ingressSpec(host('chat', opts.serverName), `${R}-element-web`, 'element'),
      status: { loadBalancer: { ingress: [{ ip: '172.18.0.2' }] } },
    },
    'element-web/ingress.yaml',
  );
  const eaLabels = simple({
    key: 'element-admin',
    component: 'matrix-admin-client',
    name: 'element-admin',
    image: IMAGES.elementAdmin,
    containerName: 'element-admin',
    ports: [{ name: 'element-admin', containerPort: 8080 }],
    dir: 'element-admin',
  });
  g.add(
    {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'Ingress',
      metadata: g.meta(`${R}-element-admin`, eaLabels(true), { generation: 1 }, 'Ingress'),
      spec: ingressSpec(host('admin', opts.serverName), `${R}-element-admin`, 'element-admin'),
      status: { loadBalancer: { ingress: [{ ip: '172.18.0.2' }] } },
    },
    'element-admin/ingress.yaml',
  );
  const haLabels = simple({
    key: 'haproxy',
    component: 'matrix-stack-ingress',
    name: 'haproxy',
    image: IMAGES.haproxy,
    containerName: 'haproxy',
    ports: [
      { name: 'haproxy-synapse', containerPort: 8008 },
      { name: 'haproxy-403', containerPort: 8009 },
      { name: 'haproxy-wkd', containerPort: 8010 },
      { name: 'haproxy-metrics', containerPort: 8405 },
      { name: 'haproxy-health', containerPort: 8406 },
    ],
    dir: 'haproxy',
    volumes: [
      { name: 'haproxy-config', configMap: { defaultMode: 420, name: `${R}-haproxy` } },
      { name: 'synapse-haproxy', configMap: { defaultMode: 420, name: `${R}-synapse-haproxy` } },
      { name: 'well-known-haproxy', configMap: { defaultMode: 420, name: `${R}-well-known-haproxy` } },
    ],
    mounts: [
      { mountPath: '/usr/local/etc/haproxy', name: 'haproxy-config', readOnly: true },
      { mountPath: '/synapse', name: 'synapse-haproxy', readOnly: true },
      { mountPath: '/well-known', name: 'well-known-haproxy', readOnly: true },
    ],
  });
  g.configMap(
    `${R}-haproxy`,
    haLabels(true),
    {
      'haproxy.cfg': `global\n  maxconn 40000\n  log stdout format raw local0 info\n\ndefaults\n  mode http\n  timeout client 30s\n  timeout server 30s\n  timeout connect 5s\n\nfrontend synapse-http-in\n  bind *:8008\n  default_backend synapse-main\n\nbackend synapse-main\n  server main ${R}-synapse-main.${NS}.svc.cluster.local.:8008 resolvers kubedns init-addr none\n`,
    },
    'haproxy/configmap.yaml',
  );
  const sfuLabels = simple({
    key: 'matrix-rtc-sfu',
    component: 'matrix-rtc-voip-server',
    name: 'matrix-rtc-sfu',
    image: IMAGES.sfu,
    containerName: 'sfu',
    ports: [
      { name: 'metrics', containerPort: 6789 },
      { name: 'http', containerPort: 7880 },
    ],
    dir: 'matrix-rtc',
    args: ['--config-body', '$(LIVEKIT_CONFIG)'],
  });
  g.service(
    `${R}-matrix-rtc-sfu-tcp`,
    sfuLabels(true),
    { 'app.kubernetes.io/instance': `${R}-matrix-rtc-sfu` },
    [{ name: 'rtc-tcp', port: 30881, targetPort: 30881, nodePort: 30881 }],
    'matrix-rtc/sfu_rtc_tcp_service.yaml',
    { type: 'NodePort' },
  );
  g.service(
    `${R}-matrix-rtc-sfu-muxed-udp`,
    sfuLabels(true),
    { 'app.kubernetes.io/instance': `${R}-matrix-rtc-sfu` },
    [{ name: 'rtc-muxed-udp', port: 30882, targetPort: 30882, nodePort: 30882, protocol: 'UDP' }],
    'matrix-rtc/sfu_rtc_udp_muxer_service.yaml',
    { type: 'NodePort' },
  );
  const rtcAuthLabels = simple({
    key: 'matrix-rtc-authorisation-service',
    component: 'matrix-rtc-authorisation-service',
    name: 'matrix-rtc-authorisation-service',
    image: IMAGES.rtcAuth,
    containerName: 'matrix-rtc-authorisation-service',
    ports: [{ name: 'http', containerPort: 8080 }],
    dir: 'matrix-rtc',
  });
  g.add(
    {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'Ingress',
      metadata: g.meta(`${R}-matrix-rtc`, rtcAuthLabels(true), { generation: 1 }, 'Ingress'),
      spec: ingressSpec(host('mrtc', opts.serverName), `${R}-matrix-rtc-authorisation-service`, 'http'),
      status: { loadBalancer: { ingress: [{ ip: '172.18.0.2' }] } },
    },
    'matrix-rtc/ingress.yaml',
  );
  if (workers.length > 0) {
    const redisLabels = simple({
      key: 'redis',
      component: 'matrix-pubsub-small-cache',
      name: 'redis',
      image: IMAGES.redis,
      containerName: 'redis',
      ports: [{ name: 'redis', containerPort: 6379 }],
      dir: 'redis',
      args: ['/config/redis.conf'],
      volumes: [{ name: 'config', configMap: { defaultMode: 420, name: `${R}-redis` } }],
      mounts: [{ mountPath: '/config', name: 'config', readOnly: true }],
    });
    g.configMap(
      `${R}-redis`,
      redisLabels(true),
      { 'redis.conf': 'save ""\nappendonly no\nmaxmemory-policy allkeys-lru\n' },
      'redis/redis_configmap.yaml',
    );
  }

  // ---------------------------------------------------------------- well-known (served by HAProxy)
  g.configMap(
    `${R}-well-known-haproxy`,
    chartLabels({
      component: 'matrix-delegation',
      name: 'well-known-delegation',
      instance: `${R}-well-known-delegation`,
      version: IMAGES.haproxy.tag,
      chartVersion: cv,
    }),
    {
      client: `${JSON.stringify({
        'm.homeserver': { base_url: `https://${host('matrix', opts.serverName)}` },
        'org.matrix.msc2965.authentication': {
          account: `https://${host('account', opts.serverName)}/account`,
          issuer: `https://${host('account', opts.serverName)}/`,
        },
        'org.matrix.msc4143.rtc_foci': [
          { livekit_service_url: `https://${host('mrtc', opts.serverName)}`, type: 'livekit' },
        ],
      })}\n`,
      server: `${JSON.stringify({ 'm.server': `${host('matrix', opts.serverName)}:443` })}\n`,
      support: '{}\n',
    },
    'well-known/configmap.yaml',
  );
  const wkIngressLabels = chartLabels({
    component: 'matrix-stack-ingress',
    name: 'well-known-ingress',
    instance: `${R}-well-known-ingress`,
    version: IMAGES.haproxy.tag,
    chartVersion: cv,
  });
  g.service(
    `${R}-well-known`,
    wkIngressLabels,
    { 'app.kubernetes.io/instance': `${R}-haproxy` },
    [{ name: 'haproxy-wkd', port: 8010, targetPort: 'haproxy-wkd' }],
    'well-known/service.yaml',
  );
  g.add(
    {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'Ingress',
      metadata: g.meta(`${R}-well-known`, wkIngressLabels, { generation: 1 }, 'Ingress'),
      spec: {
        rules: [
          {
            host: opts.serverName,
            http: {
              paths: [
                {
                  path: '/.well-known/matrix',
                  pathType: 'Prefix',
                  backend: { service: { name: `${R}-well-known`, port: { name: 'haproxy-wkd' } } },
                },
              ],
            },
          },
        ],
        tls: [{ hosts: [opts.serverName], secretName: `${R}-well-known-certmanager-tls` }],
      },
      status: { loadBalancer: { ingress: [{ ip: '172.18.0.2' }] } },
    },
    'well-known/ingress.yaml',
  );

  // ---------------------------------------------------------------- hooks (not in the release manifest)
  addHooks(g, r, workers, legacy);

  return { objects: g.objects, hooks: g.hookObjects };
}

function ingressSpec(h: string, service: string, port: string) {
  return {
    rules: [
      {
        host: h,
        http: {
          paths: [{ path: '/', pathType: 'Prefix', backend: { service: { name: service, port: { name: port } } } }],
        },
      },
    ],
    tls: [{ hosts: [h], secretName: `${service}-certmanager-tls` }],
  };
}

function addHooks(g: Renderer, r: ChartRender, workers: string[], legacy: boolean): void {
  const R = g.R;
  const cv = g.cv;
  const mt = IMAGES.matrixTools.tag;
  const start = r.hooksMs;
  const stuck = Boolean(r.opts.stuckRelease);
  const job = (p: {
    name: string;
    labels: (chart: boolean) => Record<string, string>;
    hook: string;
    weight: string;
    serviceAccount: string;
    containerName: string;
    image: ImageRef;
    args: string[];
    offsetS: number;
    failed?: boolean;
    mountToken?: boolean;
    source: string;
  }) => {
    const uid = stableUid(g.NS, 'Job', p.name, String(start));
    const started = start + p.offsetS * 1000;
    const finished = started + 9000;
    const ctl = {
      'batch.kubernetes.io/controller-uid': uid,
      'batch.kubernetes.io/job-name': p.name,
      'controller-uid': uid,
      'job-name': p.name,
    };
    const status = p.failed
      ? {
          startTime: isoSeconds(started),
          failed: 7,
          ready: 0,
          terminating: 0,
          uncountedTerminatedPods: {},
          conditions: [
            {
              type: 'FailureTarget',
              status: 'True',
              reason: 'BackoffLimitExceeded',
              message: 'Job has reached the specified backoff limit',
              lastProbeTime: isoSeconds(finished + 300_000),
              lastTransitionTime: isoSeconds(finished + 300_000),
            },
            {
              type: 'Failed',
              status: 'True',
              reason: 'BackoffLimitExceeded',
              message: 'Job has reached the specified backoff limit',
              lastProbeTime: isoSeconds(finished + 300_000),
              lastTransitionTime: isoSeconds(finished + 300_000),
            },
          ],
        }
      : {
          startTime: isoSeconds(started),
          completionTime: isoSeconds(finished),
          succeeded: 1,
          ready: 0,
          terminating: 0,
          uncountedTerminatedPods: {},
          conditions: [
            {
              type: 'SuccessCriteriaMet',
              status: 'True',
              lastProbeTime: isoSeconds(finished),
              lastTransitionTime: isoSeconds(finished),
            },
            {
              type: 'Complete',
              status: 'True',
              lastProbeTime: isoSeconds(finished),
              lastTransitionTime: isoSeconds(finished),
            },
          ],
        };
    const jobObj: KubeObject = {
      apiVersion: 'batch/v1',
      kind: 'Job',
      metadata: {
        name: p.name,
        namespace: g.NS,
        uid,
        generation: 1,
        creationTimestamp: isoSeconds(started),
        labels: p.labels(true),
        annotations: { 'helm.sh/hook': p.hook, 'helm.sh/hook-weight': p.weight },
      },
      spec: {
        backoffLimit: 6,
        completionMode: 'NonIndexed',
        completions: 1,
        manualSelector: false,
        parallelism: 1,
        podReplacementPolicy: 'TerminatingOrFailed',
        suspend: false,
        selector: { matchLabels: { 'batch.kubernetes.io/controller-uid': uid } },
        template: {
          metadata: { labels: { ...p.labels(false), ...ctl } },
          spec: podSpec(
            p.serviceAccount,
            {
              automountServiceAccountToken: Boolean(p.mountToken),
              containers: [container(p.containerName, p.image, { args: p.args })],
            },
            'Never',
          ),
        },
      },
      status,
    };
    g.add(jobObj, p.source, true);
    // The Job's last pod stays (no TTL): it is what `kubectl get pods -l component=matrix-server` also finds.
    const podName = `${p.name}-${new Rng(`${p.name}:${start}`).string(5, 'bcdfghjklmnpqrstvwxz2456789')}`;
    const podTemplate = jobObj.spec as {
      template: { metadata: { labels: Record<string, string> }; spec: Record<string, unknown> };
    };
    const pod: KubeObject = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: podName,
        namespace: g.NS,
        uid: stableUid(g.NS, 'Pod', podName),
        creationTimestamp: isoSeconds(started),
        labels: { ...podTemplate.template.metadata.labels },
        ownerReferences: [
          { apiVersion: 'batch/v1', kind: 'Job', name: p.name, uid, controller: true, blockOwnerDeletion: true },
        ],
      },
      spec: { ...podTemplate.template.spec, nodeName: 'ess-sandbox-node' },
      status: {
        phase: p.failed ? 'Failed' : 'Succeeded',
        hostIP: '172.18.0.2',
        podIP: `10.42.0.${new Rng(podName).int(10, 250)}`,
        startTime: isoSeconds(started),
        conditions: [
          {
            type: 'Initialized',
            status: 'True',
            reason: p.failed ? undefined : 'PodCompleted',
            lastTransitionTime: isoSeconds(started),
          },
          {
            type: 'Ready',
            status: 'False',
            reason: p.failed ? 'PodFailed' : 'PodCompleted',
            lastTransitionTime: isoSeconds(finished),
          },
          {
            type: 'ContainersReady',
            status: 'False',
            reason: p.failed ? 'PodFailed' : 'PodCompleted',
            lastTransitionTime: isoSeconds(finished),
          },
          { type: 'PodScheduled', status: 'True', lastTransitionTime: isoSeconds(started) },
        ].map((c) => Object.fromEntries(Object.entries(c).filter(([, v]) => v !== undefined))),
        containerStatuses: [
          {
            name: p.containerName,
            image: imageString(p.image),
            imageID: `${imageString(p.image)}@sha256:${createHash('sha256').update(imageString(p.image)).digest('hex')}`,
            ready: false,
            restartCount: 0,
            started: false,
            state: {
              terminated: {
                exitCode: p.failed ? 1 : 0,
                reason: p.failed ? 'Error' : 'Completed',
                startedAt: isoSeconds(started + 1000),
                finishedAt: isoSeconds(finished),
              },
            },
          },
        ],
      },
    };
    g.hookObjects.push(pod);
  };
  const toolLabels = (name: string, instance: string) => (chart: boolean) =>
    chartLabels({ component: 'matrix-tools', name, instance, version: mt, chartVersion: chart ? cv : undefined });

  const secretsList = [
    'POSTGRES_SYNAPSE_PASSWORD:rand32',
    'POSTGRES_MATRIX_AUTHENTICATION_SERVICE_PASSWORD:rand32',
    'POSTGRES_ADMIN_PASSWORD:rand32',
    'ELEMENT_CALL_LIVEKIT_SECRET:rand32',
    'SYNAPSE_EXTRA:extra',
    'SYNAPSE_MACAROON:rand32',
    'SYNAPSE_REGISTRATION_SHARED_SECRET:rand32',
    'SYNAPSE_SIGNING_KEY:signingkey',
    'MAS_SYNAPSE_SHARED_SECRET:rand32',
    'MAS_ENCRYPTION_SECRET:hex32',
    'MAS_RSA_PRIVATE_KEY:rsa:4096:der',
    'MAS_ECDSA_PRIME256V1_PRIVATE_KEY:ecdsaprime256v1',
  ].map((s) => `${R}-generated:${s}`);
  const initLabels = toolLabels('init-secrets', `${R}-init-secrets`);
  g.serviceAccount(`${R}-init-secrets`, initLabels(true), 'init-secrets/serviceaccount.yaml', true);
  job({
    name: `${R}-init-secrets`,
    labels: initLabels,
    hook: 'pre-install,pre-upgrade',
    weight: '-10',
    serviceAccount: `${R}-init-secrets`,
    containerName: 'init-secrets',
    image: IMAGES.matrixTools,
    args: [
      'generate-secrets',
      '-secrets',
      secretsList.join(','),
      '-labels',
      Object.entries(initLabels(false))
        .map(([k, v]) => `${k}=${v}`)
        .join(','),
    ],
    offsetS: 0,
    mountToken: true,
    source: 'init-secrets/job.yaml',
  });
  const markersLabels = toolLabels('deployment-markers', `${R}-deployment-markers`);
  g.serviceAccount(`${R}-deployment-markers`, markersLabels(true), 'deployment-markers/serviceaccount.yaml', true);
  const markerArgs = [
    'deployment-markers',
    '-markers',
    `${R}-markers:MATRIX_STACK_MSC3861:delegated_auth:delegated_auth;syn2mas_migrated`,
  ];
  job({
    name: `${R}-deployment-markers-pre`,
    labels: toolLabels('deployment-markers-pre', `${R}-deployment-markers-pre`),
    hook: 'pre-install,pre-upgrade',
    weight: '-10',
    serviceAccount: `${R}-deployment-markers`,
    containerName: 'deployment-markers',
    image: IMAGES.matrixTools,
    args: [...markerArgs, '-step', 'pre'],
    offsetS: 12,
    mountToken: true,
    source: 'deployment-markers/job.yaml',
  });
  const checkName = legacy ? `${R}-synapse-check-config-hook` : `${R}-synapse-check-config`;
  const checkLabels = (chart: boolean) =>
    chartLabels({
      component: 'matrix-server',
      name: 'synapse-check-config',
      instance: `${R}-synapse-check-config`,
      version: IMAGES.synapse.tag,
      chartVersion: chart ? cv : undefined,
      extra: { 'k8s.element.io/synapse-instance': `${R}-synapse-check-config` },
    });
  g.serviceAccount(`${R}-synapse-check-config`, checkLabels(true), 'synapse/synapse_serviceaccount_hook.yaml', true);
  g.configMap(
    `${R}-synapse-hook`,
    chartLabels({
      component: 'matrix-server',
      name: 'synapse',
      instance: `${R}-synapse`,
      version: IMAGES.synapse.tag,
      chartVersion: cv,
      extra: { 'k8s.element.io/synapse-instance': `${R}-synapse` },
    }),
    {
      '01-homeserver-underrides.yaml': sharedUnderrides(r.opts),
      '04-homeserver-overrides.yaml': homeserverOverrides(r.opts, workers, cv),
      '05-main.yaml': processFile('main'),
      'log_config.yaml': LOG_CONFIG,
    },
    'synapse/synapse_configmap_hook.yaml',
    true,
  );
  job({
    name: checkName,
    labels: checkLabels,
    hook: 'pre-install,pre-upgrade',
    weight: '0',
    serviceAccount: `${R}-synapse-check-config`,
    containerName: 'synapse',
    image: IMAGES.synapse,
    args: [],
    offsetS: 25,
    failed: stuck,
    source: 'synapse/synapse_check_config_job_hook.yaml',
  });
  if (!stuck) {
    job({
      name: `${R}-deployment-markers-post`,
      labels: toolLabels('deployment-markers-post', `${R}-deployment-markers-post`),
      hook: 'post-install,post-upgrade',
      weight: '10',
      serviceAccount: `${R}-deployment-markers`,
      containerName: 'deployment-markers',
      image: IMAGES.matrixTools,
      args: [...markerArgs, '-step', 'post'],
      offsetS: 180,
      mountToken: true,
      source: 'deployment-markers/job.yaml',
    });
  }
}

/** A PVC's bound status plus its PersistentVolume (k3s local-path style). */
export function bindVolume(pvc: KubeObject, sizeGi: number, boundAtMs: number): KubeObject {
  const ns = pvc.metadata.namespace ?? 'default';
  const pvName = `pvc-${pvc.metadata.uid}`;
  const spec = pvc.spec as Record<string, unknown>;
  spec.storageClassName = 'local-path';
  spec.volumeName = pvName;
  pvc.metadata.annotations = {
    ...(pvc.metadata.annotations ?? {}),
    'pv.kubernetes.io/bind-completed': 'yes',
    'pv.kubernetes.io/bound-by-controller': 'yes',
    'volume.beta.kubernetes.io/storage-provisioner': 'rancher.io/local-path',
    'volume.kubernetes.io/selected-node': 'ess-sandbox-node',
    'volume.kubernetes.io/storage-provisioner': 'rancher.io/local-path',
  };
  pvc.metadata.finalizers = ['kubernetes.io/pvc-protection'];
  pvc.status = { phase: 'Bound', accessModes: ['ReadWriteOnce'], capacity: { storage: `${sizeGi}Gi` } };
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolume',
    metadata: {
      name: pvName,
      uid: stableUid('PersistentVolume', pvName),
      creationTimestamp: isoSeconds(boundAtMs),
      annotations: {
        'local.path.provisioner/selected-node': 'ess-sandbox-node',
        'pv.kubernetes.io/provisioned-by': 'rancher.io/local-path',
      },
      finalizers: ['kubernetes.io/pv-protection'],
    },
    spec: {
      accessModes: ['ReadWriteOnce'],
      capacity: { storage: `${sizeGi}Gi` },
      claimRef: {
        apiVersion: 'v1',
        kind: 'PersistentVolumeClaim',
        name: pvc.metadata.name,
        namespace: ns,
        uid: pvc.metadata.uid,
      },
      hostPath: {
        path: `/var/lib/rancher/k3s/storage/${pvName}_${ns}_${pvc.metadata.name}`,
        type: 'DirectoryOrCreate',
      },
      nodeAffinity: {
        required: {
          nodeSelectorTerms: [
            { matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: ['ess-sandbox-node'] }] },
          ],
        },
      },
      persistentVolumeReclaimPolicy: 'Delete',
      storageClassName: 'local-path',
      volumeMode: 'Filesystem',
    },
    status: { phase: 'Bound', lastPhaseTransitionTime: isoSeconds(boundAtMs) },
  };
}

/** Objects that are not rendered by Helm but exist in a matrix-stack namespace. */
export function nonChartObjects(opts: SeedOptions, installedMs: number): KubeObject[] {
  const R = opts.release;
  const NS = opts.namespace;
  const created = isoSeconds(installedMs);
  const out: KubeObject[] = [
    {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: {
        name: NS,
        uid: stableUid('Namespace', NS),
        creationTimestamp: created,
        labels: { 'kubernetes.io/metadata.name': NS },
      },
      spec: { finalizers: ['kubernetes'] },
      status: { phase: 'Active' },
    },
    {
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      metadata: {
        name: 'default',
        namespace: NS,
        uid: stableUid(NS, 'ServiceAccount', 'default'),
        creationTimestamp: created,
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'Opaque',
      metadata: {
        name: `${R}-generated`,
        namespace: NS,
        uid: stableUid(NS, 'Secret', `${R}-generated`),
        creationTimestamp: created,
        labels: {
          'app.kubernetes.io/managed-by': 'matrix-tools-init-secrets',
          'app.kubernetes.io/part-of': 'matrix-stack',
          'app.kubernetes.io/component': 'matrix-tools',
          'app.kubernetes.io/name': 'init-secrets',
          'app.kubernetes.io/instance': `${R}-init-secrets`,
          'app.kubernetes.io/version': IMAGES.matrixTools.tag,
        },
      },
      data: toSecretData(generatedSecretData(opts)),
    },
    {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name: `${R}-markers`,
        namespace: NS,
        uid: stableUid(NS, 'ConfigMap', `${R}-markers`),
        creationTimestamp: created,
        labels: {
          'app.kubernetes.io/managed-by': 'matrix-tools-deployment-markers',
          'app.kubernetes.io/part-of': 'matrix-stack',
          'app.kubernetes.io/component': 'matrix-tools',
          'app.kubernetes.io/name': 'deployment-markers',
          'app.kubernetes.io/instance': `${R}-deployment-markers`,
          'app.kubernetes.io/version': IMAGES.matrixTools.tag,
        },
      },
      data: { MATRIX_STACK_MSC3861: 'delegated_auth' },
    },
  ];
  return out;
}
