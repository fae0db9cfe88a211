import type { ErrorCode } from './store.js';

/** A run that ends FAILED with this code and a message its owner can act on. */
export class RunFailure extends Error {
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
  }
}
