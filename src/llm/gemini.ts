import { ApiError, GoogleGenAI, type GenerateContentResponseUsageMetadata } from '@google/genai';
import { answerEnd, httpFailure, interruptedFailure, unreachableFailure, type Upstream } from './failures.js';
import { LlmError, type LlmProvider, type LlmRequest, type LlmUsage, OutputLimitError } from './provider.js';
import { ALIVE, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_RETRY_POLICY, resilientStream, type RetryPolicy, type UpstreamEvent } from './streaming.js';

export interface GeminiProviderOptions {
  apiKey: string;
  model: string;
  /** A gateway or proxy in front of Google's endpoint (GEMINI_BASE_URL). */
  baseUrl?: string;
  /** A stream that sends nothing for this long is abandoned (default 60 s). */
  idleTimeoutMs?: number;
  /**
   * One answer part still streaming after this long spent waiting for the upstream is stopped
   * (LLM_ANSWER_TIMEOUT_SECONDS, default 30 min); the time the caller takes over the events does not count.
   */
  answerTimeoutMs?: number;
  retry?: Partial<RetryPolicy>;
}

// Passed explicitly so the SDK's own environment variables cannot redirect requests.
const GOOGLE_BASE_URL = 'https://generativelanguage.googleapis.com';
const MAX_CACHED_CLIENTS = 100;
/** Finish reasons that mean Gemini withheld the answer. */
const BLOCKING_FINISH_REASONS = new Set(['SAFETY', 'RECITATION', 'PROHIBITED_CONTENT', 'BLOCKLIST', 'SPII', 'IMAGE_SAFETY']);

export function createGeminiProvider(options: GeminiProviderOptions): LlmProvider {
  const { model } = options;
  const baseUrl = options.baseUrl ?? GOOGLE_BASE_URL;
  const retry = { ...DEFAULT_RETRY_POLICY, ...options.retry };
  const idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  const { answerTimeoutMs } = options;
  const clients = new Map<string, GoogleGenAI>();

  function clientFor(apiKey: string): GoogleGenAI {
    const cached = clients.get(apiKey);
    if (cached) return cached;
    // Bounded, because project keys come and go; an evicted client is simply rebuilt.
    const oldest = clients.keys().next();
    if (clients.size >= MAX_CACHED_CLIENTS && !oldest.done) clients.delete(oldest.value);
    const client = new GoogleGenAI({
      apiKey,
      vertexai: false,
      // One attempt per call: the SDK must not multiply the retries resilientStream makes.
      httpOptions: { baseUrl, retryOptions: { attempts: 1 } },
    });
    clients.set(apiKey, client);
    return client;
  }

  return {
    name: 'gemini',
    model,
    stream(request) {
      const client = clientFor(request.apiKey || options.apiKey);
      const upstream: Upstream = {
        label: 'Gemini',
        model,
        keyHint: request.apiKey ? "check the project's Gemini API key" : 'check GEMINI_API_KEY',
        modelHint: 'check GEMINI_MODEL',
      };
      return resilientStream({
        label: 'Gemini',
        signal: request.signal,
        idleTimeoutMs,
        ...(answerTimeoutMs === undefined ? {} : { answerTimeoutMs }),
        retry,
        ...(request.onRetry ? { onRetry: request.onRetry } : {}),
        open: (signal, counted) => streamOnce(client, model, request, signal, counted),
        describeFailure: (error) =>
          error instanceof ApiError
            ? httpFailure(upstream, error.status, error.message)
            : unreachableFailure('Gemini', 'the network and GEMINI_BASE_URL', error),
      });
    },
  };
}

/** One streamed request; failures inside the stream become LlmErrors, HTTP errors stay ApiErrors. */
async function* streamOnce(
  client: GoogleGenAI,
  model: string,
  request: LlmRequest,
  signal: AbortSignal,
  counted: (usage: LlmUsage) => void,
): AsyncGenerator<UpstreamEvent> {
  const chunks = await client.models.generateContentStream({
    model,
    contents: request.messages.map((message) => ({ role: message.role, parts: [{ text: message.content }] })),
    config: {
      ...(request.systemPrompt ? { systemInstruction: { parts: [{ text: request.systemPrompt }] } } : {}),
      abortSignal: signal,
      // Otherwise the SDK silently re-sends a dropped stream, behind our retry policy's back.
      automaticContinuation: false,
    },
  });
  let usage: LlmUsage | undefined;
  let finishReason: string | undefined;
  try {
    for await (const chunk of chunks) {
      const blockReason = chunk.promptFeedback?.blockReason;
      if (blockReason) {
        throw new LlmError(`Gemini blocked the response (${blockReason}) because of the prompt; rephrase it and try again.`);
      }
      const candidate = chunk.candidates?.[0];
      const text = (candidate?.content?.parts ?? []).map((part) => (part.thought ? '' : (part.text ?? ''))).join('');
      finishReason = candidate?.finishReason ?? finishReason;
      if (chunk.usageMetadata) {
        // Counted before the yield: a failure while the caller holds this chunk still reports it.
        usage = toUsage(chunk.usageMetadata);
        counted(usage);
      }
      // A chunk of thoughts or usage alone still shows Gemini is working.
      yield text ? { type: 'text', text } : ALIVE;
    }
  } catch (error) {
    // What Gemini counted before the stream failed (a prompt read, thoughts) was spent all the same.
    if (usage) yield { type: 'usage', usage };
    if (error instanceof LlmError || error instanceof ApiError) throw error;
    throw interruptedFailure('Gemini', error);
  }
  yield* answerEnd(unfinished(finishReason, usage), usage);
}

/** Why the answer is not whole, if it is not. */
function unfinished(finishReason: string | undefined, usage: LlmUsage | undefined): LlmError | undefined {
  if (finishReason === 'STOP') return undefined;
  if (finishReason === undefined) return new LlmError('The Gemini stream ended before the answer was finished; try again.', true);
  if (BLOCKING_FINISH_REASONS.has(finishReason)) {
    return new LlmError(`Gemini blocked the response (${finishReason}); rephrase the prompt and try again.`);
  }
  // Continued automatically by withContinuations (LLM_MAX_CONTINUATIONS).
  if (finishReason === 'MAX_TOKENS') return new OutputLimitError('Gemini (MAX_TOKENS)', usage);
  return new LlmError(`Gemini ended the answer early (${finishReason}); try again or rephrase the prompt.`);
}

/** usageMetadata is cumulative, so the last one is the run's; thinking tokens are billed as output. */
function toUsage(metadata: GenerateContentResponseUsageMetadata): LlmUsage {
  return {
    inputTokens: metadata.promptTokenCount ?? 0,
    outputTokens: (metadata.candidatesTokenCount ?? 0) + (metadata.thoughtsTokenCount ?? 0),
  };
}
