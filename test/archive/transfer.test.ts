import { execFileSync, spawnSync } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { databaseMember, MEMBERS, mediaMember } from '../../src/lib/archive/layout.js';
import type { ManifestInput } from '../../src/lib/archive/manifest.js';
import { addMediaFromTar } from '../../src/lib/archive/media.js';
import {
  emptyMediaSummary,
  encodeMediaIndex,
  type MediaIndexEntry,
  mediaListingCommand,
  mediaSourcesByArchive,
  parseMediaIndex,
  parseMediaListing,
  planIncrementalMedia,
} from '../../src/lib/archive/media-index.js';
import { formatArchiveName, parseArchiveName } from '../../src/lib/archive/naming.js';
import {
  readArchiveFrom,
  readManifestFrom,
  writeArchive,
  writeArchiveLateManifest,
} from '../../src/lib/archive/transfer.js';
import { manifestSlotBytes } from '../../src/lib/archive/writer.js';
import { generateAgeKeyPair } from '../../src/lib/crypto/age.js';
import { EssError } from '../../src/lib/errors.js';
import { LocalDirStore } from '../../src/lib/storage/local-dir.js';
import {
  BASE_MANIFEST,
  bytesOf,
  collect,
  hasCommand,
  makeMediaStore,
  prepareTypicalBackup,
  produceTypicalBackup,
  removeDir,
  sha256,
  type TypicalBackup,
  tarStream,
  tempDir,
} from './helpers.js';

const FAST = 10;
let dir: string;
let backup: TypicalBackup;

beforeAll(async () => {
  dir = await tempDir('ess-transfer-test-');
  backup = await prepareTypicalBackup(dir, 2 * 1024 * 1024 + 5);
});
afterAll(async () => {
  await backup?.spool.cleanup();
  await removeDir(dir);
});

describe('writing archives to a local store', () => {
  it('Given a passphrase, when a backup is written and read, then a wrong passphrase fails before any callback', async () => {
    const store = new LocalDirStore(join(dir, 'pass'));
    const name = formatArchiveName({ serverName: 'example.com', createdAt: new Date(), encrypted: true });
    const encryption = { passphrase: 'hunter2 hunter2', scryptWorkFactor: FAST };
    const result = await writeArchive(store, { name, encryption }, (w) => produceTypicalBackup(w, backup));
    expect(result.summary.memberCount).toBe(backup.contents.size + 2);
    expect(parseArchiveName(name)?.encrypted).toBe(true);
    let called = false;
    const error = await readArchiveFrom(store, name, {
      keys: { passphrases: ['wrong'] },
      onManifest: () => {
        called = true;
      },
    }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'AGE_WRONG_PASSPHRASE', exitCode: 4 });
    expect(called).toBe(false);
    const ok = await readArchiveFrom(store, name, { keys: { passphrases: ['hunter2 hunter2'] } });
    expect(ok.memberCount).toBe(backup.contents.size);
  });

  it('Given a producer that fails mid-way, when writing, then its error is reported and no file is left', async () => {
    const store = new LocalDirStore(join(dir, 'fail'));
    const cause = new EssError('pg_dump exited with 1', { code: 'EXTERNAL_TOOL' });
    const error = await writeArchive(store, { name: 'ess-backup_x_20250101T000000Z.tar' }, async (w) => {
      await w.writeManifest(backup.input, backup.files);
      await w.addFile(backup.files[0]!);
      await w.addFile(backup.files[1]!);
      throw cause;
    }).catch((e: unknown) => e);
    expect(error).toBe(cause);
    expect(await readdir(store.location)).toEqual([]);
  });

  it('Given an aborted signal, when writing, then nothing is stored', async () => {
    const store = new LocalDirStore(join(dir, 'abort'));
    const controller = new AbortController();
    const error = await writeArchive(
      store,
      { name: 'ess-backup_x_20250101T000000Z.tar', signal: controller.signal },
      async (w) => {
        await w.writeManifest(backup.input, backup.files);
        await w.addFile(backup.files[0]!);
        controller.abort(new EssError('Interrupted by SIGINT.', { code: 'INTERRUPTED' }));
        await w.addFile(backup.files[1]!);
      },
    ).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'INTERRUPTED' });
    expect(await readdir(store.location)).toEqual([]);
  });

  it('Given a manifest written last, when media precede the dumps, then ess, tar and sha256sum read the archive', async () => {
    const store = new LocalDirStore(join(dir, 'late'));
    const name = 'ess-backup_example.com_20250302T020000Z.tar';
    const slotBytes = manifestSlotBytes(
      backup.input,
      backup.files.map((f) => f.name),
    );
    const result = await writeArchiveLateManifest(store, { name, slotBytes }, async (w) => {
      // Media first (their digests go to the trailer), then the members the manifest lists: any order works.
      await addMediaFromTar(w, tarStream(backup.mediaRoot), {
        expected: new Map(backup.index.map((e) => [e.path, e.size])),
      });
      for (const file of [...backup.files].reverse()) await w.addFile(file);
      return { ...backup.input, warnings: ['written last'] };
    });
    expect(result.summary.memberCount).toBe(backup.contents.size + 2);
    const read = await readArchiveFrom(store, name);
    expect(read.manifest.warnings).toEqual(['written last']);
    expect(read.manifest.members.map((m) => m.name)).toEqual([...backup.files].reverse().map((f) => f.name));
    for (const file of backup.files) {
      expect(read.manifest.members.find((m) => m.name === file.name)).toMatchObject({
        size: file.size,
        sha256: file.sha256,
      });
    }
    // By hand: the manifest is JSON followed by spaces; sha256sum checks every member including it.
    const out = join(dir, 'late-out');
    execFileSync('mkdir', ['-p', out]);
    execFileSync('tar', ['-xf', join(store.location, name), '-C', out]);
    const text = await readFile(join(out, MEMBERS.manifest), 'utf8');
    expect(text.length).toBe(slotBytes);
    expect(JSON.parse(text).formatVersion).toBe(1);
    expect(execFileSync('sha256sum', ['-c', MEMBERS.trailer], { cwd: out }).toString()).not.toContain('FAILED');
    expect((await readdir(store.location)).sort()).toEqual([name]);
  });

  it('Given a manifest written last, when it outgrows its slot, then warnings are summarised, else nothing is stored', async () => {
    const store = new LocalDirStore(join(dir, 'late-small'));
    const slotBytes = manifestSlotBytes(
      backup.input,
      backup.files.map((f) => f.name),
      0,
    );
    const many = Array.from({ length: 2000 }, (_, i) => `warning number ${i} about something long enough`);
    const fitted = await writeArchiveLateManifest(
      store,
      { name: 'ess-backup_x_20250101T000000Z.tar', slotBytes },
      async (w) => {
        for (const file of backup.files) await w.addFile(file);
        return { ...backup.input, warnings: many };
      },
    );
    const read = await readArchiveFrom(store, fitted.name);
    expect(read.manifest.warnings).toEqual(['2000 warnings did not fit here: see the output of the backup run.']);
    const error = await writeArchiveLateManifest(
      store,
      { name: 'ess-backup_x_20250101T000001Z.tar', slotBytes: 512 },
      async (w) => {
        for (const file of backup.files) await w.addFile(file);
        return backup.input;
      },
    ).catch((e: unknown) => e);
    expect((error as Error).message).toMatch(/exceeds its 512-byte slot/);
    expect(await readdir(store.location)).toEqual([fitted.name]);
  });

  it('Given an encrypted archive on disk, when read by hand with age and tar, then the dump is extracted', async (ctx) => {
    ctx.skip(!hasCommand('age') || !hasCommand('age-keygen'), 'the age CLI is not installed (apt-get install age)');
    const keyFile = join(dir, 'key.txt');
    execFileSync('age-keygen', ['-o', keyFile], { stdio: 'ignore' });
    const recipient = execFileSync('age-keygen', ['-y', keyFile]).toString().trim();
    const store = new LocalDirStore(join(dir, 'byhand'));
    const name = 'ess-backup_example.com_20250301T020000Z.tar.age';
    await writeArchive(store, { name, encryption: { recipients: [recipient, generateAgeKeyPair().recipient] } }, (w) =>
      produceTypicalBackup(w, backup),
    );
    const out = join(dir, 'byhand-out');
    execFileSync('mkdir', ['-p', out]);
    const run = spawnSync('sh', [
      '-c',
      `age -d -i "$1" "$2" | tar -x -C "$3"`,
      'sh',
      keyFile,
      join(store.location, name),
      out,
    ]);
    expect(run.status, run.stderr.toString()).toBe(0);
    const dump = await readFile(join(out, databaseMember('synapse')));
    expect(sha256(dump)).toBe(sha256(backup.contents.get(databaseMember('synapse'))!));
    expect(execFileSync('sha256sum', ['-c', MEMBERS.trailer], { cwd: out }).toString()).not.toContain('FAILED');
  });
});

describe('media index and incremental backups', () => {
  it('Given a media store, when listed with the find command, then entries match the files', async (ctx) => {
    ctx.skip(!hasCommand('find'), 'GNU find is needed');
    const root = join(dir, 'listing');
    await makeMediaStore(root);
    const [cmd, ...args] = mediaListingCommand(root);
    const listing = execFileSync(cmd!, args);
    const entries: MediaIndexEntry[] = [];
    for await (const e of parseMediaListing([listing])) entries.push(e);
    expect(entries.map((e) => e.path).sort()).toEqual(backup.index.map((e) => e.path).sort());
    expect(entries.find((e) => e.path === 'local_content/ab/ce/qrstuvwxyz')).toEqual({
      path: 'local_content/ab/ce/qrstuvwxyz',
      size: 70_001,
      mtime: 1_700_000_000,
    });
  });

  it('Given a full and an incremental backup, when restoring, then the index says where every file is', async () => {
    const store = new LocalDirStore(join(dir, 'chain'));
    const root = join(dir, 'chain-media');
    const first = { 'local_content/aa/aa/one': bytesOf(3000, 1), 'local_content/bb/bb/two': bytesOf(5000, 2) };
    await makeMediaStore(root, first);
    const fullAt = new Date('2025-03-01T02:00:00Z');
    const fullName = formatArchiveName({ serverName: 'example.com', createdAt: fullAt, encrypted: false });
    const fullIndex = Object.entries(first).map(([path, d]) => ({ path, size: d.length, mtime: 1_700_000_000 }));
    await writeMediaOnlyBackup(store, fullName, root, fullIndex, undefined);

    // Later: one new file, one changed file, one unchanged.
    const second = { 'local_content/bb/bb/two': bytesOf(5001, 3), 'local_content/cc/cc/three': bytesOf(100, 4) };
    await makeMediaStore(root, second);
    const current = [...fullIndex.filter((e) => e.path === 'local_content/aa/aa/one')];
    for (const [path, d] of Object.entries(second)) current.push({ path, size: d.length, mtime: 1_700_000_000 });
    const parentManifest = await readManifestFrom(store, fullName);
    expect(parentManifest.media?.index).toBe(MEMBERS.mediaIndex);
    const parentIndex: MediaIndexEntry[] = [];
    await readArchiveFrom(store, fullName, {
      onMember: async (m) => {
        if (m.name === MEMBERS.mediaIndex) for await (const e of parseMediaIndex(m.stream)) parentIndex.push(e);
      },
    });
    const planned: MediaIndexEntry[] = [];
    for await (const e of planIncrementalMedia(current, { name: fullName, index: parentIndex })) planned.push(e);
    expect(
      planned
        .filter((e) => e.archive === undefined)
        .map((e) => e.path)
        .sort(),
    ).toEqual(Object.keys(second).sort());
    const incrName = formatArchiveName({
      serverName: 'example.com',
      createdAt: new Date('2025-03-02T02:00:00Z'),
      parentCreatedAt: fullAt,
      encrypted: false,
    });
    await writeMediaOnlyBackup(store, incrName, root, planned, fullName);

    const manifest = await readManifestFrom(store, incrName);
    expect(manifest.media).toMatchObject({
      incremental: true,
      parent: fullName,
      requires: [fullName],
      fileCount: 3,
      storedFileCount: 2,
      bytes: 3000 + 5001 + 100,
      storedBytes: 5001 + 100,
    });
    // Restore: own media members plus the files the index places in the parent.
    const restored = new Map<string, Buffer>();
    let index: MediaIndexEntry[] = [];
    await readArchiveFrom(store, incrName, {
      onMember: async (m) => {
        if (m.name === MEMBERS.mediaIndex) index = await fromAsync(parseMediaIndex(m.stream));
        else if (m.name.startsWith('media/')) restored.set(m.name, await collect(m.stream));
      },
    });
    const sources = await mediaSourcesByArchive(index);
    expect([...sources.keys()]).toEqual([fullName]);
    const wanted = sources.get(fullName)!;
    await readArchiveFrom(store, fullName, {
      onMember: async (m) => {
        const path = m.name.slice('media/'.length);
        if (m.name.startsWith('media/') && wanted.has(path)) restored.set(m.name, await collect(m.stream));
      },
    });
    expect([...restored.keys()].sort()).toEqual(
      ['local_content/aa/aa/one', 'local_content/bb/bb/two', 'local_content/cc/cc/three'].map(mediaMember),
    );
    expect(restored.get(mediaMember('local_content/bb/bb/two'))!.equals(second['local_content/bb/bb/two'])).toBe(true);
  });

  it('Given a media file that appears after listing, when packing, then the backup fails and nothing is stored', async () => {
    const store = new LocalDirStore(join(dir, 'changed'));
    const root = join(dir, 'changed-media');
    await makeMediaStore(root, { 'a/b/c': bytesOf(10, 1), 'a/b/d': bytesOf(10, 2) });
    const index = [{ path: 'a/b/c', size: 10 }];
    const error = await writeMediaOnlyBackup(store, 'ess-backup_x_20250101T000000Z.tar', root, index, undefined, [
      '.',
    ]).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'MEDIA_CHANGED' });
    expect(await readdir(store.location)).toEqual([]);
  });
});

async function fromAsync<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

/** A backup holding only media: index spooled, then the files the index says this archive stores. */
async function writeMediaOnlyBackup(
  store: LocalDirStore,
  name: string,
  root: string,
  index: MediaIndexEntry[],
  parent: string | undefined,
  tarPaths?: string[],
): Promise<void> {
  const summary = emptyMediaSummary();
  const spooled = await backup.spool.add(MEMBERS.mediaIndex, await collect(encodeMediaIndex(index, summary)));
  const input: ManifestInput = {
    ...BASE_MANIFEST,
    media: {
      storePath: '/media/media_store',
      index: MEMBERS.mediaIndex,
      ...summary,
      incremental: parent !== undefined,
      parent,
    },
  };
  const stored = index.filter((e) => e.archive === undefined);
  await writeArchive(store, { name }, async (w) => {
    await w.writeManifest(input, [spooled]);
    await w.addFile(spooled);
    await addMediaFromTar(w, tarStream(root, tarPaths ?? stored.map((e) => e.path)), {
      expected: new Map(stored.map((e) => [e.path, e.size])),
    });
  });
}
