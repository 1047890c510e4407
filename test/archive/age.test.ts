import { execFileSync, spawnSync } from 'node:child_process';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as typage from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AGE_CHUNK_SIZE,
  type AgeDecryptKeys,
  type AgeEncryptOptions,
  createAgeDecryptStream,
  createAgeEncryptStream,
  generateAgeKeyPair,
  identityToRecipient,
  parseRecipient,
  validateAgeEncryptOptions,
} from '../../src/lib/crypto/age.js';
import { readIdentityFile, readPassphraseFile } from '../../src/lib/crypto/keys.js';
import { EssError } from '../../src/lib/errors.js';
import { essFailure } from '../helpers/errors.js';
import { bytesOf, collect, hasCommand, removeDir, tempDir } from './helpers.js';

// Tests use a low scrypt work factor to stay fast; production uses 18, like the age CLI.
const FAST = 10;
const SIZES = [0, 1, AGE_CHUNK_SIZE - 1, AGE_CHUNK_SIZE, AGE_CHUNK_SIZE + 1, 3 * AGE_CHUNK_SIZE, 1_000_003];
const hasAge = hasCommand('age') && hasCommand('age-keygen');
const hasScript = hasCommand('script');

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});
afterAll(async () => {
  await removeDir(dir);
});

async function encrypt(data: Buffer, options: AgeEncryptOptions, chunk = 10_000): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < data.length; i += chunk) pieces.push(data.subarray(i, i + chunk));
  return collect(Readable.from(pieces).pipe(createAgeEncryptStream(options)));
}

async function decrypt(data: Buffer, keys: AgeDecryptKeys, chunk = 7_777): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < data.length; i += chunk) pieces.push(data.subarray(i, i + chunk));
  const out = new PassThrough();
  const [, plaintext] = await Promise.all([
    pipeline(Readable.from(pieces), createAgeDecryptStream(keys), out),
    collect(out),
  ]);
  return plaintext;
}

describe('age round trips', () => {
  it('Given X25519 recipients and a passphrase, when data of chunk-edge sizes round-trips, then it is identical', async () => {
    const a = generateAgeKeyPair();
    const b = generateAgeKeyPair();
    for (const size of SIZES) {
      const data = bytesOf(size, size);
      const toKeys = await encrypt(data, { recipients: [a.recipient, b.recipient] });
      expect((await decrypt(toKeys, { identities: [b.identity] })).equals(data), `x25519 ${size}`).toBe(true);
      const withPass = await encrypt(data, { passphrase: 'correct horse battery', scryptWorkFactor: FAST });
      const back = await decrypt(withPass, { passphrases: ['correct horse battery'] });
      expect(back.equals(data), `scrypt ${size}`).toBe(true);
    }
  });

  it('Given the typage implementation, when each side decrypts the other, then both agree', async () => {
    const ours = generateAgeKeyPair();
    expect(await typage.identityToRecipient(ours.identity)).toBe(ours.recipient);
    expect(identityToRecipient(ours.identity)).toBe(ours.recipient);
    const data = bytesOf(2 * AGE_CHUNK_SIZE + 5, 9);
    const d = new typage.Decrypter();
    d.addIdentity(ours.identity);
    expect(Buffer.from(await d.decrypt(await encrypt(data, { recipients: [ours.recipient] }))).equals(data)).toBe(true);
    const dp = new typage.Decrypter();
    dp.addPassphrase('pw');
    const passFile = await encrypt(data, { passphrase: 'pw', scryptWorkFactor: FAST });
    expect(Buffer.from(await dp.decrypt(passFile)).equals(data)).toBe(true);
    const theirs = await typage.generateIdentity();
    const e = new typage.Encrypter();
    e.addRecipient(await typage.identityToRecipient(theirs));
    expect((await decrypt(Buffer.from(await e.encrypt(data)), { identities: [theirs] })).equals(data)).toBe(true);
  });

  it('Given a large input, when encrypting and decrypting, then output flows before the input ends', async () => {
    const enc = createAgeEncryptStream({ recipients: [generateAgeKeyPair().recipient] });
    let out = 0;
    enc.on('data', (chunk: Buffer) => {
      out += chunk.length;
    });
    for (let i = 0; i < 20; i++) enc.write(Buffer.alloc(AGE_CHUNK_SIZE));
    await new Promise((resolve) => setImmediate(resolve));
    expect(out).toBeGreaterThan(18 * AGE_CHUNK_SIZE);
    enc.end();
  });
});

describe('age failures', () => {
  it('Given a wrong passphrase, when decrypting, then the header fails with a precondition and no plaintext flows', async () => {
    const file = await encrypt(Buffer.from('secret signing key'), { passphrase: 'right', scryptWorkFactor: FAST });
    const dec = createAgeDecryptStream({ passphrases: ['wrong'] });
    let plaintext = 0;
    dec.on('data', (chunk: Buffer) => {
      plaintext += chunk.length;
    });
    dec.on('error', () => {});
    dec.end(file);
    const error = await essFailure(dec.header);
    expect(error.code).toBe('AGE_WRONG_PASSPHRASE');
    expect(error.exitCode).toBe(4);
    expect(plaintext).toBe(0);
  });

  it('Given the wrong kind of key, when decrypting, then the error says which key is needed', async () => {
    const keys = generateAgeKeyPair();
    const toKey = await encrypt(Buffer.from('x'), { recipients: [keys.recipient] });
    const withPass = await encrypt(Buffer.from('x'), { passphrase: 'p', scryptWorkFactor: FAST });
    expect((await essFailure(decrypt(toKey, { identities: [generateAgeKeyPair().identity] }))).code).toBe(
      'AGE_NO_MATCHING_IDENTITY',
    );
    expect((await essFailure(decrypt(toKey, { passphrases: ['p'] }))).code).toBe('AGE_IDENTITY_REQUIRED');
    expect((await essFailure(decrypt(withPass, { identities: [keys.identity] }))).code).toBe('AGE_PASSPHRASE_REQUIRED');
  });

  it('Given truncated, extended or modified ciphertext, when decrypting, then it fails', async () => {
    const keys = generateAgeKeyPair();
    const data = bytesOf(3 * AGE_CHUNK_SIZE + 100, 4);
    const file = await encrypt(data, { recipients: [keys.recipient] });
    const headerEnd = file.indexOf('\n', file.indexOf('\n--- ') + 1) + 1;
    const payload = headerEnd + 16;
    const chunk = AGE_CHUNK_SIZE + 16;
    const damaged: [string, Buffer, string][] = [
      ['cut mid-chunk', file.subarray(0, payload + chunk + 1000), 'AGE_PAYLOAD_INVALID'],
      ['cut at a chunk boundary', file.subarray(0, payload + 2 * chunk), 'AGE_PAYLOAD_INVALID'],
      ['cut in the header', file.subarray(0, headerEnd - 5), 'AGE_PAYLOAD_INVALID'],
      ['trailing garbage', Buffer.concat([file, Buffer.from('x')]), 'AGE_PAYLOAD_INVALID'],
      ['flipped payload byte', flip(file, payload + chunk + 7), 'AGE_PAYLOAD_INVALID'],
      ['flipped header MAC', flip(file, headerEnd - 3), 'AGE_HEADER_INVALID'],
    ];
    for (const [what, bytes, code] of damaged) {
      expect((await essFailure(decrypt(bytes, { identities: [keys.identity] }))).code, what).toBe(code);
    }
  });

  it('Given bad recipients or options, when validating, then a precondition error names the problem', () => {
    expect(() => parseRecipient('age1notarecipient')).toThrow(EssError);
    expect(() => validateAgeEncryptOptions({})).toThrow(/recipients or with a passphrase/);
    expect(() => validateAgeEncryptOptions({ recipients: [generateAgeKeyPair().recipient], passphrase: 'x' })).toThrow(
      EssError,
    );
    expect(() => validateAgeEncryptOptions({ recipients: ['ssh-ed25519 AAAA'] })).toThrow(/Invalid age recipient/);
  });
});

function flip(data: Buffer, at: number): Buffer {
  const copy = Buffer.from(data);
  copy[at]! ^= 0x01;
  return copy;
}

describe('key files', () => {
  it('Given age-keygen style and passphrase files, when read, then comments and one newline are ignored', async () => {
    const keys = generateAgeKeyPair();
    const keyFile = join(dir, 'key.txt');
    await writeFile(keyFile, `# created: 2025-01-01\n# public key: ${keys.recipient}\n${keys.identity}\n`);
    expect(await readIdentityFile(keyFile)).toEqual([keys.identity]);
    const passFile = join(dir, 'pass.txt');
    await writeFile(passFile, ' spaced pass \n');
    await chmod(passFile, 0o600);
    expect(await readPassphraseFile(passFile)).toEqual({ passphrase: ' spaced pass ', looselyProtected: false });
    await chmod(passFile, 0o644);
    expect((await readPassphraseFile(passFile)).looselyProtected).toBe(true);
    await writeFile(passFile, '\n');
    await expect(readPassphraseFile(passFile)).rejects.toThrow(/empty/);
    await writeFile(keyFile, '# nothing here\n');
    await expect(readIdentityFile(keyFile)).rejects.toThrow(/no age identity/);
  });
});

const NO_AGE = 'the age CLI is not installed (apt-get install age)';

describe('interoperability with the age CLI', () => {
  it('Given a key from age-keygen, when ess encrypts, then `age -d` decrypts, and the other way round', async (ctx) => {
    ctx.skip(!hasAge, NO_AGE);
    const keyFile = join(dir, 'cli-key.txt');
    execFileSync('age-keygen', ['-o', keyFile], { stdio: 'ignore' });
    const recipient = execFileSync('age-keygen', ['-y', keyFile]).toString().trim();
    const [identity] = await readIdentityFile(keyFile);
    expect(identityToRecipient(identity!)).toBe(recipient);
    for (const size of [0, AGE_CHUNK_SIZE, 2 * AGE_CHUNK_SIZE + 3]) {
      const data = bytesOf(size, 11);
      const ours = join(dir, `ours-${size}.age`);
      await writeFile(ours, await encrypt(data, { recipients: [recipient] }));
      expect(execFileSync('age', ['-d', '-i', keyFile, ours], { maxBuffer: 1 << 26 }).equals(data), `${size}`).toBe(
        true,
      );
      const theirs = execFileSync('age', ['-r', recipient], { input: data, maxBuffer: 1 << 26 });
      expect((await decrypt(theirs, { identities: [identity!] })).equals(data), `${size}`).toBe(true);
    }
  });

  it('Given a passphrase, when ess encrypts, then `age -d` decrypts at its prompt, and back', async (ctx) => {
    ctx.skip(!hasAge, NO_AGE);
    ctx.skip(!hasScript, 'script(1) is needed to give age a terminal for its passphrase prompt');
    const data = bytesOf(AGE_CHUNK_SIZE + 10, 12);
    const ours = join(dir, 'pass.age');
    const plain = join(dir, 'pass.out');
    await writeFile(ours, await encrypt(data, { passphrase: 'tty pass', scryptWorkFactor: FAST }));
    // age reads passphrases only from a terminal: give it one with script(1).
    const run = spawnSync('script', ['-qec', `age -d -o ${plain} ${ours}`, '/dev/null'], {
      input: 'tty pass\n',
      timeout: 30_000,
    });
    expect(run.status).toBe(0);
    expect((await readFile(plain)).equals(data)).toBe(true);
    const theirs = join(dir, 'theirs.age');
    await writeFile(plain, data);
    const enc = spawnSync('script', ['-qec', `age -p -o ${theirs} ${plain}`, '/dev/null'], {
      input: 'tty pass\ntty pass\n',
      timeout: 60_000,
    });
    expect(enc.status).toBe(0);
    // age's default work factor (2^18): this is the production setting.
    expect((await decrypt(await readFile(theirs), { passphrases: ['tty pass'] })).equals(data)).toBe(true);
  });
});
