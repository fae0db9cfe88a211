import { ApiError, GoogleGenAI, type GenerateContentResponseUsageMetadata } from '@google/genai';
import { answerEnd, httpFailure, interruptedFailure, unreachableFailure, type Upstream } from './failures.js';
import { bodyStart, MAX_ERROR_BODY_BYTES, MAX_SSE_EVENT_BYTES, MAX_SSE_LINE_BYTES } from './http-limits.js';
import { LlmError, type LlmProvider, type LlmRequest, type LlmUsage, OutputLimitError } from './provider.js';
import { ALIVE, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_RETRY_POLICY, resilientStream, type RetryPolicy, type UpstreamEvent } from './streaming.js';
import { upstreamFetch } from './upstream-fetch.js';

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
/**
 * Finish reasons of an answer cut at an output limit, continued by withContinuations
 * (LLM_MAX_CONTINUATIONS). CONTINUATION: the per-request token limit came first; the SDK would
 * resend the request with the continuation token itself, but automaticContinuation is off.
 */
const OUTPUT_LIMIT_FINISH_REASONS = new Set(['MAX_TOKENS', 'CONTINUATION']);
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
      httpOptions: { baseUrl, retryOptions: { attempts: 1 }, fetch: boundedFetch },
    });
    clients.set(apiKey, client);
    return client;
  }

  return {
    name: 'gemini',
    model,
    stream(request) {
      const apiKey = request.apiKey || options.apiKey;
      const client = clientFor(apiKey);
      const upstream: Upstream = {
        label: 'Gemini',
        model,
        keyHint: request.apiKey ? "check the project's Gemini API key" : 'check GEMINI_API_KEY',
        modelHint: 'check GEMINI_MODEL',
        apiKey,
      };
      return resilientStream({
        label: 'Gemini',
        signal: request.signal,
        idleTimeoutMs,
        ...(answerTimeoutMs === undefined ? {} : { answerTimeoutMs }),
        retry,
        ...(request.onRetry ? { onRetry: request.onRetry } : {}),
        ...(request.onUsage ? { onUsage: request.onUsage } : {}),
        ...(request.continuation ? { mayBeEmpty: true } : {}),
        open: (signal, counted) => streamOnce(client, model, request, signal, counted),
        describeFailure: (error) =>
          error instanceof ApiError
            ? httpFailure(upstream, error.status, error.message, retryAfterOf.get(error))
            : unreachableFailure('Gemini', 'the network and GEMINI_BASE_URL', error),
      });
    },
  };
}

/** The Retry-After header of the response an ApiError was made from, where it had one. */
const retryAfterOf = new WeakMap<ApiError, string>();

/** One streamed request; failures inside the stream become LlmErrors, HTTP errors stay ApiErrors. */
async function* streamOnce(
  client: GoogleGenAI,
  model: string,
  request: LlmRequest,
  signal: AbortSignal,
  counted: (usage: LlmUsage) => void,
): AsyncGenerator<UpstreamEvent> {
  // The SDK's ApiError keeps no header: the Retry-After of a gateway in front of Gemini is read here.
  let retryAfter: string | null = null;
  const fetchOnce = async (input: string | URL | Request, init?: RequestInit) => {
    const response = await boundedFetch(input, init);
    if (!response.ok) retryAfter = response.headers.get('retry-after');
    return response;
  };
  const chunks = await client.models
    .generateContentStream({
      model,
      contents: request.messages.map((message) => ({ role: message.role, parts: [{ text: message.content }] })),
      config: {
        ...(request.systemPrompt ? { systemInstruction: { parts: [{ text: request.systemPrompt }] } } : {}),
        abortSignal: signal,
        // Otherwise the SDK silently re-sends a dropped stream, behind our retry policy's back.
        automaticContinuation: false,
        httpOptions: { fetch: fetchOnce },
      },
    })
    .catch((error: unknown) => {
      if (error instanceof ApiError && retryAfter !== null) retryAfterOf.set(error, retryAfter);
      throw error;
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
  if (OUTPUT_LIMIT_FINISH_REASONS.has(finishReason)) return new OutputLimitError(`Gemini (${finishReason})`, usage);
  return new LlmError(`Gemini ended the answer early (${finishReason}); try again or rephrase the prompt.`);
}

/** usageMetadata is cumulative, so the last one is the run's; thinking tokens are billed as output. */
function toUsage(metadata: GenerateContentResponseUsageMetadata): LlmUsage {
  return {
    inputTokens: metadata.promptTokenCount ?? 0,
    outputTokens: (metadata.candidatesTokenCount ?? 0) + (metadata.thoughtsTokenCount ?? 0),
  };
}

/**
 * The SDK's fetch, reading no more than the OpenAI-compatible provider does: the SDK keeps an
 * event stream's unfinished event whole (and searches all of it again at each read), and reads
 * an error body whole. Without undici's own 300 s timeouts (upstreamFetch).
 */
async function boundedFetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
  const response = await upstreamFetch(input, init);
  const head = { status: response.status, statusText: response.statusText, headers: new Headers(response.headers) };
  if (!response.ok) {
    const body = await bodyStart(response, MAX_ERROR_BODY_BYTES);
    // Cut at the limit, a JSON body is JSON no more: the SDK then takes it as text, as any other.
    if (!isJson(body)) head.headers.set('content-type', 'text/plain');
    return new Response(body, head);
  }
  return response.body ? new Response(response.body.pipeThrough(boundedEvents()), head) : response;
}

/** Passes the event stream on, and fails it at a line over MAX_SSE_LINE_BYTES or an event over MAX_SSE_EVENT_BYTES (not retried). */
function boundedEvents(): TransformStream<Uint8Array, Uint8Array> {
  let lineBytes = 0;
  let eventBytes = 0;
  const check = () => {
    if (lineBytes > MAX_SSE_LINE_BYTES) throw new LlmError(`Gemini sent a line over ${MAX_SSE_LINE_BYTES} bytes in its event stream; check GEMINI_BASE_URL.`);
    if (eventBytes + lineBytes > MAX_SSE_EVENT_BYTES) throw new LlmError(`Gemini sent an event over ${MAX_SSE_EVENT_BYTES} bytes in its event stream; check GEMINI_BASE_URL.`);
  };
  return new TransformStream({
    transform(bytes, controller) {
      let start = 0;
      for (let end = bytes.indexOf(0x0a); end >= 0; end = bytes.indexOf(0x0a, start)) {
        lineBytes += end - start;
        check();
        // A blank line ("" or "\r") ends the event.
        eventBytes = lineBytes <= 1 ? 0 : eventBytes + lineBytes;
        lineBytes = 0;
        start = end + 1;
      }
      lineBytes += bytes.length - start;
      check();
      controller.enqueue(bytes);
    },
  });
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}
