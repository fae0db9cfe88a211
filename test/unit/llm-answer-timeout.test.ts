import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config.js';
import { createGeminiProvider } from '../../src/llm/gemini.js';
import { createLlmProvider } from '../../src/llm/index.js';
import { createOpenAiProvider } from '../../src/llm/openai.js';
import { LlmError, type LlmEvent, type LlmUsage } from '../../src/llm/provider.js';
import { DEFAULT_RETRY_POLICY, resilientStream, type UpstreamEvent } from '../../src/llm/streaming.js';
import { startFakeGemini } from '../support/fake-gemini.js';
import { llmRequest as request, startFakeOpenAi } from '../support/fake-openai.js';
import { useEach } from '../support/lifecycle.js';

// A model that repeats itself never goes idle: each answer part is bounded in the time spent
// waiting for the model (LLM_ANSWER_TIMEOUT_SECONDS), never in the time the pipeline takes over
// it, and OPENAI_MAX_TOKENS lets the server cut it short.

/**
 * The bound the tests configure: it covers connecting and the response's headers too, so it is
 * well past what a loaded machine stalls for. A slow consumer takes twice as long over one event.
 */
const BOUND_MS = 600;
const busyPastTheBound = () => delay(2 * BOUND_MS);

/** Every event up to the failure, and the failure (the test fails if the answer ends without one). */
async function untilFailure(answer: AsyncIterable<LlmEvent>): Promise<{ text: string; usage: LlmUsage | undefined; failure: unknown }> {
  let text = '';
  let usage: LlmUsage | undefined;
  try {
    for await (const event of answer) {
      if (event.type === 'text') text += event.text;
      else usage = event.usage;
    }
  } catch (failure) {
    return { text, usage, failure };
  }
  throw new Error('the answer ended without failing');
}

/**
 * A server whose model never stops: a small delta every few milliseconds, each chunk with the
 * usage so far (as vLLM's continuous_usage_stats and Gemini's usageMetadata send it), in the
 * wire format of the path asked for (OpenAI's chat completions, Gemini's streamGenerateContent).
 * Given `chunks`, it sends no more after that many and keeps the connection open, as a model
 * stuck mid-answer.
 */
async function startLoopingServer({ chunks = Infinity }: { chunks?: number } = {}) {
  const requests: { clientGone: Promise<void> }[] = [];
  const server = http.createServer((req, res) => {
    req.resume();
    const gemini = req.url?.includes(':streamGenerateContent') ?? false;
    let resolveGone = () => {};
    requests.push({ clientGone: new Promise((resolve) => (resolveGone = resolve)) });
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.flushHeaders();
    let sent = 0;
    const timer = setInterval(() => {
      if (sent === chunks) return clearInterval(timer);
      sent++;
      const tokens = 2 * sent;
      const chunk = gemini
        ? {
            candidates: [{ content: { parts: [{ text: 'and again ' }], role: 'model' }, index: 0 }],
            usageMetadata: { promptTokenCount: 40, candidatesTokenCount: tokens, totalTokenCount: 40 + tokens },
          }
        : {
            object: 'chat.completion.chunk',
            choices: [{ index: 0, delta: { content: 'and again ' }, finish_reason: null }],
            usage: { prompt_tokens: 40, completion_tokens: tokens },
          };
      res.write(`data: ${JSON.stringify(chunk)}\n\n`);
    }, 5);
    res.on('close', () => {
      clearInterval(timer);
      resolveGone();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    requests,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

const STILL_STREAMING = /answer was still streaming after .* \(LLM_ANSWER_TIMEOUT_SECONDS\), so it was stopped; the model may be repeating itself/;

describe('an answer that never ends (OpenAI-compatible server)', () => {
  const looping = useEach(() => startLoopingServer(), (started) => started.close());

  it('is stopped past the answer timeout, with what it cost, and the server sees the request cancelled', async () => {
    const provider = createOpenAiProvider({ baseUrl: looping.baseUrl, model: 'qwen2.5-coder', answerTimeoutMs: BOUND_MS });
    const { text, usage, failure } = await untilFailure(provider.stream(request()));

    expect(text).toMatch(/^(and again )+$/);
    expect(failure).toBeInstanceOf(LlmError);
    expect((failure as LlmError).message).toMatch(/^The OpenAI-compatible server's answer was still streaming after 0.6 seconds/);
    expect((failure as LlmError).message).toMatch(STILL_STREAMING);
    expect((failure as LlmError).retryable).toBe(false);
    // The usage the server had reported when the answer was stopped.
    expect(usage).toMatchObject({ inputTokens: 40 });
    expect(usage!.outputTokens).toBeGreaterThan(0);
    await looping.requests[0]!.clientGone;
    expect(looping.requests).toHaveLength(1);
  });

  it('takes its bound from LLM_ANSWER_TIMEOUT_SECONDS through the configured provider', async () => {
    const config = parseConfig({ LLM_PROVIDER: 'openai', OPENAI_BASE_URL: looping.baseUrl, OPENAI_MODEL: 'fake', LLM_ANSWER_TIMEOUT_SECONDS: '1' });
    const { failure } = await untilFailure((await createLlmProvider(config.llm)).stream(request()));

    expect(failure).toBeInstanceOf(LlmError);
    expect((failure as LlmError).message).toMatch(/^The OpenAI-compatible server's answer was still streaming after 1 second \(LLM_ANSWER_TIMEOUT_SECONDS\)/);
    await looping.requests[0]!.clientGone;
    expect(looping.requests).toHaveLength(1);
  });
});

describe('an answer that never ends (Gemini)', () => {
  const fake = useEach(startFakeGemini, (started) => started.close());

  it('is stopped past the answer timeout, with the usage Gemini counted, and the connection is closed', async () => {
    // Far more chunks than the bound lets through.
    fake.script({ kind: 'stream', chunks: Array.from({ length: 100_000 }, () => 'and again '), delayMs: 5, usage: { promptTokens: 11, outputTokens: 500_000 } });
    const gemini = createGeminiProvider({ apiKey: 'k', model: 'gemini-2.5-flash', baseUrl: fake.baseUrl, answerTimeoutMs: BOUND_MS });
    const { text, usage, failure } = await untilFailure(gemini.stream(request()));

    expect(text).toMatch(/^(and again )+$/);
    expect(failure).toBeInstanceOf(LlmError);
    expect((failure as LlmError).message).toMatch(/^Gemini's answer was still streaming after 0.6 seconds/);
    expect(usage).toMatchObject({ inputTokens: 11 });
    await fake.requests[0]!.clientGone;
    expect(fake.requests).toHaveLength(1);
  });
});

describe('a model stuck mid-answer', () => {
  // Three chunks, each with the usage so far (the last: 40 in, 6 out), then nothing more.
  const stuck = useEach(() => startLoopingServer({ chunks: 3 }), (started) => started.close());
  const providers = {
    'the OpenAI-compatible server': () => createOpenAiProvider({ baseUrl: stuck.baseUrl, model: 'qwen2.5-coder', answerTimeoutMs: BOUND_MS }),
    Gemini: () => createGeminiProvider({ apiKey: 'k', model: 'gemini-2.5-flash', baseUrl: stuck.baseUrl.replace(/\/v1$/, ''), answerTimeoutMs: BOUND_MS }),
  };

  for (const [name, provider] of Object.entries(providers)) {
    it(`is stopped with the usage of the last chunk (${name}), though the consumer was slow over that chunk`, async () => {
      let texts = 0;
      const events = (async function* () {
        for await (const event of provider().stream(request())) {
          yield event;
          // The pipeline busy writing the last chunk for longer than the whole bound.
          if (event.type === 'text' && ++texts === 3) await busyPastTheBound();
        }
      })();
      const { text, usage, failure } = await untilFailure(events);

      expect(text).toBe('and again '.repeat(3));
      expect((failure as LlmError).message).toMatch(STILL_STREAMING);
      expect((failure as LlmError).retryable).toBe(false);
      expect(usage).toEqual({ inputTokens: 40, outputTokens: 6 });
      await stuck.requests[0]!.clientGone;
      expect(stuck.requests).toHaveLength(1);
    });
  }
});

describe('an answer the model has finished, taken by a slow consumer', () => {
  const openai = useEach(startFakeOpenAi, (started) => started.close());
  const gemini = useEach(startFakeGemini, (started) => started.close());
  const providers = {
    'the OpenAI-compatible server': () => {
      openai.script({ kind: 'stream', chunks: ['Here is ', 'the app.'], usage: { promptTokens: 7, completionTokens: 5 } });
      return createOpenAiProvider({ baseUrl: openai.baseUrl, model: 'qwen2.5-coder', answerTimeoutMs: BOUND_MS });
    },
    Gemini: () => {
      gemini.script({ kind: 'stream', chunks: ['Here is ', 'the app.'], usage: { promptTokens: 7, outputTokens: 5 } });
      return createGeminiProvider({ apiKey: 'k', model: 'gemini-2.5-flash', baseUrl: gemini.baseUrl, answerTimeoutMs: BOUND_MS });
    },
  };

  for (const [name, provider] of Object.entries(providers)) {
    it(`is delivered whole, with its usage, however long the consumer takes (${name})`, async () => {
      let text = '';
      let usage: LlmUsage | undefined;
      for await (const event of provider().stream(request())) {
        if (event.type === 'text') {
          // The pipeline busy writing the first chunk for longer than the whole bound.
          if (!text) await busyPastTheBound();
          text += event.text;
        } else usage = event.usage;
      }

      expect(text).toBe('Here is the app.');
      expect(usage).toEqual({ inputTokens: 7, outputTokens: 5 });
    });
  }
});

describe('resilientStream: the answer timeout', () => {
  /** Text as fast as the consumer takes it, with the usage so far, until the attempt is aborted. */
  async function* forever(signal: AbortSignal, counted: (usage: LlmUsage) => void): AsyncGenerator<UpstreamEvent> {
    for (let n = 1; !signal.aborted; n++) {
      await new Promise((resolve) => setImmediate(resolve));
      counted({ inputTokens: 3, outputTokens: n });
      yield { type: 'text', text: 'x' };
    }
  }

  it('aborts the attempt with the failure, and does not try again', async () => {
    const signals: AbortSignal[] = [];
    const { usage, failure } = await untilFailure(
      resilientStream({
        label: 'The test server',
        signal: new AbortController().signal,
        idleTimeoutMs: 60_000,
        answerTimeoutMs: 50,
        retry: DEFAULT_RETRY_POLICY,
        open: (signal, counted) => {
          signals.push(signal);
          return forever(signal, counted);
        },
        describeFailure: (error) => new LlmError(String(error)),
      }),
    );
    expect((failure as LlmError).message).toMatch(/^The test server's answer was still streaming after 0.1 seconds/);
    expect(signals).toHaveLength(1);
    expect(signals[0]!.aborted).toBe(true);
    expect(signals[0]!.reason).toBe(failure);
    expect(usage?.inputTokens).toBe(3);
  });

  it('counts only the time spent waiting for the upstream: an upstream done with its answer is never stopped', async () => {
    const answer = resilientStream({
      label: 'The test server',
      signal: new AbortController().signal,
      idleTimeoutMs: 60_000,
      answerTimeoutMs: BOUND_MS,
      retry: DEFAULT_RETRY_POLICY,
      // The whole answer at once: text, usage, done.
      open: async function* (_signal, counted) {
        yield { type: 'text', text: 'Here is the app.' };
        counted({ inputTokens: 3, outputTokens: 4 });
        yield { type: 'usage', usage: { inputTokens: 3, outputTokens: 4 } };
      },
      describeFailure: (error) => new LlmError(String(error)),
    });
    const events: LlmEvent[] = [];
    for await (const event of answer) {
      events.push(event);
      // The consumer busy over each event for longer than the whole bound.
      await busyPastTheBound();
    }

    expect(events).toEqual([
      { type: 'text', text: 'Here is the app.' },
      { type: 'usage', usage: { inputTokens: 3, outputTokens: 4 } },
    ]);
  });

  it('gives each attempt its own bound: the wait before a retry does not count against the answer', async () => {
    const waits: number[] = [];
    let attempts = 0;
    const answer = resilientStream({
      label: 'The test server',
      signal: new AbortController().signal,
      idleTimeoutMs: 60_000,
      answerTimeoutMs: 200,
      retry: DEFAULT_RETRY_POLICY,
      // The first attempt is throttled and asks for a wait longer than the bound; the second
      // answers, well within the bound of its own.
      open: async function* () {
        attempts++;
        if (attempts === 1) throw new LlmError('The test server is rate limiting requests.', true, { status: 429, afterMs: 400 });
        await delay(20);
        yield { type: 'text', text: 'Here is the app.' };
      },
      describeFailure: (error) => new LlmError(String(error)),
      onRetry: (notice) => waits.push(notice.delayMs),
    });
    let text = '';
    for await (const event of answer) if (event.type === 'text') text += event.text;

    expect(text).toBe('Here is the app.');
    expect(waits).toEqual([400]);
  });
});

describe('OPENAI_MAX_TOKENS', () => {
  const fake = useEach(startFakeOpenAi, (started) => started.close());

  it('is sent as max_tokens when set, and nothing is sent when unset', async () => {
    for (const [env, expected] of [[{ OPENAI_MAX_TOKENS: '4096' }, 4096], [{}, undefined]] as const) {
      const config = parseConfig({ ...fake.kilnEnv, ...env });
      const provider = await createLlmProvider(config.llm);
      for await (const _event of provider.stream(request()));
      const body = fake.requests.at(-1)!.body as unknown as Record<string, unknown>;
      if (expected === undefined) expect(body).not.toHaveProperty('max_tokens');
      else expect(body.max_tokens).toBe(expected);
    }
  });

  it('ends a cut answer as the server says (finish_reason length), and it is continued', async () => {
    fake.script({ kind: 'stream', chunks: ['<file path="a.txt">\nhello'], finishReason: 'length' }, { kind: 'stream', chunks: [' world\n</file>\n'] });
    const provider = await createLlmProvider(parseConfig({ ...fake.kilnEnv, OPENAI_MAX_TOKENS: '16' }).llm);
    let text = '';
    for await (const event of provider.stream(request())) if (event.type === 'text') text += event.text;

    expect(text).toBe('<file path="a.txt">\nhello world\n</file>\n');
    expect(fake.requests.map((r) => (r.body as unknown as Record<string, unknown>).max_tokens)).toEqual([16, 16]);
  });
});
