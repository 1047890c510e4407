import { readFile, stat } from 'node:fs/promises';
import { PreconditionError } from '../errors.js';
import { parseIdentity } from './age.js';

/** A passphrase read from a file, plus whether the file is readable by other users. */
export interface PassphraseFile {
  passphrase: string;
  /** True when group or others may read the file (worth a warning). */
  looselyProtected: boolean;
}

function unreadable(kind: string, path: string, error: unknown): PreconditionError {
  return new PreconditionError(`Cannot read the ${kind} ${path}: ${(error as Error).message}.`, {
    code: 'KEY_FILE_UNREADABLE',
    cause: error,
  });
}

/**
 * Reads a passphrase file: its content with one trailing newline (LF or CRLF) removed; nothing else is trimmed.
 * Throws PreconditionError when the file is missing or the passphrase empty.
 */
export async function readPassphraseFile(path: string): Promise<PassphraseFile> {
  let text: string;
  let mode: number;
  try {
    text = await readFile(path, 'utf8');
    mode = (await stat(path)).mode;
  } catch (error) {
    throw unreadable('passphrase file', path, error);
  }
  const passphrase = text.replace(/\r?\n$/, '');
  if (passphrase.length === 0) {
    throw new PreconditionError(`The passphrase file ${path} is empty.`, { code: 'AGE_BAD_OPTIONS' });
  }
  return { passphrase, looselyProtected: (mode & 0o077) !== 0 };
}

/**
 * Reads an age identity file (as written by `age-keygen`): every `AGE-SECRET-KEY-1…` line; blank lines and `#`
 * comments are skipped. Throws PreconditionError when a line is not an identity or the file has none.
 */
export async function readIdentityFile(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw unreadable('identity file', path, error);
  }
  const identities = text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line.length > 0 && !line.startsWith('#'));
  for (const identity of identities) parseIdentity(identity);
  if (identities.length === 0) {
    throw new PreconditionError(`The identity file ${path} holds no age identity.`, {
      code: 'AGE_BAD_IDENTITY',
      next: ['Create one with `age-keygen -o key.txt`'],
    });
  }
  return identities;
}
