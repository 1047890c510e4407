/**
 * ess's own kubeconfig reading (src/lib/kube/access.ts): merge rules, relative paths, each credential kind, the
 * hand-over to client-node for what ess does not implement, and real TLS with a client certificate against a local
 * HTTPS server (certificates made by the openssl CLI).
 */
import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { inClusterAccess, nativeAccess, parseKubeconfigFiles } from '../../src/lib/kube/access.js';
import { kubeRequest } from '../../src/lib/kube/http-client.js';
import { loadClusterAccess } from '../../src/lib/kube/load.js';
import { removeDir, tempDir } from '../archive/helpers.js';

describe('kubeconfig access without client-node', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await tempDir('ess-access-test-');
  });
  afterAll(async () => {
    await removeDir(dir);
  });

  async function kubeconfig(name: string, doc: unknown): Promise<string> {
    const path = join(dir, name);
    await writeFile(path, stringify(doc));
    return path;
  }

  it('merges files like kubectl: the first definition of a name and the first current-context win', async () => {
    const a = await kubeconfig('a.yaml', {
      'current-context': 'one',
      contexts: [{ name: 'one', context: { cluster: 'c1', user: 'u1' } }],
      clusters: [{ name: 'c1', cluster: { server: 'https://first.example:6443' } }],
      users: [{ name: 'u1', user: { token: 'first-token' } }],
    });
    const b = await kubeconfig('b.yaml', {
      'current-context': 'two',
      contexts: [
        { name: 'two', context: { cluster: 'c2', user: 'u2' } },
        { name: 'one', context: { cluster: 'c2', user: 'u2' } },
      ],
      clusters: [
        { name: 'c1', cluster: { server: 'https://ignored.example' } },
        { name: 'c2', cluster: { server: 'https://second.example' } },
      ],
      users: [{ name: 'u2', user: { username: 'admin', password: 's3cret' } }],
    });
    const merged = parseKubeconfigFiles([a, b]);
    const current = nativeAccess(merged, undefined)!;
    expect(current.contextName).toBe('one');
    expect(current.server).toBe('https://first.example:6443');
    expect((await current.requestOptions()).headers).toEqual({ Authorization: 'Bearer first-token' });
    const two = nativeAccess(merged, 'two')!;
    expect(two.server).toBe('https://second.example');
    expect((await two.requestOptions()).headers).toEqual({
      Authorization: `Basic ${Buffer.from('admin:s3cret').toString('base64')}`,
    });
  });

  it('names the contexts there are when --context is wrong, and refuses a context without a cluster', async () => {
    const path = await kubeconfig('ctx.yaml', {
      contexts: [{ name: 'dangling', context: { cluster: 'nowhere', user: 'u' } }],
      clusters: [],
      users: [],
    });
    const parsed = parseKubeconfigFiles([path]);
    expect(() => nativeAccess(parsed, 'prod')).toThrow(/Context "prod" is not in the kubeconfig/);
    expect(() => nativeAccess(parsed, 'dangling')).toThrow(/no current context or cluster/);
    await expect(loadClusterAccess({ kubeconfig: join(dir, 'missing.yaml') })).rejects.toThrow(/Kubeconfig not found/);
  });

  it('re-reads a token file relative to the kubeconfig on every request (projected tokens rotate)', async () => {
    await mkdir(join(dir, 'sub', 'tokens'), { recursive: true });
    const path = join(dir, 'sub', 'config');
    await writeFile(
      path,
      stringify({
        'current-context': 'c',
        contexts: [{ name: 'c', context: { cluster: 'k', user: 'sa' } }],
        clusters: [{ name: 'k', cluster: { server: 'https://k.example', 'insecure-skip-tls-verify': true } }],
        users: [{ name: 'sa', user: { tokenFile: 'tokens/t' } }],
      }),
    );
    await writeFile(join(dir, 'sub', 'tokens', 't'), 'token-1\n');
    const access = (await loadClusterAccess({ kubeconfig: path }))!;
    expect(await access.requestOptions()).toMatchObject({
      rejectUnauthorized: false,
      headers: { Authorization: 'Bearer token-1' },
    });
    await writeFile(join(dir, 'sub', 'tokens', 't'), 'token-2\n');
    expect((await access.requestOptions()).headers).toEqual({ Authorization: 'Bearer token-2' });
  });

  it('hands exec plugins and proxies to client-node', async () => {
    const base = {
      'current-context': 'c',
      contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }],
    };
    const execUser = parseKubeconfigFiles([
      await kubeconfig('exec.yaml', {
        ...base,
        clusters: [{ name: 'k', cluster: { server: 'https://k.example' } }],
        users: [{ name: 'u', user: { exec: { apiVersion: 'client.authentication.k8s.io/v1', command: 'true' } } }],
      }),
    ]);
    expect(nativeAccess(execUser, undefined)).toBeUndefined();
    const proxied = parseKubeconfigFiles([
      await kubeconfig('proxy.yaml', {
        ...base,
        clusters: [{ name: 'k', cluster: { server: 'https://k.example', 'proxy-url': 'http://proxy:3128' } }],
        users: [{ name: 'u', user: { token: 't' } }],
      }),
    ]);
    expect(nativeAccess(proxied, undefined)).toBeUndefined();
    // Through loadClusterAccess the same file is served by client-node's KubeConfig, exec plugin included.
    const access = await loadClusterAccess({ kubeconfig: join(dir, 'exec.yaml') });
    expect(access.server).toBe('https://k.example');
  });

  it('reads the in-cluster ServiceAccount', async () => {
    const sa = join(dir, 'sa');
    await mkdir(sa);
    await writeFile(join(sa, 'ca.crt'), 'CA PEM');
    await writeFile(join(sa, 'token'), 'sa-token\n');
    const access = inClusterAccess({ KUBERNETES_SERVICE_HOST: '10.0.0.1', KUBERNETES_SERVICE_PORT: '443' }, sa);
    expect(access.server).toBe('https://10.0.0.1:443');
    const options = await access.requestOptions();
    expect(options.headers).toEqual({ Authorization: 'Bearer sa-token' });
    expect(String(options.ca)).toBe('CA PEM');
  });

  it('talks TLS with the CA file and a client certificate from the kubeconfig, and fails on a wrong CA', async () => {
    const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    const key = ['-newkey', 'rsa:2048', '-nodes', '-keyout'];
    /** A self-signed CA certificate `<name>.crt` with its key `<name>.key`. */
    const selfSigned = (name: string, cn: string) =>
      ssl('req', '-x509', ...key, `${name}.key`, '-out', `${name}.crt`, '-days', '1', '-subj', `/CN=${cn}`);
    /** A certificate `<name>.crt` (key `<name>.key`) signed by ca.crt. */
    const signed = (name: string, cn: string, ...extra: string[]) => {
      ssl('req', ...key, `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
      ssl(
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        'ca.crt',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        `${name}.crt`,
        '-days',
        '1',
        ...extra,
      );
    };
    selfSigned('ca', 'test-ca');
    await writeFile(join(dir, 'san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
    signed('server', 'localhost', '-extfile', 'san.ext');
    signed('client', 'ess-admin');
    selfSigned('other', 'other-ca');
    const { readFileSync } = await import('node:fs');
    const server = https.createServer(
      {
        key: readFileSync(join(dir, 'server.key')),
        cert: readFileSync(join(dir, 'server.crt')),
        ca: readFileSync(join(dir, 'ca.crt')),
        requestCert: true,
        rejectUnauthorized: true,
      },
      (req, res) => {
        const peer = (req.socket as import('node:tls').TLSSocket).getPeerCertificate();
        res.setHeader('Content-Type', 'application/json');
        res.end(JSON.stringify({ user: peer.subject?.CN, path: req.url }));
      },
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const config = (ca: string) =>
        kubeconfig(`tls-${ca}.yaml`, {
          'current-context': 'c',
          contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }],
          clusters: [{ name: 'k', cluster: { server: `https://127.0.0.1:${port}`, 'certificate-authority': ca } }],
          users: [
            {
              name: 'u',
              user: {
                'client-certificate-data': readFileSync(join(dir, 'client.crt')).toString('base64'),
                'client-key': 'client.key',
              },
            },
          ],
        });
      const good = await loadClusterAccess({ kubeconfig: await config('ca.crt') });
      expect(await kubeRequest(good, 'GET', '/api/v1/namespaces')).toEqual({
        user: 'ess-admin',
        path: '/api/v1/namespaces',
      });
      const wrong = await loadClusterAccess({ kubeconfig: await config('other.crt') });
      await expect(kubeRequest(wrong, 'GET', '/api/v1/namespaces')).rejects.toThrow();
    } finally {
      server.close();
    }
  });
});
