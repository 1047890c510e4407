import { execFileSync } from 'node:child_process';
import { mkdir, readdir, readFile, rmdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EssError } from '../../src/lib/errors.js';
import { LocalDirStore } from '../../src/lib/storage/local-dir.js';
import { StreamSink } from '../../src/lib/storage/stream-sink.js';
import { bytesOf, collect, removeDir, tempDir } from '../archive/helpers.js';
import { essFailure } from '../helpers/errors.js';

let dir: string;
beforeAll(async () => {
  dir = await tempDir('ess-store-test-');
});
afterAll(async () => {
  await removeDir(dir);
});

/** A body that yields `size` bytes and then fails, like an archive writer that hits an error mid-way. */
function failingBody(size: number, error = new Error('dump failed mid-way')): Readable {
  async function* gen() {
    for (let sent = 0; sent < size; sent += 64 * 1024) yield Buffer.alloc(64 * 1024, 7);
    throw error;
  }
  return Readable.from(gen());
}

describe('local directory store', () => {
  it('Given a new directory, when a backup is put, then it appears complete with mode 0600 and can be read back', async () => {
    const store = new LocalDirStore(join(dir, 'new', 'backups'));
    const data = bytesOf(3_000_000, 1);
    const result = await store.put('b1.tar', Readable.from([data.subarray(0, 10), data.subarray(10)]));
    expect(result).toEqual({ name: 'b1.tar', location: join(store.location, 'b1.tar'), bytes: data.length });
    expect((await stat(result.location)).mode & 0o777).toBe(0o600);
    expect((await stat(store.location)).mode & 0o777).toBe(0o700);
    expect((await collect(await store.get('b1.tar'))).equals(data)).toBe(true);
    const part = await collect(await store.get('b1.tar', { range: { start: 5, end: 14 } }));
    expect(part.equals(data.subarray(5, 15))).toBe(true);
    expect(await store.list()).toEqual([expect.objectContaining({ name: 'b1.tar', size: data.length })]);
    expect(await store.stat('missing.tar')).toBeUndefined();
    await expect(store.get('missing.tar')).rejects.toMatchObject({ code: 'BACKUP_NOT_FOUND' });
  });

  it('Given an existing backup, when the same name is put, then it is refused and the original kept', async () => {
    const store = new LocalDirStore(join(dir, 'exists'));
    await store.put('same.tar', Readable.from([Buffer.from('first')]));
    const error = await store.put('same.tar', Readable.from([Buffer.from('second')])).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'BACKUP_EXISTS', exitCode: 4 });
    expect(await readFile(join(store.location, 'same.tar'), 'utf8')).toBe('first');
    expect(await readdir(store.location)).toEqual(['same.tar']);
  });

  it('Given a patch, when put, then a blank slot is overwritten before the file appears, and anything else is refused', async () => {
    const store = new LocalDirStore(join(dir, 'patch'));
    const body = Buffer.concat([Buffer.from('head'), Buffer.alloc(8, 0x20), Buffer.from('tail')]);
    const patch = async () => ({ offset: 4, bytes: Buffer.from('{"a":1} ') });
    await store.put('p.tar', Readable.from([body]), { patch });
    expect(await readFile(join(store.location, 'p.tar'), 'utf8')).toBe('head{"a":1} tail');
    // The offsets disagree with the data: nothing is written and no file is left.
    const error = await store
      .put('q.tar', Readable.from([body]), { patch: async () => ({ offset: 0, bytes: Buffer.from('XXXX') }) })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'STORE_WRITE_FAILED' });
    expect(String((error as Error).message)).toMatch(/not a blank slot/);
    expect(await readdir(store.location)).toEqual(['p.tar']);
  });

  it('Given a body that fails mid-way, when put, then the error surfaces and no file is left behind', async () => {
    const store = new LocalDirStore(join(dir, 'failing'));
    const cause = new EssError('archive writer failed', { code: 'ARCHIVE_WRITE' });
    const error = await store.put('broken.tar', failingBody(2 * 1024 * 1024, cause)).catch((e: unknown) => e);
    expect(error).toBe(cause);
    expect(await readdir(store.location)).toEqual([]);
    expect(await store.list()).toEqual([]);
  });

  it('Given an abort signal, when it fires mid-upload, then nothing is left behind', async () => {
    const store = new LocalDirStore(join(dir, 'aborted'));
    const body = new PassThrough();
    const controller = new AbortController();
    const put = store.put('aborted.tar', body, { signal: controller.signal });
    body.write(Buffer.alloc(1024 * 1024));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect((await readdir(store.location)).some((n) => n.endsWith('.partial'))).toBe(true);
    controller.abort(new Error('SIGINT'));
    await expect(put).rejects.toBeDefined();
    expect(await readdir(store.location)).toEqual([]);
    expect(body.destroyed).toBe(true);
  });

  it('Given files that are not backups, when listing, then partial and hidden files are skipped', async () => {
    const store = new LocalDirStore(join(dir, 'listing'));
    await mkdir(store.location, { recursive: true });
    await writeFile(join(store.location, 'x.tar.partial'), 'x');
    await writeFile(join(store.location, '.hidden'), 'x');
    await mkdir(join(store.location, 'subdir'));
    await store.put('real.tar', Readable.from([Buffer.from('x')]));
    expect((await store.list()).map((o) => o.name)).toEqual(['real.tar']);
    await store.delete('real.tar');
    await store.delete('real.tar');
    expect(await store.list()).toEqual([]);
    await expect(store.stat('../escape')).rejects.toThrow(/invalid backup object name/);
  });
});

describe('local directory store on a full disk', () => {
  let mountPoint: string | undefined;
  let mountError: string | undefined;
  beforeAll(async () => {
    const target = join(dir, 'tiny');
    await mkdir(target);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', target], { stdio: 'pipe' });
      mountPoint = target;
    } catch (error) {
      mountError = String((error as { stderr?: Buffer }).stderr ?? error).trim();
    }
  });
  afterAll(async () => {
    if (mountPoint) {
      execFileSync('umount', [mountPoint]);
      await rmdir(mountPoint);
    }
  });

  it('Given a 1 MiB tmpfs, when a 3 MiB backup is put, then it fails with ENOSPC and no file is left', async (ctx) => {
    ctx.skip(!mountPoint, `cannot mount a tmpfs here (needs root): ${mountError}`);
    const store = new LocalDirStore(mountPoint);
    const error = await store.put('full.tar', Readable.from([bytesOf(3 * 1024 * 1024)])).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(EssError);
    expect((error as EssError).code).toBe('STORE_WRITE_FAILED');
    expect((error as EssError).message).toMatch(/ENOSPC|no space/i);
    expect((error as EssError).next.join(' ')).toContain('Free space');
    expect(await readdir(mountPoint!)).toEqual([]);
  });
});

describe('local directory checks and file system errors', () => {
  it('Given a writable place, when checked, then a dry-run creates nothing and a real check creates the directory', async () => {
    const target = join(dir, 'checked', 'a', 'b');
    await new LocalDirStore(target).check({ create: false });
    await expect(stat(join(dir, 'checked'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await readdir(dir)).filter((n) => n.startsWith('.ess-probe'))).toEqual([]);
    await new LocalDirStore(target).check({ create: true });
    expect((await stat(target)).mode & 0o777).toBe(0o700);
    expect(await readdir(target)).toEqual([]);
  });

  it('Given a file, a path below a file or an unwritable place, when checked, then it is a precondition with a next step', async () => {
    const file = join(dir, 'afile');
    await writeFile(file, 'hi\n');
    for (const target of [file, join(file, 'sub'), '/sys/kernel/ess-x', '/proc/ess-x/y']) {
      for (const create of [false, true]) {
        const error = await essFailure(new LocalDirStore(target).check({ create }));
        expect(error.exitCode, `${target} ${create}`).toBe(4);
        expect(error.code).toBe('DESTINATION_UNUSABLE');
        expect(error.message).toContain(target);
        expect(error.next.join(' '), `${target} ${create}`).toMatch(/-o\/--output/);
      }
    }
    expect(await readFile(file, 'utf8')).toBe('hi\n');
  });

  it('Given a file as the directory, when listed, read or deleted from, then a precondition error names it', async () => {
    const file = join(dir, 'afile2');
    await writeFile(file, 'hi\n');
    const store = new LocalDirStore(file);
    for (const action of [store.list(), store.stat('x.tar'), store.delete('x.tar')]) {
      const error = await essFailure(action);
      expect(error.exitCode).toBe(4);
      expect(error.message).toMatch(/ENOTDIR/);
      expect(error.next).toEqual([`${file} (or one of its parents) is a file: pass a directory with -o/--output`]);
    }
  });
});

describe('stream sink', () => {
  it('Given a terminal, when checked, then it is refused before anything is written; a pipe is accepted', async () => {
    const output = new PassThrough();
    const error = await new StreamSink(output, 'stdout', () => true).check().catch((e: unknown) => e);
    expect(error).toMatchObject({ exitCode: 4, code: 'STDOUT_IS_TTY' });
    expect((error as EssError).next.join(' ')).toContain('ess backup -o - > ');
    await new StreamSink(output).check();
    await expect(new StreamSink(Object.assign(new PassThrough(), { isTTY: true })).check()).rejects.toMatchObject({
      code: 'STDOUT_IS_TTY',
    });
  });

  it('Given stdout-like output, when a backup is written, then the bytes arrive and the output stays open', async () => {
    const output = new PassThrough();
    const received = collect(output);
    const sink = new StreamSink(output);
    const data = bytesOf(500_000, 3);
    expect(await sink.put('x.tar', Readable.from([data]))).toEqual({
      name: 'x.tar',
      location: 'stdout',
      bytes: data.length,
    });
    expect(output.writableEnded).toBe(false);
    output.end();
    expect((await received).equals(data)).toBe(true);
  });
});
