import { describe, expect, it } from 'vitest';
import { withContinuations } from '../../src/llm/continuation.js';
import { createGeminiProvider } from '../../src/llm/gemini.js';
import { LlmError, type LlmEvent, type LlmProvider, type LlmUsage, OutputLimitError } from '../../src/llm/provider.js';
import { startFakeGemini } from '../support/fake-gemini.js';
import { llmRequest as request } from '../support/fake-openai.js';
import { useEach } from '../support/lifecycle.js';

// An answer cut at the output limit and continued: what its reader gets of the parts' text,
// and what it is told they cost.

/** A provider whose answers, one per request, are these generators. */
function scripted(parts: (() => AsyncGenerator<LlmEvent>)[]): LlmProvider {
  let next = 0;
  return { name: 'scripted', model: 'm', stream: () => parts[next++]!() };
}

/** The text read, and the failure the answer ended with, if any. */
async function read(answer: AsyncIterable<LlmEvent>): Promise<{ text: string; failure?: unknown }> {
  let text = '';
  try {
    for await (const event of answer) if (event.type === 'text') text += event.text;
  } catch (failure) {
    return { text, failure };
  }
  return { text };
}

describe('continued answers: the text', () => {
  it('keeps what a continuation streamed before it failed, though it was held for comparison', async () => {
    const first = 'const a = 1;\n'.repeat(10);
    const streamed = 'const b = 2;\n'.repeat(23); // shorter than what is held back
    const interrupted = new LlmError('The scripted stream was interrupted (terminated); try again.', true);
    const provider = scripted([
      async function* () {
        yield { type: 'text', text: first };
        throw new OutputLimitError('Scripted', undefined);
      },
      async function* () {
        yield { type: 'text', text: streamed };
        throw interrupted;
      },
    ]);
    const { text, failure } = await read(withContinuations(provider, 2).stream(request()));

    expect(failure).toBe(interrupted);
    expect(text).toBe(first + streamed);
  });

  const item = '        <li>Buy milk</li>\n';
  const zeros = `<file path="lib/grid.dart">\nconst grid = [${Array(64).fill('0').join(', ')}];\n</file>\n`;
  const ruler = `<file path="src/a.ts">\n// ${'='.repeat(70)}\nx;\n</file>\n`;
  it.each([
    { where: 'a cut at a line end', cut: `<ul>\n${item}${item}`, rest: `${item}${item}      </ul>\n` },
    { where: 'inside a line', cut: `<ul>\n${item}${item}        <li>Buy`, rest: ` milk</li>\n${item}      </ul>\n` },
    { where: 'inside a line of one repeated item', cut: zeros.slice(0, 107), rest: zeros.slice(107) },
    { where: 'inside a line of one repeated character', cut: ruler.slice(0, 60), rest: ruler.slice(60) },
  ])('keeps a continuation that goes on from $where, in text that repeats itself', async ({ cut, rest }) => {
    const provider = scripted([
      async function* () {
        yield { type: 'text', text: cut };
        throw new OutputLimitError('Scripted', undefined);
      },
      async function* () {
        yield { type: 'text', text: rest };
      },
    ]);
    expect((await read(withContinuations(provider, 2).stream(request()))).text).toBe(cut + rest);
  });

  it('still drops a continuation that restates the line it was cut in, from its start', async () => {
    const done = '<file path="src/App.tsx">\nexport default function App() {\n';
    const line = "  return <main className='app'>Hello, world</main>;\n";
    const cutAt = 30;
    const provider = scripted([
      async function* () {
        yield { type: 'text', text: done + line.slice(0, cutAt) };
        throw new OutputLimitError('Scripted', undefined);
      },
      async function* () {
        yield { type: 'text', text: `${line}}\n</file>\n` };
      },
    ]);
    expect((await read(withContinuations(provider, 2).stream(request()))).text).toBe(`${done}${line}}\n</file>\n`);
  });
});

describe('continued answers through a fake Gemini', () => {
  const fake = useEach(startFakeGemini, (started) => started.close());
  const gemini = () => createGeminiProvider({ apiKey: 'server-key', model: 'gemini-2.5-flash', baseUrl: fake.baseUrl, retry: { baseDelayMs: 5 } });

  it('fails saying so, without asking Gemini to continue an empty answer, when the limit came before any text', async () => {
    fake.script({ kind: 'stream', chunks: [], finishReason: 'MAX_TOKENS', usage: { promptTokens: 1000, outputTokens: 8192 } });
    const { text, failure } = await read(withContinuations(gemini(), 2).stream(request()));

    expect(text).toBe('');
    expect(failure).toBeInstanceOf(LlmError);
    expect((failure as LlmError).message).toMatch(/^Gemini \(MAX_TOKENS\) reached its output limit.*stopped before any text.*ask for a smaller change\.$/);
    expect(fake.requests).toHaveLength(1);
  });

  it('ends the answer at a continuation without any text (the cut came at its very end), without asking again', async () => {
    fake.script(
      { kind: 'stream', chunks: ['All of it.\n'], finishReason: 'MAX_TOKENS', usage: { promptTokens: 100, outputTokens: 50 } },
      { kind: 'stream', chunks: [], usage: { promptTokens: 150, outputTokens: 0 } },
    );
    const { text, failure } = await read(withContinuations(gemini(), 2).stream(request()));

    expect(failure).toBeUndefined();
    expect(text).toBe('All of it.\n');
    expect(fake.requests).toHaveLength(2);
  });

  it("tells onUsage what every part has cost, up to the tokens of the part under way when the reader stops", async () => {
    // Longer than what a continuation's start is held back for, so it reaches the reader.
    const going = `() {\n${'  print("working");\n'.repeat(30)}`;
    fake.script(
      { kind: 'stream', chunks: ['<file path="lib/main.dart">\nvoid main'], finishReason: 'MAX_TOKENS', usage: { promptTokens: 100, outputTokens: 50 } },
      // Gemini counted a long think and the first words, then goes on (it stalls here).
      { kind: 'stall', chunks: [going], usage: { promptTokens: 150, outputTokens: 20_000 } },
    );
    const told: LlmUsage[] = [];
    const answer = withContinuations(gemini(), 2).stream(request({ onUsage: (usage) => told.push(usage) }));
    for await (const event of answer) if (event.type === 'text' && event.text === going) break;

    expect(told.at(-1)).toEqual({ inputTokens: 250, outputTokens: 20_050 });
    expect(fake.requests).toHaveLength(2);
  });
});
