import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { Tx } from '../db/client.js';
import type { Scope } from '../db/scope.js';
import { BudgetExceededError, InvalidStateError, NotFoundError, RateLimitedError } from '../errors.js';
import type { EventBus } from '../events/bus.js';
import { archiveProjectIn, removeProjectMemberIn, requireRole, showsAsNothing } from '../projects/projects.js';
import { type ProjectRow, projectStore } from '../projects/store.js';
import { getTarget } from '../toolchain/targets.js';
import { estimateTokens, reserveAtStart } from './budget.js';
import { leastPromptCharacters } from './prompt.js';
import { isTerminal } from './status.js';
import { type GenerationRow, generationStore, type StoppedWork } from './store.js';

// Start, cancel and retry: the decisions around a run. The run itself is pipeline.ts.

/** Generations made by a restore name no model: they call none. */
const NO_MODEL = { name: 'none', model: 'none' } as const;

/** Kept as sent (the conversation holds the prompt verbatim: an indented snippet stays indented); one that shows as nothing is refused. */
export const generationPrompt = z
  .string()
  .max(20_000, 'The prompt must be at most 20000 characters')
  .refine((prompt) => !showsAsNothing(prompt), 'Describe what to build');

/** The tries of one prompt, a retry chain's last attempt (the generations_attempt_range check). */
export const MAX_ATTEMPTS = 100;

/** Self-healing rounds a generation may take (0 = off). */
export const MAX_FIX_ROUNDS = 5;
export const maxFixRounds = z
  .number()
  .int()
  .min(0, 'maxFixRounds cannot be negative; 0 turns self-healing off')
  .max(MAX_FIX_ROUNDS, `maxFixRounds is at most ${MAX_FIX_ROUNDS}`);

export interface GenerationDeps {
  bus: EventBus;
  /** Wakes a worker; the durable queue is the generations table itself. */
  wakeWorkers(generationId: string): void;
  /** Sends the generation's job in the transaction that inserts it (QUEUE=pgboss); absent for the in-process queue. */
  enqueue?: (tx: Tx, generationId: string) => Promise<void>;
  provider: { name: string; model: string };
  maxActivePerUser: number;
  /** Fix rounds of a generation started without maxFixRounds (AUTO_FIX_MAX_ROUNDS). */
  defaultMaxFixRounds?: number;
  /** Tokens a start reserves against its project's monthly limit (BUDGET_RESERVATION_TOKENS); unset: none until it streams. */
  budgetReservationTokens?: number;
  /**
   * Throws RateLimitedError when the user (or the client's address) started too many generations
   * recently, or counts this start and resolves with what takes it back; bound per request (startLimits).
   */
  rateLimit?(userId: string): Promise<() => Promise<void>>;
  /** Hears of each start MAX_ACTIVE_GENERATIONS_PER_USER turned away (the metrics count them). */
  onRefused?(limit: 'max_active_generations_per_user'): void;
}

/**
 * A start counted against the rate limits, and given back when it is refused for what a client
 * may ask again about: a busy session, an archived project, a budget, too many running. Only
 * what starts a generation counts for those. Other refusals (a project not there, a role) still
 * count, so they cannot be repeated without end, and so does one the database failed.
 */
export async function countedStart(scope: Scope, deps: GenerationDeps, start: () => Promise<GenerationRow>): Promise<GenerationRow> {
  const giveBack = scope.userId ? await deps.rateLimit?.(scope.userId) : undefined;
  try {
    return await start();
  } catch (error) {
    // Not worth failing the answer for: at worst the count stays one too high until its window ends.
    if (isAskedAgain(error)) await giveBack?.().catch(() => {});
    // Here, not where it is thrown: a transaction run again after an outage would count it twice.
    if (error instanceof TooManyActiveError) deps.onRefused?.('max_active_generations_per_user');
    throw error;
  }
}

const isAskedAgain = (error: unknown) => error instanceof InvalidStateError || error instanceof BudgetExceededError || error instanceof RateLimitedError;

export interface StartInput {
  projectId: string;
  prompt: string;
  sessionId?: string | null;
  parentGenerationId?: string | null;
  /** null: the server's default (AUTO_FIX_MAX_ROUNDS). */
  maxFixRounds?: number | null;
}

export async function startGeneration(scope: Scope, deps: GenerationDeps, input: StartInput): Promise<GenerationRow> {
  const generation = await countedStart(scope, deps, () =>
    scope.run(async (tx) => {
      await projectStore.lockAgainstArchive(tx, input.projectId, 'start');
      const project = requireRole(await projectStore.find(tx, input.projectId), ['owner', 'editor']);
      refuseArchived(project);
      const parent = await resolveParent(tx, project.id, input);
      const sessionId = input.sessionId ?? parent?.sessionId ?? randomUUID();
      const values = {
        projectId: project.id,
        createdBy: scope.userId!,
        sessionId,
        parentId: parent?.id ?? null,
        prompt: input.prompt,
        // Resolved now and kept, so a later change of the default never alters a queued run.
        maxFixRounds: input.maxFixRounds ?? deps.defaultMaxFixRounds ?? 0,
      };
      return insertGeneration(tx, deps, values, project);
    }),
  );
  announce(deps, generation);
  return generation;
}

export async function retryGeneration(scope: Scope, deps: GenerationDeps, id: string): Promise<GenerationRow> {
  const generation = await countedStart(scope, deps, () =>
    scope.run(async (tx) => {
      const original = await findVisible(tx, id);
      await projectStore.lockAgainstArchive(tx, original.projectId, 'start');
      const project = requireRole(await projectStore.find(tx, original.projectId), ['owner', 'editor']);
      refuseArchived(project);
      if (!isTerminal(original.status)) throw new InvalidStateError('Only a finished generation can be retried.');
      if (original.attempt >= MAX_ATTEMPTS) {
        throw new InvalidStateError(`This prompt has been tried ${MAX_ATTEMPTS} times, as often as one prompt may be; start a new generation instead.`);
      }
      await claimSession(tx, project.id, original.sessionId);
      // A user's retry is not retried automatically.
      return insertRetry(tx, deps, original, { createdBy: scope.userId!, limits: project, retrySpent: true });
    }),
  );
  announce(deps, generation);
  return generation;
}

/**
 * The retry of a finished generation, the one path for a user's retry and for the automatic
 * retry of an interrupted run (worker.ts: retryInterrupted): the same prompt, session, parent
 * and fix rounds, one attempt later; a restore's retry restores the same files again.
 * Recovery waives the limits (the interrupted run already passed them); a user's retry does not.
 */
export function insertRetry(
  tx: Tx,
  deps: Pick<GenerationDeps, 'provider' | 'maxActivePerUser' | 'enqueue' | 'budgetReservationTokens'>,
  original: GenerationRow,
  by: { createdBy: string; limits: LimitCheck; retrySpent: boolean },
): Promise<GenerationRow> {
  return insertGeneration(
    tx,
    deps,
    {
      projectId: original.projectId,
      createdBy: by.createdBy,
      sessionId: original.sessionId,
      parentId: original.parentId,
      retryOf: original.id,
      attempt: original.attempt + 1,
      retrySpent: by.retrySpent,
      prompt: original.prompt,
      maxFixRounds: original.maxFixRounds,
      restoredFrom: original.restoredFrom ?? undefined,
    },
    by.limits,
  );
}

/**
 * The automatic retry of a run that ended INTERRUPTED (lease recovery, a run handed back), in
 * the transaction that ended it; none when its project is archived, or an archive of it is
 * under way. Taken as a start (the shared archive lock), so an archive that comes after it
 * finds the retry and cancels it. The lock is only tried: this transaction already holds the
 * ended run's row, which an archive under way may be waiting for (to ask it to stop), so
 * waiting for that archive would deadlock; that archive is about to end the project's work.
 */
export async function insertAutomaticRetry(
  tx: Tx,
  deps: Pick<GenerationDeps, 'provider' | 'enqueue'>,
  original: GenerationRow,
  retry: { retrySpent: boolean },
): Promise<GenerationRow | undefined> {
  if (!(await projectStore.tryLockAgainstArchive(tx, original.projectId))) return undefined;
  if ((await generationStore.projectOf(tx, original.projectId))?.archivedAt) return undefined;
  // The interrupted run already passed the limits.
  return insertRetry(tx, { ...deps, maxActivePerUser: Number.POSITIVE_INFINITY }, original, { createdBy: original.createdBy, limits: 'waive', ...retry });
}

/** A QUEUED generation ends at once; a RUNNING one is asked to stop (any instance, any worker). */
export async function cancelGeneration(scope: Scope, deps: Pick<GenerationDeps, 'bus'>, id: string): Promise<GenerationRow> {
  const { generation, running } = await scope.run(async (tx) => {
    const found = await findVisible(tx, id);
    requireRole(await projectStore.find(tx, found.projectId), ['owner', 'editor']);
    if (isTerminal(found.status)) throw new InvalidStateError(`This generation has already ended (${found.status}).`);
    const now = new Date();
    const cancelled = await generationStore.transition(tx, id, ['QUEUED'], {
      status: 'CANCELLED',
      phase: 'DONE',
      cancelRequestedAt: now,
      finishedAt: now,
    });
    if (cancelled) return { generation: cancelled, running: false };
    const requested = await generationStore.transition(tx, id, ['RUNNING'], { cancelRequestedAt: now });
    if (!requested) throw new InvalidStateError('This generation has already ended.');
    return { generation: requested, running: true };
  });
  if (running) deps.bus.publish('generationCancel', id, { at: new Date().toISOString() });
  else deps.bus.publish('generationUpdated', id, { status: generation.status, phase: generation.phase });
  return generation;
}

/**
 * Archiving a project stops its work, as a cancel would, in the same transaction (no start
 * gets in meanwhile, and nothing is left running if this process dies after it): its queued
 * generations end at once and its running ones are asked to stop, so nothing goes on
 * spending its budget.
 */
export async function archiveProjectAndStop(scope: Scope, deps: Pick<GenerationDeps, 'bus'>, id: string): Promise<ProjectRow> {
  const { project, stopped } = await scope.run(async (tx) => {
    const project = await archiveProjectIn(tx, id);
    return { project, stopped: await generationStore.stopAllOfProject(tx, project.id) };
  });
  announceStopped(deps, stopped);
  return project;
}

/**
 * A member removed loses their work in the project with their access, as archiving stops it:
 * they could no longer see it nor cancel it, and it would go on spending the project's budget
 * and counting toward their active limit.
 */
export async function removeMemberAndStop(scope: Scope, deps: Pick<GenerationDeps, 'bus'>, input: { projectId: string; userId: string }): Promise<ProjectRow> {
  const { project, stopped } = await scope.run(async (tx) => {
    const project = await removeProjectMemberIn(tx, input);
    return { project, stopped: await generationStore.stopAllOfProject(tx, project.id, { createdBy: input.userId }) };
  });
  announceStopped(deps, stopped);
  return project;
}

function announceStopped(deps: Pick<GenerationDeps, 'bus'>, { cancelled, stopping }: StoppedWork): void {
  for (const generation of cancelled) deps.bus.publish('generationUpdated', generation.id, { status: generation.status, phase: generation.phase });
  for (const generationId of stopping) deps.bus.publish('generationCancel', generationId, { at: new Date().toISOString() });
}

export async function getGeneration(scope: Scope, id: string): Promise<GenerationRow | null> {
  return (await scope.run((tx) => generationStore.find(tx, id))) ?? null;
}

/** What an insert's budget and active-run checks read: its project, as the start read it; 'waive' exempts it. */
export type LimitCheck = Pick<ProjectRow, 'id' | 'monthlyTokenLimit' | 'target'> | 'waive';

/**
 * Inserts a QUEUED generation after the budget and rate checks, unless `limits` waives them.
 * A model's turn comes with its USER message; a restore (`restoredFrom`) calls no model, so
 * it names none, adds no message and reserves no tokens.
 */
export async function insertGeneration(
  tx: Tx,
  deps: Pick<GenerationDeps, 'provider' | 'maxActivePerUser' | 'enqueue' | 'budgetReservationTokens'>,
  values: {
    projectId: string;
    createdBy: string;
    sessionId: string;
    parentId: string | null;
    prompt: string;
    retryOf?: string;
    attempt?: number;
    retrySpent?: boolean;
    maxFixRounds?: number;
    restoredFrom?: string;
  },
  limits: LimitCheck,
): Promise<GenerationRow> {
  const restore = values.restoredFrom !== undefined;
  const reservedTokens = limits === 'waive' ? 0 : await checkLimits(tx, deps, limits, values, !restore);
  const model = restore ? NO_MODEL : deps.provider;
  const generation = await generationStore.insert(tx, { ...values, reservedTokens, provider: model.name, model: model.model });
  await deps.enqueue?.(tx, generation.id);
  if (restore) return generation;
  await generationStore.insertMessage(tx, {
    projectId: values.projectId,
    sessionId: values.sessionId,
    role: 'USER',
    content: values.prompt,
    generationId: generation.id,
  });
  return generation;
}

/** The budget (unless the start calls no model) and rate checks of a start; returns the tokens it reserves (budget.ts). */
async function checkLimits(
  tx: Tx,
  deps: Pick<GenerationDeps, 'maxActivePerUser' | 'budgetReservationTokens'>,
  project: Exclude<LimitCheck, 'waive'>,
  { createdBy: userId, prompt }: { createdBy: string; prompt: string },
  spendsTokens: boolean,
): Promise<number> {
  // Lock order: archiving, the session, the user's starts, then the project's budget (runs growing their reservation take only the latter).
  // The budget lock also when the project read had no limit: one set meanwhile is read under it (reserveAtStart).
  await generationStore.lockStartsOfUser(tx, userId, spendsTokens ? project.id : undefined);
  const tokens = { estimate: deps.budgetReservationTokens ?? 0, needed: estimateTokens(leastPromptCharacters(getTarget(project.target), prompt)) };
  const reserved = spendsTokens ? await reserveAtStart(tx, project.id, tokens, (limit, taken, needed) => new BudgetExceededError(limit, taken, needed)) : 0;
  await refuseBeyondActiveLimit(tx, deps.maxActivePerUser, userId);
  return reserved;
}

/** The user has MAX_ACTIVE_GENERATIONS_PER_USER generations queued or running. */
class TooManyActiveError extends RateLimitedError {
  constructor(maxActivePerUser: number) {
    super(15, `You already have ${maxActivePerUser} generations queued or running; wait for one to finish.`);
  }
}

/** Refuses a start while the user has MAX_ACTIVE_GENERATIONS_PER_USER queued or running; call it under lockStartsOfUser. */
export async function refuseBeyondActiveLimit(tx: Tx, maxActivePerUser: number, userId: string): Promise<void> {
  if ((await generationStore.activeCountOfUser(tx, userId)) >= maxActivePerUser) throw new TooManyActiveError(maxActivePerUser);
}

async function resolveParent(tx: Tx, projectId: string, input: StartInput): Promise<GenerationRow | undefined> {
  if (input.parentGenerationId) {
    const parent = await generationStore.find(tx, input.parentGenerationId);
    if (!parent || parent.projectId !== projectId) throw new NotFoundError('Parent generation not found in this project.');
    if (!isTerminal(parent.status)) throw new InvalidStateError('The parent generation has not finished yet.');
    if (input.sessionId && input.sessionId !== parent.sessionId) {
      throw new InvalidStateError('The parent generation belongs to another session.');
    }
    await claimSession(tx, projectId, parent.sessionId);
    return parent;
  }
  if (input.sessionId) {
    await claimSession(tx, projectId, input.sessionId);
    const latest = await generationStore.latestSucceededOfSession(tx, projectId, input.sessionId);
    // A session is its generations: an id with none in this project is a slip (or another
    // project's), not a new session; a new one comes from leaving sessionId out.
    if (!latest && !(await generationStore.hasSession(tx, projectId, input.sessionId))) throw new NotFoundError('Session not found in this project.');
    return latest;
  }
  return undefined;
}

/** An archived project is kept as it is: no start, retry or restore adds to it. */
export function refuseArchived(project: Pick<ProjectRow, 'archivedAt'>): void {
  if (project.archivedAt) throw new InvalidStateError('This project is archived; it takes no new generations.');
}

/**
 * A start that joins a session (a follow-up, a retry, a restore) builds on the session's
 * latest version, so it waits until the one before it has finished rather than lose its
 * files: it holds the session's starts until its transaction ends (two at once would both
 * find the session idle), and is refused while a generation of the session is unfinished.
 */
export async function claimSession(tx: Tx, projectId: string, sessionId: string): Promise<void> {
  await generationStore.lockSession(tx, projectId, sessionId);
  if (await generationStore.hasUnfinishedInSession(tx, projectId, sessionId)) {
    throw new InvalidStateError('A generation of this session is still queued or running; wait for it or cancel it.');
  }
}

async function findVisible(tx: Tx, id: string): Promise<GenerationRow> {
  const generation = await generationStore.find(tx, id);
  if (!generation) throw new NotFoundError('Generation not found.');
  return generation;
}

/** A new generation's first state to its viewers, and a worker woken for it. */
export function announce(deps: GenerationDeps, generation: GenerationRow) {
  deps.bus.publish('generationUpdated', generation.id, { status: generation.status, phase: generation.phase });
  deps.wakeWorkers(generation.id);
}

