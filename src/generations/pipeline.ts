import { randomInt } from 'node:crypto';
import type { Db, Tx } from '../db/client.js';
import { isConnectionError } from '../db/outage.js';
import { pipelineScope } from '../db/scope.js';
import { RunError } from '../errors.js';
import type { EventBus, StatusEvent } from '../events/bus.js';
import { addUsage, LlmError, type LlmProvider, type LlmUsage, NO_USAGE } from '../llm/provider.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { Outputs } from '../artifacts/outputs.js';
import { bundleFolderIn } from '../artifacts/write-outputs.js';
import { secretContext } from '../projects/projects.js';
import type { SecretBox } from '../projects/secret-box.js';
import { type SecretName, secretStore } from '../projects/store.js';
import { truncateWithEllipsis } from '../toolchain/output-lines.js';
import type { BuildSandbox } from '../toolchain/sandbox.js';
import { getTarget, type ToolBins } from '../toolchain/targets.js';
import { createWorkspace, pruneWorkspaces, withoutRefusedPaths } from '../workspace/workspace.js';
import { type AnswerInput, streamAnswer } from './answer.js';
import { runBudget } from './budget.js';
import { fixStore } from './fix-store.js';
import { buildWithFixes } from './fix-rounds.js';
import { MAX_ERROR_MESSAGE_CHARS, type OutputEvent } from './output-parser.js';
import { buildPrompt } from './prompt.js';
import { restoredAnswer } from './restore.js';
import { newRunCursor, type RunCursor } from './run-cursor.js';
import { RunFailure } from './run-failure.js';
import { type GenerationRow, type GenerationStatus, generationStore, interruptedEnding } from './store.js';

export interface PipelineDeps {
  db: Db;
  bus: EventBus;
  llm: LlmProvider;
  logger: Logger;
  workspaces: { dir: string; keepPerProject: number };
  /** `sandbox` unset: steps run as plain child processes (BUILD_SANDBOX=none); `maxLogChars` unset: MAX_BUILD_LOG_CHARS of build log a generation. */
  toolchain: { bins: ToolBins; stepTimeoutMs: number; sandbox?: BuildSandbox; maxLogChars?: number };
  leaseMs: number;
  /** Tokens a run takes at a time when it needs more of its project's monthly budget (BUDGET_RESERVATION_TOKENS). */
  budgetReservationTokens: number;
  /** Opens the project's own API key (bring-your-own-key), when secrets are enabled. */
  secretBox?: SecretBox;
  metrics?: Metrics;
  /**
   * Stores a succeeded generation's files and web bundle, so previews and archives outlive the
   * workspace; handed the run's signal, it stops between batches once the run is aborted.
   */
  outputs?: Pick<Outputs, 'storeBlobs'>;
  /**
   * Queues the automatic retry of a run this pipeline ends INTERRUPTED (the worker stopping,
   * the database away too long), in the transaction that ends it: a process that dies right
   * after the ending cannot leave it without its retry. A retry that cannot be written takes
   * the ending with it; lease recovery then ends the run and queues the retry together.
   * `planned`: handed back by its worker's stop (a restart), which spends no retry.
   */
  retryInterrupted?: (tx: Tx, ended: GenerationRow, planned: boolean) => Promise<unknown>;
}

/**
 * A move of the running generation to another phase, written in a transaction with
 * other work of the run (one commit where there would be several). `write` throws
 * INTERRUPTED when the generation had been ended elsewhere, which rolls that work back;
 * `announce`, once the transaction committed, publishes the move.
 */
export interface PhaseChange {
  write(tx: Tx): Promise<void>;
  announce(): void;
}

/** Why a run stopped early: the user cancelled, or the worker is handing it back. */
export type StopReason = 'cancelled' | 'shutdown' | 'lease-lost';

/**
 * One generation from claim to a terminal status. Everything it produces is persisted
 * before it is published; only the worker that won the claim writes.
 */
export async function runGeneration(deps: PipelineDeps, generationId: string, stop: AbortSignal): Promise<GenerationRow | undefined> {
  // A stopping worker claims nothing: the run would outlast its grace.
  if (stop.aborted) return undefined;
  const db = pipelineScope(deps.db, deps.logger);
  // Set here, not by the database: a claim run again after its COMMIT's reply was lost knows its own row by it.
  const claimedAt = claimStamp();
  let claims = 0;
  const claimed = await db.run((tx) => generationStore.claim(tx, generationId, deps.leaseMs, claimedAt, claims++ > 0));
  if (!claimed) return undefined; // someone else has it, or it was cancelled meanwhile
  const log = deps.logger.child({ source: 'GenerationPipeline', generationId, projectId: claimed.projectId });
  const startedAt = performance.now();
  const publish = (update: StatusEvent) => deps.bus.publish('generationUpdated', generationId, update);
  publish({ status: 'RUNNING', phase: 'GENERATING' });

  const run = new AbortController();
  const abort = (reason: StopReason) => run.abort(reason);
  // A stop that came while the claim was under way is taken now: the listener would never hear it.
  if (stop.aborted) abort(stop.reason as StopReason);
  else stop.addEventListener('abort', () => abort(stop.reason as StopReason), { once: true });

  let output = '';
  // Every round's usage, summed: the generation's usage.
  let usage = NO_USAGE;
  // The answer under way, as it streams: with the rounds before, what the heartbeat records.
  let answering = NO_USAGE;
  const spend = (spent: LlmUsage) => {
    usage = addUsage(usage, spent);
    answering = NO_USAGE;
  };
  const spending = (soFar: LlmUsage) => (answering = soFar);
  const spentSoFar = () => addUsage(usage, answering);
  const stopWatching = watchRun(deps, generationId, abort, spentSoFar);
  const onText = (text: string) => (output += text);
  const cursor = newRunCursor();
  let outcome: Partial<GenerationRow> & Pick<GenerationRow, 'status'>;
  // Handed back by its worker's planned stop (a restart), known when it failed: the stop may come later, while the ending waits for the database.
  let planned = false;
  let stored: { record(tx: Tx): Promise<void> } | undefined;
  let workspaceWritten = false;
  try {
    const context = await loadContext(deps, claimed, log);
    const prompt = firstPrompt(context);
    const writing = phaseChange(generationId, 'WRITING', publish);
    const generated = claimed.restoredFrom
      ? await restore(deps, context, writing, log)
      : await generate(deps, context, prompt, cursor, run.signal, { onText, spend, spending }, writing);
    const workspace = await writeWorkspace(deps, context, generated.changes);
    workspaceWritten = true;
    // Path → content as the build sees it; fix rounds update it.
    const files = new Map(workspace.files.map((file) => [file.path, file.content]));
    const building = phaseChange(generationId, 'BUILDING', publish);
    await buildWithFixes(deps, {
      generationId,
      target: context.project.target,
      spec: context.target,
      // A restore makes no model call at all, so it never heals either.
      maxFixRounds: claimed.restoredFrom ? 0 : claimed.maxFixRounds,
      ...(context.apiKey ? { apiKey: context.apiKey } : {}),
      prompt,
      files,
      workspaceDir: workspace.dir,
      cursor,
      signal: run.signal,
      output: () => output,
      onText,
      budget: () => context.budget(usage.inputTokens + usage.outputTokens),
      spend,
      spending,
      // The first build records the workspace's files with its steps.
      entry: {
        write: async (tx) => {
          await generationStore.insertFiles(tx, workspace.files.map((file) => ({ generationId, ...file })));
          await building.write(tx);
        },
        announce: building.announce,
      },
      phase: (phase) => phaseChange(generationId, phase, publish),
    });
    // Stored before SUCCEEDED and indexed with it, so a SUCCEEDED generation always has its preview and archive.
    const sources = [...files].map(([path, content]) => ({ path, content }));
    throwIfCancelled(run.signal);
    stored = await deps.outputs?.storeBlobs(generationId, await bundleFolderIn(workspace.dir, context.target.bundleDir), sources, run.signal);
    // A cancel that came during the last batch of the outputs still wins.
    throwIfCancelled(run.signal);
    outcome = { status: 'SUCCEEDED' };
  } catch (error) {
    outcome = failureOutcome(error, run.signal, log);
    planned = run.signal.aborted && run.signal.reason === 'shutdown';
  } finally {
    stopWatching();
  }

  const finishedAt = new Date();
  const finished = await db.run(async (tx) => {
    // The generation's row first, as lease recovery does, so the two never wait on each other.
    const row = await generationStore.transition(tx, generationId, ['RUNNING'], {
      ...outcome,
      ...(outcome.errorCode === 'INTERRUPTED' ? interruptedEnding(outcome.errorMessage!) : {}),
      phase: 'DONE',
      inputTokens: usage.inputTokens,
      outputTokens: usage.outputTokens,
      // Settled: the usage replaces the run's reservation against the monthly budget.
      reservedTokens: 0,
      finishedAt,
      leaseExpiresAt: null,
    });
    if (!row) {
      // Run again after a database outage took COMMIT's reply: the row may already carry this ending.
      const ended = await generationStore.find(tx, generationId);
      if (ended?.finishedAt?.getTime() === finishedAt.getTime()) return ended;
      // Ended elsewhere (its lease lapsed meanwhile): what this run spent still counts, and
      // a step it went on to start after that ending is closed too. Its answer still goes under
      // its prompt in the conversation, as Generation.output has it (keepUsage holds the row).
      await generationStore.keepUsage(tx, generationId, usage);
      if (ended) {
        await closeUnfinishedWork(tx, generationId, ended.status);
        if (output) await generationStore.setAnswer(tx, { projectId: claimed.projectId, sessionId: claimed.sessionId, content: output, generationId });
      }
      return undefined;
    }
    // Indexed with its own SUCCEEDED only: a run ended elsewhere meanwhile (lease recovery,
    // an archive) leaves no preview or archive of its outputs.
    if (row.status === 'SUCCEEDED') await stored?.record(tx);
    await closeUnfinishedWork(tx, generationId, row.status);
    if (output) {
      await generationStore.insertMessage(tx, {
        projectId: claimed.projectId,
        sessionId: claimed.sessionId,
        role: 'MODEL',
        content: output,
        generationId,
      });
    }
    // After this run's answer: the conversation lists the retry's prompt below it.
    if (row.errorCode === 'INTERRUPTED') await deps.retryInterrupted?.(tx, row, planned);
    return row;
  });
  if (finished) {
    publish({ status: finished.status, phase: finished.phase });
    log.info({ status: finished.status, errorCode: finished.errorCode }, 'generation finished');
    deps.metrics?.observeGeneration({ status: finished.status, errorCode: finished.errorCode, provider: deps.llm.name }, (performance.now() - startedAt) / 1000);
  }
  deps.metrics?.observeTokens(deps.llm.name, usage);
  // Old workspaces go once the user has the outcome: it never waits on this.
  if (workspaceWritten) {
    await pruneWorkspaces(deps.workspaces.dir, claimed.projectId, deps.workspaces.keepPerProject, {
      // Only generations this database knows to have ended: a build may still run in the others' workspaces.
      finishedAmong: (ids) => db.run((tx) => generationStore.endedAmong(tx, ids)),
      onFailure: (dir, error) => log.warn({ err: error, dir }, 'removing an old workspace failed'),
    }).catch((error: unknown) => log.warn({ err: error }, 'pruning old workspaces failed'));
  }
  return finished;
}

/**
 * The steps and fix rounds a run that ended `status` left open (generationStore.closeOpenSteps;
 * rounds FAILED, or CANCELLED). One that succeeded left none.
 */
export async function closeUnfinishedWork(tx: Tx, generationId: string, status: GenerationStatus): Promise<void> {
  if (status === 'SUCCEEDED') return;
  const cancelled = status === 'CANCELLED';
  await generationStore.closeOpenSteps(tx, generationId, cancelled);
  await fixStore.closeRunningRounds(tx, generationId, cancelled ? 'CANCELLED' : 'FAILED');
}

type RunContext = Awaited<ReturnType<typeof loadContext>>;

/** What the run builds on: the project's target, the parent's files, the session so far. */
async function loadContext(deps: PipelineDeps, generation: GenerationRow, log: Logger) {
  const context = await pipelineScope(deps.db, deps.logger).run(async (tx) => {
    const project = (await generationStore.projectOf(tx, generation.projectId))!;
    // A restore calls no model: a key this server cannot open must not fail it.
    const secretName = generation.restoredFrom ? undefined : providerSecret[deps.llm.name];
    const sealed = secretName ? await secretStore.ciphertextOf(tx, project.id, secretName) : undefined;
    return {
      generation,
      project,
      apiKey: sealed && secretName ? openSecret(deps.secretBox, sealed, project.id, secretName) : undefined,
      target: getTarget(project.target),
      // A parent that wrote no files hands on the version before it (versionOfLineage).
      parentFiles: generation.parentId ? await generationStore.versionOfLineage(tx, generation.parentId) : [],
      turns: generation.parentId ? await generationStore.turnsOfLineage(tx, generation.parentId) : [],
      // The limit as it stands now; the run reads it again as it needs more (budget.ts).
      budget: runBudget(pipelineScope(deps.db, deps.logger), generation, project.monthlyTokenLimit, deps.budgetReservationTokens),
    };
  });
  const { kept, refused } = withoutRefusedPaths(context.parentFiles);
  if (refused.length > 0) log.warn({ paths: refused, parentId: generation.parentId }, "left out files of the parent's version whose paths Kiln now refuses");
  return { ...context, parentFiles: kept };
}

const providerSecret: Record<string, SecretName | undefined> = { gemini: 'GEMINI_API_KEY', openai: 'OPENAI_API_KEY' };

/** The project's own key; never the server's instead, which would bill its owner for the project. */
function openSecret(box: SecretBox | undefined, sealed: string, projectId: string, name: SecretName): string {
  if (!box) throw new LlmError(`The project's ${name} is stored, but the server that ran this generation has no KILN_ENCRYPTION_KEY to open it.`);
  try {
    return box.open(sealed, secretContext(projectId, name));
  } catch {
    throw new LlmError(`The project's ${name} cannot be decrypted (the server's KILN_ENCRYPTION_KEY changed); set it again.`);
  }
}

/** The first answer's prompt: the target's system prompt, the parent's files, the session so far, the new prompt. */
function firstPrompt({ generation, target, parentFiles, turns }: RunContext) {
  return buildPrompt({ systemPrompt: target.systemPrompt, template: target.template, manifest: target.manifest, parentFiles, turns, prompt: generation.prompt });
}

/** Round 0: the model's answer to the prompt; `next` (WRITING) commits with its last chunks. */
function generate(
  deps: PipelineDeps,
  context: RunContext,
  prompt: ReturnType<typeof firstPrompt>,
  cursor: RunCursor,
  signal: AbortSignal,
  { onText, spend, spending }: { onText: (text: string) => void } & Pick<AnswerInput, 'spend' | 'spending'>,
  next: PhaseChange,
) {
  const { generation, project, apiKey } = context;
  return streamAnswer(
    deps,
    { generationId: generation.id, target: project.target, round: 0, ...prompt, budget: context.budget(0), spend, spending, ...(apiKey ? { apiKey } : {}) },
    cursor,
    signal,
    onText,
    next,
  );
}

/** A restore makes no model call: its answer is the restored files (restore.ts). */
async function restore(deps: PipelineDeps, context: RunContext, writing: PhaseChange, log: Logger) {
  const { refused, ...answer } = await restoredAnswer(deps.db, context.generation, { template: context.target.template, parentFiles: context.parentFiles });
  if (refused.length > 0) log.warn({ paths: refused, restoredFrom: context.generation.restoredFrom }, 'left out files of the restored version whose paths Kiln now refuses');
  await pipelineScope(deps.db, deps.logger).run(writing.write);
  writing.announce();
  return answer;
}

function writeWorkspace(deps: PipelineDeps, context: RunContext, changes: OutputEvent[]) {
  const { generation } = context;
  return createWorkspace({
    root: deps.workspaces.dir,
    projectId: generation.projectId,
    generationId: generation.id,
    template: context.target.template,
    parentFiles: context.parentFiles,
    changes,
    changesAre: generation.restoredFrom ? 'this restore' : 'this answer',
    // A root server's build steps run as another host user, who must be able to write it.
    owner: deps.toolchain.sandbox?.stepOwner,
  });
}

function phaseChange(id: string, phase: 'WRITING' | 'BUILDING' | 'FIXING', publish: (u: StatusEvent) => void): PhaseChange {
  return {
    // A generation ended elsewhere (a lapsed lease, recovered) rolls back the whole
    // transaction, so nothing of this run lands on it.
    write: async (tx) => {
      if (!(await generationStore.movePhase(tx, id, phase))) throw new RunFailure('INTERRUPTED', 'This generation was ended elsewhere.');
    },
    announce: () => publish({ status: 'RUNNING', phase }),
  };
}

/**
 * Now, to the microsecond PostgreSQL keeps, the microseconds random: a claim stamped at the
 * same millisecond by another worker is not mistaken for this one's.
 */
function claimStamp(): string {
  return new Date().toISOString().replace('Z', `${randomInt(1000).toString().padStart(3, '0')}Z`);
}

/**
 * A cancel the model, the build steps and the outputs' batches did not see (it came after them)
 * is looked for before the run succeeds: it ends CANCELLED (failureOutcome). A worker's stop that
 * late is not: the run's work is done, and it ends as it would have.
 */
function throwIfCancelled(signal: AbortSignal): void {
  if (signal.aborted && signal.reason === 'cancelled') throw new Error('The run was cancelled.');
}

function failureOutcome(error: unknown, signal: AbortSignal, log: Logger): Partial<GenerationRow> & Pick<GenerationRow, 'status'> {
  if (signal.aborted) {
    if (signal.reason === 'cancelled') return { status: 'CANCELLED', errorCode: null, errorMessage: null };
    return { status: 'FAILED', errorCode: 'INTERRUPTED', errorMessage: 'The worker stopped before this generation finished.' };
  }
  if (error instanceof RunError) {
    // What the message leaves out for the project's members, the operator reads here.
    // INTERNAL: this server could not do its part (a sandbox it cannot set up), which an operator must see.
    if (error.cause !== undefined) log[error.code === 'INTERNAL' ? 'error' : 'warn']({ err: error.cause, errorCode: error.code }, 'generation failed; the cause its message leaves out');
    return { status: 'FAILED', errorCode: error.code, errorMessage: truncateWithEllipsis(error.message, MAX_ERROR_MESSAGE_CHARS) };
  }
  // The database stayed away longer than the pipeline waits for it: handed back like a lapsed lease.
  if (isConnectionError(error)) return { status: 'FAILED', errorCode: 'INTERRUPTED', errorMessage: 'The database was unreachable for too long.' };
  log.error({ err: error }, 'generation failed unexpectedly');
  return { status: 'FAILED', errorCode: 'INTERNAL', errorMessage: 'Something went wrong on our side; try again.' };
}

/**
 * Keeps the lease alive and stops the run when it is cancelled: at once through the
 * bus, and through the heartbeat (at most a second later) when the bus missed it.
 * A heartbeat waits out a database outage (one at a time); the run is handed back
 * only once the lease has surely lapsed, never while it may still hold.
 */
function watchRun(deps: PipelineDeps, generationId: string, abort: (reason: StopReason) => void, spentSoFar: () => LlmUsage): () => void {
  const cancelEvents = deps.bus.subscribe('generationCancel', generationId);
  void (async () => {
    for await (const _ of cancelEvents) {
      abort('cancelled');
      break;
    }
  })();
  const log = deps.logger.child({ source: 'GenerationPipeline', generationId });
  // The claim set the lease before its reply arrived, so it lapses before this at the latest.
  let leaseHoldsUntil = performance.now() + deps.leaseMs;
  let beating = false;
  const handBack = () => {
    clearInterval(beat);
    abort('lease-lost');
  };
  const beat = setInterval(() => {
    if (performance.now() > leaseHoldsUntil) {
      log.warn({ leaseMs: deps.leaseMs }, 'the lease lapsed while the database was unreachable; handing the run back');
      return handBack();
    }
    if (beating) return;
    beating = true;
    pipelineScope(deps.db, deps.logger)
      .run((tx) => generationStore.heartbeat(tx, generationId, deps.leaseMs, spentSoFar()))
      .then(
        (row) => {
          if (!row) return handBack();
          leaseHoldsUntil = performance.now() + deps.leaseMs;
          if (row.cancelRequestedAt) abort('cancelled');
        },
        (error: unknown) => log.warn({ err: error }, 'heartbeat failed'),
      )
      .finally(() => (beating = false));
  }, Math.min(1000, deps.leaseMs / 3));
  return () => {
    clearInterval(beat);
    void cancelEvents.return?.();
  };
}
