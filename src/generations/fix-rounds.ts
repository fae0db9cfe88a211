import { pipelineScope } from '../db/scope.js';
import type { StatusEvent } from '../events/bus.js';
import type { LlmMessage, LlmUsage } from '../llm/provider.js';
import { type Diagnostic, placeOf, sameDiagnostics } from '../toolchain/diagnostics.js';
import type { ProjectTarget, TargetSpec } from '../toolchain/targets.js';
import { applyChanges } from '../workspace/apply-changes.js';
import { versionAfter } from '../workspace/workspace.js';
import { streamAnswer } from './answer.js';
import { BudgetStop, budgetMeter, type RunBudget } from './budget.js';
import { type BuildOutcome, build } from './build.js';
import { fixStore } from './fix-store.js';
import type { PhaseChange, PipelineDeps } from './pipeline.js';
import { leftOutNote, summariseFiles } from './prompt.js';
import type { RunCursor } from './run-cursor.js';
import { RunFailure } from './run-failure.js';

// Self-healing builds (DESIGN "Self-healing builds"): a build that fails with
// diagnostics goes back to the model with the files they point at; its whole-file
// answer is written into the same workspace and the build runs again. Bounded by the
// generation's maxFixRounds, by progress (the same diagnostics twice end it) and by
// the project's budget; a cancel stops it like any other phase.

/** Diagnostics handed to the model at most; the rest are counted. */
export const MAX_PROMPT_DIAGNOSTICS = 20;
/** Files (and characters of them) shown to the model in one fix request. */
const MAX_PROMPT_FILES = 10;
const MAX_PROMPT_FILE_CHARS = 200_000;

/** How a fix round ended, for kiln_fix_rounds_total. */
export type FixOutcome = 'succeeded' | 'failed' | 'no_progress' | 'no_change' | 'budget' | 'cancelled' | 'error';

export interface HealingRun {
  generationId: string;
  target: ProjectTarget;
  spec: TargetSpec;
  maxFixRounds: number;
  apiKey?: string;
  /** The first answer's prompt: a fix request continues its conversation. */
  prompt: { systemPrompt: string; messages: LlmMessage[] };
  /** Path → content of the workspace as Kiln wrote it; a fix round updates it. */
  files: Map<string, string>;
  workspaceDir: string;
  cursor: RunCursor;
  signal: AbortSignal;
  /** Everything the model answered so far, all rounds. */
  output(): string;
  onText(text: string): void;
  /** The run's hold on the monthly budget, with what it has spent so far. */
  budget(): RunBudget;
  spend(usage: LlmUsage): void;
  spending(usage: LlmUsage): void;
  /** Committed with the first build's first write: its phase, the workspace's files. */
  entry: PhaseChange;
  phase(phase: Extract<StatusEvent['phase'], 'FIXING' | 'BUILDING'>): PhaseChange;
}

/** Builds, and while the build fails with diagnostics and rounds are left, fixes and builds again. Throws the final failure. */
export async function buildWithFixes(deps: PipelineDeps, run: HealingRun): Promise<void> {
  const db = pipelineScope(deps.db, deps.logger);
  const buildRound = (round: number, entry: PhaseChange, changed: ReadonlySet<string> = new Set()) => {
    // A fix round skips steps whose inputs it left alone (dependencies stay installed).
    const steps = run.spec.steps.filter((step) => round === 0 || !step.rerunWhenChanged || step.rerunWhenChanged.some((path) => changed.has(path)));
    return build(deps, { generationId: run.generationId, steps, round, cursor: run.cursor, entry }, run.workspaceDir, run.signal);
  };
  let result: BuildOutcome = await buildRound(0, run.entry);
  let previous: Diagnostic[] | undefined;
  for (let round = 0; !result.ok; ) {
    const failed = result;
    if (round > 0) {
      const noProgress = sameDiagnostics(previous!, failed.diagnostics);
      observe(deps, noProgress ? 'no_progress' : 'failed');
      if (noProgress) {
        throw new RunFailure('BUILD_FAILED', `${failed.failure.message}\nFix round ${round} made no progress (the build reported the same problems again), so Kiln stopped.`);
      }
    }
    if (round >= run.maxFixRounds) {
      throw round === 0 ? failed.failure : new RunFailure('BUILD_FAILED', `${failed.failure.message}\nThe build still failed after ${round} fix round${round === 1 ? '' : 's'}.`);
    }
    previous = failed.diagnostics;
    round += 1;
    const request = fixRequest(failed, run.files, round, run.maxFixRounds);
    const messages: LlmMessage[] = [
      ...run.prompt.messages,
      { role: 'model', content: ownAnswers(run.output()) || '(no answer)' },
      { role: 'user', content: request },
    ];
    let usage: LlmUsage = { inputTokens: 0, outputTokens: 0 };
    let noChange = false;
    const finishRound = (status: 'SUCCEEDED' | 'FAILED') => db.run((tx) => fixStore.finishRound(tx, run.generationId, round, { status, ...usage }));
    const recordUsage = () => db.run((tx) => fixStore.setRoundUsage(tx, run.generationId, round, usage));
    try {
      // Not even the request fits in what is left of the budget: no round starts.
      await budgetMeter(run.budget(), messages.reduce((sum, m) => sum + m.content.length, run.prompt.systemPrompt.length)).start();
      const fixing = run.phase('FIXING');
      await db.run(async (tx) => {
        await fixing.write(tx);
        await fixStore.startRound(tx, run.generationId, round);
      });
      fixing.announce();
      const answer = await streamAnswer(
        deps,
        {
          generationId: run.generationId,
          target: run.target,
          round,
          systemPrompt: run.prompt.systemPrompt,
          messages,
          budget: run.budget(),
          spend: (spent) => {
            usage = spent;
            run.spend(spent);
          },
          spending: run.spending,
          ...(run.apiKey ? { apiKey: run.apiKey } : {}),
        },
        run.cursor,
        run.signal,
        run.onText,
      ).catch(async (error: unknown) => {
        // A cut answer's tokens are the round's too; failing to record them must not hide why it was cut.
        await recordUsage().catch((failure: unknown) => deps.logger.warn({ err: failure, generationId: run.generationId, round }, "recording a fix round's usage failed"));
        throw error;
      });
      await recordUsage();
      if (answer.changes.length === 0) {
        await finishRound('FAILED');
        noChange = true;
        throw new RunFailure('BUILD_FAILED', `${failed.failure.message}\nFix round ${round} changed no file, so Kiln stopped.`);
      }
      // Before anything is written: past it, the round fails and the version stays as it was.
      versionAfter(run.files, answer.changes, 'this fix round');
      const { changed, deleted } = await applyChanges(run.workspaceDir, answer.changes);
      for (const file of changed) run.files.set(file.path, file.content);
      for (const path of deleted) run.files.delete(path);
      const building = run.phase('BUILDING');
      const entry: PhaseChange = {
        write: async (tx) => {
          await fixStore.replaceFiles(tx, run.generationId, changed, deleted);
          await building.write(tx);
        },
        announce: building.announce,
      };
      result = await buildRound(round, entry, new Set([...changed.map((file) => file.path), ...deleted]));
    } catch (error) {
      observe(deps, run.signal.aborted ? 'cancelled' : noChange ? 'no_change' : error instanceof BudgetStop ? 'budget' : 'error');
      throw error; // the round is closed with the run (CANCELLED or FAILED)
    }
    if (result.ok) {
      await finishRound('SUCCEEDED');
      observe(deps, 'succeeded');
    } else {
      await finishRound('FAILED');
    }
  }
}

function observe(deps: PipelineDeps, outcome: FixOutcome) {
  deps.metrics?.observeFixRound(outcome);
}

/** The most of this generation's answers a fix round shows whole: as much as its request's files. */
export const MAX_WHOLE_ANSWERS_CHARS = MAX_PROMPT_FILE_CHARS;

/**
 * This generation's answers as a fix round shows them: whole, unlike earlier turns, since the
 * files the system prompt shows are the parent's and what this generation wrote is only here
 * (the diagnostics name a few of them); past MAX_WHOLE_ANSWERS_CHARS, summarised as earlier
 * turns are, so a long answer cannot take the model's whole context.
 */
export function ownAnswers(output: string): string {
  return output.length <= MAX_WHOLE_ANSWERS_CHARS ? output : summariseFiles(output);
}

/** What the model is asked in a fix round: the diagnostics (capped) and the whole current files they point at. */
export function fixRequest(failed: Extract<BuildOutcome, { ok: false }>, files: ReadonlyMap<string, string>, round: number, maxRounds: number): string {
  const shown = failed.diagnostics.slice(0, MAX_PROMPT_DIAGNOSTICS);
  const more = failed.diagnostics.length - shown.length;
  const lines = shown.map(describeDiagnostic);
  if (more > 0) lines.push(`- … and ${more} more`);

  const blocks: string[] = [];
  // A file too big for what is left is skipped, not the end of the list; it is named instead.
  const leftOut: string[] = [];
  let chars = 0;
  for (const path of new Set(failed.diagnostics.map((d) => d.path))) {
    const content = path === null ? undefined : files.get(path);
    if (path === null || content === undefined) continue;
    if (blocks.length >= MAX_PROMPT_FILES || chars + content.length > MAX_PROMPT_FILE_CHARS) {
      leftOut.push(path);
      continue;
    }
    blocks.push(`<file path="${path}">\n${content}${content.endsWith('\n') ? '' : '\n'}</file>`);
    chars += content.length;
  }
  return [
    `The build failed at step "${failed.step}" (fix round ${round} of ${maxRounds}). The build tools reported:`,
    ...lines,
    '',
    blocks.length > 0 || leftOut.length > 0 ? 'The current content of the files they point at:' : 'They point at no file of the project.',
    ...blocks,
    ...(leftOut.length > 0 ? [leftOutNote(leftOut)] : []),
    '',
    // No tag in the instruction: a model that quotes it in its prose would open a file named "…".
    'Fix these problems. Answer with the whole new content of every file you change, each in a file block of the output ' +
      'protocol (or a delete block), keeping everything that already works; do not repeat files you do not change.',
  ].join('\n');
}

function describeDiagnostic(d: Diagnostic): string {
  const where = placeOf(d) ?? '(no file)';
  return `- ${where} ${d.severity.toLowerCase()}${d.code ? ` ${d.code}` : ''} (${d.tool}): ${d.message}`;
}
