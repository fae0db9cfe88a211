import type { Tx } from '../db/client.js';
import type { Scope } from '../db/scope.js';
import { type MonthTokens, RunError } from '../errors.js';
import type { LlmUsage } from '../llm/provider.js';
import { projectStore } from '../projects/store.js';
import { type GenerationRow, generationStore, MONTH_OF_NOW } from './store.js';

// A project's monthly token budget, held while several runs start and stream at once.
//
// Every QUEUED or RUNNING generation holds a reservation (generations.reserved_tokens):
// at start, in the transaction that inserts it, an estimate (BUDGET_RESERVATION_TOKENS,
// or what is left of the month if that is less); while it streams, more a step at a
// time whenever its estimated spend would pass what it holds. Both happen under a lock
// on the project's budget, against the month's usage plus every reservation, so the
// reservations never add up past the limit. The run's final transition replaces its
// reservation with its usage, in one transaction.
//
// The limit is the project's as it stands when the run asks for more, read under that lock
// (setProjectBudget takes it too), not as it stood when the run began: a limit set or
// lowered during a run holds it from its next step on. A run of a project without a limit
// holds nothing and reads the limit again a step at a time (one small statement), so a
// limit set meanwhile reaches it within a step too. A run is counted in the month it was
// created in (its generation's created_at), also when it streams on past the month's end.
//
// Tokens are estimated as they come (about four characters a token), and a provider that
// counts as it streams (Gemini's usageMetadata on each event) is taken at its word where its
// count is more: a model's thinking is billed as output but never streams as text, and each
// continuation of an answer cut at the output limit sends the prompt again. A run that
// cannot get the tokens it needs stops with BUDGET_EXCEEDED; the chunk that took it over was
// spent all the same and is counted, so a project can end a month past its limit by about
// one chunk per stopped run, and by however far the provider's final count of an answer
// passes what it had counted at its last text (a provider that counts only at the end, as
// OpenAI-compatible servers do, is held to the estimate while it streams).

/** The start of the month `date` falls in: budgets count tokens per calendar month, UTC. */
function monthStart(date: Date): Date {
  return new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), 1));
}

/** The start of the month after the one `start` (a monthStart) begins. */
function monthAfter(start: Date): Date {
  return new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth() + 1, 1));
}

/** About four characters a token, rounded up: the usual estimate for English text and code. */
export const estimateTokens = (characters: number) => Math.ceil(characters / 4);

/** A run's hold on its project's monthly budget, shared by all of its answers. */
export interface RunBudget {
  /** The project's limit as the run last read it; null: none. */
  readonly limit: number | null;
  /** What the run spent before this answer (earlier rounds). */
  spentBefore: number;
  /** Tokens the whole run may spend before it asks again: what it holds, or without a limit, up to its next look at the limit. */
  reserved(): number;
  /** Asks for `total` tokens for the whole run; resolves with what it may spend after, which falls short of it only under a limit. */
  reserve(total: number): Promise<number>;
}

/** The run went over budget; what it spent is recorded all the same (answer.ts). */
export class BudgetStop extends RunError {
  readonly code = 'BUDGET_EXCEEDED';
  constructor(limit: number) {
    super(`The project's monthly token budget (${limit} tokens) ran out during this generation; it was stopped.`);
    this.name = 'BudgetStop';
  }
}

export interface BudgetMeter {
  /** Before the model is asked: throws BudgetStop (nothing spent) when the prompt alone cannot be covered. */
  start(): Promise<void>;
  /** Counts streamed text as spent. */
  count(text: string): void;
  /**
   * Throws BudgetStop when the run cannot get the tokens it has spent so far: `spent`, the
   * answer's cost as it will be charged (answer.ts answerCost), or the estimate.
   */
  check(spent?: LlmUsage): Promise<void>;
  /** The estimate so far. */
  usage(): LlmUsage;
}

export function budgetMeter(budget: RunBudget, inputCharacters: number): BudgetMeter {
  const inputTokens = estimateTokens(inputCharacters);
  let outputCharacters = 0;
  const usage = () => ({ inputTokens, outputTokens: estimateTokens(outputCharacters) });
  const covered = async (spent: LlmUsage) => {
    const total = budget.spentBefore + spent.inputTokens + spent.outputTokens;
    return total <= budget.reserved() || (await budget.reserve(total)) >= total;
  };
  return {
    usage,
    async start() {
      if (!(await covered(usage()))) throw new BudgetStop(budget.limit!);
    },
    count(text) {
      outputCharacters += text.length;
    },
    async check(spent = usage()) {
      if (!(await covered(spent))) throw new BudgetStop(budget.limit!);
    },
  };
}

/**
 * A start's reservation, in its insert's transaction and under the project's budget lock
 * (lockStartsOfUser with the project): refuses with `exceeded` when the month's usage and
 * reservations leave less than `needed` (at least one token: what the run's prompt cannot do
 * without, which it would stop for at once), else holds up to `estimate`. The limit is read
 * under that lock, which setProjectBudget takes too: a change lands before this decision or after it.
 */
export async function reserveAtStart(
  tx: Tx,
  projectId: string,
  tokens: { estimate: number; needed: number },
  exceeded: (limit: number, taken: MonthTokens, needed: number) => Error,
): Promise<number> {
  const limit = await projectStore.limitOf(tx, projectId);
  if (limit === null) return 0;
  // The month by the database's clock, which stamps the new generation's created_at in this
  // transaction; the server's may be past midnight from it (a start that waited on the lock then, a skewed host).
  const since = MONTH_OF_NOW;
  const committed = await generationStore.committedOfProject(tx, projectId, since);
  const needed = Math.max(1, tokens.needed);
  if (limit - committed < needed) {
    // Told apart only for the refusal: a reservation is no usage, and the person refused should know which it is.
    const [usage] = await generationStore.usageOfProjects(tx, [projectId], since);
    const spent = (usage?.inputTokens ?? 0) + (usage?.outputTokens ?? 0);
    throw exceeded(limit, { spent, reserved: committed - spent }, needed);
  }
  return Math.min(tokens.estimate, limit - committed);
}

/**
 * The running generation's budget: what it reserved at start, grown a step at a time
 * (at least `step` tokens, when the month has them) as it needs more, against the limit
 * as it stands then. `limit` is the project's when the run began; with none, the run
 * reads it again every `step` tokens. Call the result with what earlier rounds spent.
 */
export function runBudget(scope: Scope, generation: GenerationRow, limit: number | null, step: number): (spentBefore: number) => RunBudget {
  let known = limit;
  let held = generation.reservedTokens;
  // Without a limit: the run's total at which it reads the limit again. `limit` was read just now.
  let lookAgainAt = step;
  const covers = () => (known === null ? Math.max(held, lookAgainAt) : held);
  const reserve = async (total: number) => {
    if (total <= covers()) return covers();
    const wanted = Math.max(total, held + step);
    const grant = await scope.run((tx) => growReservation(tx, generation, known, wanted));
    // None when it is no longer running (being ended elsewhere): it keeps what it had meanwhile.
    if (grant) {
      known = grant.limit;
      held = grant.held ?? held;
    }
    if (known === null) lookAgainAt = total + step;
    return covers();
  };
  return (spentBefore) => ({
    get limit() {
      return known;
    },
    spentBefore,
    reserved: covers,
    reserve,
  });
}

/**
 * Grows a RUNNING generation's reservation towards `wanted`, as far as the project's limit
 * allows against its month's usage and the other reservations (and shrinks it to that room
 * when the limit was lowered). A run that knew of no limit first just looks whether there
 * is one now: one statement, and nothing more while there is none. Resolves with the
 * limit read and the reservation after (absent: unchanged), or nothing when the generation
 * is no longer running. Safe to run twice (a lost COMMIT reply): the second run finds the
 * grant already there.
 */
async function growReservation(
  tx: Tx,
  generation: GenerationRow,
  known: number | null,
  wanted: number,
): Promise<{ limit: number | null; held?: number } | undefined> {
  const { projectId } = generation;
  if (known === null && (await projectStore.limitOf(tx, projectId)) === null) return { limit: null };
  await generationStore.lockBudgetOfProject(tx, projectId);
  // Read under the lock, which setProjectBudget takes too: a change lands before this decision or after it.
  const limit = await projectStore.limitOf(tx, projectId);
  const held = await generationStore.reservationOf(tx, generation.id);
  if (held === undefined) return undefined; // no longer running
  if (limit === null) return { limit, held };
  // The run's own month: one that streams on past the month's end is still charged to the month it began in.
  const month = monthStart(generation.createdAt);
  const committed = await generationStore.committedOfProject(tx, projectId, month, monthAfter(month));
  // What this run may hold: the limit less the month's usage and every other reservation.
  const room = limit - (committed - held);
  const target = Math.max(0, Math.min(wanted, room));
  if (target !== held) await generationStore.setReservation(tx, generation.id, target);
  return { limit, held: target };
}
