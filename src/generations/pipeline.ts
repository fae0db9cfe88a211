import type { Db, Tx } from '../db/client.js';
import { serviceScope } from '../db/scope.js';
import type { EventBus, StatusEvent } from '../events/bus.js';
import type { LlmProvider, LlmUsage } from '../llm/provider.js';
import { LlmError } from '../llm/provider.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { secretContext } from '../projects/projects.js';
import type { SecretBox } from '../projects/secret-box.js';
import { type SecretName, secretStore } from '../projects/store.js';
import { buildEnv, runStep, type StepResult } from '../toolchain/step-runner.js';
import { commandLine, getTarget, type ToolBins } from '../toolchain/targets.js';
import { createWorkspace, pruneWorkspaces } from '../workspace/workspace.js';
import { Batcher, splitText } from './batcher.js';
import { BudgetStop, budgetMeter } from './budget.js';
import { monthStart } from './generations.js';
import { createOutputParser, type OutputEvent, OutputProtocolError } from './output-parser.js';
import { buildPrompt } from './prompt.js';
import { UnsafeOutputError } from './safe-path.js';
import { type ErrorCode, type GenerationRow, generationStore } from './store.js';

export interface PipelineDeps {
  db: Db;
  bus: EventBus;
  llm: LlmProvider;
  logger: Logger;
  workspaces: { dir: string; keepPerProject: number };
  toolchain: { bins: ToolBins; stepTimeoutMs: number };
  leaseMs: number;
  /** Opens the project's own API key (bring-your-own-key), when secrets are enabled. */
  secretBox?: SecretBox;
  metrics?: Metrics;
}

/** Why a run stopped early: the user cancelled, or the worker is handing it back. */
export type StopReason = 'cancelled' | 'shutdown' | 'lease-lost';

class RunFailure extends Error {
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
  }
}

// ~8 KiB of UTF-8 at most, whatever the characters.
const MAX_CHUNK_CHARS = 2730;

/**
 * One generation from claim to a terminal status. Everything it produces is persisted
 * before it is published; only the worker that won the claim writes.
 */
export async function runGeneration(deps: PipelineDeps, generationId: string, stop: AbortSignal): Promise<GenerationRow | undefined> {
  const db = serviceScope(deps.db);
  const claimed = await db.run((tx) => generationStore.claim(tx, generationId, deps.leaseMs));
  if (!claimed) return undefined; // someone else has it, or it was cancelled meanwhile
  const log = deps.logger.child({ source: 'GenerationPipeline', generationId, projectId: claimed.projectId });
  const startedAt = performance.now();
  const publish = (update: StatusEvent) => deps.bus.publish('generationUpdated', generationId, update);
  publish({ status: 'RUNNING', phase: 'GENERATING' });

  const run = new AbortController();
  const abort = (reason: StopReason) => run.abort(reason);
  stop.addEventListener('abort', () => abort(stop.reason as StopReason), { once: true });
  const stopWatching = watchRun(deps, generationId, abort);

  let output = '';
  let usage: LlmUsage = { inputTokens: 0, outputTokens: 0 };
  let outcome: Partial<GenerationRow> & Pick<GenerationRow, 'status'>;
  try {
    const context = await loadContext(deps, claimed);
    const generated = await generate(deps, context, run.signal, (text) => (output += text));
    usage = generated.usage;
    await setPhase(deps, generationId, 'WRITING', publish);
    const workspaceDir = await writeWorkspace(deps, context, generated.changes);
    await setPhase(deps, generationId, 'BUILDING', publish);
    await build(deps, context, workspaceDir, run.signal);
    outcome = { status: 'SUCCEEDED' };
  } catch (error) {
    // A run stopped by its budget spent tokens all the same: record the estimate.
    if (error instanceof BudgetStop) usage = error.usage;
    outcome = failureOutcome(error, run.signal, log);
  } finally {
    stopWatching();
  }

  const finished = await db.run(async (tx) => {
    await generationStore.closePendingSteps(tx, generationId, outcome.status === 'CANCELLED' ? 'CANCELLED' : 'SKIPPED');
    const row = await generationStore.transition(tx, generationId, ['RUNNING'], {
      ...outcome,
      phase: 'DONE',
      inputTokens: usage.inputTokens,
      outputTokens: usage.outputTokens,
      finishedAt: new Date(),
      leaseExpiresAt: null,
    });
    if (row && output) {
      await generationStore.insertMessage(tx, {
        projectId: claimed.projectId,
        sessionId: claimed.sessionId,
        role: 'MODEL',
        content: output,
        generationId,
      });
    }
    return row;
  });
  if (finished) {
    publish({ status: finished.status, phase: finished.phase });
    log.info({ status: finished.status, errorCode: finished.errorCode }, 'generation finished');
    deps.metrics?.observeGeneration({ status: finished.status, errorCode: finished.errorCode, provider: deps.llm.name }, (performance.now() - startedAt) / 1000);
    deps.metrics?.observeTokens(deps.llm.name, usage);
  }
  return finished;
}

type RunContext = Awaited<ReturnType<typeof loadContext>>;

/** What the run builds on: the project's target, the parent's files, the session so far. */
async function loadContext(deps: PipelineDeps, generation: GenerationRow) {
  return serviceScope(deps.db).run(async (tx) => {
    const project = (await generationStore.projectOf(tx, generation.projectId))!;
    const secretName = providerSecret[deps.llm.name];
    const sealed = secretName && deps.secretBox ? await secretStore.ciphertextOf(tx, project.id, secretName) : undefined;
    return {
      generation,
      project,
      apiKey: sealed && secretName ? openSecret(deps.secretBox!, sealed, project.id, secretName) : undefined,
      target: getTarget(project.target),
      parentFiles: generation.parentId ? await generationStore.filesOf(tx, generation.parentId, true) : [],
      turns: await generationStore.successfulTurns(tx, generation.projectId, generation.sessionId, generation.createdAt),
      budget: { limit: project.monthlyTokenLimit, usedBefore: await usedThisMonth(tx, project.id) },
    };
  });
}

const providerSecret: Record<string, SecretName | undefined> = { gemini: 'GEMINI_API_KEY', openai: 'OPENAI_API_KEY' };

/** Input plus output tokens of the project's generations this month (budgets count per calendar month). */
async function usedThisMonth(tx: Tx, projectId: string): Promise<number> {
  const [usage] = await generationStore.usageOfProjects(tx, [projectId], monthStart());
  return (usage?.inputTokens ?? 0) + (usage?.outputTokens ?? 0);
}

function openSecret(box: SecretBox, sealed: string, projectId: string, name: SecretName): string {
  try {
    return box.open(sealed, secretContext(projectId, name));
  } catch {
    throw new LlmError(`The project's ${name} cannot be decrypted (the server's KILN_ENCRYPTION_KEY changed); set it again.`);
  }
}

async function generate(deps: PipelineDeps, context: RunContext, signal: AbortSignal, onText: (text: string) => void) {
  const db = serviceScope(deps.db);
  const { generation, project, target, parentFiles, turns } = context;
  const prompt = buildPrompt({ systemPrompt: target.systemPrompt, template: target.template, parentFiles, turns, prompt: generation.prompt });

  let seq = 0;
  const chunks = new Batcher<string>(async (texts) => {
    const rows = splitText(texts.join(''), MAX_CHUNK_CHARS).map((text) => ({ generationId: generation.id, seq: seq++, text }));
    await db.run((tx) => generationStore.appendChunks(tx, rows));
    deps.bus.publish('generationChunks', generation.id, rows.map(({ seq, text }) => ({ seq, text })));
  });
  const parser = createOutputParser();
  const changes: OutputEvent[] = [];
  let usage: LlmUsage = { inputTokens: 0, outputTokens: 0 };
  const budget = budgetMeter(context.budget, prompt.messages.reduce((sum, m) => sum + m.content.length, prompt.systemPrompt.length));
  budget.start(); // the prompt alone may be over what is left
  try {
    for await (const event of deps.llm.stream({ target: project.target, ...prompt, signal, ...(context.apiKey ? { apiKey: context.apiKey } : {}) })) {
      if (event.type === 'usage') {
        usage = event.usage;
        continue;
      }
      onText(event.text);
      await chunks.add(event.text);
      budget.add(event.text); // past the budget it throws, and leaving the loop closes the stream
      changes.push(...parser.push(event.text));
    }
    changes.push(...parser.end());
  } finally {
    // What streamed before a failure is kept: the user sees how far it got.
    await chunks.flush();
  }
  return { changes, usage };
}

async function writeWorkspace(deps: PipelineDeps, context: RunContext, changes: OutputEvent[]): Promise<string> {
  const { generation } = context;
  const { dir, files } = await createWorkspace({
    root: deps.workspaces.dir,
    projectId: generation.projectId,
    generationId: generation.id,
    template: context.target.template,
    parentFiles: context.parentFiles,
    changes,
  });
  await serviceScope(deps.db).run((tx) => generationStore.insertFiles(tx, files.map((file) => ({ generationId: generation.id, ...file }))));
  await pruneWorkspaces(deps.workspaces.dir, generation.projectId, deps.workspaces.keepPerProject);
  return dir;
}

async function build(deps: PipelineDeps, context: RunContext, cwd: string, signal: AbortSignal) {
  const db = serviceScope(deps.db);
  const { generation } = context;
  const steps = context.target.steps;
  const { bins, stepTimeoutMs } = deps.toolchain;
  await db.run((tx) =>
    generationStore.insertSteps(
      tx,
      steps.map((step, ordinal) => ({ generationId: generation.id, ordinal, name: step.name, command: commandLine(step, bins) })),
    ),
  );
  let seq = 0;
  for (const [ordinal, step] of steps.entries()) {
    await db.run((tx) => generationStore.updateStep(tx, generation.id, ordinal, { status: 'RUNNING', startedAt: new Date() }));
    const lines = new Batcher<{ stream: 'STDOUT' | 'STDERR'; text: string }>(async (batch) => {
      const rows = batch.map((line) => ({ generationId: generation.id, seq: seq++, step: step.name, ...line }));
      await db.run((tx) => generationStore.appendLogLines(tx, rows));
      deps.bus.publish('buildLogs', generation.id, rows.map(({ seq, step, stream, text }) => ({ seq, step, stream, text })));
    });
    let result: StepResult;
    const stepStarted = performance.now();
    try {
      result = await runStep({
        command: bins[step.tool],
        args: step.args,
        cwd,
        env: buildEnv(),
        timeoutMs: stepTimeoutMs,
        signal,
        // A cancelled build should stop within about a second, even if the tool ignores SIGTERM.
        killGraceMs: 500,
        onLine: (line) => lines.add(line),
      });
    } finally {
      await lines.flush();
    }
    const status = result.status === 'SUCCEEDED' ? 'SUCCEEDED' : result.status === 'CANCELLED' ? 'CANCELLED' : 'FAILED';
    deps.metrics?.observeBuildStep({ step: step.name, status }, (performance.now() - stepStarted) / 1000);
    await db.run((tx) =>
      generationStore.updateStep(tx, generation.id, ordinal, { status, exitCode: result.exitCode, finishedAt: new Date() }),
    );
    if (result.status === 'SUCCEEDED') continue;
    if (result.status === 'CANCELLED') throw signal.reason ?? 'cancelled';
    throw stepFailure(step.name, result, stepTimeoutMs);
  }
}

function stepFailure(name: string, result: StepResult, timeoutMs: number): RunFailure {
  switch (result.status) {
    case 'TOOLCHAIN_MISSING':
      return new RunFailure('TOOLCHAIN_MISSING', result.message ?? `The build tool for "${name}" was not found.`);
    case 'TIMED_OUT':
      return new RunFailure('TIMEOUT', `Build step "${name}" took longer than ${Math.round(timeoutMs / 1000)} s and was stopped.`);
    default: {
      const last = result.tail.filter((line) => line.trim()).slice(-3).join('\n');
      return new RunFailure('BUILD_FAILED', `Build step "${name}" failed (exit code ${result.exitCode}).${last ? `\n${last}` : ''}`);
    }
  }
}

async function setPhase(deps: PipelineDeps, id: string, phase: 'WRITING' | 'BUILDING', publish: (u: StatusEvent) => void) {
  const row = await serviceScope(deps.db).run((tx) => generationStore.transition(tx, id, ['RUNNING'], { phase }));
  if (!row) throw new RunFailure('INTERRUPTED', 'This generation was ended elsewhere.');
  publish({ status: 'RUNNING', phase });
}

function failureOutcome(error: unknown, signal: AbortSignal, log: Logger): Partial<GenerationRow> & Pick<GenerationRow, 'status'> {
  if (signal.aborted) {
    if (signal.reason === 'cancelled') return { status: 'CANCELLED', errorCode: null, errorMessage: null };
    return { status: 'FAILED', errorCode: 'INTERRUPTED', errorMessage: 'The worker stopped before this generation finished; a retry follows unless it was a retry itself.' };
  }
  if (error instanceof RunFailure) return { status: 'FAILED', errorCode: error.code, errorMessage: error.message };
  if (error instanceof BudgetStop) return { status: 'FAILED', errorCode: 'BUDGET_EXCEEDED', errorMessage: error.message };
  if (error instanceof LlmError) return { status: 'FAILED', errorCode: 'LLM_ERROR', errorMessage: error.message };
  if (error instanceof UnsafeOutputError) return { status: 'FAILED', errorCode: 'UNSAFE_OUTPUT', errorMessage: error.message };
  if (error instanceof OutputProtocolError) return { status: 'FAILED', errorCode: 'INVALID_OUTPUT', errorMessage: error.message };
  log.error({ err: error }, 'generation failed unexpectedly');
  return { status: 'FAILED', errorCode: 'INTERNAL', errorMessage: 'Something went wrong on our side; try again.' };
}

/**
 * Keeps the lease alive and stops the run when it is cancelled: at once through the
 * bus, and through the heartbeat (at most a second later) when the bus missed it.
 */
function watchRun(deps: PipelineDeps, generationId: string, abort: (reason: StopReason) => void): () => void {
  const cancelEvents = deps.bus.subscribe('generationCancel', generationId);
  void (async () => {
    for await (const _ of cancelEvents) {
      abort('cancelled');
      break;
    }
  })();
  const beat = setInterval(() => {
    serviceScope(deps.db)
      .run((tx) => generationStore.heartbeat(tx, generationId, deps.leaseMs))
      .then(
        (row) => {
          if (!row) abort('lease-lost');
          else if (row.cancelRequestedAt) abort('cancelled');
        },
        (error: unknown) => deps.logger.warn({ source: 'GenerationPipeline', generationId, err: error }, 'heartbeat failed'),
      );
  }, Math.min(1000, deps.leaseMs / 3));
  return () => {
    clearInterval(beat);
    void cancelEvents.return?.();
  };
}
