import { addUsage, LlmError, type LlmEvent, type LlmUsage, OutputLimitError, type RetryNotice } from './provider.js';

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
/**
 * How long a started answer may go without any data. The wait for an attempt's first event is
 * bounded by the text timeout instead: Gemini sends nothing while it thinks (unless asked for
 * its thoughts), which can take longer than this.
 */
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;
/**
 * How long an attempt may go on without text while the upstream still sends something
 * (keep-alives, reasoning), or wait for its first event: a model that thinks that long, a
 * gateway that keeps a dead upstream's connection open with comments, or one that sends nothing
 * at all would otherwise hold its worker for good (or for the whole answer timeout).
 */
export const DEFAULT_TEXT_TIMEOUT_MS = 10 * 60_000;
/**
 * How long one attempt may spend waiting for its upstream, from its request to its last byte
 * (LLM_ANSWER_TIMEOUT_SECONDS): a model that repeats itself never goes idle, and local servers
 * often set no output limit. The time the consumer takes over each event is not counted.
 */
export const DEFAULT_ANSWER_TIMEOUT_MS = 30 * 60_000;

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
  /**
   * DEFAULT_ANSWER_TIMEOUT_MS unless given. It bounds the time each attempt spends waiting for
   * the upstream, from its request to its last byte; the time the consumer takes over the events
   * (the pipeline writing them) is not part of it, so an upstream that has finished its answer
   * is never stopped for a slow consumer. Nor are the waits between attempts (their total has its
   * own limit, RetryPolicy.maxTotalWaitMs), and an answer continued at the output limit
   * (withContinuations) is a new request with a bound of its own.
   */
  answerTimeoutMs?: number;
  retry: RetryPolicy;
  /**
   * Opens one attempt; aborting `signal` must close its connection. LlmErrors it throws pass through.
   * `counted` is told the usage the provider has counted so far in this attempt (the attempt's
   * total, not an increment): a failure resilientStream makes itself, such as a timeout, still
   * reports what the attempt cost.
   */
  open(signal: AbortSignal, counted: (usage: LlmUsage) => void): AsyncIterable<UpstreamEvent>;
  /** Turns anything else an attempt threw into an LlmError; retryable ones may be tried again. */
  describeFailure(error: unknown): LlmError;
  /** Told before each wait (logs, metrics). */
  onRetry?: (retry: RetryNotice) => void;
  /** LlmRequest.onUsage: the usage counted so far, every attempt's together. */
  onUsage?: (usage: LlmUsage) => void;
  /**
   * LlmRequest.continuation: an answer that ends without text is whole (the cut came at its very
   * end). Otherwise such an answer fails as emptyAnswer, and is tried again.
   */
  mayBeEmpty?: boolean;
}

/**
 * Runs `open` with bounded retries, an idle timeout between events, a bound on the time each
 * attempt waits for its upstream (answerTimeoutMs; the wait for the first event has the text
 * timeout as its own bound) and prompt cancellation. Retries happen only before the first text event: after that the caller
 * has already shown the text, so a failure is final. A wait honours the delay the provider
 * asked for (RetryInfo, Retry-After), within the policy's total.
 */
export async function* resilientStream(options: ResilientStreamOptions): AsyncGenerator<LlmEvent> {
  const { signal, retry, textTimeoutMs = DEFAULT_TEXT_TIMEOUT_MS, answerTimeoutMs = DEFAULT_ANSWER_TIMEOUT_MS } = options;
  let waitedMs = 0;
  /** What the attempts before this one cost. */
  let spentBefore: LlmUsage = { inputTokens: 0, outputTokens: 0 };
  for (let attempt = 1; ; attempt++) {
    signal.throwIfAborted();
    const upstream = new AbortController();
    const followCaller = () => upstream.abort(signal.reason);
    signal.addEventListener('abort', followCaller, { once: true });
    // Only the time spent waiting for the upstream counts against answerTimeoutMs: while this
    // generator is paused at `yield` the consumer is busy, and the upstream may be done already.
    let waitedForUpstreamMs = 0;
    let started = false;
    let receivedText = false;
    let lastTextAt = performance.now();
    let counted: LlmUsage | undefined;
    let usageSent = false;
    try {
      const count = (usage: LlmUsage) => {
        counted = usage;
        options.onUsage?.(addUsage(spentBefore, usage));
      };
      const events = options.open(upstream.signal, count)[Symbol.asyncIterator]();
      for (;;) {
        // Each read may take what is left of the answer's budget and, once the answer has started,
        // no longer than the idle timeout.
        const leftMs = answerTimeoutMs - waitedForUpstreamMs;
        // The first event may take as long as a model may think (textTimeoutMs), not the idle timeout.
        const ownLimitMs = started ? options.idleTimeoutMs : textTimeoutMs;
        const ownFirst = ownLimitMs < leftMs;
        const readStartedAt = performance.now();
        const step = await nextWithin(events, upstream, ownFirst ? ownLimitMs : leftMs, () => {
          if (!started) return neverStarted(options.label, ownFirst ? ownLimitMs : answerTimeoutMs, !ownFirst);
          return ownFirst ? stalled(options) : stillStreaming(options.label, answerTimeoutMs);
        });
        waitedForUpstreamMs += performance.now() - readStartedAt;
        started = true;
        if (step.done) {
          if (!receivedText && !options.mayBeEmpty) throw emptyAnswer();
          return;
        }
        if (step.value.type === 'alive') {
          if (performance.now() - lastTextAt > textTimeoutMs) throw withoutText(options.label, textTimeoutMs);
          continue;
        }
        if (step.value.type === 'text') {
          receivedText = true;
          lastTextAt = performance.now();
        }
        if (step.value.type === 'usage') usageSent = true;
        yield step.value;
      }
    } catch (error) {
      if (counted) spentBefore = addUsage(spentBefore, counted);
      if (signal.aborted) throw signal.reason;
      const failure = error instanceof LlmError ? error : options.describeFailure(error);
      // What the attempt cost was spent all the same (answerEnd's rule), unless the provider said
      // so itself or the usage travels with the failure (OutputLimitError).
      if (counted && !usageSent && !(failure instanceof OutputLimitError)) yield { type: 'usage', usage: counted };
      if (receivedText || !failure.retryable) throw failure;
      const attempts = attempt === 1 ? 'the first attempt' : `${attempt} attempts`;
      if (attempt >= retry.maxAttempts) {
        throw new LlmError(`${failure.message} Gave up after ${attempts}.`, true, failure.retry, failure.cause);
      }
      const delayMs = failure.retry.afterMs ?? backoffMs(retry, attempt);
      if (waitedMs + delayMs > retry.maxTotalWaitMs) {
        const seconds = Math.ceil(delayMs / 1000);
        throw new LlmError(`${failure.message} Gave up after ${attempts}: ${options.label} asked to wait ${seconds} s more, past the ${Math.round(retry.maxTotalWaitMs / 1000)} s limit.`, true, failure.retry, failure.cause);
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

/**
 * The upstream's next event, unless the attempt is aborted or the upstream sends nothing within
 * `timeoutMs` (the idle timeout, or what is left of the answer's budget, whichever is shorter:
 * `timeoutError` says which ran out).
 */
function nextWithin<T>(
  events: AsyncIterator<T>,
  attempt: AbortController,
  timeoutMs: number,
  timeoutError: () => LlmError,
): Promise<IteratorResult<T>> {
  const signal = attempt.signal;
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => settle(() => reject(signal.reason));
    // Aborting with the timeout's error both closes the connection and rejects through onAbort.
    const timer = setTimeout(() => attempt.abort(timeoutError()), Math.max(0, timeoutMs));
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

/**
 * An answer the model finished without a word (Gemini does so now and then, with STOP): as the
 * user sees it, no answer at all, so it is tried again like a dropped stream, and fails the run
 * (LLM_ERROR) if it stays empty, rather than letting it succeed with nothing changed.
 */
function emptyAnswer(): LlmError {
  return new LlmError('The model sent an empty answer.', true);
}

function stalled({ label, idleTimeoutMs }: ResilientStreamOptions): LlmError {
  const seconds = Math.round(idleTimeoutMs / 100) / 10;
  return new LlmError(`${label} sent no data for ${seconds} s, so the request was abandoned; try again.`);
}

function withoutText(label: string, textTimeoutMs: number): LlmError {
  const minutes = Math.round(textTimeoutMs / 6000) / 10;
  return new LlmError(`${label} sent no text for ${minutes} min (only keep-alives or reasoning), so the request was abandoned; try again.`);
}

function neverStarted(label: string, waitedMs: number, answerTimeout: boolean): LlmError {
  return new LlmError(`${label} sent nothing for ${duration(waitedMs)}${answerTimeout ? ' (LLM_ANSWER_TIMEOUT_SECONDS)' : ''}, so the request was abandoned; try again.`);
}

/** Not retryable: a model that repeats itself would most likely do it again. */
function stillStreaming(label: string, answerTimeoutMs: number): LlmError {
  return new LlmError(
    `${label}'s answer was still streaming after ${duration(answerTimeoutMs)} (LLM_ANSWER_TIMEOUT_SECONDS), so it was stopped; ` +
      'the model may be repeating itself: ask for a smaller change, or have the operator use another model.',
  );
}

/** "30 minutes", "90 seconds", "0.3 seconds". */
function duration(ms: number): string {
  const [amount, unit] = ms >= 120_000 ? [Math.round(ms / 6000) / 10, 'minute'] : [Math.round(ms / 100) / 10, 'second'];
  return `${amount} ${unit}${amount === 1 ? '' : 's'}`;
}

function backoffMs(policy: RetryPolicy, failedAttempt: number): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (failedAttempt - 1));
  // Half fixed, half random: spreads out clients that failed together.
  return ceiling / 2 + Math.random() * (ceiling / 2);
}
