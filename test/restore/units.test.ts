/**
 * Unit tests of the restore building blocks that need no cluster: the roles script, Kubernetes object members, the
 * media plan and the tar sent to the pod (through a small fake KubeClient whose exec reads stdin exactly like
 * `head -c N | tar -x` would), SQL quoting, and the preflight decisions on a manifest.
 */
import { join } from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { describe, expect, it } from 'vitest';
import type { BackupManifest } from '../../src/lib/archive/manifest.js';
import type { MediaIndexEntry } from '../../src/lib/archive/media-index.js';
import { PathSetDigest } from '../../src/lib/archive/path-set-digest.js';
import { EssError } from '../../src/lib/errors.js';
import type { ExecIO, ExecResult, ExecTarget, KubeClient } from '../../src/lib/kube/client.js';
import { silentReporter } from '../../src/lib/output/log.js';
import { LocalDirStore } from '../../src/lib/storage/local-dir.js';
import type { VerifiedArchive } from '../../src/services/restore/archive.js';
import { planMediaSources, verifyParents } from '../../src/services/restore/archive.js';
import {
  createDatabaseSql,
  dropRolesSql,
  globalsScript,
  pgRestoreArgv,
  quoteIdent,
  quoteLiteral,
} from '../../src/services/restore/database.js';
import { helperPodManifest } from '../../src/services/restore/media-pod.js';
import { objectBody, parseObjectMember } from '../../src/services/restore/objects.js';
import { PodTarSink } from '../../src/services/restore/pod-tar.js';
import {
  checkManifestAgainstTarget,
  helmCommand,
  schemaCheck,
  selectParts,
  type TargetInfo,
} from '../../src/services/restore/preflight.js';
import { DEFAULT_MEDIA, flipByte, offsetOf, removeDir, tempDir, writeTestBackup } from '../backup-tools/helpers.js';

const GLOBALS = `--
-- PostgreSQL database cluster dump
--

\\restrict abc123

SET default_transaction_read_only = off;

CREATE ROLE matrixauthenticationservice_user;
ALTER ROLE matrixauthenticationservice_user WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:a$b:c';
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:x$y:z';
CREATE ROLE "Odd ""Role""";
ALTER ROLE "Odd ""Role""" WITH LOGIN;
CREATE ROLE synapse_user;
ALTER ROLE synapse_user WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:q$r:s';

\\unrestrict abc123
`;

describe('roles script', () => {
  it('creates roles only when missing, keeps their attributes and leaves the superuser alone', () => {
    const script = globalsScript(Buffer.from(GLOBALS), 'postgres');
    const sql = script.sql.toString();
    expect(script.roles).toEqual(['matrixauthenticationservice_user', 'Odd "Role"', 'synapse_user']);
    expect(sql).toContain(
      'DO $ess$BEGIN CREATE ROLE "synapse_user"; EXCEPTION WHEN duplicate_object THEN NULL; END$ess$;',
    );
    expect(sql).toContain('CREATE ROLE "Odd ""Role""";');
    expect(sql).not.toMatch(/^CREATE ROLE/m);
    expect(sql).not.toMatch(/ALTER ROLE postgres/);
    expect(sql).toContain("ALTER ROLE synapse_user WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:q$r:s';");
    expect(sql).toContain('\\restrict abc123');
    expect(sql).toContain('\\unrestrict abc123');
  });

  it('refuses role names it cannot quote safely', () => {
    expect(() => globalsScript(Buffer.from('CREATE ROLE "a$ess$b";\n'), 'postgres')).toThrow(/cannot handle/);
  });

  it('quotes identifiers and literals', () => {
    expect(quoteIdent('we"ird')).toBe('"we""ird"');
    expect(quoteLiteral("it's")).toBe("'it''s'");
    expect(createDatabaseSql('syn"apse', 'synapse_user')).toBe(
      `CREATE DATABASE "syn""apse" OWNER "synapse_user" ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`,
    );
    expect(dropRolesSql(["o'brien"])).toContain("ARRAY['o''brien']::text[]");
    expect(dropRolesSql([])).toBe('SELECT 1');
  });

  it('builds pg_restore argv for staged and streamed dumps', () => {
    const pg = { namespace: 'ess', pod: 'ess-postgres-0', container: 'postgres', superuser: 'postgres' };
    const staged = pgRestoreArgv(pg, { database: 'synapse', jobs: 4, file: '/data/x.dump' });
    expect(staged.slice(2)).toEqual([
      'pg_restore',
      '-U',
      'postgres',
      '-d',
      'synapse',
      '--exit-on-error',
      '--no-password',
      '--jobs=4',
      '/data/x.dump',
    ]);
    const streamed = pgRestoreArgv(pg, { database: 'synapse', jobs: 4, owner: 'synapse_user' });
    expect(streamed).toContain('--no-owner');
    expect(streamed).toContain('--role=synapse_user');
    expect(streamed.some((a) => a.startsWith('--jobs'))).toBe(false);
  });
});

describe('Kubernetes object members', () => {
  const secretYaml = `apiVersion: v1
kind: Secret
metadata:
  name: ess-generated
  labels:
    app.kubernetes.io/managed-by: matrix-tools-init-secrets
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: "{}"
    keep: me
type: Opaque
data:
  MAS_RSA_PRIVATE_KEY: ${Buffer.from([0x30, 0x82, 0x00, 0xff, 0x00]).toString('base64')}
`;

  it('parses a Secret manifest keeping base64 exactly and the init-secrets label', () => {
    const o = parseObjectMember('kubernetes/secrets/ess-generated.yaml', Buffer.from(secretYaml));
    expect(o).toMatchObject({
      kind: 'Secret',
      name: 'ess-generated',
      type: 'Opaque',
      labels: { 'app.kubernetes.io/managed-by': 'matrix-tools-init-secrets' },
      annotations: { keep: 'me' },
      data: { MAS_RSA_PRIVATE_KEY: 'MIIA/wA=' },
    });
    const body = objectBody(o, 'ess-new');
    expect(body.metadata.namespace).toBe('ess-new');
    expect(body.data).toEqual({ MAS_RSA_PRIVATE_KEY: 'MIIA/wA=' });
  });

  it('parses ConfigMaps in both the manifest and the flat SavedObject shape', () => {
    const manifest = parseObjectMember(
      'kubernetes/configmaps/ess-markers.yaml',
      Buffer.from(
        'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ess-markers\ndata:\n  MATRIX_STACK_MSC3861: "true"\nbinaryData:\n  b: AAE=\n',
      ),
    );
    expect(manifest).toMatchObject({ stringData: { MATRIX_STACK_MSC3861: 'true' }, data: { b: 'AAE=' } });
    expect(objectBody(manifest, 'ess')).toMatchObject({
      data: { MATRIX_STACK_MSC3861: 'true' },
      binaryData: { b: 'AAE=' },
    });
    const flat = parseObjectMember(
      'kubernetes/configmaps/ess-markers.yaml',
      Buffer.from('kind: ConfigMap\nname: ess-markers\nlabels: {}\nannotations: {}\ndata: {}\nstringData:\n  a: "1"\n'),
    );
    expect(flat.stringData).toEqual({ a: '1' });
  });

  it('refuses objects that do not belong in their member or carry non-base64 data', () => {
    expect(() => parseObjectMember('kubernetes/secrets/other.yaml', Buffer.from(secretYaml))).toThrow(
      /belongs in kubernetes\/secrets\/ess-generated.yaml/,
    );
    expect(() =>
      parseObjectMember(
        'kubernetes/secrets/x.yaml',
        Buffer.from('apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\ndata:\n  k: "not base64!"\n'),
      ),
    ).toThrow(/not base64/);
    expect(() => parseObjectMember('kubernetes/secrets/x.yaml', Buffer.from('kind: Pod\nname: x\n'))).toThrow(/kind/);
  });
});

/** A KubeClient whose exec behaves like `sh -c 'head -c N | …'`: it reads exactly N bytes of stdin. */
function fakeKube(onStdin: (argv: string[], data: Buffer) => number): KubeClient & { calls: string[][] } {
  const calls: string[][] = [];
  const unused = () => {
    throw new Error('not used');
  };
  return {
    calls,
    contextName: 'fake',
    server: 'fake',
    get: unused,
    list: unused,
    create: unused,
    replace: unused,
    patch: unused,
    delete: unused,
    portForward: unused,
    async exec(_target: ExecTarget, argv: string[], io: ExecIO = {}): Promise<ExecResult> {
      calls.push(argv);
      const match = /^head -c (\d+) \| /.exec(argv[2] ?? '');
      const want = match ? Number(match[1]) : 0;
      const chunks: Buffer[] = [];
      let got = 0;
      if (io.stdin) {
        for await (const chunk of io.stdin as AsyncIterable<Buffer>) {
          chunks.push(chunk);
          got += chunk.length;
          if (got >= want) break;
        }
      }
      const exitCode = onStdin(argv, Buffer.concat(chunks).subarray(0, want));
      return { exitCode, stderrTail: exitCode ? 'tar: unexpected EOF' : '', protocol: 'v4.channel.k8s.io' };
    },
  } as KubeClient & { calls: string[][] };
}

async function parseTar(
  data: Buffer,
): Promise<{ name: string; type: string; uid?: number; size?: number; body: Buffer }[]> {
  const extract = tar.extract();
  const out: { name: string; type: string; uid?: number; size?: number; body: Buffer }[] = [];
  const done = (async () => {
    for await (const entry of extract as unknown as AsyncIterable<AsyncIterable<Buffer> & { header: tar.Header }>) {
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c);
      out.push({
        name: entry.header.name,
        type: entry.header.type ?? 'file',
        uid: entry.header.uid,
        size: entry.header.size,
        body: Buffer.concat(chunks),
      });
    }
  })();
  extract.end(data);
  await done;
  return out;
}

describe('media plan and the tar sent to the pod', () => {
  const index: MediaIndexEntry[] = [
    { path: 'local_content/ab/cd/one', size: 1000 },
    { path: 'local_content/ab/ce/two', size: 0 },
    { path: `remote_content/${'a'.repeat(60)}.example/${'b'.repeat(60)}/long`, size: 513 },
    { path: 'local_content/zz/zz/old', size: 7, archive: 'ess-backup_x_20250101T000000Z.tar' },
  ];

  it('plans per archive, and the tar is exactly the announced size, owned by UID 10091', async () => {
    const sources = await planMediaSources(index, 'own.tar');
    const own = sources.find((s) => s.own)!;
    const parent = sources.find((s) => !s.own)!;
    expect([own.files, own.bytes, parent.files, parent.bytes]).toEqual([3, 1513, 1, 7]);
    expect(parent.paths).toEqual(new Set(['local_content/zz/zz/old']));
    expect(own.dirs).toContain('local_content/ab');
    expect(own.dirs).toContain('local_content');

    let received: Buffer = Buffer.alloc(0);
    const kube = fakeKube((_argv, data) => {
      received = data;
      return 0;
    });
    const sink = new PodTarSink(
      kube,
      { namespace: 'ess', pod: 'p' },
      {
        extractor: ['tar', '-x', '-f', '-', '-C', '/media/media_store'],
        storePath: '/media/media_store',
        totalBytes: own.tarBytes,
        dirs: own.dirs,
      },
    );
    await sink.start();
    for (const e of index.filter((x) => !x.archive)) {
      await sink.addFile(e.path, e.size, new Date(1_700_000_000_000), Readable.from([Buffer.alloc(e.size, 1)]));
    }
    await sink.finish();
    expect(received.length).toBe(own.tarBytes);
    expect(kube.calls[0]?.[2]).toBe(
      `head -c ${own.tarBytes} | sh -c 'mkdir -p "$0" && cd "$0" && exec "$@"' /media/media_store tar -x -f - -C /media/media_store`,
    );
    const entries = await parseTar(received);
    const files = entries.filter((e) => e.type === 'file');
    expect(files.map((f) => [f.name, f.size])).toEqual(index.filter((x) => !x.archive).map((e) => [e.path, e.size]));
    expect(entries.every((e) => e.uid === 10091)).toBe(true);
    expect(entries.findIndex((e) => e.type === 'file')).toBe(own.dirs.length);
  });

  it('refuses a file whose size differs from the index, cutting the stream', async () => {
    const kube = fakeKube(() => 2);
    const sink = new PodTarSink(
      kube,
      { namespace: 'ess', pod: 'p' },
      { extractor: ['tar', '-x'], storePath: '/m', totalBytes: 5000, dirs: [] },
    );
    await sink.start();
    await expect(sink.addFile('a', 10, undefined, Readable.from([Buffer.alloc(9)]))).rejects.toThrow(
      /ended after 9 of 10 bytes/,
    );
    await expect(sink.finish()).rejects.toThrow(EssError);
  });
});

describe('preflight decisions', () => {
  const manifest = {
    formatVersion: 1,
    kind: 'ess-backup',
    createdAt: '2025-03-01T02:00:00Z',
    ess: { version: '1' },
    deployment: { serverName: 'example.com', namespace: 'ess', release: 'ess' },
    postgres: {
      databases: [
        {
          name: 'synapse',
          component: 'synapse',
          member: 'postgres/synapse.dump',
          sizeBytes: 1,
          tables: [],
          rowCounts: 'exact',
        },
      ],
    },
    members: [],
  } as unknown as BackupManifest;
  const target = (serverName?: string): TargetInfo => ({
    namespace: 'ess',
    release: 'ess',
    namespaceExists: true,
    deployment: serverName
      ? ({
          serverName,
          namespace: 'ess',
          release: 'ess',
          flavour: 'matrix-stack',
          workloads: [],
          warnings: [],
        } as TargetInfo['deployment'])
      : undefined,
  });

  it('refuses another server unless allowed, and another release always', () => {
    const warnings: string[] = [];
    expect(() =>
      checkManifestAgainstTarget(
        manifest,
        target('other.org'),
        { allowDifferentServerName: false, release: 'ess' },
        warnings,
      ),
    ).toThrow(expect.objectContaining({ code: 'SERVER_NAME_MISMATCH', exitCode: 4 }));
    checkManifestAgainstTarget(
      manifest,
      target('other.org'),
      { allowDifferentServerName: true, release: 'ess' },
      warnings,
    );
    expect(warnings).toHaveLength(1);
    checkManifestAgainstTarget(manifest, target(), { allowDifferentServerName: false, release: 'ess' }, []);
    expect(() =>
      checkManifestAgainstTarget(
        manifest,
        target('example.com'),
        { allowDifferentServerName: false, release: 'prod' },
        [],
      ),
    ).toThrow(expect.objectContaining({ code: 'RELEASE_MISMATCH' }));
  });

  it('selects the parts the archive holds, and refuses --only of a missing part', () => {
    const archive = { manifest, objects: [], values: Buffer.from('a: 1') } as unknown as VerifiedArchive;
    expect(selectParts(archive, undefined)).toEqual(['secrets', 'db']);
    expect(selectParts(archive, ['db', 'secrets'])).toEqual(['secrets', 'db']);
    expect(() => selectParts(archive, ['media'])).toThrow(expect.objectContaining({ code: 'PART_NOT_IN_BACKUP' }));
  });

  it('warns when the target Synapse is older than the dump schema', () => {
    const m = { ...manifest, synapse: { version: '1.129.0', schemaVersion: 92, schemaCompatVersion: 88 } };
    expect(schemaCheck(m, 'v1.157.1')).toEqual({});
    expect(schemaCheck(m, 'v1.129.0')).toEqual({});
    expect(schemaCheck(m, 'v1.128.0').warning).toMatch(/older than the dump's schema 92.*upgrade it to 1.129.0/);
    expect(schemaCheck(m, 'v1.100.0').warning).toMatch(/REFUSE TO START/);
    expect(schemaCheck(m, 'sha256:abc').note).toMatch(/Cannot tell/);
    expect(schemaCheck({ ...m, synapse: { schemaVersion: 99 } }, 'v1.200.0').note).toMatch(/Cannot tell/);
  });

  it('prints a helm command and a helper pod that runs as the Synapse user', () => {
    expect(helmCommand('ess', 'my ns', '/tmp/v.yaml', '26.8.1')).toBe(
      "helm upgrade --install ess oci://ghcr.io/element-hq/ess-helm/matrix-stack --version 26.8.1 --namespace 'my ns' --values /tmp/v.yaml",
    );
    const pod = helperPodManifest({
      namespace: 'ess',
      release: 'ess',
      claimName: 'ess-synapse-media',
      image: 'synapse:1',
    });
    expect(pod.spec).toMatchObject({
      restartPolicy: 'Never',
      securityContext: { runAsUser: 10091, fsGroup: 10091 },
      volumes: [{ persistentVolumeClaim: { claimName: 'ess-synapse-media' } }],
    });
  });
});

describe('verifyParents', () => {
  it('names the parent archive when a media file in it is damaged', async () => {
    const work = await tempDir('ess-parents-');
    try {
      const store = new LocalDirStore(work);
      const parent = await writeTestBackup(store, { createdAt: new Date(Date.UTC(2025, 2, 1)) }, work);
      const path = 'local_content/ab/cd/efghijklmnop';
      const file = join(work, parent);
      await flipByte(file, (await offsetOf(file, DEFAULT_MEDIA[path]!.subarray(100, 132))) + 3);
      const digest = new PathSetDigest();
      digest.add(path, DEFAULT_MEDIA[path]!.length);
      const source = {
        archive: parent,
        own: false,
        files: 1,
        bytes: 0,
        dirs: [],
        tarBytes: 0,
        paths: new Set([path]),
        digest,
      };
      const error = await verifyParents(store, [source], { reporter: silentReporter, serverName: 'example.com' }).catch(
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(EssError);
      expect((error as EssError).code).toBe('ARCHIVE_CORRUPT');
      expect((error as EssError).message).toMatch(new RegExp(`^In the parent ${parent}: .*media/${path}`));
      expect((error as EssError).next[0]).toBe(`Verify it: ess backup verify ${parent}`);
    } finally {
      await removeDir(work);
    }
  });
});
