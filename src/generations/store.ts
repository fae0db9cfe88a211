import { and, asc, count, desc, eq, getTableColumns, gt, gte, inArray, isNull, lt, lte, not, or, type SQL, sql } from 'drizzle-orm';
import type { PgUpdateSetSource } from 'drizzle-orm/pg-core';
import { advisoryLock } from '../db/advisory-locks.js';
import { rowsOf, type Tx } from '../db/client.js';
import {
  buildLogLines,
  buildSteps,
  conversationMessages,
  generationChunks,
  generationFiles,
  generations,
  projectMembers,
  projects,
} from '../db/schema.js';
import type { ChunkEvent, LogLineEvent } from '../events/bus.js';
import type { LlmUsage } from '../llm/provider.js';
import { MAX_GENERATION_OUTPUT_CHARS } from './output-parser.js';
import { ACTIVE_STATUSES, type GenerationPhase, type GenerationStatus, TERMINAL_STATUSES } from './status.js';

// Named queries of the generations domain. Request code runs them in the viewer's
// RLS scope; the worker in the service scope.

export type GenerationRow = typeof generations.$inferSelect;
export type { GenerationPhase, GenerationStatus } from './status.js';

/**
 * The ending of a run that was interrupted (its worker stopped, its lease lapsed): FAILED/
 * INTERRUPTED with `message`, retried (worker.ts: retryInterrupted); but CANCELLED, never retried, when its stop was
 * asked for meanwhile (a cancel or an archive its worker did not see in time).
 */
export function interruptedEnding(message: string) {
  const stopAsked = sql`${generations.cancelRequestedAt} is not null`;
  return {
    status: sql`case when ${stopAsked} then 'CANCELLED' else 'FAILED' end::generation_status`,
    errorCode: sql`case when ${stopAsked} then null else 'INTERRUPTED' end`,
    errorMessage: sql`case when ${stopAsked} then null else ${message} end`,
  };
}

/**
 * `with recursive lineage(id, next, depth)`: `generationId` (depth 0) and the generations it
 * descends from, a restore leading back through `restored_from`, else `parent_id`. The walk
 * goes on past a generation only while `walkOn` (about `lineage.id`) holds.
 */
function lineageOf(generationId: string, walkOn = sql`true`) {
  return sql`
    with recursive lineage(id, next, depth) as (
      select id, coalesce(restored_from, parent_id), 0 from ${generations} where id = ${generationId}
      union all
      select g.id, coalesce(g.restored_from, g.parent_id), lineage.depth + 1 from ${generations} g join lineage on g.id = lineage.next
      where lineage.depth < 10000 and ${walkOn}
    )`;
}

/**
 * The id of the nearest generation of `generationId`'s lineage (itself first) that wrote files,
 * as a subquery; the walk stops there. A restore that wrote none leads back to what it restored.
 */
function nearestVersion(generationId: string) {
  const wroteFiles = sql`exists (select 1 from ${generationFiles} where ${generationFiles.generationId} = lineage.id)`;
  return sql`(${lineageOf(generationId, sql`not ${wroteFiles}`)} select id from lineage where ${wroteFiles} order by depth limit 1)`;
}

export type BuildStepRow = typeof buildSteps.$inferSelect;
export type LogLineRow = typeof buildLogLines.$inferSelect;
export type ChunkRow = typeof generationChunks.$inferSelect;
/** What stopping a project's work did: the queued generations it ended, and the running ones it asked to stop. */
export interface StoppedWork {
  cancelled: GenerationRow[];
  stopping: string[];
}
export type FileRow = typeof generationFiles.$inferSelect;
export type MessageRow = typeof conversationMessages.$inferSelect;
/** What a session's conversation shows at most: the latest turn (a prompt and a whole answer) always fits. */
export const CONVERSATION_MAX_CHARS = 2 * MAX_GENERATION_OUTPUT_CHARS;
export const CONVERSATION_MAX_MESSAGES = 200;
export type ErrorCode = NonNullable<GenerationRow['errorCode']>;

/** The start of the month by the database's clock, in UTC: the month a row written now is stamped in (created_at). */
export const MONTH_OF_NOW = sql`date_trunc('month', now(), 'UTC')`;

// Literal values, not parameters: the planner matches them to the partial index generations_active_idx.
const isActive = sql`${generations.status} in (${sql.raw(ACTIVE_STATUSES.map((status) => `'${status}'`).join(', '))})`;

/** Ids are uuids: a name or a global id is checked against this before a query (a uuid column refuses anything else). */
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Options of a page of a project's generations (pageOfProjects, countOfProjects). */
export interface GenerationPageOptions {
  after?: { createdAt: Date; id: string };
  status?: GenerationStatus[];
  /** Only the generations of this session (the id of the generation that started it). */
  sessionId?: string;
}

/**
 * Newest first, in the order of generations_project_created_idx and generations_session_created_idx
 * (`desc()` in drizzle is DESC NULLS LAST): a plain `desc` (nulls first) would not match them, and
 * a page would read all of a project's generations and sort them. Neither column is ever null.
 */
const NEWEST_FIRST = [sql`${generations.createdAt} desc nulls last`, sql`${generations.id} desc nulls last`];

/** What `options` (but its keyset) asks of the generations of the project `p.id`: the condition of a page and of its count. */
function ofProjectPage(options: Omit<GenerationPageOptions, 'after'>) {
  return and(
    sql`${generations.projectId} = p.id`,
    options.sessionId !== undefined ? eq(generations.sessionId, options.sessionId) : undefined,
    options.status?.length ? inArray(generations.status, options.status) : undefined,
  );
}

/**
 * A batch's keys as rows `alias(columns)` (`columns` named as the keys' fields), sent as one
 * parameter (JSON): a batch of any size, where a parameter per value stops at 65,535.
 */
const keyRows = (keys: readonly object[], alias: string) => sql`json_to_recordset(${JSON.stringify(keys)}::json) as ${sql.raw(alias)}`;
/** Ids as rows `alias(id uuid)` (keyRows). */
const idRows = (ids: readonly string[], alias: string) => keyRows(ids.map((id) => ({ id })), `${alias}(id uuid)`);

/** The project's budget, locked until the transaction ends. */
const budgetLock = (projectId: string) => advisoryLock(`kiln.project-budget:${projectId}`);

export const generationStore = {
  async insert(tx: Tx, values: typeof generations.$inferInsert): Promise<GenerationRow> {
    const [row] = await tx.insert(generations).values(values).returning();
    return row!;
  },

  /** How many generations are QUEUED and RUNNING (the /metrics gauges); the WHERE matches generations_active_idx. */
  async countActive(tx: Tx): Promise<Map<GenerationStatus, number>> {
    const rows = await tx
      .select({ status: generations.status, count: count() })
      .from(generations)
      .where(isActive)
      .groupBy(generations.status);
    return new Map(rows.map((row) => [row.status, row.count]));
  },

  /** Which of `ids` name a generation of this database that has ended (a name that is no uuid names none). */
  async endedAmong(tx: Tx, ids: string[]): Promise<Set<string>> {
    const known = ids.filter((id) => UUID.test(id));
    if (known.length === 0) return new Set();
    const rows = await tx
      .select({ id: generations.id })
      .from(generations)
      .where(and(inArray(generations.id, known), inArray(generations.status, TERMINAL_STATUSES)));
    return new Set(rows.map((row) => row.id));
  },

  async find(tx: Tx, id: string): Promise<GenerationRow | undefined> {
    const [row] = await tx.select().from(generations).where(eq(generations.id, id));
    return row;
  },

  async findMany(tx: Tx, ids: readonly string[]): Promise<GenerationRow[]> {
    return tx.select().from(generations).where(inArray(generations.id, [...ids]));
  },

  /**
   * A page of each project's generations (of one session, if given), newest first, keyset on
   * (created_at, id): `limit` of each of `projectIds` in one statement, each project's read
   * through an index in that order as a query of its own would (a lateral subquery per project;
   * generations_project_created_idx, or generations_session_created_idx for a session), ordered
   * by project, then newest first.
   */
  async pageOfProjects(tx: Tx, projectIds: readonly string[], limit: number, options: GenerationPageOptions): Promise<GenerationRow[]> {
    const after = options.after;
    const page = tx
      .select({ id: generations.id })
      .from(generations)
      .where(
        and(
          ofProjectPage(options),
          after ? or(lt(generations.createdAt, after.createdAt), and(eq(generations.createdAt, after.createdAt), lt(generations.id, after.id))) : undefined,
        ),
      )
      .orderBy(...NEWEST_FIRST)
      .limit(limit);
    return tx
      .select()
      .from(generations)
      .where(sql`${generations.id} in (select g.id from ${idRows(projectIds, 'p')} cross join lateral (${page}) as g)`)
      .orderBy(asc(generations.projectId), desc(generations.createdAt), desc(generations.id));
  },

  /** How many generations each of `projectIds` has (of `status` and of one session, if given), each counted through the index as a query of its own would. */
  async countOfProjects(tx: Tx, projectIds: readonly string[], options: Omit<GenerationPageOptions, 'after'> = {}): Promise<{ projectId: string; total: number }[]> {
    const counted = tx
      .select({ total: sql<number>`count(*)::int` })
      .from(generations)
      .where(ofProjectPage(options));
    return rowsOf(await tx.execute(sql`select p.id as "projectId", (${counted}) as total from ${idRows(projectIds, 'p')}`));
  },

  /**
   * Serialises one user's starts until the transaction ends, so concurrent requests
   * cannot all count the same active generations and together pass the limit. With a
   * project, also that project's budget decisions (lockBudgetOfProject), taken second, in
   * the same statement.
   */
  async lockStartsOfUser(tx: Tx, userId: string, budgetOfProject?: string): Promise<void> {
    const starts = advisoryLock(`kiln.generation-starts:${userId}`);
    await tx.execute(budgetOfProject === undefined ? sql`select ${starts}` : sql`select ${starts}, ${budgetLock(budgetOfProject)}`);
  },

  /** Serialises the starts that join one session (claimSession) until the transaction ends. */
  async lockSession(tx: Tx, projectId: string, sessionId: string): Promise<void> {
    await tx.execute(sql`select ${advisoryLock(`kiln.session:${projectId}:${sessionId}`)}`);
  },

  /** Serialises budget decisions of one project (starts, reservations growing) until the transaction ends. */
  async lockBudgetOfProject(tx: Tx, projectId: string): Promise<void> {
    await tx.execute(sql`select ${budgetLock(projectId)}`);
  },

  /**
   * The month's usage of a project plus what its QUEUED and RUNNING generations hold in reserve (budget.ts):
   * of the generations created from `since` on, and before `until` when given (a month gone by).
   */
  async committedOfProject(tx: Tx, projectId: string, since: Date | SQL, until?: Date): Promise<number> {
    const [row] = await tx
      .select({
        total: sql<number>`coalesce(sum(${generations.inputTokens} + ${generations.outputTokens}
          + case when ${isActive} then ${generations.reservedTokens} else 0 end), 0)::int`,
      })
      .from(generations)
      .where(and(eq(generations.projectId, projectId), gte(generations.createdAt, since), until ? lt(generations.createdAt, until) : undefined));
    return row?.total ?? 0;
  },

  /** A RUNNING generation's reservation; nothing when it is not running. */
  async reservationOf(tx: Tx, id: string): Promise<number | undefined> {
    const [row] = await tx
      .select({ reserved: generations.reservedTokens })
      .from(generations)
      .where(and(eq(generations.id, id), eq(generations.status, 'RUNNING')));
    return row?.reserved;
  },

  async setReservation(tx: Tx, id: string, reservedTokens: number): Promise<void> {
    await tx.update(generations).set({ reservedTokens }).where(and(eq(generations.id, id), eq(generations.status, 'RUNNING')));
  },

  /**
   * A project's QUEUED generations (those of `createdBy` only, if given) end CANCELLED, and its
   * RUNNING ones are asked to stop (their workers see the request; lease recovery ends them
   * CANCELLED). Queued first: one claimed meanwhile is RUNNING by the second statement.
   */
  async stopAllOfProject(tx: Tx, projectId: string, only: { createdBy?: string } = {}): Promise<StoppedWork> {
    const now = new Date();
    const ofProject = (status: GenerationStatus) =>
      and(eq(generations.projectId, projectId), eq(generations.status, status), only.createdBy === undefined ? undefined : eq(generations.createdBy, only.createdBy));
    const cancelled = await tx
      .update(generations)
      .set({ status: 'CANCELLED', phase: 'DONE', cancelRequestedAt: now, finishedAt: now })
      .where(ofProject('QUEUED'))
      .returning();
    const stopping = await tx
      .update(generations)
      .set({ cancelRequestedAt: now })
      .where(and(ofProject('RUNNING'), isNull(generations.cancelRequestedAt)))
      .returning({ id: generations.id });
    return { cancelled, stopping: stopping.map((row) => row.id) };
  },

  async activeCountOfUser(tx: Tx, userId: string): Promise<number> {
    const [row] = await tx
      .select({ total: sql<number>`count(*)::int` })
      .from(generations)
      .where(and(eq(generations.createdBy, userId), inArray(generations.status, ACTIVE_STATUSES)));
    return row?.total ?? 0;
  },

  /** Token usage of a project since a moment (the month's start). */
  async usageOfProjects(tx: Tx, projectIds: readonly string[], since: Date | SQL) {
    return tx
      .select({
        projectId: generations.projectId,
        inputTokens: sql<number>`coalesce(sum(${generations.inputTokens}), 0)::int`,
        outputTokens: sql<number>`coalesce(sum(${generations.outputTokens}), 0)::int`,
        generationCount: sql<number>`count(*)::int`,
      })
      .from(generations)
      .where(and(inArray(generations.projectId, [...projectIds]), gte(generations.createdAt, since)))
      .groupBy(generations.projectId);
  },

  async hasUnfinishedInSession(tx: Tx, projectId: string, sessionId: string): Promise<boolean> {
    const [row] = await tx
      .select({ id: generations.id })
      .from(generations)
      .where(and(eq(generations.projectId, projectId), eq(generations.sessionId, sessionId), inArray(generations.status, ACTIVE_STATUSES)))
      .limit(1);
    return row !== undefined;
  },

  async hasSession(tx: Tx, projectId: string, sessionId: string): Promise<boolean> {
    const [row] = await tx
      .select({ id: generations.id })
      .from(generations)
      .where(and(eq(generations.projectId, projectId), eq(generations.sessionId, sessionId)))
      .limit(1);
    return row !== undefined;
  },

  async latestSucceededOfSession(tx: Tx, projectId: string, sessionId: string): Promise<GenerationRow | undefined> {
    const [row] = await tx
      .select()
      .from(generations)
      .where(and(eq(generations.projectId, projectId), eq(generations.sessionId, sessionId), eq(generations.status, 'SUCCEEDED')))
      .orderBy(desc(generations.createdAt))
      .limit(1);
    return row;
  },

  async projectOf(tx: Tx, projectId: string) {
    const [row] = await tx.select().from(projects).where(eq(projects.id, projectId));
    return row;
  },

  /** Compare-and-set: only a generation in one of `from` moves; returns it or nothing. */
  async transition(tx: Tx, id: string, from: GenerationStatus[], values: PgUpdateSetSource<typeof generations>) {
    const [row] = await tx
      .update(generations)
      .set(values)
      .where(and(eq(generations.id, id), inArray(generations.status, from)))
      .returning();
    return row;
  },

  /**
   * Usage of a run whose generation was ended elsewhere (a lapsed lease): it replaces what
   * recovery charged (its last heartbeat's), being later and whole; recording it twice changes nothing.
   */
  async keepUsage(tx: Tx, id: string, usage: LlmUsage): Promise<void> {
    await tx
      .update(generations)
      .set({ inputTokens: usage.inputTokens, outputTokens: usage.outputTokens })
      .where(and(eq(generations.id, id), not(isActive)));
  },

  /** A running generation's move to another phase; false when it is no longer running. */
  async movePhase(tx: Tx, id: string, phase: GenerationPhase): Promise<boolean> {
    const moved = await tx
      .update(generations)
      .set({ phase })
      .where(and(eq(generations.id, id), eq(generations.status, 'RUNNING')))
      .returning({ id: generations.id });
    return moved.length > 0;
  },

  /**
   * The worker's claim: QUEUED → RUNNING with a lease, started at `startedAt` (an ISO timestamp). `again`: the
   * claim runs again after a lost COMMIT reply, so a RUNNING row started at `startedAt` is
   * this claim's own, committed the first time.
   */
  async claim(tx: Tx, id: string, leaseMs: number, startedAt: string, again: boolean) {
    const stamp = sql`${startedAt}::timestamptz`;
    const archived = sql`exists (select 1 from ${projects} where ${projects.id} = ${generations.projectId} and ${projects.archivedAt} is not null)`;
    const queued = and(eq(generations.status, 'QUEUED'), not(archived));
    const claimable = again ? or(queued, and(eq(generations.status, 'RUNNING'), eq(generations.startedAt, stamp))) : queued;
    const [row] = await tx
      .update(generations)
      .set({ status: 'RUNNING', phase: 'GENERATING', startedAt: stamp, leaseExpiresAt: sql`now() + ${leaseMs} * interval '1 millisecond'` })
      .where(and(eq(generations.id, id), claimable))
      .returning();
    if (row) return row;
    // Never run in an archived project: a generation queued there despite the archive (an
    // automatic retry or a start that slipped past it) ends CANCELLED as the archive would have
    // ended it. Nothing publishes that ending: the project's live streams of unfinished
    // generations end with the archive (stream-access.ts).
    await tx
      .update(generations)
      .set({ status: 'CANCELLED', phase: 'DONE', cancelRequestedAt: sql`now()`, finishedAt: sql`now()` })
      .where(and(eq(generations.id, id), eq(generations.status, 'QUEUED'), archived));
    return undefined;
  },

  /**
   * Renews the lease of a running generation and records what it has spent so far (charged
   * if its worker dies); nothing when it is no longer running or
   * its lease has lapsed (after a database outage longer than the lease, the run is
   * handed back rather than revived: recovery may be ending it at the same moment).
   */
  async heartbeat(tx: Tx, id: string, leaseMs: number, spent: LlmUsage) {
    const [row] = await tx
      .update(generations)
      .set({ leaseExpiresAt: sql`now() + ${leaseMs} * interval '1 millisecond'`, spentInputTokens: spent.inputTokens, spentOutputTokens: spent.outputTokens })
      .where(and(eq(generations.id, id), eq(generations.status, 'RUNNING'), gt(generations.leaseExpiresAt, sql`now()`)))
      .returning({ cancelRequestedAt: generations.cancelRequestedAt });
    return row;
  },

  /** Oldest QUEUED first; `minAgeMs` skips rows a job queue is still expected to deliver. */
  async queuedIds(tx: Tx, limit: number, minAgeMs = 0): Promise<string[]> {
    const rows = await tx
      .select({ id: generations.id })
      .from(generations)
      .where(
        and(
          eq(generations.status, 'QUEUED'),
          minAgeMs > 0 ? lt(generations.createdAt, sql`now() - ${minAgeMs} * interval '1 millisecond'`) : undefined,
        ),
      )
      .orderBy(asc(generations.createdAt))
      .limit(limit);
    return rows.map((row) => row.id);
  },

  /**
   * Ends every RUNNING generation whose lease lapsed (interruptedEnding: FAILED/INTERRUPTED,
   * or CANCELLED when its stop was asked for); with `all`, every RUNNING one (embedded
   * start-up: no other process can be running them). Its usage is what its last heartbeat
   * recorded: the model was paid for it, and the exact count died with the worker.
   */
  async interruptLapsed(tx: Tx, { all = false }: { all?: boolean } = {}): Promise<GenerationRow[]> {
    return tx
      .update(generations)
      .set({
        ...interruptedEnding('The worker running this generation stopped.'),
        inputTokens: sql`${generations.spentInputTokens}`,
        outputTokens: sql`${generations.spentOutputTokens}`,
        phase: 'DONE',
        finishedAt: sql`now()`,
        leaseExpiresAt: null,
      })
      .where(and(eq(generations.status, 'RUNNING'), all ? undefined : lt(generations.leaseExpiresAt, sql`now()`)))
      .returning();
  },

  /** Who of these viewers still reaches these generations (a member of the project), and whether the project is archived. */
  async accessOf(tx: Tx, userIds: readonly string[], generationIds: readonly string[]) {
    return tx
      .select({ userId: projectMembers.userId, generationId: generations.id, archivedAt: projects.archivedAt })
      .from(generations)
      .innerJoin(projects, eq(projects.id, generations.projectId))
      .innerJoin(projectMembers, eq(projectMembers.projectId, generations.projectId))
      .where(and(inArray(generations.id, [...generationIds]), inArray(projectMembers.userId, [...userIds])));
  },

  // Pipeline writes are idempotent (ON CONFLICT DO NOTHING on their keys): a batch whose
  // commit reply was lost in a database outage is written again, never twice.

  async appendChunks(tx: Tx, rows: (typeof generationChunks.$inferInsert)[]) {
    if (rows.length > 0) await tx.insert(generationChunks).values(rows).onConflictDoNothing();
  },

  async chunksAfter(tx: Tx, generationId: string, afterSeq: number, limit: number): Promise<ChunkRow[]> {
    return tx
      .select()
      .from(generationChunks)
      .where(and(eq(generationChunks.generationId, generationId), gt(generationChunks.seq, afterSeq)))
      .orderBy(asc(generationChunks.seq))
      .limit(limit);
  },

  /**
   * A page of chunks for a viewer, in the viewer's scope: kiln.chunks_after checks
   * membership once for the page, where the row policy would once per row. The service
   * scope, a member of nothing, gets no rows from it: it reads with chunksAfter.
   */
  async chunkPageOfMember(tx: Tx, generationId: string, afterSeq: number, limit: number): Promise<ChunkEvent[]> {
    return rowsOf<ChunkEvent>(await tx.execute(sql`select seq, text, round from kiln.chunks_after(${generationId}, ${afterSeq}, ${limit})`));
  },

  /** The outputs of many generations for a viewer, in the viewer's scope: membership checked once per generation (see chunkPageOfMember). */
  async outputsOfMember(tx: Tx, generationIds: readonly string[]): Promise<{ generationId: string; output: string }[]> {
    return rowsOf<{ generationId: string; output: string }>(
      await tx.execute(sql`
        select k.id as "generationId",
               coalesce((select string_agg(c.text, '' order by c.seq) from kiln.chunks_after(k.id, -1, null) c), '') as output
          from ${idRows(generationIds, 'k')}`),
    );
  },

  async insertSteps(tx: Tx, rows: (typeof buildSteps.$inferInsert)[]) {
    if (rows.length > 0) await tx.insert(buildSteps).values(rows).onConflictDoNothing();
  },

  async updateStep(tx: Tx, generationId: string, ordinal: number, values: Partial<typeof buildSteps.$inferInsert>) {
    await tx.update(buildSteps).set(values).where(and(eq(buildSteps.generationId, generationId), eq(buildSteps.ordinal, ordinal)));
  },

  /**
   * The steps of a run that ended without finishing them: one still RUNNING was stopped
   * with it (CANCELLED), the PENDING ones never ran (SKIPPED, or CANCELLED with the run).
   */
  async closeOpenSteps(tx: Tx, generationId: string, cancelled: boolean) {
    const stopped = sql`${buildSteps.status} = 'RUNNING' or ${cancelled}`;
    await tx
      .update(buildSteps)
      .set({
        status: sql`case when ${stopped} then 'CANCELLED' else 'SKIPPED' end::build_step_status`,
        finishedAt: sql`case when ${stopped} then now() end`,
      })
      .where(and(eq(buildSteps.generationId, generationId), inArray(buildSteps.status, ['PENDING', 'RUNNING'])));
  },

  async stepsOf(tx: Tx, generationIds: readonly string[]): Promise<BuildStepRow[]> {
    return tx.select().from(buildSteps).where(inArray(buildSteps.generationId, [...generationIds])).orderBy(asc(buildSteps.ordinal));
  },

  async appendLogLines(tx: Tx, rows: (typeof buildLogLines.$inferInsert)[]) {
    if (rows.length > 0) await tx.insert(buildLogLines).values(rows).onConflictDoNothing();
  },

  async logLinesAfter(tx: Tx, generationId: string, afterSeq: number, limit: number): Promise<LogLineRow[]> {
    return tx
      .select()
      .from(buildLogLines)
      .where(and(eq(buildLogLines.generationId, generationId), gt(buildLogLines.seq, afterSeq)))
      .orderBy(asc(buildLogLines.seq))
      .limit(limit);
  },

  /** A page of log lines for a viewer, in the viewer's scope: see chunkPageOfMember. */
  async logLinePageOfMember(tx: Tx, generationId: string, afterSeq: number, limit: number): Promise<LogLineEvent[]> {
    return rowsOf<LogLineEvent>(
      await tx.execute(sql`select seq, step, stream, text, round from kiln.log_lines_after(${generationId}, ${afterSeq}, ${limit})`),
    );
  },

  /**
   * The last `count` log lines of each of many generations, oldest first, for a viewer, in the
   * viewer's scope: membership checked once per generation and count (see chunkPageOfMember).
   */
  async logTailsOfMember(tx: Tx, tails: readonly { generationId: string; count: number }[]): Promise<(LogLineEvent & { generationId: string; count: number })[]> {
    return rowsOf<LogLineEvent & { generationId: string; count: number }>(
      await tx.execute(sql`
        select k."generationId", k.count, l.seq, l.step, l.stream, l.text, l.round
          from ${keyRows(tails, 'k("generationId" uuid, count int)')}
         cross join lateral kiln.log_tail(k."generationId", k.count) as l
         order by k."generationId", k.count, l.seq`),
    );
  },

  async logTail(tx: Tx, generationId: string, count: number): Promise<LogLineRow[]> {
    const rows = await tx
      .select()
      .from(buildLogLines)
      .where(eq(buildLogLines.generationId, generationId))
      .orderBy(desc(buildLogLines.seq))
      .limit(count);
    return rows.reverse();
  },

  async insertFiles(tx: Tx, rows: FileRow[]) {
    // Large workspaces go in slices so one statement stays well under parameter limits.
    for (let i = 0; i < rows.length; i += 500) await tx.insert(generationFiles).values(rows.slice(i, i + 500)).onConflictDoNothing();
  },

  /** A version's files, in the service scope (a viewer's reads go through filesOfMember). */
  async filesOf(tx: Tx, generationId: string) {
    return tx
      .select({ path: generationFiles.path, size: generationFiles.size, sha256: generationFiles.sha256, content: generationFiles.content })
      .from(generationFiles)
      .where(eq(generationFiles.generationId, generationId))
      .orderBy(asc(generationFiles.path));
  },

  /**
   * A version's files for a viewer, in the viewer's scope: kiln.files_of checks membership
   * once for the read, where the row policy would once per file (see chunkPageOfMember).
   */
  async filesOfMember(tx: Tx, generationId: string, withContent: boolean): Promise<Pick<FileRow, 'path' | 'size' | 'sha256' | 'content'>[]> {
    return rowsOf(await tx.execute(sql`select path, size, sha256, content from kiln.files_of(${generationId}, ${withContent})`));
  },

  /**
   * The files of many versions for a viewer, in the viewer's scope, each version's in path
   * order: kiln.files_of checks membership once per version (see filesOfMember).
   */
  async filesOfMembers(tx: Tx, generationIds: readonly string[], withContent: boolean): Promise<(Pick<FileRow, 'path' | 'size' | 'sha256' | 'content'> & { generationId: string })[]> {
    return rowsOf(
      await tx.execute(sql`
        select k.id as "generationId", f.path, f.size, f.sha256, f.content
          from ${idRows(generationIds, 'k')}
         cross join lateral kiln.files_of(k.id, ${withContent}) with ordinality as f(path, size, sha256, content, n)
         order by k.id, f.n`),
    );
  },

  /**
   * The version a follow-up of `generationId` starts from: the files of the nearest generation
   * of its lineage (itself, then back as turnsOfLineage goes) that wrote any. A parent that
   * ended before writing a file (FAILED or CANCELLED while it generated) hands on the version
   * before it, never the bare template; none when no generation of the lineage wrote files.
   */
  async versionOfLineage(tx: Tx, generationId: string) {
    return tx
      .select({ path: generationFiles.path, size: generationFiles.size, sha256: generationFiles.sha256, content: generationFiles.content })
      .from(generationFiles)
      .where(sql`${generationFiles.generationId} = ${nearestVersion(generationId)}`)
      .orderBy(asc(generationFiles.path));
  },

  /** The generation whose files versionOfLineage hands on; undefined when none of the lineage wrote files. */
  async versionIdOfLineage(tx: Tx, generationId: string): Promise<string | undefined> {
    const [row] = rowsOf<{ id: string | null }>(await tx.execute(sql`select ${nearestVersion(generationId)} as id`));
    return row?.id ?? undefined;
  },

  /** The files at these (generation, path) pairs that exist (and the row policies let the scope see), in no order. */
  async filesAt(tx: Tx, keys: readonly { generationId: string; path: string }[]): Promise<FileRow[]> {
    return tx
      .select()
      .from(generationFiles)
      .where(sql`(${generationFiles.generationId}, ${generationFiles.path}) in (select k."generationId", k.path from ${keyRows(keys, 'k("generationId" uuid, path text)')})`);
  },

  async insertMessage(tx: Tx, values: typeof conversationMessages.$inferInsert) {
    await tx.insert(conversationMessages).values(values);
  },

  /**
   * The answer of a run whose generation was ended elsewhere (a lapsed lease): it still
   * belongs under its prompt, as Generation.output has it. Replaces the one lease recovery
   * wrote from the chunks it found (answersFromChunks), which may lack the run's last ones;
   * written once however often it runs. Call it holding the generation's row (an update of it
   * earlier in the transaction), as recovery does, so the two never both find none.
   */
  async setAnswer(tx: Tx, values: { projectId: string; sessionId: string; generationId: string; content: string }) {
    const replaced = await tx
      .update(conversationMessages)
      .set({ content: values.content })
      .where(and(eq(conversationMessages.generationId, values.generationId), eq(conversationMessages.role, 'MODEL')))
      .returning({ id: conversationMessages.id });
    if (replaced.length === 0) await tx.insert(conversationMessages).values({ ...values, role: 'MODEL' });
  },

  /**
   * Lease recovery's answers for the runs it ended (their workers are gone, or will find them
   * ended): each one's chunks so far, as its MODEL message, unless it has one or has no chunks.
   */
  async answersFromChunks(tx: Tx, generationIds: string[]): Promise<void> {
    if (generationIds.length === 0) return;
    await tx.execute(sql`
      insert into ${conversationMessages} (project_id, session_id, role, content, generation_id)
      select g.project_id, g.session_id, 'MODEL'::message_role, string_agg(c.text, '' order by c.seq), g.id
      from ${generations} g join ${generationChunks} c on c.generation_id = g.id
      where g.id in ${generationIds}
        and not exists (select 1 from ${conversationMessages} m where m.generation_id = g.id and m.role = 'MODEL')
      group by g.id, g.project_id, g.session_id`);
  },

  /**
   * A session's latest messages, turn by turn: in the order their generations were made,
   * each prompt before its answer. An interrupted run's answer and its retry's prompt are
   * written in one transaction, at one `now()`: their own times cannot order them. The
   * oldest are left out past CONVERSATION_MAX_MESSAGES or CONVERSATION_MAX_CHARS of content.
   */
  async conversation(tx: Tx, projectId: string, sessionId: string): Promise<MessageRow[]> {
    const turn = sql`coalesce(${generations.createdAt}, ${conversationMessages.createdAt})`;
    const newestFirst = sql`order by ${turn} desc, ${conversationMessages.generationId} desc, ${conversationMessages.role} desc, ${conversationMessages.id} desc`;
    const latest = tx
      .select({
        ...getTableColumns(conversationMessages),
        turn: sql<Date>`${turn}`.as('turn'),
        // The content of this message and every newer one.
        chars: sql<number>`sum(length(${conversationMessages.content})) over (${newestFirst} rows unbounded preceding)`.as('chars'),
        place: sql<number>`row_number() over (${newestFirst})`.as('place'),
      })
      .from(conversationMessages)
      .leftJoin(generations, eq(generations.id, conversationMessages.generationId))
      .where(and(eq(conversationMessages.projectId, projectId), eq(conversationMessages.sessionId, sessionId)))
      .as('latest');
    return tx
      .select({
        id: latest.id,
        projectId: latest.projectId,
        sessionId: latest.sessionId,
        role: latest.role,
        content: latest.content,
        generationId: latest.generationId,
        createdAt: latest.createdAt,
      })
      .from(latest)
      .where(and(lte(latest.chars, CONVERSATION_MAX_CHARS), lte(latest.place, CONVERSATION_MAX_MESSAGES)))
      .orderBy(asc(latest.turn), asc(latest.generationId), asc(latest.role), asc(latest.id));
  },

  /**
   * The conversation as it stood at `generationId`, for the next prompt: the turns of
   * the successful generations it descends from, oldest first. A restore leads back
   * through `restored_from`, so turns made after the restored version drop out; the
   * restored generation's own turn stays whatever its status, as its files do.
   */
  async turnsOfLineage(tx: Tx, generationId: string): Promise<MessageRow[]> {
    const lineage = sql`${lineageOf(generationId)} select id from lineage`;
    const restored = sql`${lineageOf(generationId)} select g.restored_from from lineage join ${generations} g on g.id = lineage.id where g.restored_from is not null`;
    return tx
      .select({ message: conversationMessages })
      .from(conversationMessages)
      .innerJoin(generations, eq(generations.id, conversationMessages.generationId))
      .where(and(sql`${conversationMessages.generationId} in (${lineage})`, or(eq(generations.status, 'SUCCEEDED'), sql`${generations.id} in (${restored})`)))
      .orderBy(asc(conversationMessages.createdAt), asc(conversationMessages.role))
      .then((rows) => rows.map((row) => row.message));
  },
};
