import { answerEnd, httpFailure, interruptedFailure, unreachableFailure, upstreamDetail, type Upstream } from './failures.js';
import { LlmError, type LlmProvider, type LlmRequest, type LlmUsage, OutputLimitError } from './provider.js';
import { ALIVE, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_RETRY_POLICY, resilientStream, type RetryPolicy, type UpstreamEvent } from './streaming.js';

export interface OpenAiProviderOptions {
  /** Up to and including the API version, e.g. http://localhost:11434/v1 for Ollama. */
  baseUrl: string;
  apiKey?: string;
  model: string;
  /** A stream that sends nothing for this long is abandoned (default 60 s). */
  idleTimeoutMs?: number;
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

  return {
    name: 'openai',
    model,
    stream(request) {
      const upstream: Upstream = {
        label: LABEL,
        model,
        keyHint: request.apiKey ? "check the project's API key" : 'check OPENAI_API_KEY',
        modelHint: 'check OPENAI_MODEL and OPENAI_BASE_URL',
      };
      const body = JSON.stringify({
        model,
        messages: [
          ...(request.systemPrompt ? [{ role: 'system', content: request.systemPrompt }] : []),
          ...request.messages.map((m) => ({ role: m.role === 'model' ? 'assistant' : 'user', content: m.content })),
        ],
        stream: true,
        stream_options: { include_usage: true },
      });
      const apiKey = request.apiKey || options.apiKey;
      return resilientStream({
        label: LABEL,
        signal: request.signal,
        idleTimeoutMs,
        retry,
        ...(request.onRetry ? { onRetry: request.onRetry } : {}),
        open: (signal) => streamOnce(url, apiKey, body, signal, upstream),
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
): AsyncGenerator<UpstreamEvent> {
  const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'text/event-stream' };
  if (apiKey) headers.authorization = `Bearer ${apiKey}`;
  const response = await fetch(url, { method: 'POST', headers, body, signal });
  if (!response.ok) throw httpFailure(upstream, response.status, await response.text(), response.headers.get('retry-after'));
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
      const chunk = parseChunk(data);
      const choice = chunk.choices?.[0];
      const text = choice?.delta?.content;
      // A chunk without text (a reasoning delta, the role, the usage) still shows the server is working.
      yield text ? { type: 'text', text } : ALIVE;
      finishReason = choice?.finish_reason ?? finishReason;
      if (chunk.usage) {
        usage = { inputTokens: chunk.usage.prompt_tokens ?? 0, outputTokens: chunk.usage.completion_tokens ?? 0 };
      }
    }
  } catch (error) {
    if (error instanceof LlmError) throw error;
    throw interruptedFailure('OpenAI-compatible', error);
  }
  yield* answerEnd(unfinished(finishReason, sawDone, usage), usage);
}

function parseChunk(data: string): ChatCompletionChunk {
  let chunk: ChatCompletionChunk;
  try {
    chunk = JSON.parse(data) as ChatCompletionChunk;
  } catch {
    throw new LlmError(`${LABEL} sent data that is not JSON (${upstreamDetail(data)}).`);
  }
  if (chunk.error) throw new LlmError(`${LABEL} failed mid-stream (${upstreamDetail(data)}); try again.`, true);
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
 */
async function* serverSentData(body: ReadableStream<Uint8Array>): AsyncGenerator<string | undefined> {
  const decoder = new TextDecoder();
  let buffer = '';
  let data: string[] = [];
  for await (const bytes of body) {
    buffer += decoder.decode(bytes, { stream: true });
    const lines = buffer.split('\n');
    buffer = lines.pop() ?? '';
    let completed = false;
    for (const rawLine of lines) {
      const line = rawLine.endsWith('\r') ? rawLine.slice(0, -1) : rawLine;
      if (line === '' && data.length > 0) {
        yield data.join('\n');
        data = [];
        completed = true;
      } else if (line.startsWith('data:')) {
        data.push(line.slice(line.startsWith('data: ') ? 6 : 5));
      }
    }
    if (!completed) yield undefined;
  }
  // Lenient about a last event that lacks its blank line.
  if (buffer.startsWith('data:')) data.push(buffer.slice(buffer.startsWith('data: ') ? 6 : 5));
  if (data.length > 0) yield data.join('\n');
}
