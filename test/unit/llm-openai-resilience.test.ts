import { describe, expect, it } from 'vitest';
import { CONTINUE_INSTRUCTION, withContinuations } from '../../src/llm/continuation.js';
import { createOpenAiProvider } from '../../src/llm/openai.js';
import { LlmError, type LlmEvent, type LlmRequest, type RetryNotice } from '../../src/llm/provider.js';
import { startFakeOpenAi } from '../support/fake-openai.js';
import { useEach } from '../support/lifecycle.js';

// The OpenAI-compatible provider behind the same resilience as Gemini's: `length`
// answers continued and stitched, Retry-After honoured, a cancel ending the wait.

const request = (overrides: Partial<LlmRequest> = {}): LlmRequest => ({
  target: 'WEB',
  systemPrompt: 'You write apps.',
  messages: [{ role: 'user', content: 'A todo app' }],
  signal: new AbortController().signal,
  ...overrides,
});

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
