import { RunError } from '../errors.js';
import type { ErrorCode } from './store.js';

/** A run the pipeline itself ends (build failed, timed out, ended elsewhere) with this code. */
export class RunFailure extends RunError {
  /** `cause`: what the message leaves out for the project's members; the pipeline logs it. */
  constructor(readonly code: ErrorCode, message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
  }
}
