import { execFileSync } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { databaseMember, FORMAT_VERSION, MEMBERS, secretMember } from '../../src/lib/archive/layout.js';
import { type ArchiveMember, readArchive, readManifest } from '../../src/lib/archive/reader.js';
import { ArchiveWriter } from '../../src/lib/archive/writer.js';
import { EssError } from '../../src/lib/errors.js';
import {
  BASE_MANIFEST,
  collect,
  hasCommand,
  prepareTypicalBackup,
  produceTypicalBackup,
  removeDir,
  sha256,
  type TypicalBackup,
  tempDir,
} from './helpers.js';

let dir: string;
let backup: TypicalBackup;
let archivePath: string;
let archive: Buffer;

/** Member offsets in a tar file: name → offset of its data. */
function dataOffset(tarBytes: Buffer, name: string): number {
  let offset = 0;
  while (offset + 512 <= tarBytes.length) {
    const header = tarBytes.subarray(offset, offset + 512);
    const headerName = header.subarray(0, 100).toString('latin1').replace(/\0.*$/s, '');
    const prefix = header.subarray(345, 500).toString('latin1').replace(/\0.*$/s, '');
    const size = Number.parseInt(header.subarray(124, 136).toString('latin1').replace(/\0.*$/s, '').trim(), 8);
    const full = prefix ? `${prefix}/${headerName}` : headerName;
    if (full === name) return offset + 512;
    offset += 512 + Math.ceil(size / 512) * 512;
  }
  throw new Error(`member ${name} not found`);
}

async function expectEssError(promise: Promise<unknown>, code: string): Promise<EssError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, `expected an EssError ${code}`).toBeInstanceOf(EssError);
  expect((error as EssError).code).toBe(code);
  return error as EssError;
}

beforeAll(async () => {
  dir = await tempDir();
  backup = await prepareTypicalBackup(dir);
  const writer = new ArchiveWriter({ mtime: new Date('2025-03-01T02:00:00Z') });
  archivePath = join(dir, 'backup.tar');
  const written = pipeline(writer.output, createWriteStream(archivePath));
  await produceTypicalBackup(writer, backup);
  await writer.finish();
  await written;
  archive = await readFile(archivePath);
});

afterAll(async () => {
  await backup?.spool.cleanup();
  await removeDir(dir);
});

describe('archive round trip', () => {
  it('Given a written archive, when it is read back, then every member arrives intact and verified', async () => {
    const seen = new Map<string, Buffer>();
    const order: string[] = [];
    const result = await readArchive(createReadStream(archivePath), {
      onManifest: (manifest) => {
        order.push(MEMBERS.manifest);
        expect(manifest.formatVersion).toBe(FORMAT_VERSION);
        expect(manifest.deployment.serverName).toBe('example.com');
        expect(manifest.media?.fileCount).toBe(4);
      },
      onMember: async (member) => {
        order.push(member.name);
        seen.set(member.name, await collect(member.stream));
      },
    });
    expect(order[0]).toBe(MEMBERS.manifest);
    expect(order.slice(1, 6)).toEqual(backup.files.map((f) => f.name));
    expect(new Set(seen.keys())).toEqual(new Set(backup.contents.keys()));
    for (const [name, data] of backup.contents) expect(sha256(seen.get(name)!), name).toBe(sha256(data));
    expect(result.memberCount).toBe(backup.contents.size);
    expect(result.archiveBytes).toBe(archive.length);
    expect(result.manifest.members.map((m) => m.name)).toEqual(backup.files.map((f) => f.name));
    const synapse = result.manifest.members.find((m) => m.name === databaseMember('synapse'))!;
    expect(synapse.sha256).toBe(sha256(backup.contents.get(databaseMember('synapse'))!));
    expect(result.manifest.postgres?.databases[0]?.tables).toContainEqual({ name: 'public.events', rows: 1200 });
  });

  it('Given a consumer that ignores members, when the archive is read, then they are drained and still verified', async () => {
    const result = await readArchive(Readable.from([archive]), { onMember: () => {} });
    expect(result.memberCount).toBe(backup.contents.size);
    const noCallback = await readArchive(Readable.from([archive]));
    expect(noCallback.contentBytes).toBe([...backup.contents.values()].reduce((n, b) => n + b.length, 0));
  });

  it('Given a consumer that stops reading early, when a later byte is damaged, then the read still fails', async () => {
    const dump = databaseMember('synapse');
    const stopEarly = async (member: ArchiveMember) => {
      if (member.name !== dump) return;
      for await (const _chunk of member.stream) break; // destroys the member stream after one chunk
    };
    const intact = await readArchive(Readable.from([archive]), { onMember: stopEarly });
    expect(intact.memberCount).toBe(backup.contents.size);
    const damaged = Buffer.from(archive);
    damaged[dataOffset(archive, dump) + 3_000_000]! ^= 0x40;
    const error = await expectEssError(
      readArchive(Readable.from([damaged]), { onMember: stopEarly }),
      'ARCHIVE_CORRUPT',
    );
    expect(error.message).toContain(dump);
  });

  it('Given readManifest, when the archive continues forever, then it returns after the first member', async () => {
    const manifestEnd = dataOffset(archive, MEMBERS.mediaIndex);
    let pulled = 0;
    async function* endless() {
      yield archive.subarray(0, manifestEnd);
      for (;;) {
        pulled++;
        yield Buffer.alloc(64 * 1024);
      }
    }
    const source = Readable.from(endless());
    const manifest = await readManifest(source);
    expect(manifest.deployment.release).toBe('ess');
    expect(pulled).toBeLessThan(100);
    expect(source.destroyed).toBe(true);
  });
});

describe('archive read by hand', () => {
  it('Given GNU tar, when the archive is extracted, then manifest comes first, secrets are 0600 and sha256sum -c passes', async (ctx) => {
    ctx.skip(!hasCommand('tar') || !hasCommand('sha256sum'), 'GNU tar and sha256sum are needed');
    const listing = execFileSync('tar', ['-tf', archivePath]).toString().trim().split('\n');
    expect(listing[0]).toBe(MEMBERS.manifest);
    expect(listing.at(-1)).toBe(MEMBERS.trailer);
    const out = join(dir, 'extracted');
    execFileSync('mkdir', ['-p', out]);
    execFileSync('tar', ['-xf', archivePath, '-C', out, '--same-permissions']);
    const check = execFileSync('sha256sum', ['-c', '--strict', MEMBERS.trailer], { cwd: out }).toString();
    expect(check).toContain(`${MEMBERS.manifest}: OK`);
    expect(check).toContain('media/local_content/ab/cd/efghijklmnop: OK');
    expect(check).not.toContain('FAILED');
    expect((await stat(join(out, secretMember('ess-generated')))).mode & 0o777).toBe(0o600);
    expect((await stat(join(out, databaseMember('synapse')))).mode & 0o777).toBe(0o600);
    expect((await stat(join(out, MEMBERS.manifest))).mode & 0o777).toBe(0o644);
    const manifest = JSON.parse(await readFile(join(out, MEMBERS.manifest), 'utf8'));
    expect(manifest.kind).toBe('ess-backup');
  });
});

describe('damaged archives', () => {
  it('Given an archive cut short, when it is read, then it fails as truncated at any cut point', async () => {
    const trailerStart = dataOffset(archive, MEMBERS.trailer) - 512;
    const cuts = [
      dataOffset(archive, databaseMember('synapse')) + 100_000, // inside a declared member
      dataOffset(archive, 'media/local_content/ab/ce/qrstuvwxyz') + 10, // inside a streamed member
      trailerStart, // exactly at a member boundary, before the trailer
      archive.length - 1024, // trailer complete, end-of-archive blocks missing
    ];
    for (const cut of cuts) {
      const error = await readArchive(Readable.from([archive.subarray(0, cut)]), { onMember: () => {} }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error, `cut at ${cut}`).toBeInstanceOf(EssError);
      expect((error as EssError).code, `cut at ${cut}`).toBe('ARCHIVE_TRUNCATED');
    }
  });

  it('Given one flipped byte in a dump, when a consumer streams it, then its stream errors instead of ending', async () => {
    const damaged = Buffer.from(archive);
    damaged[dataOffset(archive, databaseMember('synapse')) + 2_000_000]! ^= 0x01;
    let consumerError: unknown;
    let consumerFinished = false;
    const error = await expectEssError(
      readArchive(Readable.from([damaged]), {
        onMember: async (member: ArchiveMember) => {
          if (member.name !== databaseMember('synapse')) return;
          expect(member.expectedSha256).toBeDefined();
          try {
            await pipeline(member.stream, new PassThrough().resume());
            consumerFinished = true;
          } catch (e) {
            consumerError = e;
            throw e;
          }
        },
      }),
      'ARCHIVE_CORRUPT',
    );
    expect(error.message).toContain(databaseMember('synapse'));
    expect(error.exitCode).toBe(4);
    expect(consumerFinished).toBe(false);
    expect(consumerError).toBe(error);
  });

  it('Given one flipped byte in a media file, when the archive is read, then the trailer check names the file', async () => {
    const damaged = Buffer.from(archive);
    damaged[dataOffset(archive, 'media/local_content/ab/ce/qrstuvwxyz') + 5]! ^= 0x80;
    const error = await expectEssError(readArchive(Readable.from([damaged])), 'ARCHIVE_CORRUPT');
    expect(error.message).toContain('media/local_content/ab/ce/qrstuvwxyz');
  });

  it('Given a flipped byte in the manifest, a tar header or the trailer, when read, then the archive is corrupt', async () => {
    const manifestAt = dataOffset(archive, MEMBERS.manifest);
    const text = archive.subarray(manifestAt, manifestAt + 2000).toString('latin1');
    const targets = [
      manifestAt + text.indexOf('example.com') + 1, // still valid JSON: caught by the trailer's manifest digest
      dataOffset(archive, MEMBERS.postgresGlobals) - 512 + 10, // inside a tar header name: header checksum
      dataOffset(archive, MEMBERS.trailer) + 3, // a trailer digest
    ];
    for (const at of targets) {
      const damaged = Buffer.from(archive);
      damaged[at]! ^= 0x01;
      await expectEssError(readArchive(Readable.from([damaged])), 'ARCHIVE_CORRUPT');
    }
  });
});

/** Builds a tar by hand (for archives the writer would refuse to produce). */
async function handmadeTar(entries: { name: string; data: string | Buffer }[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const entry of entries) pack.entry({ name: entry.name }, entry.data);
  pack.finalize();
  return collect(pack as unknown as AsyncIterable<Uint8Array>);
}

describe('format version and structure', () => {
  it('Given a newer format version, when read, then it is refused before validation and before any callback', async () => {
    const future = await handmadeTar([
      { name: MEMBERS.manifest, data: JSON.stringify({ formatVersion: FORMAT_VERSION + 1, somethingNew: true }) },
      { name: 'data/whatever.bin', data: 'x' },
    ]);
    let called = false;
    const error = await expectEssError(
      readArchive(Readable.from([future]), {
        onManifest: () => {
          called = true;
        },
        onMember: () => {
          called = true;
        },
      }),
      'ARCHIVE_FORMAT_TOO_NEW',
    );
    expect(error.exitCode).toBe(4);
    expect(error.message).toContain(`version ${FORMAT_VERSION + 1}`);
    expect(called).toBe(false);
    await expectEssError(readManifest(Readable.from([future])), 'ARCHIVE_FORMAT_TOO_NEW');
  });

  it('Given tar files that are not ess archives, when read, then they are refused', async () => {
    const other = await handmadeTar([{ name: 'hello.txt', data: 'hi' }]);
    await expectEssError(readArchive(Readable.from([other])), 'ARCHIVE_NOT_ESS');
    await expectEssError(readArchive(Readable.from([Buffer.alloc(0)])), 'ARCHIVE_NOT_ESS');
    const manifestAt = dataOffset(archive, MEMBERS.manifest);
    const manifestBytes = archive.subarray(manifestAt, dataOffset(archive, MEMBERS.mediaIndex) - 512);
    const manifest = manifestBytes.toString('utf8').replace(/\0+$/, '');
    const extra = await handmadeTar([
      { name: MEMBERS.manifest, data: manifest },
      { name: 'kubernetes/secrets/sneaky.yaml', data: 'x' },
    ]);
    const error = await expectEssError(readArchive(Readable.from([extra])), 'ARCHIVE_CORRUPT');
    expect(error.message).toContain('not listed in the manifest');
    const traversal = await handmadeTar([
      { name: MEMBERS.manifest, data: manifest },
      { name: 'media/../../etc/passwd', data: 'x' },
    ]);
    expect((await expectEssError(readArchive(Readable.from([traversal])), 'ARCHIVE_CORRUPT')).message).toContain(
      'unsafe',
    );
  });
});

describe('writer checks', () => {
  it('Given a declared member whose bytes changed after spooling, when written, then the archive fails', async () => {
    const writer = new ArchiveWriter();
    const consumed = collect(writer.output).then(
      () => undefined,
      (e: unknown) => e,
    );
    const data = Buffer.from('original dump');
    await writer.writeManifest(BASE_MANIFEST, [
      { name: MEMBERS.postgresGlobals, size: data.length, sha256: sha256(data) },
    ]);
    const error = await expectEssError(
      writer.addMember({ name: MEMBERS.postgresGlobals, size: data.length }, Buffer.from('modified dump')),
      'ARCHIVE_WRITE',
    );
    expect(error.message).toContain('changed');
    expect(await consumed).toBe(error);
    await expect(writer.finish()).rejects.toBe(error);
  });

  it('Given wrong sizes, undeclared or missing members, when written, then the writer refuses', async () => {
    const cases: ((w: ArchiveWriter) => Promise<unknown>)[] = [
      (w) => w.addMember({ name: 'media/a', size: 5 }, Buffer.from('toolong')),
      (w) => w.addMember({ name: 'media/a', size: 50 }, Buffer.from('short')),
      (w) => w.addMember({ name: 'postgres/other.dump', size: 1 }, Buffer.from('x')),
      (w) => w.addMember({ name: '../escape', size: 1 }, Buffer.from('x')),
      (w) => w.finish(), // the declared member was never written
    ];
    for (const run of cases) {
      const writer = new ArchiveWriter();
      const consumed = collect(writer.output).catch(() => undefined);
      await writer.writeManifest(BASE_MANIFEST, [
        { name: MEMBERS.postgresGlobals, size: 1, sha256: sha256(Buffer.from('x')) },
      ]);
      await expectEssError(run(writer), 'ARCHIVE_WRITE');
      await consumed;
    }
  });

  it('Given a consumer that does not read, when a large member is added, then the source is not read ahead', async () => {
    const writer = new ArchiveWriter();
    await writer.writeManifest(BASE_MANIFEST, []);
    let produced = 0;
    const size = 24 * 1024 * 1024;
    async function* source() {
      while (produced < size) {
        produced += 64 * 1024;
        yield Buffer.alloc(64 * 1024);
      }
    }
    const adding = writer.addMember({ name: 'media/big', size }, source());
    await new Promise((resolve) => setTimeout(resolve, 300));
    // Bounded by stream buffers (a few MiB), not by the member size.
    expect(produced).toBeLessThan(8 * 1024 * 1024);
    const drained = collect(writer.output);
    await adding;
    await writer.finish();
    expect((await drained).length).toBeGreaterThan(size);
  });
});

describe('spool', () => {
  it('Given a spooled member, then its file is 0600 in a 0700 directory', async () => {
    const spooled = backup.files.find((f) => f.name === secretMember('ess-generated'))!;
    expect((await stat(spooled.path)).mode & 0o777).toBe(0o600);
    expect((await stat(backup.spool.dir)).mode & 0o777).toBe(0o700);
    expect(await backup.spool.freeBytes()).toBeGreaterThan(0);
  });
});
