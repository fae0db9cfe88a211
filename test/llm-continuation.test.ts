import { describe, expect, it } from 'vitest';
import { GeneratedFileDocument } from './gql/graphql.js';
import { CONTINUE_INSTRUCTION } from '../src/llm/continuation.js';
import { databaseKind } from './support/db.js';
import { createProject } from './support/fixtures.js';
import { useGeminiServer } from './support/gemini-server.js';
import { startAccepted, waitForEnd } from './support/generation-helpers.js';

// A run that needs no babysitting: an answer cut at the model's output limit is
// continued and stitched, and a throttled provider is waited for as it asks.

const MAIN = `import 'package:flutter/material.dart';

void main() => runApp(const MaterialApp(home: Text('Continued — across two answers ☕')));
`;
const ANSWER = `Here is the app.\n<file path="lib/main.dart">\n${MAIN}</file>\n`;
/** Cut inside the file, and inside a multi-byte character's neighbourhood. */
const CUT = ANSWER.indexOf('two answers');

describe(`continuation and back-off through a fake Gemini (${databaseKind})`, () => {
  const suite = useGeminiServer();

  async function run(prompt: string) {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const requestsBefore = suite.gemini.requests.length;
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt });
    const generation = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);
    return { generation, requests: suite.gemini.requests.slice(requestsBefore) };
  }

  async function mainOf(id: string) {
    const { generation } = await suite.owner.client.expectNoErrors(GeneratedFileDocument, { id, path: 'lib/main.dart' });
    return generation?.file?.content;
  }

  it('continues an answer cut at MAX_TOKENS and writes the split file whole, byte for byte', async () => {
    suite.gemini.script(
      { kind: 'stream', chunks: [ANSWER.slice(0, 20), ANSWER.slice(20, CUT)], finishReason: 'MAX_TOKENS', usage: { promptTokens: 100, outputTokens: 50 } },
      { kind: 'stream', chunks: [ANSWER.slice(CUT)], usage: { promptTokens: 150, outputTokens: 10 } },
    );
    const { generation, requests } = await run('A long app');

    expect(generation).toMatchObject({ status: 'SUCCEEDED', usage: { inputTokens: 250, outputTokens: 60 } });
    expect(await mainOf(generation.id)).toBe(MAIN);
    expect(generation.output).toBe(ANSWER);
    // The continuation carries the cut answer as the model's turn and asks to go on.
    expect(requests).toHaveLength(2);
    expect(requests[1]!.body.contents.map((c) => [c.role, c.parts[0]!.text])).toEqual([
      ['user', 'A long app'],
      ['model', ANSWER.slice(0, CUT)],
      ['user', CONTINUE_INSTRUCTION],
    ]);
  });

  it('drops what a continuation repeats of the cut answer', async () => {
    const repeated = ANSWER.slice(CUT - 40, CUT);
    suite.gemini.script(
      { kind: 'stream', chunks: [ANSWER.slice(0, CUT)], finishReason: 'MAX_TOKENS' },
      { kind: 'stream', chunks: [repeated, ANSWER.slice(CUT)] },
    );
    const { generation } = await run('A repeating model');

    expect(generation.status).toBe('SUCCEEDED');
    expect(await mainOf(generation.id)).toBe(MAIN);
    expect(generation.output).toBe(ANSWER);
  });

  it('fails saying so when the output limit persists past LLM_MAX_CONTINUATIONS', async () => {
    suite.gemini.script({ kind: 'stream', chunks: ['<file path="lib/main.dart">\nvoid main() {'], finishReason: 'MAX_TOKENS' });
    const { generation, requests } = await run('An endless app');

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'LLM_ERROR' } });
    expect(generation.error?.message).toMatch(/output limit.*still after 2 automatic continuations; ask for a smaller change/);
    expect(requests).toHaveLength(3);
    // Three answers spent tokens (the fake counts a token a character): all three count.
    expect(generation.usage.outputTokens).toBe(3 * '<file path="lib/main.dart">\nvoid main() {'.length);
  });

  it('counts what the parts before cost when the continued answer is cut short by Kiln (a NUL)', async () => {
    suite.gemini.script(
      { kind: 'stream', chunks: [ANSWER.slice(0, CUT)], finishReason: 'MAX_TOKENS', usage: { promptTokens: 100, outputTokens: 5000 } },
      { kind: 'stream', chunks: ['two answers\u0000'], usage: { promptTokens: 150, outputTokens: 10 } },
    );
    const { generation } = await run('A continued answer with a NUL');

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'INVALID_OUTPUT' } });
    // Gemini's count of both parts (the second counted with its chunk), more than the estimate of what streamed.
    expect(generation.usage.outputTokens).toBe(5010);
  });

  it('waits as RetryInfo asks after two 429s, then succeeds, and counts the retries', async () => {
    suite.gemini.script(
      { kind: 'error', status: 429, message: 'Resource has been exhausted (e.g. check quota).', retryDelay: '0.05s' },
      { kind: 'error', status: 429, message: 'Resource has been exhausted (e.g. check quota).', retryDelay: '0.05s' },
      { kind: 'stream', chunks: [ANSWER] },
    );
    const { generation, requests } = await run('A throttled app');

    expect(generation.status).toBe('SUCCEEDED');
    expect(requests).toHaveLength(3);
    expect(await mainOf(generation.id)).toBe(MAIN);
    const metrics = await (await fetch(`${suite.server.url}/metrics`)).text();
    expect(metrics).toMatch(/kiln_llm_retries_total\{provider="gemini",status="429"\} [2-9]/);
  });

  it('gives up at once when RetryInfo asks for longer than the back-off allows', async () => {
    suite.gemini.script({ kind: 'error', status: 429, message: 'Quota exceeded for today.', retryDelay: '86400s' });
    const { generation, requests } = await run('A very throttled app');

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'LLM_ERROR' } });
    expect(generation.error?.message).toMatch(/^Gemini is rate limiting requests \(429: Quota exceeded for today\.\).* Gave up after the first attempt: Gemini asked to wait 86400 s more/);
    expect(requests).toHaveLength(1);
  });
});
