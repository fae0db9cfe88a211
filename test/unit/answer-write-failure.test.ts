import { describe, expect, it } from 'vitest';
import type { Db } from '../../src/db/client.js';
import { createMemoryEventBus } from '../../src/events/bus.js';
import { streamAnswer } from '../../src/generations/answer.js';
import type { RunBudget } from '../../src/generations/budget.js';
import type { PipelineDeps } from '../../src/generations/pipeline.js';
import { newRunCursor } from '../../src/generations/run-cursor.js';
import type { LlmProvider } from '../../src/llm/provider.js';
import { createLogger } from '../../src/observability/logger.js';
import { LogCapture } from '../support/log-capture.js';

// A run stopped for its own reason while the database takes none of its streamed chunks (a
// long outage, a full disk) ends for that reason: the failed write of what came before is
// logged, never thrown in its place (a database error would end it INTERRUPTED or INTERNAL).

describe('an answer that fails while its chunks cannot be written', () => {
  it('ends BUDGET_EXCEEDED when the budget runs out after a chunk write failed, and logs the write', async () => {
    const writeFailure = Object.assign(new Error('could not extend file: No space left on device'), { code: '53100' });
    let writeTried!: () => void;
    const writeWasTried = new Promise<void>((resolve) => (writeTried = resolve));
    // Every transaction fails, as the database did for the chunks' batched write.
    const db = {
      transaction: () => {
        writeTried();
        return Promise.reject(writeFailure);
      },
    } as unknown as Db;
    const llm: LlmProvider = {
      name: 'offline',
      model: 'scripted',
      async *stream() {
        yield { type: 'text', text: 'Here is the app.\n<file path="src/App.tsx">\nexport const App = () => null;\n' };
        yield { type: 'text', text: '</file>\n' };
      },
    };
    // The prompt fits what the run holds; the first chunk needs more, which the month no longer has,
    // and the answer comes only once the chunk's write has failed.
    const budget: RunBudget = {
      limit: 1000,
      spentBefore: 0,
      reserved: () => 5,
      reserve: async () => {
        await writeWasTried;
        return 5;
      },
    };
    const logs = new LogCapture();
    const deps = { db, llm, bus: createMemoryEventBus(), logger: createLogger('warn', logs) } as unknown as PipelineDeps;

    const failure = await streamAnswer(
      deps,
      { generationId: 'g1', target: 'WEB', round: 0, systemPrompt: 'S', messages: [{ role: 'user', content: 'An app' }], budget, spend: () => {}, spending: () => {} },
      newRunCursor(),
      new AbortController().signal,
      () => {},
    ).then(
      () => undefined,
      (error: unknown) => error,
    );

    expect(failure).toMatchObject({ name: 'BudgetStop', code: 'BUDGET_EXCEEDED' });
    const warnings = logs.records().filter((record) => (record.err as { message?: string } | undefined)?.message === writeFailure.message);
    expect(warnings.map((record) => [record.source, record.generationId])).toEqual([['GenerationPipeline', 'g1']]);
  });
});
