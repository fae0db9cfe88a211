import type { LlmUsage } from '../llm/provider.js';

// A project's monthly token budget, enforced while a run streams: providers report
// usage only at the end, so tokens are estimated as they come (about four characters
// a token) and the run stops as soon as the month's usage plus this run's estimate
// would pass the limit, instead of finding out afterwards.

/** About four characters a token, rounded up: the usual estimate for English text and code. */
export const estimateTokens = (characters: number) => Math.ceil(characters / 4);

/** What the month had used when the run started, and the limit (absent: no budget). */
export interface RunBudget {
  limit: number | null;
  usedBefore: number;
}

/** The run went over budget; `usage` is the estimate of what it spent, recorded like real usage. */
export class BudgetStop extends Error {
  constructor(readonly usage: LlmUsage, limit: number) {
    super(`The project's monthly token budget (${limit} tokens) ran out during this generation; it was stopped.`);
    this.name = 'BudgetStop';
  }
}

export interface BudgetMeter {
  /** Before the model is asked: throws BudgetStop (nothing spent) when the prompt alone would exceed the budget. */
  start(): void;
  /** Counts streamed text; throws BudgetStop when the budget would be exceeded. */
  add(text: string): void;
  /** The estimate so far. */
  usage(): LlmUsage;
}

export function budgetMeter(budget: RunBudget, inputCharacters: number): BudgetMeter {
  const inputTokens = estimateTokens(inputCharacters);
  let outputCharacters = 0;
  const usage = () => ({ inputTokens, outputTokens: estimateTokens(outputCharacters) });
  const over = (spent: LlmUsage) => budget.limit !== null && budget.usedBefore + spent.inputTokens + spent.outputTokens > budget.limit;
  return {
    usage,
    start() {
      if (over(usage())) throw new BudgetStop({ inputTokens: 0, outputTokens: 0 }, budget.limit!);
    },
    add(text) {
      outputCharacters += text.length;
      if (over(usage())) throw new BudgetStop(usage(), budget.limit!);
    },
  };
}
