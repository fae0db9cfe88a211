import { answerEnd, httpFailure, interruptedFailure, scrubKeys, unreachableFailure, upstreamMessage, type Upstream } from './failures.js';
import { bodyStart, MAX_ERROR_BODY_BYTES, MAX_SSE_EVENT_BYTES, MAX_SSE_LINE_BYTES } from './http-limits.js';
import { LlmError, type LlmProvider, type LlmRequest, type LlmUsage, OutputLimitError } from './provider.js';
import { ALIVE, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_RETRY_POLICY, resilientStream, type RetryPolicy, type UpstreamEvent } from './streaming.js';
import { upstreamFetch } from './upstream-fetch.js';

export interface OpenAiProviderOptions {
  /** Up to and including the API version, e.g. http://localhost:11434/v1 for Ollama. */
  baseUrl: string;
  apiKey?: string;
  model: string;
  /** A stream that sends nothing for this long is abandoned (default 60 s). */
  idleTimeoutMs?: number;
  /**
   * One answer part still streaming after this long spent waiting for the upstream is stopped
   * (LLM_ANSWER_TIMEOUT_SECONDS, default 30 min); the time the caller takes over the events does not count.
   */
  answerTimeoutMs?: number;
  /**
   * Sent as `max_tokens` when set (OPENAI_MAX_TOKENS). Unset, nothing is sent: vLLM rejects a
   * request whose prompt plus max_tokens exceeds the model's context, so no default is safe.
   */
  maxTokens?: number;
  retry?: Partial<RetryPolicy>;
}

/** The fields of a chat.completion.chunk this provider reads. */
interface ChatCompletionChunk {
  choices?: { delta?: { content?: string | null }; finish_reason?: string | null }[];
  usage?: { prompt_tokens?: number; completion_tokens?: number } | null;
  error?: unknown;
}

const LABEL = 'The OpenAI-compatible server';

export function createOpenAiProvider(options: OpenAiProviderOptions): LlmProvider {
  const { model } = options;
  const url = `${options.baseUrl.replace(/\/+$/, '')}/chat/completions`;
  const retry = { ...DEFAULT_RETRY_POLICY, ...options.retry };
  const idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  const { answerTimeoutMs, maxTokens } = options;

  return {
    name: 'openai',
    model,
    stream(request) {
      const apiKey = request.apiKey || options.apiKey;
      const upstream: Upstream = {
        label: LABEL,
        model,
        keyHint: request.apiKey ? "check the project's API key" : 'check OPENAI_API_KEY',
        modelHint: 'check OPENAI_MODEL and OPENAI_BASE_URL',
        ...(apiKey ? { apiKey } : {}),
      };
      const body = JSON.stringify({
        model,
        messages: [
          ...(request.systemPrompt ? [{ role: 'system', content: request.systemPrompt }] : []),
          ...request.messages.map((m) => ({ role: m.role === 'model' ? 'assistant' : 'user', content: m.content })),
        ],
        ...(maxTokens === undefined ? {} : { max_tokens: maxTokens }),
        stream: true,
        stream_options: { include_usage: true },
      });
      return resilientStream({
        label: LABEL,
        signal: request.signal,
        idleTimeoutMs,
        ...(answerTimeoutMs === undefined ? {} : { answerTimeoutMs }),
        retry,
        ...(request.onRetry ? { onRetry: request.onRetry } : {}),
        ...(request.onUsage ? { onUsage: request.onUsage } : {}),
        ...(request.continuation ? { mayBeEmpty: true } : {}),
        open: (signal, counted) => streamOnce(url, apiKey, body, signal, upstream, counted),
        describeFailure: (error) => unreachableFailure('the OpenAI-compatible server', 'the network and OPENAI_BASE_URL', error),
      });
    },
  };
}

async function* streamOnce(
  url: string,
  apiKey: string | undefined,
  body: string,
  signal: AbortSignal,
  upstream: Upstream,
  counted: (usage: LlmUsage) => void,
): AsyncGenerator<UpstreamEvent> {
  const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'text/event-stream' };
  if (apiKey) headers.authorization = `Bearer ${apiKey}`;
  // Without undici's 300 s limits (upstreamFetch): a local model may take longer to read a long prompt.
  const response = await upstreamFetch(url, { method: 'POST', headers, body, signal });
  if (!response.ok) throw httpFailure(upstream, response.status, await bodyStart(response, MAX_ERROR_BODY_BYTES), response.headers.get('retry-after'));
  if (!response.body) throw new LlmError(`${LABEL} answered without a body; check OPENAI_BASE_URL.`);

  let usage: LlmUsage | undefined;
  let finishReason: string | undefined;
  let sawDone = false;
  try {
    for await (const data of serverSentData(response.body)) {
      if (data === undefined) {
        yield ALIVE;
        continue;
      }
      if (data === '[DONE]') {
        sawDone = true;
        break;
      }
      const chunk = parseChunk(data, upstream.apiKey);
      const choice = chunk.choices?.[0];
      const text = choice?.delta?.content;
      finishReason = choice?.finish_reason ?? finishReason;
      if (chunk.usage) {
        // Usually only the last chunk carries it; some servers send the total so far on each.
        // Counted before the yield: a failure while the caller holds this chunk still reports it.
        usage = { inputTokens: chunk.usage.prompt_tokens ?? 0, outputTokens: chunk.usage.completion_tokens ?? 0 };
        counted(usage);
      }
      // A chunk without text (a reasoning delta, the role, the usage) still shows the server is working.
      yield text ? { type: 'text', text } : ALIVE;
    }
  } catch (error) {
    if (error instanceof LlmError) throw error;
    throw interruptedFailure('OpenAI-compatible', error);
  }
  yield* answerEnd(unfinished(finishReason, sawDone, usage), usage);
}

function parseChunk(data: string, apiKey: string | undefined): ChatCompletionChunk {
  let chunk: ChatCompletionChunk;
  try {
    chunk = JSON.parse(data) as ChatCompletionChunk;
  } catch {
    // The data goes to the log only: users read the message (as for an error body, failures.ts).
    throw new LlmError(`${LABEL} sent data that is not JSON; check OPENAI_BASE_URL.`, false, {}, new Error(`data: ${scrubKeys(data.slice(0, 1000), apiKey)}`));
  }
  if (chunk.error) {
    const message = upstreamMessage(data, apiKey);
    throw new LlmError(`${LABEL} failed mid-stream (${message ?? 'no details'}); try again.`, true, {}, message ? undefined : new Error(`data: ${scrubKeys(data.slice(0, 1000), apiKey)}`));
  }
  return chunk;
}

/** Why the answer is not whole, if it is not. */
function unfinished(finishReason: string | undefined, sawDone: boolean, usage: LlmUsage | undefined): LlmError | undefined {
  if (finishReason === undefined && !sawDone) {
    return new LlmError('The OpenAI-compatible stream ended before the answer was finished; try again.', true);
  }
  // Continued automatically by withContinuations (LLM_MAX_CONTINUATIONS).
  if (finishReason === 'length') return new OutputLimitError(`${LABEL} (finish_reason length)`, usage);
  if (finishReason === 'content_filter') {
    return new LlmError(`${LABEL} blocked the response (content_filter); rephrase the prompt and try again.`);
  }
  return undefined;
}

/**
 * The data of each server-sent event (its data lines joined, other fields ignored), and
 * undefined for bytes that complete no event (a keep-alive comment, part of an event).
 * What is held of a line not ended yet is at most MAX_SSE_LINE_BYTES, and an event's data
 * MAX_SSE_EVENT_BYTES: memory stays bounded whatever the server sends. Text is
 * scanned for line ends once: the reads of a line's middle are only kept, and joined when
 * its end arrives.
 */
async function* serverSentData(body: ReadableStream<Uint8Array>): AsyncGenerator<string | undefined> {
  const decoder = new TextDecoder();
  /** The text after the last line end, as read. */
  let pending: string[] = [];
  /** Its length in bytes (a line end, 0x0A, is never part of another UTF-8 character). */
  let pendingBytes = 0;
  let data: string[] = [];
  let eventBytes = 0;
  for await (const bytes of body) {
    const lastEnd = bytes.lastIndexOf(0x0a);
    pendingBytes = lastEnd < 0 ? pendingBytes + bytes.length : bytes.length - lastEnd - 1;
    if (pendingBytes > MAX_SSE_LINE_BYTES) {
      throw new LlmError(`${LABEL} sent a line over ${MAX_SSE_LINE_BYTES} bytes in its event stream; check OPENAI_BASE_URL.`);
    }
    const text = decoder.decode(bytes, { stream: true });
    if (lastEnd < 0) {
      pending.push(text);
      yield undefined;
      continue;
    }
    const buffer = pending.join('') + text;
    let lineStart = 0;
    let completed = false;
    for (let end = buffer.indexOf('\n'); end >= 0; end = buffer.indexOf('\n', lineStart)) {
      const line = buffer.slice(lineStart, buffer[end - 1] === '\r' ? end - 1 : end);
      lineStart = end + 1;
      if (line === '' && data.length > 0) {
        yield data.join('\n');
        data = [];
        eventBytes = 0;
        completed = true;
      } else if (line.startsWith('data:')) {
        const value = line.slice(line.startsWith('data: ') ? 6 : 5);
        eventBytes += Buffer.byteLength(value);
        if (eventBytes > MAX_SSE_EVENT_BYTES) {
          throw new LlmError(`${LABEL} sent an event over ${MAX_SSE_EVENT_BYTES} bytes in its event stream; check OPENAI_BASE_URL.`);
        }
        data.push(value);
      }
    }
    pending = [buffer.slice(lineStart)];
    if (!completed) yield undefined;
  }
  // Lenient about a last event that lacks its blank line.
  const rest = pending.join('') + decoder.decode();
  if (rest.startsWith('data:')) data.push(rest.slice(rest.startsWith('data: ') ? 6 : 5));
  if (data.length > 0) yield data.join('\n');
}
