import { describe, expect, it } from 'vitest';
import { CONTINUE_INSTRUCTION, withContinuations } from '../../src/llm/continuation.js';
import { MAX_ERROR_BODY_BYTES, MAX_SSE_LINE_BYTES } from '../../src/llm/http-limits.js';
import { createOpenAiProvider } from '../../src/llm/openai.js';
import { LlmError, type LlmEvent, type RetryNotice } from '../../src/llm/provider.js';
import { llmRequest as request, startFakeOpenAi } from '../support/fake-openai.js';
import { useEach } from '../support/lifecycle.js';

// The OpenAI-compatible provider behind the same resilience as Gemini's: `length`
// answers continued and stitched, Retry-After honoured, a cancel ending the wait.

async function textOf(events: AsyncIterable<LlmEvent>) {
  let text = '';
  let usage: { inputTokens: number; outputTokens: number } | undefined;
  for await (const event of events) {
    if (event.type === 'text') text += event.text;
    else usage = event.usage;
  }
  return { text, usage };
}

describe('OpenAI-compatible provider: continuation and back-off', () => {
  const fake = useEach(startFakeOpenAi, (started) => started.close());

  const provider = (maxContinuations = 2) =>
    withContinuations(createOpenAiProvider({ baseUrl: fake.baseUrl, model: 'qwen2.5-coder', retry: { baseDelayMs: 5 } }), maxContinuations);

  it('continues a `length` answer and stitches the parts into one', async () => {
    const whole = '<file path="src/App.tsx">\nexport default function App() { return null; }\n</file>\n';
    fake.script(
      { kind: 'stream', chunks: [whole.slice(0, 30)], finishReason: 'length', usage: { promptTokens: 10, completionTokens: 8 } },
      { kind: 'stream', chunks: [whole.slice(30)], usage: { promptTokens: 20, completionTokens: 12 } },
    );
    const { text, usage } = await textOf(provider().stream(request()));

    expect(text).toBe(whole);
    expect(usage).toEqual({ inputTokens: 30, outputTokens: 20 });
    expect(fake.requests[1]!.body.messages.slice(-2)).toEqual([
      { role: 'assistant', content: whole.slice(0, 30) },
      { role: 'user', content: CONTINUE_INSTRUCTION },
    ]);
  });

  it('fails saying so when every answer is cut, after LLM_MAX_CONTINUATIONS more requests', async () => {
    fake.script({ kind: 'stream', chunks: ['partial'], finishReason: 'length' });
    const failure = await textOf(provider(1).stream(request())).catch((error: unknown) => error);

    expect(failure).toBeInstanceOf(LlmError);
    expect((failure as LlmError).message).toMatch(/output limit.*still after 1 automatic continuation; ask for a smaller change/);
    expect(fake.requests).toHaveLength(2);
  });

  it('honours Retry-After on a 429 and reports each wait', async () => {
    fake.script({ kind: 'error', status: 429, message: 'Slow down', retryAfter: '0' }, { kind: 'stream', chunks: ['ok'] });
    const retries: RetryNotice[] = [];
    const { text } = await textOf(provider().stream(request({ onRetry: (retry) => retries.push(retry) })));

    expect(text).toBe('ok');
    expect(retries).toEqual([{ attempt: 1, status: 429, delayMs: 0, reason: expect.stringMatching(/rate limiting requests \(429: Slow down\)/) }]);
  });

  it('ends a long Retry-After wait as soon as the request is cancelled', async () => {
    fake.script({ kind: 'error', status: 503, message: 'Overloaded', retryAfter: '30' });
    const controller = new AbortController();
    const waiting = textOf(provider().stream(request({ signal: controller.signal, onRetry: () => void setImmediate(() => controller.abort('cancelled')) })));

    await expect(waiting).rejects.toBe('cancelled');
    expect(fake.requests).toHaveLength(1);
  });
});

describe('OpenAI-compatible provider: what it reads is bounded', () => {
  const fake = useEach(startFakeOpenAi, (started) => started.close());
  const provider = () => createOpenAiProvider({ baseUrl: fake.baseUrl, model: 'qwen2.5-coder', retry: { baseDelayMs: 5 } });
  const failureOf = (events: AsyncIterable<LlmEvent>) =>
    textOf(events).then(
      () => expect.fail('the answer should have failed'),
      (error: unknown) => error,
    );
  /** `bytes` of padding in 64 KiB pieces, as a server writing a long line bit by bit would. */
  const padding = (bytes: number) => Array.from({ length: Math.ceil(bytes / 65_536) }, () => 'x'.repeat(65_536));

  it('fails, without retrying, on a stream line longer than MAX_SSE_LINE_BYTES, even a well-formed one', async () => {
    fake.script({
      kind: 'raw',
      pieces: ['data: {"choices":[{"delta":{"content":"', ...padding(2 * MAX_SSE_LINE_BYTES), '"},"finish_reason":"stop"}]}\n\n', 'data: [DONE]\n\n'],
    });
    const failure = await failureOf(provider().stream(request()));

    expect(failure).toBeInstanceOf(LlmError);
    expect((failure as LlmError).message).toBe(`The OpenAI-compatible server sent a line over ${MAX_SSE_LINE_BYTES} bytes in its event stream; check OPENAI_BASE_URL.`);
    expect((failure as LlmError).retryable).toBe(false);
    expect(fake.requests).toHaveLength(1);
  });

  it('fails on one event whose data lines together pass the limit', async () => {
    // Valid JSON split over data lines (joined with line breaks), each line well under the limit.
    const half = 'x'.repeat(MAX_SSE_LINE_BYTES / 2);
    fake.script({
      kind: 'raw',
      pieces: ['data: {"choices":[{"delta":{"content":"a"},"finish_reason":"stop"}],\n', `data: "pad1":"${half}",\n`, `data: "pad2":"${half}"}\n\n`, 'data: [DONE]\n\n'],
    });
    const failure = await failureOf(provider().stream(request()));

    expect((failure as LlmError).message).toMatch(/sent an event over \d+ bytes/);
    expect(fake.requests).toHaveLength(1);
  });

  it('still reads lines split across many small writes, and \\r\\n line ends', async () => {
    const event = (content: string) => `data: {"choices":[{"delta":{"content":${JSON.stringify(content)}},"finish_reason":null}]}\r\n\r\n`;
    const stream = `: keep-alive\n\n${event('Hel')}${event('lo ☕')}data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n`;
    const bytes = Buffer.from(stream);
    // Byte by byte: line ends and the multi-byte ☕ are split between writes.
    fake.script({ kind: 'raw', pieces: [...bytes].map((byte) => Uint8Array.of(byte)) });
    expect((await textOf(provider().stream(request()))).text).toBe('Hello ☕');
  });

  it('reads at most MAX_ERROR_BODY_BYTES of an error body, and keeps them for the log', async () => {
    const body = `upstream failure ${'y'.repeat(4 * MAX_ERROR_BODY_BYTES)}`;
    fake.script({ kind: 'error', status: 400, body: { contentType: 'text/plain', text: body } });
    const failure = await failureOf(provider().stream(request()));

    expect((failure as LlmError).message).toBe('The OpenAI-compatible server rejected the request (status 400).');
    const logged = ((failure as LlmError).cause as Error).message;
    expect(logged).toContain('upstream failure yyy');
    expect(logged.length).toBeLessThan(MAX_ERROR_BODY_BYTES + 200);
    expect(logged.length).toBeGreaterThan(MAX_ERROR_BODY_BYTES - 200);
  });
});
