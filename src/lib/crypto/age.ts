/**
 * Streaming age (https://age-encryption.org/v1) encryption and decryption on node:crypto: X25519 recipients and
 * scrypt passphrases, the STREAM payload in 64 KiB chunks, as Node Transforms. The output is standard age that the
 * `age` CLI decrypts (`age -d -i key.txt backup.tar.age`), and files made by `age` decrypt here.
 *
 * Not supported: SSH recipients, plugins, post-quantum hybrid recipients and ASCII armor (ess never writes them).
 */
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
  randomBytes,
  scrypt,
  timingSafeEqual,
} from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { PreconditionError } from '../errors.js';
import { bech32Decode, bech32Encode } from './bech32.js';

/** The first line of every age file. */
export const AGE_MAGIC = 'age-encryption.org/v1';
/** Plaintext bytes per STREAM chunk. */
export const AGE_CHUNK_SIZE = 64 * 1024;
const TAG_SIZE = 16;
const ENCRYPTED_CHUNK_SIZE = AGE_CHUNK_SIZE + TAG_SIZE;
const FILE_KEY_SIZE = 16;
const MAX_HEADER_BYTES = 1024 * 1024;
/** scrypt work factor (log2 N) used for new passphrase-encrypted files; the same default as the age CLI. */
export const DEFAULT_SCRYPT_WORK_FACTOR = 18;
/** Highest scrypt work factor accepted when decrypting (age's own limit); 22 needs 4 GiB of memory. */
export const MAX_SCRYPT_WORK_FACTOR = 22;

const X25519_INFO = 'age-encryption.org/v1/X25519';
const SCRYPT_SALT_LABEL = 'age-encryption.org/v1/scrypt';
const SPKI_X25519_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');
const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const IDENTITY_HRP = 'age-secret-key-';
const RECIPIENT_HRP = 'age';

/** How to encrypt: one or more X25519 recipients (`age1…`), or exactly one passphrase. */
export interface AgeEncryptOptions {
  recipients?: string[];
  passphrase?: string;
  /** log2 of scrypt's N for passphrases; default 18. Lower only in tests. */
  scryptWorkFactor?: number;
}

/** What may decrypt: X25519 identities (`AGE-SECRET-KEY-1…`) and/or passphrases. */
export interface AgeDecryptKeys {
  identities?: string[];
  passphrases?: string[];
  /** Refuse scrypt stanzas with a higher work factor (default 22). */
  maxScryptWorkFactor?: number;
}

/** Facts about a verified header. */
export interface AgeHeaderInfo {
  /** 'scrypt' for passphrase files, 'x25519' otherwise. */
  kind: 'scrypt' | 'x25519';
  stanzas: number;
  /** Header plus payload nonce, in bytes. */
  headerBytes: number;
}

/** An X25519 key pair in age's text encodings. */
export interface AgeKeyPair {
  /** `AGE-SECRET-KEY-1…` */
  identity: string;
  /** `age1…` */
  recipient: string;
}

interface Stanza {
  type: string;
  args: string[];
  body: Buffer;
}

function ageHeaderError(message: string, cause?: unknown): PreconditionError {
  return new PreconditionError(`Not a valid age file: ${message}.`, {
    code: 'AGE_HEADER_INVALID',
    cause,
    next: ['Check that the file is a complete ess backup (`ess backup verify`)'],
  });
}

function agePayloadError(message: string): PreconditionError {
  return new PreconditionError(`Encrypted archive is damaged: ${message}.`, {
    code: 'AGE_PAYLOAD_INVALID',
    next: ['The file was truncated or modified after it was written; use another backup'],
  });
}

function hkdf(ikm: Uint8Array, salt: Uint8Array, info: string): Buffer {
  return Buffer.from(hkdfSync('sha256', ikm, salt, info, 32));
}

function aeadSeal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array): Buffer {
  const cipher = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG_SIZE });
  return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
}

/** Returns undefined when authentication fails. */
function aeadOpen(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array): Buffer | undefined {
  if (sealed.length < TAG_SIZE) return undefined;
  const decipher = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG_SIZE });
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_SIZE));
  try {
    return Buffer.concat([decipher.update(sealed.subarray(0, sealed.length - TAG_SIZE)), decipher.final()]);
  } catch {
    return undefined;
  }
}

const ZERO_NONCE = Buffer.alloc(12);

function b64(data: Uint8Array): string {
  return Buffer.from(data).toString('base64').replace(/=+$/, '');
}

/** Strict, canonical, unpadded base64 as the age spec demands. */
function unb64(text: string, what: string): Buffer {
  if (!/^[A-Za-z0-9+/]*$/.test(text)) throw ageHeaderError(`bad base64 in ${what}`);
  const data = Buffer.from(text, 'base64');
  if (b64(data) !== text) throw ageHeaderError(`non-canonical base64 in ${what}`);
  return data;
}

function x25519PublicFromRaw(raw: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_X25519_PREFIX, raw]), format: 'der', type: 'spki' });
}

function x25519PrivateFromRaw(raw: Uint8Array): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_X25519_PREFIX, raw]), format: 'der', type: 'pkcs8' });
}

function rawPublic(key: KeyObject): Buffer {
  return (key.export({ format: 'der', type: 'spki' }) as Buffer).subarray(SPKI_X25519_PREFIX.length);
}

function rawPrivate(key: KeyObject): Buffer {
  return (key.export({ format: 'der', type: 'pkcs8' }) as Buffer).subarray(PKCS8_X25519_PREFIX.length);
}

function sharedSecret(privateKey: KeyObject, publicKey: KeyObject): Buffer | undefined {
  try {
    const secret = diffieHellman({ privateKey, publicKey });
    return secret.every((b) => b === 0) ? undefined : secret;
  } catch {
    return undefined;
  }
}

/**
 * Parses and validates an `age1…` X25519 recipient.
 * @returns the raw 32-byte public key. Throws PreconditionError (AGE_BAD_RECIPIENT) for anything else.
 */
export function parseRecipient(text: string): Buffer {
  const trimmed = text.trim();
  try {
    const { hrp, data } = bech32Decode(trimmed);
    if (hrp !== RECIPIENT_HRP || data.length !== 32) throw new Error('not an X25519 recipient');
    return Buffer.from(data);
  } catch (error) {
    throw new PreconditionError(`Invalid age recipient ${JSON.stringify(trimmed)}: ${(error as Error).message}.`, {
      code: 'AGE_BAD_RECIPIENT',
      next: ['Pass an X25519 recipient such as the "public key" printed by `age-keygen`'],
    });
  }
}

/**
 * Parses and validates an `AGE-SECRET-KEY-1…` identity.
 * @returns the raw 32-byte private key. Throws PreconditionError (AGE_BAD_IDENTITY).
 */
export function parseIdentity(text: string): Buffer {
  try {
    const { hrp, data } = bech32Decode(text.trim());
    if (hrp !== IDENTITY_HRP || data.length !== 32) throw new Error('not an X25519 identity');
    return Buffer.from(data);
  } catch (error) {
    throw new PreconditionError(`Invalid age identity: ${(error as Error).message}.`, {
      code: 'AGE_BAD_IDENTITY',
      next: ['Pass a key file made by `age-keygen` (a line starting with AGE-SECRET-KEY-1)'],
    });
  }
}

/** Generates a new X25519 key pair, as `age-keygen` does. */
export function generateAgeKeyPair(): AgeKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  return {
    identity: bech32Encode(IDENTITY_HRP, rawPrivate(privateKey)).toUpperCase(),
    recipient: bech32Encode(RECIPIENT_HRP, rawPublic(publicKey)),
  };
}

/** The recipient (`age1…`) of an identity (`AGE-SECRET-KEY-1…`). */
export function identityToRecipient(identity: string): string {
  const publicKey = createPublicKey(x25519PrivateFromRaw(parseIdentity(identity)));
  return bech32Encode(RECIPIENT_HRP, rawPublic(publicKey));
}

/** True when the bytes start like an age file (binary header). */
export function looksLikeAge(prefix: Uint8Array): boolean {
  return Buffer.from(prefix.subarray(0, AGE_MAGIC.length + 1)).toString('latin1') === `${AGE_MAGIC}\n`;
}

function scryptKey(passphrase: string, salt: Uint8Array, logN: number): Promise<Buffer> {
  const N = 2 ** logN;
  return new Promise((resolve, reject) => {
    scrypt(
      Buffer.from(passphrase, 'utf8'),
      Buffer.concat([Buffer.from(SCRYPT_SALT_LABEL), salt]),
      32,
      { N, r: 8, p: 1, maxmem: 256 * N * 8 + 16 * 1024 * 1024 },
      (error, key) => (error ? reject(error) : resolve(key)),
    );
  });
}

function encodeStanza(stanza: Stanza): string {
  const body = b64(stanza.body);
  const lines: string[] = [];
  for (let i = 0; i <= body.length; i += 64) lines.push(body.slice(i, i + 64));
  // A body whose length is a multiple of 64 ends with an empty line; the loop above already yields it.
  return `-> ${[stanza.type, ...stanza.args].join(' ')}\n${lines.join('\n')}\n`;
}

async function wrapFileKey(fileKey: Buffer, options: AgeEncryptOptions): Promise<Stanza[]> {
  const recipients = options.recipients ?? [];
  const hasPassphrase = options.passphrase !== undefined;
  if (hasPassphrase === recipients.length > 0) {
    throw new PreconditionError('Encrypt either to one or more recipients or with a passphrase, not both or neither.', {
      code: 'AGE_BAD_OPTIONS',
    });
  }
  if (hasPassphrase) {
    if (options.passphrase === '') throw new PreconditionError('The passphrase is empty.', { code: 'AGE_BAD_OPTIONS' });
    const logN = options.scryptWorkFactor ?? DEFAULT_SCRYPT_WORK_FACTOR;
    if (!Number.isInteger(logN) || logN < 1 || logN > MAX_SCRYPT_WORK_FACTOR) {
      throw new PreconditionError(`Invalid scrypt work factor ${logN}.`, { code: 'AGE_BAD_OPTIONS' });
    }
    const salt = randomBytes(16);
    const key = await scryptKey(options.passphrase!, salt, logN);
    return [{ type: 'scrypt', args: [b64(salt), String(logN)], body: aeadSeal(key, ZERO_NONCE, fileKey) }];
  }
  return recipients.map((recipient) => {
    const recipientRaw = parseRecipient(recipient);
    const ephemeral = generateKeyPairSync('x25519');
    const share = rawPublic(ephemeral.publicKey);
    const secret = sharedSecret(ephemeral.privateKey, x25519PublicFromRaw(recipientRaw));
    if (!secret) throw new PreconditionError('Invalid age recipient (low-order point).', { code: 'AGE_BAD_RECIPIENT' });
    const wrapKey = hkdf(secret, Buffer.concat([share, recipientRaw]), X25519_INFO);
    return { type: 'X25519', args: [b64(share)], body: aeadSeal(wrapKey, ZERO_NONCE, fileKey) };
  });
}

function headerMac(fileKey: Uint8Array, headerUpToDashes: Uint8Array): Buffer {
  return createHmac('sha256', hkdf(fileKey, Buffer.alloc(0), 'header'))
    .update(headerUpToDashes)
    .digest();
}

function streamNonce(counter: number, last: boolean): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeUIntBE(Math.floor(counter / 2 ** 32), 3, 4);
  nonce.writeUInt32BE(counter >>> 0, 7);
  nonce[11] = last ? 1 : 0;
  return nonce;
}

/** A FIFO of buffers that hands out exact byte counts without re-copying everything it holds. */
class ByteQueue {
  private chunks: Buffer[] = [];
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  take(n: number): Buffer {
    const count = Math.min(n, this.length);
    const first = this.chunks[0];
    if (first && first.length >= count) {
      const out = first.subarray(0, count);
      if (first.length === count) this.chunks.shift();
      else this.chunks[0] = first.subarray(count);
      this.length -= count;
      return out;
    }
    const out = Buffer.allocUnsafe(count);
    let offset = 0;
    while (offset < count) {
      const chunk = this.chunks[0]!;
      const used = Math.min(chunk.length, count - offset);
      chunk.copy(out, offset, 0, used);
      offset += used;
      if (used === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(used);
    }
    this.length -= count;
    return out;
  }

  peekAll(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0] ?? Buffer.alloc(0);
  }
}

/**
 * An age encryption Transform: plaintext in, a complete age file out (header, nonce, STREAM chunks). The header is
 * built when the stream is constructed (scrypt runs asynchronously), so recipient and option errors surface as the
 * stream's first error; call {@link validateAgeEncryptOptions} first to fail before anything starts.
 */
export class AgeEncryptStream extends Transform {
  private readonly queue = new ByteQueue();
  private payloadKey: Buffer | undefined;
  private counter = 0;

  constructor(private readonly options: AgeEncryptOptions) {
    super();
  }

  override _construct(callback: (error?: Error | null) => void): void {
    this.buildHeader().then(
      () => callback(),
      (error: Error) => callback(error),
    );
  }

  private async buildHeader(): Promise<void> {
    const fileKey = randomBytes(FILE_KEY_SIZE);
    const stanzas = await wrapFileKey(fileKey, this.options);
    const upToDashes = Buffer.from(`${AGE_MAGIC}\n${stanzas.map(encodeStanza).join('')}---`);
    const mac = headerMac(fileKey, upToDashes);
    const nonce = randomBytes(16);
    this.payloadKey = hkdf(fileKey, nonce, 'payload');
    this.push(Buffer.concat([upToDashes, Buffer.from(` ${b64(mac)}\n`), nonce]));
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.queue.push(chunk);
    // Keep at least one byte back: the final chunk must be flagged as last, and only end-of-input tells.
    while (this.queue.length > AGE_CHUNK_SIZE) this.sealChunk(this.queue.take(AGE_CHUNK_SIZE), false);
    callback();
  }

  override _flush(callback: TransformCallback): void {
    this.sealChunk(this.queue.take(this.queue.length), true);
    callback();
  }

  private sealChunk(plaintext: Buffer, last: boolean): void {
    this.push(aeadSeal(this.payloadKey!, streamNonce(this.counter, last), plaintext));
    this.counter++;
  }
}

/** Checks encryption options (recipient syntax, one mode) without encrypting anything. Throws PreconditionError. */
export function validateAgeEncryptOptions(options: AgeEncryptOptions): void {
  const recipients = options.recipients ?? [];
  if ((options.passphrase !== undefined) === recipients.length > 0) {
    throw new PreconditionError('Encrypt either to recipients or with a passphrase, not both or neither.', {
      code: 'AGE_BAD_OPTIONS',
      next: ['Use --encrypt-to (repeatable) or --passphrase-file, not both'],
    });
  }
  if (options.passphrase === '') throw new PreconditionError('The passphrase is empty.', { code: 'AGE_BAD_OPTIONS' });
  for (const recipient of recipients) parseRecipient(recipient);
}

/** Creates a Transform that encrypts everything written to it into one age file. */
export function createAgeEncryptStream(options: AgeEncryptOptions): AgeEncryptStream {
  return new AgeEncryptStream(options);
}

function parseHeader(bytes: Buffer): { stanzas: Stanza[]; macInput: Buffer; mac: Buffer } {
  const text = bytes.toString('latin1');
  const lines = text.split('\n');
  // The text ends with the MAC line's newline, so the last element is empty.
  lines.pop();
  if (lines[0] !== AGE_MAGIC) throw ageHeaderError(`unsupported version line ${JSON.stringify(lines[0])}`);
  const stanzas: Stanza[] = [];
  let i = 1;
  while (i < lines.length && lines[i]!.startsWith('-> ')) {
    const args = lines[i]!.slice(3).split(' ');
    if (args.some((a) => a.length === 0 || !/^[\x21-\x7e]+$/.test(a))) throw ageHeaderError('malformed stanza');
    i++;
    const bodyLines: string[] = [];
    for (;;) {
      const line = lines[i];
      if (line === undefined) throw ageHeaderError('unterminated stanza body');
      if (line.length > 64) throw ageHeaderError('stanza body line too long');
      bodyLines.push(line);
      i++;
      if (line.length < 64) break;
    }
    stanzas.push({ type: args[0]!, args: args.slice(1), body: unb64(bodyLines.join(''), 'stanza body') });
  }
  const macLine = lines[i];
  if (macLine === undefined || !macLine.startsWith('--- ') || i !== lines.length - 1) {
    throw ageHeaderError('malformed header end');
  }
  if (stanzas.length === 0) throw ageHeaderError('no recipient stanzas');
  const mac = unb64(macLine.slice(4), 'header MAC');
  if (mac.length !== 32) throw ageHeaderError('bad header MAC length');
  const macInput = bytes.subarray(0, text.lastIndexOf('\n--- ') + 4);
  return { stanzas, macInput, mac };
}

async function unwrapFileKey(
  stanzas: Stanza[],
  keys: AgeDecryptKeys,
): Promise<{ fileKey: Buffer; kind: 'scrypt' | 'x25519' }> {
  const passphrases = keys.passphrases ?? [];
  const identities = (keys.identities ?? []).map((identity) => x25519PrivateFromRaw(parseIdentity(identity)));
  const scryptStanzas = stanzas.filter((s) => s.type === 'scrypt');
  if (scryptStanzas.length > 0) {
    if (stanzas.length !== 1) throw ageHeaderError('a scrypt stanza must be the only stanza');
    if (passphrases.length === 0) {
      throw new PreconditionError('The archive is encrypted with a passphrase, but no passphrase was given.', {
        code: 'AGE_PASSPHRASE_REQUIRED',
        next: ['Pass --passphrase-file <file> with the passphrase used for the backup'],
      });
    }
    const stanza = scryptStanzas[0]!;
    const [saltText, logNText] = stanza.args;
    if (stanza.args.length !== 2 || !/^[1-9][0-9]*$/.test(logNText ?? '')) throw ageHeaderError('bad scrypt stanza');
    const salt = unb64(saltText!, 'scrypt salt');
    const logN = Number(logNText);
    if (salt.length !== 16 || stanza.body.length !== FILE_KEY_SIZE + TAG_SIZE)
      throw ageHeaderError('bad scrypt stanza');
    if (logN > (keys.maxScryptWorkFactor ?? MAX_SCRYPT_WORK_FACTOR)) {
      throw new PreconditionError(`The passphrase work factor (2^${logN}) is higher than allowed.`, {
        code: 'AGE_WORK_FACTOR_TOO_HIGH',
      });
    }
    for (const passphrase of passphrases) {
      const fileKey = aeadOpen(await scryptKey(passphrase, salt, logN), ZERO_NONCE, stanza.body);
      if (fileKey) return { fileKey, kind: 'scrypt' };
    }
    throw new PreconditionError('Wrong passphrase: it does not decrypt this archive.', {
      code: 'AGE_WRONG_PASSPHRASE',
      next: ['Check the --passphrase-file (a trailing newline is ignored; other whitespace is not)'],
    });
  }
  if (identities.length === 0) {
    throw new PreconditionError('The archive is encrypted to age recipients, but no identity was given.', {
      code: 'AGE_IDENTITY_REQUIRED',
      next: ['Pass --identity <key file> with a private key made by age-keygen'],
    });
  }
  for (const stanza of stanzas) {
    if (stanza.type !== 'X25519') continue;
    if (stanza.args.length !== 1 || stanza.body.length !== FILE_KEY_SIZE + TAG_SIZE) {
      throw ageHeaderError('bad X25519 stanza');
    }
    const share = unb64(stanza.args[0]!, 'X25519 share');
    if (share.length !== 32) throw ageHeaderError('bad X25519 share');
    const sharePublic = x25519PublicFromRaw(share);
    for (const identity of identities) {
      const secret = sharedSecret(identity, sharePublic);
      if (!secret) continue;
      const salt = Buffer.concat([share, rawPublic(createPublicKey(identity))]);
      const fileKey = aeadOpen(hkdf(secret, salt, X25519_INFO), ZERO_NONCE, stanza.body);
      if (fileKey) return { fileKey, kind: 'x25519' };
    }
  }
  throw new PreconditionError('None of the given age identities can decrypt this archive.', {
    code: 'AGE_NO_MATCHING_IDENTITY',
    next: ['Pass the --identity whose public key was given to --encrypt-to when the backup was made'],
  });
}

/**
 * An age decryption Transform: an age file in, plaintext out. The header is parsed and authenticated before any
 * plaintext is produced; {@link AgeDecryptStream.header} settles at that point (rejecting with a PreconditionError
 * for a wrong passphrase or identity), so callers can await it before changing anything. Each STREAM chunk is
 * authenticated before it is pushed; truncation and modification fail the stream with AGE_PAYLOAD_INVALID.
 */
export class AgeDecryptStream extends Transform {
  /** Resolves once the header is verified and the file key recovered; rejects with the error that fails the stream. */
  readonly header: Promise<AgeHeaderInfo>;
  private resolveHeader!: (info: AgeHeaderInfo) => void;
  private rejectHeader!: (error: Error) => void;
  private readonly queue = new ByteQueue();
  private state: 'header' | 'nonce' | 'payload' = 'header';
  private fileKey: Buffer | undefined;
  private payloadKey: Buffer | undefined;
  private info: AgeHeaderInfo | undefined;
  private counter = 0;

  constructor(private readonly keys: AgeDecryptKeys) {
    super();
    this.header = new Promise<AgeHeaderInfo>((resolve, reject) => {
      this.resolveHeader = resolve;
      this.rejectHeader = reject;
    });
    this.header.catch(() => {});
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.queue.push(chunk);
    this.process(false).then(
      () => callback(),
      (error: Error) => callback(this.fail(error)),
    );
  }

  override _flush(callback: TransformCallback): void {
    this.process(true).then(
      () => callback(),
      (error: Error) => callback(this.fail(error)),
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.rejectHeader(error ?? agePayloadError('the stream was closed before the header was read'));
    callback(error);
  }

  private fail(error: Error): Error {
    this.rejectHeader(error);
    return error;
  }

  private async process(ending: boolean): Promise<void> {
    if (this.state === 'header') {
      const buffered = this.queue.peekAll();
      if (buffered.length >= AGE_MAGIC.length + 1 && !looksLikeAge(buffered)) {
        throw ageHeaderError('it does not start with the age header');
      }
      const dashes = buffered.indexOf('\n--- ');
      const end = dashes === -1 ? -1 : buffered.indexOf('\n', dashes + 1);
      if (end === -1) {
        if (buffered.length > MAX_HEADER_BYTES) throw ageHeaderError('header too large');
        if (ending) throw agePayloadError('the file ends inside the age header');
        return;
      }
      const headerBytes = this.queue.take(end + 1);
      const { stanzas, macInput, mac } = parseHeader(headerBytes);
      const { fileKey, kind } = await unwrapFileKey(stanzas, this.keys);
      const expected = headerMac(fileKey, macInput);
      if (!timingSafeEqual(expected, mac)) throw ageHeaderError('header MAC mismatch');
      this.fileKey = fileKey;
      this.info = { kind, stanzas: stanzas.length, headerBytes: headerBytes.length + 16 };
      this.state = 'nonce';
    }
    if (this.state === 'nonce') {
      if (this.queue.length < 16) {
        if (ending) throw agePayloadError('the file ends before the payload');
        return;
      }
      this.payloadKey = hkdf(this.fileKey!, this.queue.take(16), 'payload');
      this.state = 'payload';
      this.resolveHeader(this.info!);
    }
    while (this.queue.length > ENCRYPTED_CHUNK_SIZE) this.openChunk(this.queue.take(ENCRYPTED_CHUNK_SIZE), false);
    if (ending) {
      const last = this.queue.take(this.queue.length);
      if (last.length < TAG_SIZE) throw agePayloadError('the file is truncated');
      if (last.length === TAG_SIZE && this.counter > 0) throw agePayloadError('the last chunk is empty');
      this.openChunk(last, true);
    }
  }

  private openChunk(sealed: Buffer, last: boolean): void {
    const plaintext = aeadOpen(this.payloadKey!, streamNonce(this.counter, last), sealed);
    if (!plaintext) {
      throw agePayloadError(
        last ? 'the file is truncated or its last chunk was modified' : `chunk ${this.counter} failed authentication`,
      );
    }
    this.counter++;
    this.push(plaintext);
  }
}

/** Creates a Transform that decrypts one age file; see {@link AgeDecryptStream}. */
export function createAgeDecryptStream(keys: AgeDecryptKeys): AgeDecryptStream {
  return new AgeDecryptStream(keys);
}
