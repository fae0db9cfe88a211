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
}

export interface LlmUsage {
  inputTokens: number;
  outputTokens: number;
}

export type LlmEvent = { type: 'text'; text: string } | { type: 'usage'; usage: LlmUsage };

export interface LlmProvider {
  readonly name: string;
  readonly model: string;
  /** Streams text deltas, then at most one usage event. Throws LlmError on failure, AbortError-like when aborted. */
  stream(request: LlmRequest): AsyncIterable<LlmEvent>;
}

/** A provider failure a user can act on; ends the run as FAILED/LLM_ERROR. */
export class LlmError extends Error {
  override readonly name = 'LlmError';
  constructor(message: string, readonly retryable = false) {
    super(message);
  }
}
