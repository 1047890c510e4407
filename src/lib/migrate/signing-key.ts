/**
 * Synapse signing key files: one key per line, `ed25519 <key id> <unpadded base64 of the 32-byte seed>`.
 */
import { readFile } from 'node:fs/promises';
import { PreconditionError } from '../errors.js';

export interface SigningKey {
  algorithm: 'ed25519';
  keyId: string;
  /** The whole line, as Synapse and the chart store it. */
  line: string;
}

/** Parses the first key of a signing key file's text. Throws a PreconditionError for anything else. */
export function parseSigningKey(text: string, source: string): SigningKey {
  const line = text
    .split('\n')
    .map((l) => l.trim())
    .find((l) => l.length > 0);
  const match = line ? /^ed25519 ([A-Za-z0-9_]+) ([A-Za-z0-9+/]+={0,2})$/.exec(line) : null;
  if (!line || !match) {
    throw new PreconditionError(`${source} is not a Synapse signing key (expected "ed25519 <id> <base64>").`, {
      code: 'SIGNING_KEY_INVALID',
      next: ['Pass the file named by signing_key_path in the old homeserver.yaml'],
    });
  }
  const seed = Buffer.from(match[2] as string, 'base64');
  if (seed.length !== 32) {
    throw new PreconditionError(`${source}: the key is ${seed.length} bytes, not 32.`, { code: 'SIGNING_KEY_INVALID' });
  }
  return { algorithm: 'ed25519', keyId: match[1] as string, line };
}

/** Reads and parses a signing key file. */
export async function readSigningKey(path: string): Promise<SigningKey> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new PreconditionError(`Cannot read the signing key ${path}: ${(error as Error).message}`, {
      code: 'SIGNING_KEY_UNREADABLE',
    });
  }
  return parseSigningKey(text, path);
}

/**
 * Since chart 25.12.2 the init-secrets job replaces a signing key whose id is `0` (CVE-2026-24044 /
 * ELEMENTSEC-2025-1670) when it sits in the generated Secret.
 */
export function isRotatedByInitSecrets(key: SigningKey): boolean {
  return key.keyId === '0';
}
