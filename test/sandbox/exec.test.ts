/**
 * Pod exec and port-forward of the sandbox, driven by the REAL @kubernetes/client-node Exec and PortForward (and a
 * raw `ws` client where client-node cannot show the effect), against a started sandbox: its API server, real
 * local processes and the real PostgreSQL server.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import v8 from 'node:v8';
import vm from 'node:vm';
import { Exec, KubeConfig, PortForward, type V1Status } from '@kubernetes/client-node';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { type Sandbox, startSandbox } from '../../src/sandbox/index.js';
import { commandsForImage, imageKey, resolveContainer, rewritePaths } from '../../src/sandbox/runtime.js';
import type { KubeObject, ResourceType, RuntimeContext } from '../../src/sandbox/types.js';

const POSTGRES_IMAGE = 'docker.io/postgres:15-alpine';
const SYNAPSE_IMAGE = 'oci.element.io/synapse:v1.157.1';
const MAS_IMAGE = 'ghcr.io/element-hq/matrix-authentication-service:1.23.0';
const SYNAPSE = 'ess-synapse-main-0';
const POSTGRES = 'ess-postgres-0';

let sandbox: Sandbox;
let NS: string;
let POD: ResourceType;
let ctx: RuntimeContext;
let kc: KubeConfig;
let masPod: string;
let hookPod: string;

function podNamed(prefix: string, phase: string): string {
  const pod = sandbox.store
    .list(POD, NS)
    .find((p) => p.metadata.name.startsWith(prefix) && (p.status as { phase?: string } | undefined)?.phase === phase);
  if (!pod) throw new Error(`no ${phase} pod ${prefix}*`);
  return pod.metadata.name;
}

beforeAll(async () => {
  sandbox = await startSandbox({ users: 5, mediaMb: 1, eventsPerUser: 2 });
  NS = sandbox.namespace;
  ctx = sandbox.runtime;
  POD = sandbox.store.resourceByKind('Pod', 'v1');
  masPod = podNamed('ess-matrix-authentication-service-', 'Running');
  hookPod = podNamed('ess-init-secrets-', 'Succeeded');
  kc = new KubeConfig();
  kc.loadFromFile(sandbox.kubeconfigPath);
}, 120_000);

afterAll(async () => {
  await sandbox?.stop();
});

interface ExecResult {
  stdout: Buffer;
  stderr: Buffer;
  status: V1Status | undefined;
  protocol: string;
}

function sink(chunks: Buffer[]): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk);
      cb();
    },
  });
}

/** Runs an exec with client-node and waits until the WebSocket is closed (by either side). */
async function run(pod: string, container: string, argv: string[], stdin: Readable | null = null): Promise<ExecResult> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let status: V1Status | undefined;
  const ws = (await new Exec(kc).exec(NS, pod, container, argv, sink(out), sink(err), stdin, false, (s) => {
    status = s;
  })) as unknown as WebSocket;
  if (ws.readyState !== WebSocket.CLOSED) await new Promise((resolve) => ws.once('close', resolve));
  return { stdout: Buffer.concat(out), stderr: Buffer.concat(err), status, protocol: ws.protocol };
}

/** Opens a raw WebSocket on a pod subresource; resolves with the HTTP status of a refused upgrade, or the socket. */
function rawSocket(pathAndQuery: string, protocols: string[]): Promise<{ code: number; body: string } | WebSocket> {
  const url = `${sandbox.apiUrl.replace(/^http/, 'ws')}/api/v1/namespaces/${NS}/pods/${pathAndQuery}`;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, { headers: { Authorization: `Bearer ${sandbox.token}` } });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => {
        body += d.toString();
      });
      res.on('end', () => resolve({ code: res.statusCode ?? 0, body }));
    });
    ws.on('open', () => resolve(ws));
    ws.on('error', (e) => reject(e));
  });
}

/** Collects frames of a raw exec WebSocket until it closes. */
function frames(ws: WebSocket): Promise<Map<number, Buffer>> {
  const got = new Map<number, Buffer[]>();
  ws.on('message', (d: Buffer) => {
    const ch = d[0] as number;
    got.set(ch, [...(got.get(ch) ?? []), d.subarray(1)]);
  });
  return new Promise((resolve) => {
    ws.on('close', () => resolve(new Map([...got].map(([k, v]) => [k, Buffer.concat(v)]))));
  });
}

/** A callable gc() without --expose-gc on the command line. */
function forceGc(): () => void {
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

function hostTmp(pod: string): string {
  return ctx.emptyDirPath(NS, pod, 'tmp');
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('runtime mapping', () => {
  it('rewrites container paths at path boundaries, longest mount first', () => {
    const mounts = [
      { containerPath: '/var/lib/postgres/data', hostPath: '/h/pgvol', readOnly: false },
      { containerPath: '/var/lib', hostPath: '/h/varlib', readOnly: false },
      { containerPath: '/media', hostPath: '/h/media', readOnly: false },
    ];
    expect(rewritePaths('/media/media_store/x', mounts)).toBe('/h/media/media_store/x');
    expect(rewritePaths('/media', mounts)).toBe('/h/media');
    expect(rewritePaths('/media2/x', mounts)).toBe('/media2/x');
    expect(rewritePaths('a/media/x', mounts)).toBe('a/media/x');
    expect(rewritePaths('--directory=/media', mounts)).toBe('--directory=/h/media');
    expect(rewritePaths('cd /media && tar cf - media_store; du -s "/var/lib/postgres/data/pgdata"', mounts)).toBe(
      'cd /h/media && tar cf - media_store; du -s "/h/pgvol/pgdata"',
    );
    expect(rewritePaths('/var/lib/other', mounts)).toBe('/h/varlib/other');
  });

  it('keys images by repository and knows what each ships', () => {
    expect(imageKey('docker.io/postgres:15-alpine')).toBe('postgres');
    expect(imageKey('docker.io/library/haproxy:3.2-alpine')).toBe('haproxy');
    expect(imageKey('oci.element.io/synapse@sha256:abc')).toBe('synapse');
    expect(imageKey('localhost:5000/synapse')).toBe('synapse');
    expect(commandsForImage(MAS_IMAGE)).toEqual(['mas-cli']);
    expect(commandsForImage(SYNAPSE_IMAGE)).toContain('tar');
    expect(commandsForImage(POSTGRES_IMAGE)).toEqual(expect.arrayContaining(['pg_dumpall', 'bash', 'tar']));
  });

  it('resolves the container like the API server, with env from Secrets and the PostgreSQL client environment', () => {
    const pgPod = sandbox.store.get(POD, NS, POSTGRES) as KubeObject;
    expect(() => resolveContainer(pgPod, undefined, ctx)).toThrow(
      /^a container name must be specified for pod ess-postgres-0, choose one of: \[postgres .*\]/,
    );
    expect(() => resolveContainer(pgPod, 'nope', ctx)).toThrow('container nope is not valid for pod ess-postgres-0');
    const c = resolveContainer(pgPod, 'postgres', ctx);
    expect(c.env.PGHOST).toBe(sandbox.postgres.host);
    expect(c.env.PGPORT).toBe(String(sandbox.postgres.port));
    expect(c.env.PGUSER).toBe('postgres');
    expect(c.mounts.find((m) => m.containerPath === '/var/lib/postgres/data')?.hostPath).toBe(
      sandbox.volumeDir(NS, 'ess-postgres-data'),
    );
    sandbox.store.create(sandbox.store.resourceByKind('Secret', 'v1'), {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'exec-test-secret', namespace: NS },
      data: { TOKEN: Buffer.from('s3cret').toString('base64') },
    });
    const custom: KubeObject = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'custom-0', namespace: NS },
      spec: {
        containers: [
          {
            name: 'app',
            image: SYNAPSE_IMAGE,
            env: [
              { name: 'A', value: 'x' },
              { name: 'B', value: '$(A)-y' },
              { name: 'T', valueFrom: { secretKeyRef: { name: 'exec-test-secret', key: 'TOKEN' } } },
              { name: 'N', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
            ],
            volumeMounts: [{ name: 's', mountPath: '/secrets/x', readOnly: true }],
          },
        ],
        volumes: [{ name: 's', secret: { secretName: 'exec-test-secret' } }],
      },
    };
    const app = resolveContainer(custom, undefined, ctx);
    expect(app.env).toMatchObject({ A: 'x', B: 'x-y', T: 's3cret', N: 'custom-0', HOSTNAME: 'custom-0' });
    expect(app.env.PGHOST).toBeUndefined();
    const secretMount = app.mounts.find((m) => m.containerPath === '/secrets/x');
    expect(secretMount?.readOnly).toBe(true);
    expect(readFileSync(path.join(secretMount?.hostPath ?? '', 'TOKEN'), 'utf8')).toBe('s3cret');
  });
});

describe('exec over WebSocket (client-node)', () => {
  it('returns stdout, stderr and the kubelet Success status on v5', async () => {
    const r = await run(SYNAPSE, 'synapse', ['sh', '-c', 'echo out; echo err >&2; echo "$HOSTNAME"']);
    expect(r.protocol).toBe('v5.channel.k8s.io');
    expect(r.stdout.toString()).toBe(`out\n${SYNAPSE}\n`);
    expect(r.stderr.toString()).toBe('err\n');
    expect(r.status).toEqual({ metadata: {}, status: 'Success' });
  });

  it('reports a non-zero exit code exactly like the kubelet', async () => {
    const r = await run(SYNAPSE, 'synapse', ['sh', '-c', 'exit 3']);
    expect(r.status).toEqual({
      metadata: {},
      status: 'Failure',
      message: 'command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3',
      reason: 'NonZeroExitCode',
      details: { causes: [{ reason: 'ExitCode', message: '3' }] },
    });
  });

  it('streams stdin and half-closes it with the v5 close frame', async () => {
    const data = randomBytes(3 * 1024 * 1024);
    const stdin = Readable.from([data.subarray(0, 1 << 20), data.subarray(1 << 20)]);
    const r = await run(POSTGRES, 'postgres', ['sha256sum'], stdin);
    expect(r.status?.status).toBe('Success');
    expect(r.stdout.toString().split(' ')[0]).toBe(createHash('sha256').update(data).digest('hex'));
  });

  it('v4-only: stdin cannot be half-closed; the process runs until the socket closes and no status arrives', async () => {
    ctx.execProtocol = 'v4-only';
    try {
      const tmp = hostTmp(SYNAPSE);
      rmSync(path.join(tmp, 'finished'), { force: true });
      const stdin = new PassThrough();
      stdin.write('hello');
      setTimeout(() => stdin.end(), 400);
      const r = await run(
        SYNAPSE,
        'synapse',
        ['sh', '-c', 'echo $$ > /tmp/pid; cat > /tmp/in.txt; touch /tmp/finished'],
        stdin,
      );
      expect(r.protocol).toBe('v4.channel.k8s.io');
      expect(r.status).toBeUndefined();
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(existsSync(path.join(tmp, 'finished'))).toBe(false);
      const pid = Number(readFileSync(path.join(tmp, 'pid'), 'utf8'));
      expect(pid).toBeGreaterThan(0);
      expect(alive(pid)).toBe(false);
    } finally {
      ctx.execProtocol = 'v5';
    }
  });

  it('v4-only never negotiates v5 (403 when it is the only protocol offered, as a pre-1.30 kubelet)', async () => {
    ctx.execProtocol = 'v4-only';
    try {
      const r = await rawSocket(`${SYNAPSE}/exec?command=true&stdout=true&container=synapse`, ['v5.channel.k8s.io']);
      expect(r).toEqual({ code: 403, body: '' });
    } finally {
      ctx.execProtocol = 'v5';
    }
  });

  it('speaks the legacy channel.k8s.io protocol: no JSON status, the error text on channel 3', async () => {
    const ws = await rawSocket(
      `${SYNAPSE}/exec?command=sh&command=-c&command=echo+legacy%3B+exit+2&stdout=true&stderr=true&container=synapse`,
      ['channel.k8s.io'],
    );
    if (!(ws instanceof WebSocket)) throw new Error(`upgrade refused: ${ws.code}`);
    expect(ws.protocol).toBe('channel.k8s.io');
    const got = await frames(ws);
    expect(got.get(1)?.toString()).toBe('legacy\n');
    expect(got.get(3)?.toString()).toBe(
      'command terminated with non-zero exit code: error executing command [sh -c echo legacy; exit 2], exit code 2',
    );
  });

  it('fails a missing executable like containerd/runc (InternalError status, no exit code)', async () => {
    const mas = await run(masPod, 'matrix-authentication-service', ['sh', '-c', 'true']);
    expect(mas.status?.status).toBe('Failure');
    expect(mas.status?.reason).toBe('InternalError');
    expect(mas.status?.code).toBe(500);
    expect(mas.status?.message).toMatch(
      /^Internal error occurred: error executing command in container: failed to exec in container: failed to start exec "[0-9a-f]{64}": OCI runtime exec failed: exec failed: unable to start container process: exec: "sh": executable file not found in \$PATH: unknown$/,
    );
    const syn = await run(SYNAPSE, 'synapse', ['pg_dump', '--version']);
    expect(syn.status?.message).toContain('exec: "pg_dump": executable file not found in $PATH');
    // Inside a shell the image's PATH applies too: the shell's own "not found", exit 127.
    const inShell = await run(SYNAPSE, 'synapse', ['sh', '-c', 'pg_dump --version']);
    expect(inShell.status?.details?.causes?.[0]?.message).toBe('127');
    expect(inShell.stderr.toString()).toContain('pg_dump: not found');
    const tar = await run(SYNAPSE, 'synapse', ['tar', '--version']);
    expect(tar.status?.status).toBe('Success');
  });

  it('rejects exec into a missing pod, a completed pod and an unknown container before upgrading', async () => {
    await expect(run('nope-0', 'x', ['true'])).rejects.toBeTruthy();
    await expect(run(hookPod, 'init-secrets', ['true'])).rejects.toBeTruthy();
    await expect(run(SYNAPSE, 'nope', ['true'])).rejects.toBeTruthy();
    const last = sandbox.requests.filter((r) => r.subresource === 'exec').slice(-3);
    expect(last.map((r) => r.status)).toEqual([404, 400, 400]);
  });

  it('answers attach with a 400 Status', async () => {
    const r = await rawSocket(`${SYNAPSE}/attach?stdout=true&container=synapse`, ['v4.channel.k8s.io']);
    if (r instanceof WebSocket) throw new Error('attach upgraded');
    expect(r.code).toBe(400);
    expect(JSON.parse(r.body)).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'BadRequest', code: 400 });
  });

  it('cuts the stream after N stdout bytes on an exec fault (no status)', async () => {
    sandbox.faults.addExecFault({ pod: SYNAPSE, commandIncludes: 'fault-marker', cutAfterBytes: 100_000 });
    const argv = ['sh', '-c', 'head -c 1000000 /dev/zero # fault-marker'];
    const r = await run(SYNAPSE, 'synapse', argv);
    expect(r.stdout.length).toBe(100_000);
    expect(r.status).toBeUndefined();
    // The fault is consumed: the next run completes.
    const again = await run(SYNAPSE, 'synapse', argv);
    expect(again.stdout.length).toBe(1_000_000);
    expect(again.status?.status).toBe('Success');
  });

  it('maps volume paths to host directories (argv, sh -c scripts)', async () => {
    const media = sandbox.volumeDir(NS, 'ess-synapse-media');
    const file = path.join(media, 'media_store', 'local_content', 'zz', 'cd', 'exectestfile');
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, 'media bytes');
    const cat = await run(SYNAPSE, 'synapse', ['cat', '/media/media_store/local_content/zz/cd/exectestfile']);
    expect(cat.stdout.toString()).toBe('media bytes');
    const sh = await run(SYNAPSE, 'synapse', [
      'sh',
      '-c',
      'd=/media/media_store; cd "$d" && ls local_content/zz/cd && cat /media/media_store/local_content/zz/cd/*',
    ]);
    expect(sh.stdout.toString()).toBe('exectestfile\nmedia bytes');
    const tar = await run(SYNAPSE, 'synapse', ['tar', '-C', '/media', '-cf', '-', 'media_store/local_content/zz']);
    expect(tar.status?.status).toBe('Success');
    expect(tar.stdout.includes(Buffer.from('media_store/local_content/zz/cd/exectestfile'))).toBe(true);
    const chown = await run(SYNAPSE, 'synapse', ['chown', '-R', '10091:10091', '/media/media_store/local_content/zz']);
    expect(chown.status?.status).toBe('Success');
    // Executables inside a volume run as they are (a script from a ConfigMap or a PVC).
    writeFileSync(path.join(media, 'run.sh'), '#!/bin/sh\necho "script in $(basename "$0")"\n', { mode: 0o755 });
    writeFileSync(path.join(media, 'noexec.sh'), '#!/bin/sh\necho no\n', { mode: 0o644 });
    expect((await run(SYNAPSE, 'synapse', ['/media/run.sh'])).stdout.toString()).toBe('script in run.sh\n');
    expect((await run(SYNAPSE, 'synapse', ['/media/noexec.sh'])).status?.message).toMatch(
      /exec: "\/media\/noexec.sh": permission denied: unknown$/,
    );
  });

  it('runs the PostgreSQL tools of the image against the real server, with env values mapped', async () => {
    const r = await run(POSTGRES, 'postgres', ['psql', '-U', 'postgres', '-tAc', 'select 40 + 2']);
    expect(r.stdout.toString()).toBe('42\n');
    const v = await run(POSTGRES, 'postgres', ['sh', '-c', 'test -f "$PGDATA/PG_VERSION" && cat "$PGDATA/PG_VERSION"']);
    expect(v.stdout.toString().trim()).toBe(sandbox.postgres.version.split('.')[0]);
  });

  it('kills the process when its pod vanishes: exit code 137 after the output so far', async () => {
    const victim = 'ess-synapse-synchrotron-0';
    setTimeout(() => sandbox.faults.disappearPod(NS, victim), 500);
    const r = await run(victim, 'synapse', ['sh', '-c', 'echo started; exec sleep 30']);
    expect(r.stdout.toString()).toBe('started\n');
    expect(r.status?.reason).toBe('NonZeroExitCode');
    expect(r.status?.details?.causes?.[0]).toEqual({ reason: 'ExitCode', message: '137' });
  });

  it('stops reading stdin from the socket while the process does not read it (backpressure)', async () => {
    // The client runs in its own process so that only the sandbox's memory is measured here.
    const total = 64 * 1024 * 1024;
    const url = `${sandbox.apiUrl.replace(/^http/, 'ws')}/api/v1/namespaces/${NS}/pods/${SYNAPSE}/exec?command=sh&command=-c&command=sleep+3%3B+wc+-c&stdin=true&stdout=true&stderr=true&container=synapse`;
    const client = [
      "const WebSocket = require('ws');",
      "const ws = new WebSocket(process.argv[1], ['v5.channel.k8s.io']);",
      "let out = '';",
      "ws.on('open', () => {",
      '  const frame = Buffer.alloc((1 << 20) + 1, 0x61); frame[0] = 0;',
      `  for (let i = 0; i < ${total / (1 << 20)}; i++) ws.send(frame);`,
      '  ws.send(Buffer.from([255, 0]));',
      '});',
      "ws.on('message', (d) => { out += d[0] + ':' + d.subarray(1).toString() + '|'; });",
      "ws.on('close', () => process.stdout.write(out));",
    ].join('\n');
    const gc = forceGc();
    gc();
    const base = process.memoryUsage().arrayBuffers;
    let held = 0;
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, ['-e', client, url], { stdio: ['ignore', 'pipe', 'inherit'] });
      let text = '';
      child.stdout.on('data', (d: Buffer) => {
        text += d.toString();
      });
      child.on('error', reject);
      child.on('close', () => resolve(text));
      // Mid-sleep: what the sandbox holds live of the stdin sent so far.
      setTimeout(() => {
        gc();
        held = process.memoryUsage().arrayBuffers - base;
      }, 2500);
    });
    expect(out).toBe(`1:${total}\n|3:{"metadata":{},"status":"Success"}|`);
    // Without backpressure the sandbox would take in most of the 64 MB while the process sleeps.
    expect(held).toBeLessThan(8 * 1024 * 1024);
  });

  it('keeps memory flat for 200 MB of stdout to a slow consumer (backpressure)', async () => {
    const total = 200_000_000;
    const ws = await rawSocket(
      `${POSTGRES}/exec?command=head&command=-c&command=${total}&command=/dev/zero&stdout=true&stderr=true&container=postgres`,
      ['v5.channel.k8s.io'],
    );
    if (!(ws instanceof WebSocket)) throw new Error(`upgrade refused: ${ws.code}`);
    // A consumer that stalls: not reading at all for a while, then reading in bursts with pauses.
    // While it stalls, the live memory (after a GC, so consumed chunks waiting for collection do
    // not count) is what the sandbox and the socket hold of the stream.
    ws.pause();
    const gc = forceGc();
    gc();
    const base = process.memoryUsage().arrayBuffers;
    const held: number[] = [];
    // V8 sweeps freed ArrayBuffers concurrently: read the figure a moment after the GC.
    const sampleHeld = (): void => {
      gc();
      setTimeout(() => held.push(process.memoryUsage().arrayBuffers - base), 30);
    };
    let received = 0;
    let status = '';
    await new Promise<void>((resolve, reject) => {
      ws.on('error', reject);
      let nextStall = 40_000_000;
      ws.on('message', (data: Buffer) => {
        if (data[0] === 1) received += data.length - 1;
        else if (data[0] === 3) status = data.subarray(1).toString();
        if (received >= nextStall) {
          nextStall += 40_000_000;
          ws.pause();
          setTimeout(sampleHeld, 120);
          setTimeout(() => ws.resume(), 200);
        }
      });
      ws.on('close', () => resolve());
      setTimeout(sampleHeld, 550);
      setTimeout(() => ws.resume(), 700);
    });
    expect(received).toBe(total);
    expect(status).toBe('{"metadata":{},"status":"Success"}');
    // `head` produces the 200 MB within the first stall: without backpressure the sandbox would hold
    // (nearly) all of it at that point. With it, the sandbox queues ~1 MiB per stream; the rest of what
    // is measured is the socket layers of both ends and allocator slack (observed up to ~30 MiB).
    expect(held.length).toBeGreaterThanOrEqual(5);
    expect(Math.max(...held)).toBeLessThan(64 * 1024 * 1024);
  });
});

describe('port-forward over WebSocket (client-node)', () => {
  async function forward(pod: string, port: number): Promise<{ local: net.Server; port: number; errors: string[] }> {
    const errors: string[] = [];
    const local = net.createServer((socket) => {
      const err = new Writable({
        write(chunk: Buffer, _e, cb) {
          errors.push(chunk.toString());
          cb();
        },
      });
      new PortForward(kc).portForward(NS, pod, [port], socket, err, socket).then(
        (ws) => {
          const w = ws as unknown as WebSocket;
          w.on('close', () => socket.destroy());
          socket.on('close', () => w.close());
        },
        () => socket.destroy(),
      );
    });
    await new Promise<void>((resolve) => local.listen(0, '127.0.0.1', resolve));
    return { local, port: (local.address() as net.AddressInfo).port, errors };
  }

  it('forwards the Postgres pod port 5432 to the real server (pg query through the tunnel)', async () => {
    const f = await forward(POSTGRES, 5432);
    try {
      const client = new pg.Client({ host: '127.0.0.1', port: f.port, user: 'postgres', database: 'synapse' });
      await client.connect();
      const res = await client.query('select current_setting($1) as port, count(*)::int as users from users', ['port']);
      await client.end();
      expect(res.rows[0]).toEqual({ port: String(sandbox.postgres.port), users: sandbox.seed.tables.users });
    } finally {
      f.local.close();
    }
  });

  it('reports a port nobody listens on through the error channel, as containerd does', async () => {
    const f = await forward(SYNAPSE, 8008);
    try {
      await new Promise<void>((resolve) => {
        const s = net.connect(f.port, '127.0.0.1');
        s.on('close', () => resolve());
        s.on('error', () => {});
      });
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(f.errors.join('')).toMatch(
        /^error forwarding port 8008 to pod [0-9a-f]{64}, uid : .*connect: connection refused/,
      );
    } finally {
      f.local.close();
    }
  });

  it('cuts a forwarded connection after N bytes on an exec fault', async () => {
    sandbox.faults.addExecFault({ pod: POSTGRES, commandIncludes: 'portforward', cutAfterBytes: 8 });
    const f = await forward(POSTGRES, 5432);
    try {
      const client = new pg.Client({ host: '127.0.0.1', port: f.port, user: 'postgres', database: 'postgres' });
      client.on('error', () => {});
      await expect(client.connect()).rejects.toThrow();
    } finally {
      f.local.close();
    }
  });
});
