import { RunError } from '../errors.js';
import type { ErrorCode } from './store.js';

/** A run the pipeline itself ends (build failed, timed out, ended elsewhere) with this code. */
export class RunFailure extends RunError {
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
  }
}
