import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { COMPONENTS, componentForLabel, DATABASE_WRITERS } from '../../src/lib/deployment/components.js';
import { EssError, EXIT_CODE_TABLE, ExitCode, PreconditionError } from '../../src/lib/errors.js';
import { decodeRelease, encodeRelease, type HelmRelease } from '../../src/lib/helm/release.js';
import { activeHolder } from '../../src/lib/lock.js';
import { confirmTyped } from '../../src/lib/output/confirm.js';
import { createStderrReporter, formatBytes, formatDuration } from '../../src/lib/output/log.js';
import { shellJoin } from '../../src/lib/postgres/pod-tools.js';

describe('exit codes', () => {
  it('documents every code exactly once', () => {
    const codes = EXIT_CODE_TABLE.map((r) => r.code).sort((a, b) => a - b);
    expect(codes).toEqual(Object.values(ExitCode).sort((a, b) => a - b));
  });
});

describe('component table', () => {
  it('stops every database writer before Postgres', () => {
    const postgres = COMPONENTS.find((c) => c.id === 'postgres')!;
    for (const id of DATABASE_WRITERS) {
      expect(COMPONENTS.find((c) => c.id === id)!.stopPhase).toBeLessThan(postgres.stopPhase);
    }
  });
  it('maps chart component labels to components', () => {
    expect(componentForLabel('matrix-server')?.id).toBe('synapse');
    expect(componentForLabel('matrix-authentication')?.id).toBe('mas');
    expect(componentForLabel('matrix-stack-db')?.id).toBe('postgres');
    expect(componentForLabel('matrix-rtc-authorisation-service')?.id).toBe('matrix-rtc');
    expect(componentForLabel('nope')).toBeUndefined();
  });
});

describe('Helm release codec', () => {
  const release: HelmRelease = {
    name: 'ess',
    namespace: 'ess',
    version: 7,
    info: { status: 'pending-upgrade', description: 'Preparing upgrade <&>', first_deployed: '2025-01-01T00:00:00Z' },
    chart: { metadata: { name: 'matrix-stack', version: '25.4.2' } },
    config: { serverName: 'example.org', synapse: { replicas: 1 } },
    manifest: '---\nkind: StatefulSet\n',
  };

  it('round-trips through the double base64 + gzip encoding', () => {
    const apiData = encodeRelease(release);
    // Helm's string starts with the gzip header, so the API's base64 of it starts with "H4sI" base64-encoded again.
    expect(apiData.startsWith('SDRzSUFBQUFBQUFD')).toBe(true);
    expect(decodeRelease(apiData)).toEqual(release);
  });

  it('decodes releases stored without gzip (old Helm)', () => {
    const plain = Buffer.from(Buffer.from(JSON.stringify(release)).toString('base64')).toString('base64');
    expect(decodeRelease(plain).info.status).toBe('pending-upgrade');
  });
});

describe('lock holder', () => {
  const lease = (renewTime: string) => ({
    metadata: { name: 'ess-ess-lock', annotations: { 'ess.element.io/operation': 'backup' } },
    spec: { holderIdentity: 'host:1', leaseDurationSeconds: 60, acquireTime: renewTime, renewTime },
  });
  it('is active within the TTL and free after it', () => {
    const now = new Date('2026-01-01T00:01:00Z');
    expect(activeHolder(lease('2026-01-01T00:00:30Z'), now)?.operation).toBe('backup');
    expect(activeHolder(lease('2025-12-31T23:59:00Z'), now)).toBeUndefined();
    expect(activeHolder(undefined, now)).toBeUndefined();
  });
});

describe('confirmation', () => {
  it('refuses without a TTY unless --yes', async () => {
    const input = Object.assign(new PassThrough(), { isTTY: false });
    await expect(confirmTyped({ expected: 'ess', action: 'erase', yes: false, input })).rejects.toBeInstanceOf(
      PreconditionError,
    );
    await expect(confirmTyped({ expected: 'ess', action: 'erase', yes: true, input })).resolves.toBeUndefined();
  });

  it('accepts the typed namespace on a TTY and refuses anything else', async () => {
    const answer = async (text: string) => {
      const input = Object.assign(new PassThrough(), { isTTY: true });
      const output = new PassThrough();
      const pending = confirmTyped({ expected: 'ess', action: 'erase', yes: false, input, output });
      input.write(`${text}\n`);
      return pending;
    };
    await expect(answer('ess')).resolves.toBeUndefined();
    await expect(answer('es')).rejects.toThrow(/did not match/);
  });

  it('treats Ctrl+C at the prompt as an interruption (130) and Ctrl+D as not confirmed (4), not as a bug', async () => {
    const press = async (key: string) => {
      // A terminal: readline reads keys (Ctrl+C arrives as \x03, not as a signal).
      const input = Object.assign(new PassThrough(), { isTTY: true });
      const output = Object.assign(new PassThrough(), { isTTY: true, columns: 80 });
      const pending = confirmTyped({ expected: 'ess', action: 'erase', yes: false, input, output });
      input.write(key);
      return pending.then(
        () => undefined,
        (error: unknown) => error,
      );
    };
    const ctrlC = await press('\x03');
    expect(ctrlC).toBeInstanceOf(EssError);
    expect(ctrlC).toMatchObject({
      exitCode: ExitCode.INTERRUPTED,
      message: expect.stringMatching(/nothing was changed/),
    });
    const ctrlD = await press('\x04');
    expect(ctrlD).toBeInstanceOf(PreconditionError);
    expect(ctrlD).toMatchObject({ exitCode: ExitCode.PRECONDITION, code: 'CONFIRMATION_REFUSED' });
    // End of input on a non-terminal TTY stream (e.g. Ctrl+D with stderr redirected).
    const input = Object.assign(new PassThrough(), { isTTY: true });
    const pending = confirmTyped({ expected: 'ess', action: 'erase', yes: false, input, output: new PassThrough() });
    input.end();
    await expect(pending).rejects.toMatchObject({ exitCode: ExitCode.PRECONDITION });
  });
});

describe('output helpers', () => {
  it('formats sizes and durations', () => {
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(3 * 1024 ** 3)).toBe('3.0 GiB');
    expect(formatDuration(83_000)).toBe('1m23s');
    expect(formatDuration(450)).toBe('450ms');
  });

  it('prints timestamped lines without a TTY and throttles progress', () => {
    const lines: string[] = [];
    let t = 0;
    const reporter = createStderrReporter({ verbose: false, isTTY: false, write: (s) => lines.push(s), now: () => t });
    reporter.info('hello');
    reporter.debug('hidden');
    reporter.progress('dump', 10, 100);
    t = 1000;
    reporter.progress('dump', 20, 100); // throttled
    t = 2000;
    reporter.progress('dump', 100, 100); // finished: always printed
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^1970-01-01T00:00:00.000Z hello\n$/);
    expect(lines[2]).toMatch(/dump: 100 B \/ 100 B \(100%\)/);
  });

  it('quotes shell arguments', () => {
    expect(shellJoin(['pg_restore', '-d', 'synapse', "it's"])).toBe(`pg_restore -d synapse 'it'\\''s'`);
  });
});
