import { LlmError, type LlmEvent, type RetryNotice } from './provider.js';

/** How a provider retries a request that failed before any text reached the caller. */
export interface RetryPolicy {
  /** Attempts in all, the first one included. */
  maxAttempts: number;
  /** Wait before the second attempt; it doubles (with jitter) up to maxDelayMs. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** The longest all waits of one request may add up to; a longer RetryInfo/Retry-After gives up at once. */
  maxTotalWaitMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { maxAttempts: 3, baseDelayMs: 1000, maxDelayMs: 8000, maxTotalWaitMs: 60_000 };
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;
/**
 * How long an attempt may go on without text while the upstream still sends something
 * (keep-alives, reasoning): a model that thinks that long, or a gateway that keeps a dead
 * upstream's connection open with comments, would otherwise hold its worker for good.
 */
export const DEFAULT_TEXT_TIMEOUT_MS = 10 * 60_000;

/**
 * What an attempt yields for upstream data that carries no text (an SSE keep-alive comment,
 * a reasoning delta, Gemini's thoughts or usage): it restarts the idle timeout, so a model
 * that thinks for long is not taken for a silent one, and goes no further than resilientStream.
 */
export const ALIVE = { type: 'alive' } as const;
export type UpstreamEvent = LlmEvent | typeof ALIVE;

export interface ResilientStreamOptions {
  /** Names the upstream in messages ("Gemini"). */
  label: string;
  signal: AbortSignal;
  idleTimeoutMs: number;
  /** DEFAULT_TEXT_TIMEOUT_MS unless given. */
  textTimeoutMs?: number;
  retry: RetryPolicy;
  /** Opens one attempt; aborting `signal` must close its connection. LlmErrors it throws pass through. */
  open(signal: AbortSignal): AsyncIterable<UpstreamEvent>;
  /** Turns anything else an attempt threw into an LlmError; retryable ones may be tried again. */
  describeFailure(error: unknown): LlmError;
  /** Told before each wait (logs, metrics). */
  onRetry?: (retry: RetryNotice) => void;
}

/**
 * Runs `open` with bounded retries, an idle timeout and prompt cancellation.
 * Retries happen only before the first text event: after that the caller has
 * already shown the text, so a failure is final. A wait honours the delay the
 * provider asked for (RetryInfo, Retry-After), within the policy's total.
 */
export async function* resilientStream(options: ResilientStreamOptions): AsyncGenerator<LlmEvent> {
  const { signal, retry, textTimeoutMs = DEFAULT_TEXT_TIMEOUT_MS } = options;
  let waitedMs = 0;
  for (let attempt = 1; ; attempt++) {
    signal.throwIfAborted();
    const upstream = new AbortController();
    const followCaller = () => upstream.abort(signal.reason);
    signal.addEventListener('abort', followCaller, { once: true });
    let receivedText = false;
    let lastTextAt = performance.now();
    try {
      const events = options.open(upstream.signal)[Symbol.asyncIterator]();
      for (;;) {
        const step = await nextWithin(events, upstream, options.idleTimeoutMs, () => stalled(options));
        if (step.done) return;
        if (step.value.type === 'alive') {
          if (performance.now() - lastTextAt > textTimeoutMs) throw withoutText(options.label, textTimeoutMs);
          continue;
        }
        if (step.value.type === 'text') {
          receivedText = true;
          lastTextAt = performance.now();
        }
        yield step.value;
      }
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      const failure = error instanceof LlmError ? error : options.describeFailure(error);
      if (receivedText || !failure.retryable) throw failure;
      if (attempt >= retry.maxAttempts) {
        throw new LlmError(`${failure.message} Gave up after ${attempt} attempts.`, true, failure.retry, failure.cause);
      }
      const delayMs = failure.retry.afterMs ?? backoffMs(retry, attempt);
      if (waitedMs + delayMs > retry.maxTotalWaitMs) {
        const seconds = Math.ceil(delayMs / 1000);
        throw new LlmError(`${failure.message} Gave up after ${attempt} attempts: ${options.label} asked to wait ${seconds} s more, past the ${Math.round(retry.maxTotalWaitMs / 1000)} s limit.`, true, failure.retry, failure.cause);
      }
      options.onRetry?.({ attempt, status: failure.retry.status ?? 'network', delayMs, reason: failure.message });
      waitedMs += delayMs;
      await abortableDelay(delayMs, signal);
    } finally {
      signal.removeEventListener('abort', followCaller);
      // Closes the connection when the consumer stopped early or the attempt failed.
      upstream.abort();
    }
  }
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** The upstream's next event, unless the attempt is aborted or the upstream stays silent too long. */
function nextWithin<T>(
  events: AsyncIterator<T>,
  attempt: AbortController,
  idleTimeoutMs: number,
  stallError: () => LlmError,
): Promise<IteratorResult<T>> {
  const signal = attempt.signal;
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => settle(() => reject(signal.reason));
    // Aborting with the stall error both closes the connection and rejects through onAbort.
    const timer = setTimeout(() => attempt.abort(stallError()), idleTimeoutMs);
    const settle = (done: () => void) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      done();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    events.next().then(
      (step) => settle(() => resolve(step)),
      (error: unknown) => settle(() => reject(error)),
    );
  });
}

function stalled({ label, idleTimeoutMs }: ResilientStreamOptions): LlmError {
  const seconds = Math.round(idleTimeoutMs / 100) / 10;
  return new LlmError(`${label} sent no data for ${seconds} s, so the request was abandoned; try again.`);
}

function withoutText(label: string, textTimeoutMs: number): LlmError {
  const minutes = Math.round(textTimeoutMs / 6000) / 10;
  return new LlmError(`${label} sent no text for ${minutes} min (only keep-alives or reasoning), so the request was abandoned; try again.`);
}

function backoffMs(policy: RetryPolicy, failedAttempt: number): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (failedAttempt - 1));
  // Half fixed, half random: spreads out clients that failed together.
  return ceiling / 2 + Math.random() * (ceiling / 2);
}
