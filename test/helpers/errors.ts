import { expect } from 'vitest';
import { EssError } from '../../src/lib/errors.js';

/** The rejection of `promise`, which must be an EssError (fails the test otherwise). */
export async function essFailure(promise: Promise<unknown>): Promise<EssError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(EssError);
  return error as EssError;
}
