import { pipelineScope } from '../db/scope.js';
import { type LlmMessage, type LlmUsage, NO_USAGE } from '../llm/provider.js';
import type { Logger } from '../observability/logger.js';
import { failSpan, startSpan } from '../observability/tracing.js';
import type { ProjectTarget } from '../toolchain/targets.js';
import { Batcher, splitText } from './batcher.js';
import { budgetMeter, type RunBudget } from './budget.js';
import { createOutputParser, MAX_CHUNK_CHARS, MAX_GENERATION_OUTPUT_CHARS, type OutputEvent, OutputProtocolError } from './output-parser.js';
import type { PhaseChange, PipelineDeps } from './pipeline.js';
import type { RunCursor } from './run-cursor.js';
import { generationStore } from './store.js';

// One answer of the model (the first one, or a fix round's), streamed into chunks that
// carry their round and parsed into file changes as it comes.

export interface AnswerInput {
  generationId: string;
  target: ProjectTarget;
  /** 0 for the first answer, N for fix round N. */
  round: number;
  systemPrompt: string;
  messages: LlmMessage[];
  /** The run's hold on the monthly budget, and what its earlier rounds spent. */
  budget: RunBudget;
  /** Told once what the answer cost, however it ended (done, failed, stopped): answerCost below. */
  spend(usage: LlmUsage): void;
  /** Told as it streams what the answer has cost so far, by the same rule as `spend` (what a run whose worker dies is charged). */
  spending(usage: LlmUsage): void;
  apiKey?: string;
}

export interface Answer {
  changes: OutputEvent[];
}

/**
 * Streams one answer; throws BudgetStop when the budget would be passed. `next`, a phase
 * change, commits with the answer's last chunks.
 */
export async function streamAnswer(
  deps: PipelineDeps,
  input: AnswerInput,
  cursor: RunCursor,
  signal: AbortSignal,
  onText: (text: string) => void,
  next?: PhaseChange,
): Promise<Answer> {
  const db = pipelineScope(deps.db, deps.logger);
  const { generationId, round } = input;
  const toRows = (texts: string[]) => splitText(texts.join(''), MAX_CHUNK_CHARS).map((text) => ({ generationId, seq: cursor.nextChunkSeq++, text, round }));
  const publish = (rows: ReturnType<typeof toRows>) => {
    if (rows.length > 0) deps.bus.publish('generationChunks', generationId, rows.map(({ seq, text }) => ({ seq, text, round })));
  };
  const chunks = new Batcher<string>(async (texts) => {
    const rows = toRows(texts);
    await db.run((tx) => generationStore.appendChunks(tx, rows));
    publish(rows);
  });
  const parser = createOutputParser();
  const changes: OutputEvent[] = [];
  let reported: LlmUsage | undefined;
  // The provider's latest count, told as it counts: a run stopped mid-answer (cancelled, its lease
  // lost, at its budget) ends the stream before its usage event, and thinking tokens hide in it.
  let counted: LlmUsage | undefined;
  let streamed = false;
  let whole = false;
  const budget = budgetMeter(input.budget, input.messages.reduce((sum, m) => sum + m.content.length, input.systemPrompt.length));
  await budget.start(); // the prompt alone may be over what is left
  /** What the answer has cost so far, by the rule it is charged by at its end (answerCost). */
  const cost = () => answerCost(counted ?? reported, streamed ? budget.usage() : NO_USAGE, whole);
  const log = deps.logger.child({ source: 'GenerationPipeline', generationId, round });
  const span = startSpan('llm stream', { 'gen_ai.system': deps.llm.name, 'gen_ai.request.model': deps.llm.model, 'kiln.generation.id': generationId, 'kiln.round': round });
  try {
    const events = deps.llm.stream({
      target: input.target,
      systemPrompt: input.systemPrompt,
      messages: input.messages,
      signal,
      round,
      onRetry: (retry) => {
        log.warn(retry, 'the model provider asked to wait; retrying');
        deps.metrics?.observeLlmRetry(deps.llm.name, retry.status);
      },
      onUsage: (usage) => {
        counted = usage;
        input.spending(cost());
      },
      ...(input.apiKey ? { apiKey: input.apiKey } : {}),
    });
    for await (const event of events) {
      if (event.type === 'usage') {
        reported = event.usage;
        continue;
      }
      // No PostgreSQL text holds NUL, and no source file does: what came before it is kept.
      const nul = event.text.indexOf('\u0000');
      const text = nul === -1 ? event.text : event.text.slice(0, nul);
      // Past it the model is not going to stop (a local server without an output limit), or fix
      // rounds keep adding to it: the run would hold all of it in memory, generation_chunks and
      // Generation.output. Counted on the cursor, so every answer of the generation adds up.
      if (cursor.outputChars + text.length > MAX_GENERATION_OUTPUT_CHARS) {
        throw new OutputProtocolError(
          `The model's answer was too long: this generation's output went on past ${MAX_GENERATION_OUTPUT_CHARS.toLocaleString('en')} characters without ending, so it was stopped and none of the answer's files were written. Ask for a smaller change.`,
        );
      }
      cursor.outputChars += text.length;
      onText(text);
      budget.count(text);
      streamed = true;
      input.spending(cost());
      await chunks.add(text);
      // Past the budget it throws, and leaving the loop closes the stream. Checked by what the
      // answer will be charged: Gemini's running count, where it is more, holds the thinking no text shows.
      await budget.check(cost());
      changes.push(...parser.push(text));
      if (nul !== -1) throw new OutputProtocolError("The model's answer holds a NUL character (U+0000), which no source file has; nothing of this answer was written.");
    }
    whole = true; // the provider's count, if any, is of all of it
    changes.push(...parser.end());
    // The last chunks and what follows the answer (the next phase) commit together.
    const rest = toRows(await chunks.drain());
    await db.run(async (tx) => {
      await generationStore.appendChunks(tx, rest);
      await next?.write(tx);
    });
    publish(rest);
    next?.announce();
  } catch (error) {
    failSpan(span, error);
    throw error;
  } finally {
    // Tokens the model spent count against the budget whatever became of its answer.
    const usage = cost();
    input.spend(usage);
    deps.metrics?.observeRoundTokens(round === 0 ? 'initial' : 'fix', usage);
    span.setAttributes({ 'gen_ai.usage.input_tokens': usage.inputTokens, 'gen_ai.usage.output_tokens': usage.outputTokens });
    span.end();
    // What streamed before a failure is kept: the user sees how far it got.
    await chunks.flushAfterFailure(log);
  }
  return { changes };
}

/**
 * What an answer cost: the provider's count of an answer that streamed to its end; of one
 * cut short, the count or the estimate of what streamed, whichever is more (a count may
 * cover only the parts before), and the estimate when the provider gave no count.
 */
function answerCost(reported: LlmUsage | undefined, estimate: LlmUsage, whole: boolean): LlmUsage {
  if (!reported) return estimate;
  if (whole) return reported;
  return { inputTokens: Math.max(reported.inputTokens, estimate.inputTokens), outputTokens: Math.max(reported.outputTokens, estimate.outputTokens) };
}
