#!/usr/bin/env node
/**
 * `npm run sandbox`: starts a sandbox, prints how to reach it, and runs until Ctrl-C or SIGTERM.
 */
import { parseArgs } from 'node:util';
import { type SandboxOptions, startSandbox } from './index.js';

const USAGE = `Usage: npm run sandbox -- [options]

Starts a simulated ESS (Kubernetes API + real PostgreSQL) on this machine.

Options:
  --state-dir DIR         keep volumes, database and kubeconfig in DIR (reused on restart; default: temp dir)
  --port N                API server port (default: any free port)
  --users N               number of seeded Matrix users (default 200)
  --media-mb N            approximate size of seeded media in MB (default 5)
  --synapse-schema FILE   load this Synapse schema SQL instead of the built-in one
  --stuck-release         seed a Helm history whose latest revision is stuck in pending-upgrade
  --operator              seed the older operator-based ESS (namespace element-onprem) instead of matrix-stack
  --exec-protocol v5|v4   exec subprotocols to accept: v5 (Kubernetes >= 1.30) or v4 only (older clusters)
  --server-name NAME      Matrix server name (default ess.localhost)
  --verbose               print diagnostic lines (PostgreSQL, controllers, injected faults) to stderr
  -h, --help              show this help
`;

function int(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got "${v}"`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'state-dir': { type: 'string' },
      port: { type: 'string' },
      users: { type: 'string' },
      'media-mb': { type: 'string' },
      'synapse-schema': { type: 'string' },
      'stuck-release': { type: 'boolean' },
      operator: { type: 'boolean' },
      'exec-protocol': { type: 'string' },
      'server-name': { type: 'string' },
      verbose: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const proto = values['exec-protocol'];
  if (proto !== undefined && proto !== 'v5' && proto !== 'v4') {
    throw new Error(`--exec-protocol must be v5 or v4, got "${proto}"`);
  }
  const options: SandboxOptions = {
    stateDir: values['state-dir'],
    port: int('port', values.port),
    users: int('users', values.users),
    mediaMb: int('media-mb', values['media-mb']),
    synapseSchemaFile: values['synapse-schema'],
    stuckRelease: values['stuck-release'],
    flavour: values.operator ? 'operator' : 'matrix-stack',
    execProtocol: proto === 'v4' ? 'v4-only' : 'v5',
    serverName: values['server-name'],
    log: values.verbose ? (line) => process.stderr.write(`${line}\n`) : undefined,
  };
  process.stderr.write('Starting the sandbox (real PostgreSQL, simulated Kubernetes API)…\n');
  const sandbox = await startSandbox(options);
  process.stdout.write(
    [
      `kubeconfig:  ${sandbox.kubeconfigPath}`,
      `API server:  ${sandbox.apiUrl}`,
      `PostgreSQL:  ${sandbox.postgres.url}`,
      `namespace:   ${sandbox.namespace} (${sandbox.flavour})`,
      `state dir:   ${sandbox.stateDir}`,
      '',
      `export KUBECONFIG=${sandbox.kubeconfigPath}`,
      '',
      'Press Ctrl-C to stop.',
      '',
    ].join('\n'),
  );

  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      process.stderr.write(`\n${signal}: stopping the sandbox…\n`);
      sandbox.stop().then(resolve, (err: unknown) => {
        process.stderr.write(`stop failed: ${(err as Error).message}\n`);
        process.exitCode = 1;
        resolve();
      });
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`sandbox: ${(err as Error).message}\n`);
  const usageError = String((err as { code?: unknown }).code ?? '').startsWith('ERR_PARSE_ARGS');
  if (usageError) process.stderr.write(USAGE);
  process.exitCode = usageError ? 2 : 1;
});
