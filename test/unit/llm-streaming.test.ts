import { describe, expect, it } from 'vitest';
import { ALIVE, DEFAULT_RETRY_POLICY, resilientStream, type UpstreamEvent } from '../../src/llm/streaming.js';
import { LlmError } from '../../src/llm/provider.js';

// resilientStream's bounds on one answer, with an upstream made up here.

/** An upstream that keeps sending something other than text, after `text` if given, until it is closed. */
async function* keepsAlive(signal: AbortSignal, text?: string): AsyncGenerator<UpstreamEvent> {
  if (text) yield { type: 'text', text };
  while (!signal.aborted) {
    await new Promise((resolve) => setImmediate(resolve));
    yield ALIVE;
  }
}

const answerOf = (open: (signal: AbortSignal) => AsyncIterable<UpstreamEvent>) =>
  resilientStream({
    label: 'The test server',
    signal: new AbortController().signal,
    idleTimeoutMs: 60_000,
    textTimeoutMs: 50,
    retry: DEFAULT_RETRY_POLICY,
    open,
    describeFailure: (error) => new LlmError(String(error)),
  });

async function failureOf(answer: AsyncIterable<unknown>): Promise<unknown> {
  try {
    for await (const _event of answer);
  } catch (error) {
    return error;
  }
  throw new Error('the answer ended without failing');
}

describe('resilientStream', () => {
  it('abandons an upstream that sends only keep-alives or reasoning, before or after text, past the text timeout', async () => {
    for (const text of [undefined, 'Here is the app.']) {
      const error = await failureOf(answerOf((signal) => keepsAlive(signal, text)));
      expect(error).toBeInstanceOf(LlmError);
      expect((error as LlmError).message).toMatch(/^The test server sent no text for .* min \(only keep-alives or reasoning\)/);
    }
  });

  it('abandons an upstream that sends nothing at all past the text timeout, however long the answer timeout is', async () => {
    // An upstream that never answers until it is closed.
    const silent = (signal: AbortSignal): AsyncIterable<UpstreamEvent> => ({
      [Symbol.asyncIterator]: () => ({ next: () => new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true })) }),
    });
    const error = await failureOf(answerOf(silent));
    expect(error).toBeInstanceOf(LlmError);
    expect((error as LlmError).message).toBe('The test server sent nothing for 0.1 seconds, so the request was abandoned; try again.');
  });
});
