import { RunError } from '../errors.js';
import type { ProjectTarget } from '../toolchain/targets.js';

/** One turn of the conversation handed to the model, oldest first. */
export interface LlmMessage {
  role: 'user' | 'model';
  content: string;
}

export interface LlmRequest {
  target: ProjectTarget;
  systemPrompt: string;
  /** Conversation so far; the last entry is the user's new prompt. */
  messages: LlmMessage[];
  signal: AbortSignal;
  /** A project's own key (bring-your-own-key); falls back to the configured one. */
  apiKey?: string;
  /** 0 for the first answer, N for self-healing fix round N (the offline provider's demonstration uses it). */
  round?: number;
  /** Told before each wait for a retry of a throttled or unavailable provider (logs, metrics). */
  onRetry?: (retry: RetryNotice) => void;
  /**
   * Told the usage the provider has counted so far for the whole request (a running total, not
   * an increment) as soon as it counts it: unlike the usage event, it reaches the caller when the
   * request is aborted or the caller stops reading first.
   */
  onUsage?: (usage: LlmUsage) => void;
  /**
   * Set on a continuation of an answer cut at its output limit (withContinuations), which may
   * rightly be empty: the cut came at the answer's very end. Any other answer that ends without
   * text fails, retryable ("The model sent an empty answer.").
   */
  continuation?: boolean;
}

export interface RetryNotice {
  /** The attempt that failed, from 1. */
  attempt: number;
  /** HTTP status, or 'network' when no answer came. */
  status: number | 'network';
  /** How long before the next attempt; from RetryInfo or Retry-After when the provider gave one. */
  delayMs: number;
  reason: string;
}

export interface LlmUsage {
  inputTokens: number;
  outputTokens: number;
}

/** No tokens: what an answer that never reached the model cost. */
export const NO_USAGE: LlmUsage = Object.freeze({ inputTokens: 0, outputTokens: 0 });

export function addUsage(a: LlmUsage, b: LlmUsage): LlmUsage {
  return { inputTokens: a.inputTokens + b.inputTokens, outputTokens: a.outputTokens + b.outputTokens };
}

export type LlmEvent = { type: 'text'; text: string } | { type: 'usage'; usage: LlmUsage };

export interface LlmProvider {
  readonly name: string;
  readonly model: string;
  /**
   * Streams text deltas, then at most one usage event: what the answer cost, when the
   * provider counted it, also before an LlmError. Throws LlmError on failure, AbortError-like when aborted.
   */
  stream(request: LlmRequest): AsyncIterable<LlmEvent>;
}

/** A provider failure a user can act on; ends the run as FAILED/LLM_ERROR. */
export class LlmError extends RunError {
  override readonly name: string = 'LlmError';
  readonly code = 'LLM_ERROR';
  constructor(
    message: string,
    readonly retryable = false,
    /** What the provider asked for before a retry (Gemini RetryInfo, Retry-After), and what it answered. */
    readonly retry: { afterMs?: number; status?: number | 'network' } = {},
    /** For the server's log only: what the message leaves out (addresses, transport errors). */
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
  }
}

/** The answer stopped at the model's output limit (Gemini MAX_TOKENS, OpenAI `length`): it can be continued. */
export class OutputLimitError extends LlmError {
  override readonly name = 'OutputLimitError';
  constructor(
    label: string,
    /** What the cut answer cost, when the provider said. */
    readonly usage: LlmUsage | undefined,
  ) {
    super(`${label} reached its output limit, so the answer is incomplete.`);
  }
}
