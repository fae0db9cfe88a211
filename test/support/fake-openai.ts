import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import type { LlmRequest } from '../../src/llm/provider.js';
import { useStarted } from './lifecycle.js';

// An OpenAI-compatible chat completions server (as Ollama, vLLM or llama.cpp
// serve it) on 127.0.0.1: scripted answers, recorded requests.

/** A request for a provider's `stream`, as the pipeline makes one. */
export const llmRequest = (overrides: Partial<LlmRequest> = {}): LlmRequest => ({
  target: 'WEB',
  systemPrompt: 'You write apps.',
  messages: [{ role: 'user', content: 'A todo app' }],
  signal: new AbortController().signal,
  ...overrides,
});

export type OpenAiBehaviour =
  /**
   * SSE chunks, a finish_reason (stop unless given), a usage chunk, then [DONE]; `thinking`
   * first sends that many beats without text, `delayMs` apart: SSE comments (OpenRouter's
   * keep-alive) or `reasoning_content` deltas (vLLM, OpenRouter); `headersAfterMs` holds the
   * response's headers that long (a local server reading a long prompt before it answers).
   */
  | {
      kind: 'stream';
      chunks: string[];
      finishReason?: string;
      usage?: { promptTokens: number; completionTokens: number };
      thinking?: { beats: number; delayMs: number; as: 'comment' | 'reasoning' };
      headersAfterMs?: number;
    }
  /**
   * A non-2xx answer with OpenAI's error body, and a Retry-After header when given; `body`
   * instead sends that text as `contentType` (a proxy's HTML error page).
   */
  | { kind: 'error'; status: number; message?: string; retryAfter?: string; body?: { contentType: string; text: string } }
  /** A 200 event stream of exactly these pieces, written one by one (well-formed or not), then the end. */
  | { kind: 'raw'; pieces: (string | Uint8Array)[] }
  /** Sends the chunks, then nothing more, keeping the connection open. */
  | { kind: 'stall'; chunks: string[] };

export interface OpenAiRequestBody {
  model: string;
  messages: { role: string; content: string }[];
  stream: boolean;
  stream_options?: { include_usage?: boolean };
}

export interface RecordedOpenAiRequest {
  authorization: string | undefined;
  body: OpenAiRequestBody;
  /** Resolves when the client hangs up before the response is complete. */
  clientGone: Promise<void>;
}

export interface FakeOpenAi {
  /** Pass as OPENAI_BASE_URL (ends in /v1). */
  baseUrl: string;
  /** What makes Kiln's model this fake. */
  kilnEnv: { LLM_PROVIDER: 'openai'; OPENAI_BASE_URL: string; OPENAI_MODEL: string };
  requests: RecordedOpenAiRequest[];
  /** Answers for the next requests, in order; the last one repeats. */
  script(...behaviours: OpenAiBehaviour[]): void;
  close(): Promise<void>;
}

/**
 * The chunks of a ~12 MB answer: several times what the loopback socket buffers hold, so a
 * client that stops reading leaves the server with frames it cannot write.
 */
export const LONG_ANSWER = Array.from({ length: 4500 }, () => 'Lorem ipsum dolor sit amet, consectetur adipiscing elit. '.repeat(47).slice(0, 2700));

/** A fake started before the suite's tests and closed after them, answering `behaviour` first if given. */
export function useFakeOpenAi(behaviour?: OpenAiBehaviour): FakeOpenAi {
  return useStarted(async () => {
    const fake = await startFakeOpenAi();
    if (behaviour) fake.script(behaviour);
    return fake;
  }, (fake) => fake.close());
}

export async function startFakeOpenAi(): Promise<FakeOpenAi> {
  let behaviours: OpenAiBehaviour[] = [{ kind: 'stream', chunks: ['Hello'] }];
  const requests: RecordedOpenAiRequest[] = [];

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (req.method !== 'POST' || req.url !== '/v1/chat/completions') {
      return sendError(res, 404, `No route for ${req.method} ${req.url}`);
    }
    const parts: Buffer[] = [];
    for await (const part of req) parts.push(part as Buffer);
    let resolveGone = () => {};
    requests.push({
      authorization: req.headers.authorization,
      body: JSON.parse(Buffer.concat(parts).toString('utf8')) as OpenAiRequestBody,
      clientGone: new Promise((resolve) => (resolveGone = resolve)),
    });
    res.on('close', () => {
      if (!res.writableFinished) resolveGone();
    });

    const behaviour = behaviours.length > 1 ? behaviours.shift()! : behaviours[0]!;
    if (behaviour.kind === 'error' && behaviour.body) {
      res.writeHead(behaviour.status, { 'content-type': behaviour.body.contentType });
      return void res.end(behaviour.body.text);
    }
    if (behaviour.kind === 'error') return sendError(res, behaviour.status, behaviour.message ?? `Scripted ${behaviour.status}`, behaviour.retryAfter);
    if (behaviour.kind === 'stream' && behaviour.headersAfterMs) await delay(behaviour.headersAfterMs);
    if (res.destroyed) return;
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.flushHeaders();
    if (behaviour.kind === 'raw') {
      for (const piece of behaviour.pieces) if (!res.destroyed) res.write(piece);
      return void res.end();
    }
    if (behaviour.kind === 'stream' && behaviour.thinking) {
      const { beats, delayMs, as } = behaviour.thinking;
      for (let i = 0; i < beats && !res.destroyed; i++) {
        if (as === 'comment') res.write(': keep-alive\n\n');
        else sendChunk(res, [{ index: 0, delta: { reasoning_content: `thought ${i} ` }, finish_reason: null }]);
        await delay(delayMs);
      }
      if (res.destroyed) return;
    }
    for (const content of behaviour.chunks) sendChunk(res, [{ index: 0, delta: { content }, finish_reason: null }]);
    if (behaviour.kind === 'stall') return;
    sendChunk(res, [{ index: 0, delta: {}, finish_reason: behaviour.finishReason ?? 'stop' }]);
    const usage = behaviour.usage ?? { promptTokens: 7, completionTokens: behaviour.chunks.length };
    sendChunk(res, [], { prompt_tokens: usage.promptTokens, completion_tokens: usage.completionTokens });
    res.end('data: [DONE]\n\n');
  }

  const server = http.createServer((req, res) => void handle(req, res).catch(() => res.destroy()));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  const baseUrl = `http://127.0.0.1:${port}/v1`;
  return {
    baseUrl,
    kilnEnv: { LLM_PROVIDER: 'openai', OPENAI_BASE_URL: baseUrl, OPENAI_MODEL: 'fake' },
    requests,
    script: (...next) => {
      behaviours = next;
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

function sendChunk(res: http.ServerResponse, choices: unknown[], usage?: unknown): void {
  const chunk = { id: 'chatcmpl-fake', object: 'chat.completion.chunk', model: 'fake', choices, ...(usage ? { usage } : {}) };
  res.write(`data: ${JSON.stringify(chunk)}\n\n`);
}

function sendError(res: http.ServerResponse, status: number, message: string, retryAfter?: string): void {
  res.writeHead(status, { 'content-type': 'application/json', ...(retryAfter ? { 'retry-after': retryAfter } : {}) });
  res.end(JSON.stringify({ error: { message, type: 'invalid_request_error', code: status } }));
}
