import { RateLimitedError } from '../errors.js';

// Why: scrypt runs on libuv's threadpool (4 threads by default), which file reads (previews,
// the web client, builds), dns.lookup and zlib share. A burst of sign-ins, well within the
// per-address rate limit, would hold every thread for seconds and stall all of those behind
// it. So only a few hashes run at once, a short queue waits behind them in arrival order, and
// an attempt beyond the queue is refused at once (HashingBusyError, a RateLimitedError), before
// anything is written; the API gives back the sign-in rate limits' hits of such an attempt.

export const KDF_BUSY_MESSAGE = 'Too many sign-ins at once; try again in a moment.';
/** A full queue drains in about a second (tens of milliseconds per hash). */
const KDF_BUSY_RETRY_SECONDS = 1;

/** Turned away because too many hashes run or wait: no password was looked at. */
export class HashingBusyError extends RateLimitedError {
  constructor() {
    super(KDF_BUSY_RETRY_SECONDS, KDF_BUSY_MESSAGE);
  }
}

export interface KdfLimits {
  /** Hashes running at once. */
  concurrency: number;
  /** Hashes waiting for a turn; one more is refused. */
  maxWaiting: number;
}

export interface KdfLimiter {
  /** Runs `work` once a slot is free, first come first served; throws HashingBusyError without running it when the queue is full. */
  run<T>(work: () => Promise<T>): Promise<T>;
}

export function createKdfLimiter({ concurrency, maxWaiting }: KdfLimits): KdfLimiter {
  let running = 0;
  const waiting: Array<() => void> = [];
  // A finished run hands its slot straight to the longest waiter, so a newcomer cannot jump the queue.
  const release = () => {
    const next = waiting.shift();
    if (next) next();
    else running--;
  };
  return {
    async run(work) {
      if (running < concurrency) running++;
      else if (waiting.length < maxWaiting) await new Promise<void>((resolve) => waiting.push(resolve));
      else throw new HashingBusyError();
      try {
        return await work();
      } finally {
        // Also when the KDF fails (or throws before it starts): a lost slot would never come back.
        release();
      }
    },
  };
}
