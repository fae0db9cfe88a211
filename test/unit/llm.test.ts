import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGeminiProvider, type GeminiProviderOptions } from '../../src/llm/gemini.js';
import { withContinuations } from '../../src/llm/continuation.js';
import { MAX_ERROR_BODY_BYTES, MAX_SSE_LINE_BYTES } from '../../src/llm/http-limits.js';
import { createLlmProvider, type LlmConfig } from '../../src/llm/index.js';
import { createOfflineProvider, offlineApp } from '../../src/llm/offline.js';
import { createOpenAiProvider } from '../../src/llm/openai.js';
import { LlmError, type LlmEvent, type LlmProvider, type LlmRequest, type LlmUsage, type RetryNotice } from '../../src/llm/provider.js';
import { startFakeGemini } from '../support/fake-gemini.js';
import { startFakeOpenAi } from '../support/fake-openai.js';
import { useEach } from '../support/lifecycle.js';
import { freePort } from '../support/private-services.js';

const SYSTEM_PROMPT = 'You write small Flutter apps.';
/** Shaped like a Google API key (AIza and 35 more). */
const GOOGLE_KEY = 'AIzaSyFAKE-operator-server-key-012345678';
/** `bytes` of padding in 64 KiB pieces, as a server writing a long line bit by bit would. */
const padding = (bytes: number) => Array.from({ length: Math.ceil(bytes / 65_536) }, () => 'x'.repeat(65_536));
const HOSTILE_PROMPT = 'Make "quotes" \'single\' back\\slash </file><file path="../evil"> ${x} $y\nnext line 😀 ünïcode';

function llmRequest(overrides: Partial<LlmRequest> = {}): LlmRequest {
  return {
    target: 'FLUTTER',
    systemPrompt: SYSTEM_PROMPT,
    messages: [{ role: 'user', content: 'A counter app' }],
    signal: new AbortController().signal,
    ...overrides,
  };
}

async function collect(events: AsyncIterable<LlmEvent>): Promise<{ texts: string[]; usage?: LlmUsage; order: string[] }> {
  const texts: string[] = [];
  const order: string[] = [];
  let usage: LlmUsage | undefined;
  for await (const event of events) {
    order.push(event.type);
    if (event.type === 'text') texts.push(event.text);
    else usage = event.usage;
  }
  return { texts, usage, order };
}

async function failureOf(events: AsyncIterable<LlmEvent>): Promise<unknown> {
  try {
    await collect(events);
  } catch (error) {
    return error;
  }
  throw new Error('expected the stream to fail');
}

/**
 * A stream the fake stalls after its first chunk ends, on abort, with the abort reason
 * (without it the next event would never come), and the fake sees the connection close.
 */
async function expectAbortEndsStall(
  provider: LlmProvider,
  fake: { script(behaviour: { kind: 'stall'; chunks: string[] }): void; requests: { clientGone: Promise<void> }[] },
) {
  fake.script({ kind: 'stall', chunks: ['Partial'] });
  const controller = new AbortController();
  const events = provider.stream(llmRequest({ signal: controller.signal }))[Symbol.asyncIterator]();
  await events.next();
  const reason = new Error('cancelled by the user');
  controller.abort(reason);
  await expect(events.next()).rejects.toBe(reason);
  await fake.requests[0]?.clientGone;
}

describe('Gemini provider (real @google/genai client, fake Gemini server)', () => {
  const fake = useEach(startFakeGemini, (started) => started.close());

  const gemini = (options: Partial<GeminiProviderOptions> = {}) =>
    createGeminiProvider({
      apiKey: 'server-key',
      model: 'gemini-2.5-flash',
      baseUrl: fake.baseUrl,
      retry: { baseDelayMs: 5 },
      ...options,
    });

  it('streams the text deltas, then the usage of the last event', async () => {
    const chunks = ['Here is a small Flutter app.\n\n<file pa', 'th="lib/main.dart">\nvoid main() {}\n', '</file>\n'];
    fake.script({ kind: 'stream', chunks, usage: { promptTokens: 11, outputTokens: 345 } });
    const messages: LlmRequest['messages'] = [
      { role: 'user', content: 'A counter app' },
      { role: 'model', content: 'Here it is.' },
      { role: 'user', content: 'Make it blue' },
    ];

    const { texts, usage, order } = await collect(gemini().stream(llmRequest({ messages })));

    expect(texts.join('')).toBe(chunks.join(''));
    expect(usage).toEqual({ inputTokens: 11, outputTokens: 345 });
    expect(order).toEqual(['text', 'text', 'text', 'usage']);
    const [sent] = fake.requests;
    expect(sent?.model).toBe('gemini-2.5-flash');
    expect(sent?.apiKey).toBe('server-key');
    expect(sent?.body.systemInstruction?.parts).toEqual([{ text: SYSTEM_PROMPT }]);
    expect(sent?.body.contents).toEqual(messages.map((m) => ({ role: m.role, parts: [{ text: m.content }] })));
  });

  it('passes text on as it arrives and tolerates slow streams that keep sending', async () => {
    const chunks = Array.from({ length: 15 }, (_, i) => `tick ${i} `);
    fake.script({ kind: 'stream', chunks, delayMs: 30 });
    // The whole stream takes ~450 ms, longer than the idle timeout; no single gap does.
    const events = gemini({ idleTimeoutMs: 300 }).stream(llmRequest());
    let text = '';
    let completedAtFirstText: boolean | undefined;
    for await (const event of events) {
      if (event.type !== 'text') continue;
      completedAtFirstText ??= fake.requests[0]?.completed;
      text += event.text;
    }
    expect(completedAtFirstText).toBe(false);
    expect(text).toBe(chunks.join(''));
  });

  it('gives up on a 500 after three attempts, without the SDK adding retries of its own', async () => {
    fake.script({ kind: 'error', status: 500, message: 'Internal error encountered.' });
    const error = await failureOf(gemini().stream(llmRequest()));
    expect(error).toBeInstanceOf(LlmError);
    expect((error as LlmError).message).toMatch(/Gemini is unavailable.*500.*Gave up after 3 attempts/);
    expect(fake.requests).toHaveLength(3);
  });

  it('retries a 429 and succeeds when the quota frees up', async () => {
    fake.script(
      { kind: 'error', status: 429, message: 'Resource has been exhausted' },
      { kind: 'error', status: 429, message: 'Resource has been exhausted' },
      { kind: 'stream', chunks: ['finally ', 'here'] },
    );
    const { texts } = await collect(gemini().stream(llmRequest()));
    expect(texts.join('')).toBe('finally here');
    expect(fake.requests).toHaveLength(3);
  });

  it('waits as long as the Retry-After of a gateway in front of Gemini asks, and gives up at once on a wait past the limit', async () => {
    // 0 s, where the back-off would have waited about 5 ms: the wait asked for is the one taken.
    fake.script({ kind: 'error', status: 429, message: 'Slow down', retryAfter: '0' }, { kind: 'stream', chunks: ['after the wait'] });
    const retries: RetryNotice[] = [];
    const { texts } = await collect(gemini().stream(llmRequest({ onRetry: (retry) => retries.push(retry) })));
    expect(texts.join('')).toBe('after the wait');
    expect(retries.map((retry) => [retry.status, retry.delayMs])).toEqual([[429, 0]]);

    fake.script({ kind: 'error', status: 503, message: 'Overloaded', retryAfter: '3600' });
    const error = await failureOf(gemini({ retry: { baseDelayMs: 5, maxTotalWaitMs: 60_000 } }).stream(llmRequest()));
    expect((error as LlmError).message).toMatch(/Gave up after the first attempt: Gemini asked to wait 3600 s more, past the 60 s limit\.$/);
  });

  it('reports a rate limit that never lifts', async () => {
    fake.script({ kind: 'error', status: 429, message: 'Resource has been exhausted' });
    const error = await failureOf(gemini().stream(llmRequest()));
    expect(error).toBeInstanceOf(LlmError);
    expect((error as LlmError).message).toMatch(/rate limit/i);
    expect(fake.requests).toHaveLength(3);
  });

  it('does not retry a rejected key or an unknown model', async () => {
    fake.script({ kind: 'error', status: 400, message: 'API key not valid. Please pass a valid API key.' });
    const badKey = await failureOf(gemini().stream(llmRequest()));
    expect((badKey as LlmError).message).toMatch(/^Gemini rejected the API key .*GEMINI_API_KEY/);

    fake.script({ kind: 'error', status: 404, message: 'models/gemini-9 is not found' });
    const noModel = await failureOf(gemini({ model: 'gemini-9' }).stream(llmRequest()));
    expect((noModel as LlmError).message).toMatch(/no model "gemini-9" \(404: models\/gemini-9 is not found\).*GEMINI_MODEL/);
    expect(fake.requests).toHaveLength(2);
  });

  it('retries a stream that drops before any text arrived', async () => {
    fake.script({ kind: 'drop' }, { kind: 'drop' }, { kind: 'stream', chunks: ['made it'] });
    const { texts } = await collect(gemini().stream(llmRequest()));
    expect(texts.join('')).toBe('made it');
    expect(fake.requests).toHaveLength(3);
  });

  it('fails for good when the connection drops after text arrived', async () => {
    fake.script({ kind: 'stall', chunks: ['Partial answer '] });
    const events = gemini().stream(llmRequest())[Symbol.asyncIterator]();
    expect(await events.next()).toEqual({ done: false, value: { type: 'text', text: 'Partial answer ' } });

    fake.requests[0]?.dropConnection();
    const error = await events.next().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LlmError);
    expect((error as LlmError).message).toMatch(/^The Gemini stream was interrupted/);
    expect(fake.requests).toHaveLength(1);
  });

  it('reports a response blocked for safety, and a prompt blocked outright', async () => {
    fake.script({ kind: 'stream', chunks: ['Some text'], finishReason: 'SAFETY' });
    const blocked = await failureOf(gemini().stream(llmRequest()));
    expect(blocked).toBeInstanceOf(LlmError);
    expect((blocked as LlmError).message).toMatch(/^Gemini blocked the response \(SAFETY\)/);

    fake.script({ kind: 'promptBlocked', blockReason: 'PROHIBITED_CONTENT' });
    const refused = await failureOf(gemini().stream(llmRequest()));
    expect((refused as LlmError).message).toMatch(/^Gemini blocked the response \(PROHIBITED_CONTENT\)/);
    expect(fake.requests).toHaveLength(2);
  });

  it('waits for a model that thinks in silence for longer than the idle timeout before its first event', async () => {
    // 30 thoughts of 25 ms, 750 ms or more: Gemini sends nothing meanwhile (Kiln does not ask for thoughts).
    fake.script({ kind: 'stream', thoughts: Array.from({ length: 30 }, (_, i) => `thinking ${i}`), delayMs: 25, chunks: ['Here it is.'], usage: { promptTokens: 11, outputTokens: 900 } });
    const { texts, usage } = await collect(gemini({ idleTimeoutMs: 200 }).stream(llmRequest()));
    expect(texts.join('')).toBe('Here it is.');
    expect(usage).toEqual({ inputTokens: 11, outputTokens: 900 });
    expect(fake.requests).toHaveLength(1);
    expect(fake.requests[0]!.body.generationConfig?.thinkingConfig?.includeThoughts).toBeUndefined();
  });

  it('gives up on a first event that never comes after the answer timeout (LLM_ANSWER_TIMEOUT_SECONDS), not the idle timeout', async () => {
    fake.script({ kind: 'stall', chunks: [] });
    const error = await failureOf(gemini({ idleTimeoutMs: 50, answerTimeoutMs: 300 }).stream(llmRequest()));
    expect(error).toBeInstanceOf(LlmError);
    expect((error as LlmError).message).toBe('Gemini sent nothing for 0.3 seconds (LLM_ANSWER_TIMEOUT_SECONDS), so the request was abandoned; try again.');
    await fake.requests[0]?.clientGone;
  });

  it('continues an answer Gemini ended with finishReason CONTINUATION, as one cut at MAX_TOKENS', async () => {
    const whole = '<file path="lib/main.dart">\nvoid main() => runApp(const App());\n</file>\n';
    fake.script(
      { kind: 'stream', chunks: [whole.slice(0, 30)], finishReason: 'CONTINUATION', usage: { promptTokens: 10, outputTokens: 8 } },
      { kind: 'stream', chunks: [whole.slice(30)], usage: { promptTokens: 20, outputTokens: 12 } },
    );
    const { texts, usage } = await collect(withContinuations(gemini(), 2).stream(llmRequest()));
    expect(texts.join('')).toBe(whole);
    expect(usage).toEqual({ inputTokens: 30, outputTokens: 20 });
    expect(fake.requests).toHaveLength(2);
  });

  it('never quotes the key in a rejection, even when Google names it, and scrubs it from the log', async () => {
    fake.script({ kind: 'error', status: 403, message: `Permission denied: Consumer 'api_key:${GOOGLE_KEY}' has been suspended.` });
    const error = (await failureOf(gemini({ apiKey: GOOGLE_KEY }).stream(llmRequest()))) as LlmError;
    expect(error.message).toBe('Gemini rejected the API key (status 403); check GEMINI_API_KEY.');
    expect(causes(error)).toContain('has been suspended');
    expect(causes(error)).not.toContain(GOOGLE_KEY);
    expect(causes(error)).not.toContain('AIza');
  });

  it("scrubs a project's key, and anything shaped like a key, from an error it quotes", async () => {
    const projectKey = 'project-key-0123456789';
    fake.script({ kind: 'error', status: 429, message: `Quota exceeded for ${projectKey}, consumer 'api_key:${GOOGLE_KEY}'.` });
    const error = (await failureOf(gemini().stream(llmRequest({ apiKey: projectKey })))) as LlmError;
    expect(error.message).toMatch(/^Gemini is rate limiting requests \(429: Quota exceeded for \[redacted\], consumer 'api_key:\[redacted\]'\.\)/);
    for (const key of [projectKey, GOOGLE_KEY, 'AIza']) expect(error.message).not.toContain(key);
  });

  it('fails, without retrying, on a stream line longer than MAX_SSE_LINE_BYTES', async () => {
    fake.script({ kind: 'raw', pieces: ['data: {"candidates":[{"content":{"role":"model","parts":[{"text":"', ...padding(2 * MAX_SSE_LINE_BYTES), '"}]},"finishReason":"STOP","index":0}]}\n\n'] });
    const error = await failureOf(gemini().stream(llmRequest()));
    expect(error).toBeInstanceOf(LlmError);
    expect((error as LlmError).message).toBe(`Gemini sent a line over ${MAX_SSE_LINE_BYTES} bytes in its event stream; check GEMINI_BASE_URL.`);
    expect((error as LlmError).retryable).toBe(false);
    expect(fake.requests).toHaveLength(1);
  });

  it('reads at most MAX_ERROR_BODY_BYTES of an error body, and keeps them for the log', async () => {
    fake.script({ kind: 'error', status: 400, message: `upstream failure ${'y'.repeat(4 * MAX_ERROR_BODY_BYTES)}` });
    const error = (await failureOf(gemini().stream(llmRequest()))) as LlmError;
    expect(error.message).toBe('Gemini rejected the request (status 400).');
    expect(causes(error)).toContain('upstream failure yyy');
    expect(causes(error).length).toBeLessThan(MAX_ERROR_BODY_BYTES + 200);
  });

  it('abandons a stream that goes silent and closes its connection', async () => {
    fake.script({ kind: 'stall', chunks: ['Hello'] });
    const error = await failureOf(gemini({ idleTimeoutMs: 100 }).stream(llmRequest()));
    expect(error).toBeInstanceOf(LlmError);
    expect((error as LlmError).message).toMatch(/^Gemini sent no data for 0.1 s/);
    await fake.requests[0]?.clientGone;
  });

  it('stops a stalled stream on abort with the abort reason, and the server sees the connection close', async () => {
    await expectAbortEndsStall(gemini(), fake);
  });

  it('stops waiting between retries when aborted', async () => {
    fake.script({ kind: 'error', status: 503, message: 'The model is overloaded.' });
    const controller = new AbortController();
    const outcome = failureOf(gemini({ retry: { baseDelayMs: 60_000 } }).stream(llmRequest({ signal: controller.signal })));
    await fake.received(1);
    const reason = new Error('cancelled while backing off');
    controller.abort(reason);
    expect(await outcome).toBe(reason);
    expect(fake.requests).toHaveLength(1);
  });

  it("sends a project's own key instead of the server's", async () => {
    const provider = gemini();
    await collect(provider.stream(llmRequest({ apiKey: 'project-key' })));
    await collect(provider.stream(llmRequest()));
    expect(fake.requests.map((r) => r.apiKey)).toEqual(['project-key', 'server-key']);
  });

  it.each([
    ['Gemini', (port: number) => gemini({ baseUrl: `http://127.0.0.1:${port}` }), /^Could not reach Gemini; .*GEMINI_BASE_URL\. Gave up after 3 attempts\.$/],
    [
      'the OpenAI-compatible server',
      (port: number) => createOpenAiProvider({ baseUrl: `http://127.0.0.1:${port}/v1`, apiKey: 'sk-local', model: 'qwen2.5-coder', retry: { baseDelayMs: 5 } }),
      /^Could not reach the OpenAI-compatible server; .*OPENAI_BASE_URL\. Gave up after 3 attempts\.$/,
    ],
  ])('says when %s cannot be reached at all, naming the setting but not its address', async (_name, provider, message) => {
    const port = await freePort(); // nothing listens there: connections are refused
    const error = (await failureOf(provider(port).stream(llmRequest()))) as LlmError;
    // Every member of the project reads the message; the address is for the server's log.
    expect(error.message).toMatch(message);
    expect(error.message).not.toContain('127.0.0.1');
    expect(causes(error)).toContain(`ECONNREFUSED 127.0.0.1:${port}`);
  });
});

describe('OpenAI-compatible provider', () => {
  const fake = useEach(startFakeOpenAi, (started) => started.close());

  const openai = (idleTimeoutMs?: number) =>
    createOpenAiProvider({ baseUrl: fake.baseUrl, apiKey: 'sk-local', model: 'qwen2.5-coder', retry: { baseDelayMs: 5 }, ...(idleTimeoutMs ? { idleTimeoutMs } : {}) });

  it('streams the deltas and the usage, sending the conversation as chat messages', async () => {
    fake.script({ kind: 'stream', chunks: ['Hello', ', ', 'world'], usage: { promptTokens: 9, completionTokens: 3 } });
    const messages: LlmRequest['messages'] = [
      { role: 'user', content: 'Hi' },
      { role: 'model', content: 'Hello!' },
      { role: 'user', content: 'Again' },
    ];
    const { texts, usage, order } = await collect(openai().stream(llmRequest({ messages })));

    expect(texts.join('')).toBe('Hello, world');
    expect(usage).toEqual({ inputTokens: 9, outputTokens: 3 });
    expect(order.at(-1)).toBe('usage');
    const [sent] = fake.requests;
    expect(sent?.authorization).toBe('Bearer sk-local');
    expect(sent?.body).toMatchObject({ model: 'qwen2.5-coder', stream: true, stream_options: { include_usage: true } });
    expect(sent?.body.messages).toEqual([
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello!' },
      { role: 'user', content: 'Again' },
    ]);
  });

  it('reports a rejected key without retrying, or quoting what the server said of it', async () => {
    fake.script({ kind: 'error', status: 401, message: 'Incorrect API key provided: sk-loc*******************1234. You can find your API key at https://platform.openai.com/account/api-keys.' });
    const error = await failureOf(openai().stream(llmRequest()));
    expect(error).toBeInstanceOf(LlmError);
    expect((error as LlmError).message).toBe('The OpenAI-compatible server rejected the API key (status 401); check OPENAI_API_KEY.');
    expect(causes(error as LlmError)).toContain('Incorrect API key provided: [redacted]');
    expect(fake.requests).toHaveLength(1);
  });

  it('scrubs the key it sent, and any sk- key, from an error it quotes', async () => {
    const projectKey = 'sk-project-0123456789abcdef';
    fake.script({ kind: 'error', status: 500, message: `Upstream refused Bearer ${projectKey} (other key sk-abcdef0123456789)` });
    const error = (await failureOf(openai().stream(llmRequest({ apiKey: projectKey })))) as LlmError;
    expect(error.message).toMatch(/^The OpenAI-compatible server is unavailable right now \(500: Upstream refused Bearer \[redacted\] \(other key \[redacted\]\)\)/);
    expect(error.message).not.toMatch(/sk-/);
  });

  it('tries an answer that ends without any text again, and fails retryably when it stays empty', async () => {
    fake.script({ kind: 'stream', chunks: [] });
    const error = await failureOf(openai().stream(llmRequest()));
    expect(error).toBeInstanceOf(LlmError);
    expect(error).toMatchObject({ message: 'The model sent an empty answer. Gave up after 3 attempts.', retryable: true });
    expect(fake.requests).toHaveLength(3);

    fake.script({ kind: 'stream', chunks: [] }, { kind: 'stream', chunks: ['Second ', 'time.'] });
    const { texts } = await collect(openai().stream(llmRequest()));
    expect(texts.join('')).toBe('Second time.');
    expect(fake.requests).toHaveLength(5);
  });

  it('stops on abort with the abort reason and closes the connection', async () => {
    await expectAbortEndsStall(openai(), fake);
  });

  it.each(['comment', 'reasoning'] as const)(
    'waits for a model that thinks longer than the idle timeout, sending %s beats before its first text',
    async (as) => {
      // Beats 25 ms apart for 750 ms or more: together past the timeout, each one well within it.
      fake.script({ kind: 'stream', thinking: { beats: 30, delayMs: 25, as }, chunks: ['Here', ' it is.'] });
      const { texts, usage } = await collect(openai(500).stream(llmRequest()));
      expect(texts.join('')).toBe('Here it is.');
      expect(usage).toEqual({ inputTokens: 7, outputTokens: 2 });
      expect(fake.requests).toHaveLength(1);
    },
  );

  it('still abandons a server that sends nothing at all', async () => {
    fake.script({ kind: 'stall', chunks: ['Hello'] });
    const error = await failureOf(openai(100).stream(llmRequest()));
    expect(error).toBeInstanceOf(LlmError);
    expect((error as LlmError).message).toMatch(/^The OpenAI-compatible server sent no data for 0.1 s/);
    await fake.requests[0]?.clientGone;
  });
});

describe("a server slower to answer than Node's fetch waits by itself (undici's 300 s headersTimeout)", () => {
  const gemini = useEach(startFakeGemini, (started) => started.close());
  const openai = useEach(startFakeOpenAi, (started) => started.close());

  // Node's fetch gives up on headers (and between body bytes) after 300 s of its global dispatcher's
  // own: here that dispatcher is one of undici's Agents with those limits cut to 1 ms (undici checks
  // them about once a second), so a response that takes seconds stands for one that takes minutes.
  const GLOBAL_DISPATCHER = Symbol.for('undici.globalDispatcher.1');
  type Dispatcher = { constructor: new (options: object) => Dispatcher; close(): Promise<void> };
  const globals = globalThis as unknown as Record<symbol, Dispatcher>;
  let nodeDefault: Dispatcher;
  beforeAll(() => {
    nodeDefault = globals[GLOBAL_DISPATCHER]!;
    globals[GLOBAL_DISPATCHER] = new nodeDefault.constructor({ headersTimeout: 1, bodyTimeout: 1 });
  });
  afterAll(async () => {
    const short = globals[GLOBAL_DISPATCHER]!;
    globals[GLOBAL_DISPATCHER] = nodeDefault;
    await short.close();
  });
  const HEADERS_AFTER_MS = 3000;

  it('OpenAI-compatible: waits for the headers as long as its own first-event allowance says', async () => {
    openai.script({ kind: 'stream', chunks: ['Read it all.'], headersAfterMs: HEADERS_AFTER_MS });
    const provider = createOpenAiProvider({ baseUrl: openai.baseUrl, model: 'qwen2.5-coder', retry: { maxAttempts: 1 } });
    const { texts } = await collect(provider.stream(llmRequest()));
    expect(texts.join('')).toBe('Read it all.');
    expect(openai.requests).toHaveLength(1);
  });

  it('Gemini: waits for the headers as long as its own first-event allowance says', async () => {
    gemini.script({ kind: 'stream', chunks: ['Read it all.'], headersAfterMs: HEADERS_AFTER_MS });
    const provider = createGeminiProvider({ apiKey: 'server-key', model: 'gemini-2.5-flash', baseUrl: gemini.baseUrl, retry: { maxAttempts: 1 } });
    const { texts } = await collect(provider.stream(llmRequest()));
    expect(texts.join('')).toBe('Read it all.');
    expect(gemini.requests).toHaveLength(1);
  });
});

describe("an upstream's error page (a reverse proxy's 502)", () => {
  // What a proxy in front of the model server answers: its version and internal host names.
  const PAGE = '<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx/1.25.3 (llm-gw-7.corp.internal)</center></body></html>';

  /** The failure's message, which every project member reads, and what it leaves to the server's log. */
  const expectPageOnlyInCause = (error: unknown, label: RegExp) => {
    expect(error).toBeInstanceOf(LlmError);
    const { message } = error as LlmError;
    expect(message).toMatch(label);
    expect(message).toContain('(status 502)');
    for (const leak of ['nginx', 'corp.internal', '<html', 'Bad Gateway']) expect(message).not.toContain(leak);
    expect(causes(error as LlmError)).toContain('nginx/1.25.3 (llm-gw-7.corp.internal)');
  };

  const fake = useEach(startFakeOpenAi, (started) => started.close());

  it('OpenAI-compatible: the page is not in the message, but in the cause for the log', async () => {
    fake.script({ kind: 'error', status: 502, body: { contentType: 'text/html', text: PAGE } });
    const provider = createOpenAiProvider({ baseUrl: fake.baseUrl, model: 'qwen2.5-coder', retry: { baseDelayMs: 5 } });
    expectPageOnlyInCause(await failureOf(provider.stream(llmRequest())), /^The OpenAI-compatible server is unavailable right now/);
  });

  it("OpenAI-compatible: a JSON error's own message is kept, in vLLM's shape and with a numeric status too", async () => {
    const provider = createOpenAiProvider({ baseUrl: fake.baseUrl, model: 'qwen2.5-coder', retry: { baseDelayMs: 5 } });
    for (const body of [
      { object: 'error', message: 'The model `qwen2.5-coder` does not exist.', type: 'NotFoundError', code: 404 },
      { error: { message: 'The model `qwen2.5-coder` does not exist.', status: 404 } },
    ]) {
      fake.script({ kind: 'error', status: 404, body: { contentType: 'application/json', text: JSON.stringify(body) } });
      const { message } = (await failureOf(provider.stream(llmRequest()))) as LlmError;
      expect(message).toContain('The model `qwen2.5-coder` does not exist.');
    }
  });

  it('Gemini (the SDK wraps the page as a JSON error message): not in the message, but in the cause', async () => {
    const proxy = createHttpServer((_req, res) => void res.writeHead(502, { 'content-type': 'text/html' }).end(PAGE));
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = proxy.address() as AddressInfo;
      const provider = createGeminiProvider({ apiKey: 'server-key', model: 'gemini-2.5-flash', baseUrl: `http://127.0.0.1:${port}`, retry: { baseDelayMs: 5 } });
      expectPageOnlyInCause(await failureOf(provider.stream(llmRequest())), /^Gemini is unavailable right now/);
    } finally {
      proxy.closeAllConnections();
      await new Promise((resolve) => proxy.close(resolve));
    }
  });
});

describe('offline provider', () => {
  const fileBlocks = (text: string) => [...text.matchAll(/<file path="([^"]*)">/g)].map((m) => m[1]);

  it('writes one React component for WEB that reflects the prompt', () => {
    const text = offlineApp('WEB', 'Build a habit tracker with streaks and reminders', false);
    expect(fileBlocks(text)).toEqual(['src/App.tsx']);
    expect(text.match(/<\/file>/g)).toHaveLength(1);
    expect(text.indexOf('Here is')).toBe(0);
    expect(text).toContain('“Habit tracker with streaks and reminders”');
    expect(text).toContain('const title = "Habit tracker with streaks and reminders";');
    expect(text).toContain('export default function App()');
    expect(typeErrorsOf(fileContent(text))).toEqual([]);
  });

  it('writes one Flutter app for FLUTTER that reflects the prompt', () => {
    const text = offlineApp('FLUTTER', 'make me a pomodoro timer, with a break counter', false);
    expect(fileBlocks(text)).toEqual(['lib/main.dart']);
    expect(text.match(/<\/file>/g)).toHaveLength(1);
    const dart = fileContent(text);
    expect(dart).toContain("const String appTitle = 'Pomodoro timer, with a break counter';");
    expect(dart).toContain("  'A break counter',");
    expect(dart).toMatch(/runApp\(const GeneratedApp\(\)\);[\s\S]*MaterialApp\(/);
  });

  it('says a follow-up updates the previous app', () => {
    expect(offlineApp('WEB', 'Add a dark mode', true)).toMatch(/^I updated the previous app .*“Add a dark mode”/);
    expect(offlineApp('FLUTTER', 'Add a dark mode', false)).not.toMatch(/previous app/);
  });

  it('escapes a hostile prompt so it stays text in TSX and Dart', () => {
    const expectedRequest = HOSTILE_PROMPT;
    const web = offlineApp('WEB', HOSTILE_PROMPT, false);
    expect(fileBlocks(web)).toEqual(['src/App.tsx']);
    expect(web.match(/<\/file>/g)).toHaveLength(1);
    const tsx = fileContent(web);
    expect(JSON.parse(literalAfter(tsx, 'const request = '))).toBe(expectedRequest);
    expect(typeErrorsOf(tsx)).toEqual([]);

    const flutter = offlineApp('FLUTTER', HOSTILE_PROMPT, false);
    expect(fileBlocks(flutter)).toEqual(['lib/main.dart']);
    expect(flutter.match(/<\/file>/g)).toHaveLength(1);
    const literal = literalAfter(fileContent(flutter), 'const String userRequest = ');
    expect(literal).not.toMatch(/(^|[^\\])(\\\\)*\$/); // every $ escaped: no interpolation
    expect(decodeDartString(literal)).toBe(expectedRequest);
  });

  it('streams exactly offlineApp() in small chunks, then a usage estimate', async () => {
    const messages: LlmRequest['messages'] = [
      { role: 'user', content: 'A todo list' },
      { role: 'model', content: 'Here is your todo list.' },
      { role: 'user', content: 'Add due dates' },
    ];
    const provider = createOfflineProvider({ chunkDelayMs: 0 });
    const { texts, usage, order } = await collect(provider.stream(llmRequest({ target: 'WEB', messages })));

    const expected = offlineApp('WEB', 'Add due dates', true);
    expect(texts.join('')).toBe(expected);
    expect(texts.length).toBeGreaterThan(5);
    expect(texts.slice(0, -1).every((t) => t.length >= 40 && t.length <= 120)).toBe(true);
    expect(order.at(-1)).toBe('usage');
    expect(usage?.outputTokens).toBe(Math.ceil(expected.length / 4));
    expect(usage?.inputTokens).toBeGreaterThan(0);
  });

  it('stops promptly on abort with the abort reason', async () => {
    const controller = new AbortController();
    const provider = createOfflineProvider({ chunkDelayMs: 10_000 });
    const events = provider.stream(llmRequest({ signal: controller.signal }))[Symbol.asyncIterator]();
    const next = events.next();
    const reason = new Error('cancelled by the user');
    controller.abort(reason);
    await expect(next).rejects.toBe(reason);
  });
});

describe('createLlmProvider', () => {
  const config: LlmConfig = {
    provider: 'offline',
    gemini: { model: 'gemini-2.5-flash' },
    openai: {},
    offlineChunkDelayMs: 0,
  };

  it('builds the configured provider', async () => {
    expect((await createLlmProvider(config)).name).toBe('offline');
    const gemini = await createLlmProvider({ ...config, provider: 'gemini', gemini: { apiKey: 'k', model: 'gemini-2.5-pro' } });
    expect([gemini.name, gemini.model]).toEqual(['gemini', 'gemini-2.5-pro']);
    const openai = await createLlmProvider({ ...config, provider: 'openai', openai: { baseUrl: 'http://localhost:11434/v1', model: 'llama3' } });
    expect([openai.name, openai.model]).toEqual(['openai', 'llama3']);
  });

  it('refuses to start without the settings a provider needs', async () => {
    await expect(createLlmProvider({ ...config, provider: 'gemini' })).rejects.toThrow(/GEMINI_API_KEY/);
    await expect(createLlmProvider({ ...config, provider: 'openai', openai: { model: 'llama3' } })).rejects.toThrow(/OPENAI_BASE_URL/);
  });
});

/** The content of the single file block. */
function fileContent(text: string): string {
  const match = /<file path="[^"]*">\n([\s\S]*)<\/file>/.exec(text);
  if (!match?.[1]) throw new Error('no file block');
  return match[1];
}

/** The string literal that follows `prefix` on its line, up to the final `;`. */
function literalAfter(source: string, prefix: string): string {
  const line = source.split('\n').find((l) => l.startsWith(prefix));
  if (!line) throw new Error(`no line starting with ${prefix}`);
  return line.slice(prefix.length, -1);
}

function decodeDartString(literal: string): string {
  expect(literal.startsWith("'") && literal.endsWith("'")).toBe(true);
  const simple: Record<string, string> = { n: '\n', r: '\r', t: '\t' };
  return literal
    .slice(1, -1)
    .replace(/\\(u\{([0-9a-fA-F]+)\}|u([0-9a-fA-F]{4})|.)/g, (_, escape: string, braced?: string, four?: string) => {
      const hex = braced ?? four;
      return hex ? String.fromCodePoint(parseInt(hex, 16)) : (simple[escape] ?? escape);
    });
}

/**
 * Type errors of a generated App.tsx under the template's strict settings. React's
 * types are not installed here, so a minimal stand-in declares what the app uses.
 */
function typeErrorsOf(appSource: string): string[] {
  const root = path.resolve('/virtual-web-app');
  const files = new Map([
    [path.join(root, 'src/App.tsx'), appSource],
    [
      path.join(root, 'react.d.ts'),
      `declare module 'react' {
        export function useState<S>(initial: S | (() => S)): [S, (next: S | ((current: S) => S)) => void];
      }
      declare module 'react/jsx-runtime' {
        export namespace JSX {
          type Element = { readonly jsx: true };
          interface IntrinsicElements { [name: string]: Record<string, unknown> }
        }
        export function jsx(type: unknown, props: unknown, key?: unknown): JSX.Element;
        export function jsxs(type: unknown, props: unknown, key?: unknown): JSX.Element;
      }`,
    ],
  ]);
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    jsx: ts.JsxEmit.ReactJSX,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    noUnusedLocals: true,
    noUnusedParameters: true,
    noUncheckedIndexedAccess: true,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.fileExists = (file) => files.has(file) || fileExists(file);
  host.readFile = (file) => files.get(file) ?? readFile(file);
  host.getSourceFile = (file, language, ...rest) => {
    const source = files.get(file);
    return source !== undefined ? ts.createSourceFile(file, source, language) : getSourceFile(file, language, ...rest);
  };
  const program = ts.createProgram([...files.keys()], options, host);
  return ts
    .getPreEmitDiagnostics(program)
    .map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
}

/** The messages of an error's causes, for what the server logs beside a run's message. */
function causes(error: Error): string {
  const messages: string[] = [];
  for (let cause = error.cause; cause instanceof Error; cause = cause.cause) messages.push(cause.message);
  return messages.join(' / ');
}
