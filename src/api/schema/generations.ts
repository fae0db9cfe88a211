import { createContextCache } from '@pothos/core';
import DataLoader from 'dataloader';
import { z } from 'zod';
import { BudgetExceededError, NotFoundError } from '../../errors.js';
import { cancelGeneration, generationPrompt, MAX_ATTEMPTS, maxFixRounds, retryGeneration, startGeneration } from '../../generations/generations.js';
import { type GenerationPage, type GenerationPageRequest, generationReads } from '../../generations/reads.js';
import { BUILD_STEP_STATUSES, GENERATION_PHASES, GENERATION_STATUSES } from '../../generations/status.js';
import { type BuildStepRow, CONVERSATION_MAX_CHARS, CONVERSATION_MAX_MESSAGES, type GenerationRow, type MessageRow } from '../../generations/store.js';
import { buildLogs, generationChunks, generationUpdates, type LiveStream, type StreamOptions } from '../../generations/streams.js';
import { monthlyTokenLimit, setProjectBudget } from '../../projects/projects.js';
import { builder } from '../builder.js';
import { type Context, startLimits } from '../context.js';
import { addressBlock } from '../rate-limit.js';
import { idFor, idOrNullFor } from './ids.js';
import { keysetConnection } from './paging.js';
import { ProjectRef } from './projects.js';

const GenerationStatusEnum = builder.enumType('GenerationStatus', { values: GENERATION_STATUSES });
const GenerationPhaseEnum = builder.enumType('GenerationPhase', { values: GENERATION_PHASES });
const BuildStepStatusEnum = builder.enumType('BuildStepStatus', { values: BUILD_STEP_STATUSES });
const MessageRoleEnum = builder.enumType('MessageRole', { values: ['USER', 'MODEL'] as const });
const LogStreamEnum = builder.enumType('LogStream', { values: ['STDOUT', 'STDERR'] as const });
const GenerationErrorCodeEnum = builder.enumType('GenerationErrorCode', {
  values: {
    LLM_ERROR: { description: 'The model provider failed (HTTP error, rate limit, safety block, dropped stream).' },
    BUILD_FAILED: { description: "A build step exited with an error; see buildSteps and buildLog." },
    TIMEOUT: { description: 'A build step ran longer than its limit.' },
    UNSAFE_OUTPUT: { description: 'The model wrote an unsafe path; nothing was written.' },
    INVALID_OUTPUT: { description: "The model's output broke the file protocol (e.g. an unterminated file)." },
    INTERRUPTED: {
      description:
        'The worker stopped mid-run (a restart, a crash, the database away too long). A new generation (its retryOf is this one) retries it: after a restart each time up to its 10th try, after anything else once per chain of runs, and not when this was a user\'s retry.',
    },
    TOOLCHAIN_MISSING: { description: 'A build tool is not installed on the worker.' },
    BUDGET_EXCEEDED: { description: "The project's monthly token budget ran out." },
    INTERNAL: { description: 'An unexpected server error.' },
  } as const,
});

export const GenerationRef = builder.loadableNodeRef<GenerationRow, string, string>('Generation', {
  id: { resolve: (generation) => generation.id },
  load: (ids, ctx) => generationReads.many(ctx.db, ids),
  sort: (generation) => generation.id,
});

export const UsageRef = builder.objectRef<{ inputTokens: number; outputTokens: number }>('TokenUsage').implement({
  fields: (t) => ({ inputTokens: t.exposeInt('inputTokens'), outputTokens: t.exposeInt('outputTokens') }),
});

const GenerationErrorRef = builder.objectRef<{ code: NonNullable<GenerationRow['errorCode']>; message: string }>('GenerationError').implement({
  description: 'Why a generation FAILED.',
  fields: (t) => ({
    code: t.field({ type: GenerationErrorCodeEnum, resolve: (error) => error.code }),
    message: t.exposeString('message'),
  }),
});

type FileSummary = { path: string; size: number; sha256: string; content?: string };

/**
 * The contents of the versions whose file lists a request reads (Generation.files, which
 * leaves them out), by path: one read per batch of versions, however many files ask.
 */
const versionContents = createContextCache(
  (ctx: Context) =>
    new DataLoader<string, Map<string, string>>(async (ids) =>
      (await generationReads.files(ctx.db, ids, true)).map((files) => new Map(files.map((file) => [file.path, file.content]))),
    ),
);

const GeneratedFileRef = builder.objectRef<FileSummary & { generationId: string }>('GeneratedFile').implement({
  description: 'A file of the version a generation produced: the files of the version it started from (its parent\'s, or the nearest earlier one that wrote files; the template\'s for a first generation) with its own changes.',
  fields: (t) => ({
    path: t.exposeString('path', { description: 'Relative to the workspace root.' }),
    size: t.exposeInt('size', { description: 'Byte length of the UTF-8 content.' }),
    sha256: t.exposeString('sha256', { description: 'Lowercase hex SHA-256 of the UTF-8 content.' }),
    content: t.string({
      resolve: async (file, _args, ctx) => file.content ?? (await versionContents(ctx).load(file.generationId)).get(file.path) ?? '',
    }),
  }),
});

export const BuildStepRef = builder.objectRef<BuildStepRow>('BuildStep').implement({
  fields: (t) => ({
    ordinal: t.exposeInt('ordinal'),
    name: t.exposeString('name'),
    command: t.exposeString('command'),
    status: t.field({ type: BuildStepStatusEnum, resolve: (step) => step.status }),
    exitCode: t.exposeInt('exitCode', { nullable: true }),
    startedAt: t.expose('startedAt', { type: 'DateTime', nullable: true }),
    finishedAt: t.expose('finishedAt', { type: 'DateTime', nullable: true }),
    durationMs: t.int({
      nullable: true,
      resolve: (step) => (step.startedAt && step.finishedAt ? step.finishedAt.getTime() - step.startedAt.getTime() : null),
    }),
  }),
});

export const ChunkRef = builder.objectRef<{ seq: number; text: string; round?: number }>('GenerationChunk').implement({
  description: 'A piece of the model output; seqs start at 0 and are contiguous.',
  fields: (t) => ({ seq: t.exposeInt('seq'), text: t.exposeString('text') }),
});

export const LogLineRef = builder.objectRef<{ seq: number; step: string; stream: 'STDOUT' | 'STDERR'; text: string; round?: number }>('BuildLogLine').implement({
  description: 'One line of build output; seqs start at 0 and are contiguous across steps.',
  fields: (t) => ({
    seq: t.exposeInt('seq'),
    step: t.exposeString('step'),
    stream: t.field({ type: LogStreamEnum, resolve: (line) => line.stream }),
    text: t.exposeString('text'),
  }),
});

const MessageRef = builder.objectRef<MessageRow>('ConversationMessage').implement({
  fields: (t) => ({
    role: t.field({ type: MessageRoleEnum, resolve: (message) => message.role }),
    content: t.exposeString('content'),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    generation: t.field({ type: GenerationRef, nullable: true, resolve: (message) => message.generationId }),
  }),
});

GenerationRef.implement({
  fields: (t) => ({
    project: t.field({ type: ProjectRef, resolve: (g) => g.projectId }),
    status: t.field({ type: GenerationStatusEnum, resolve: (g) => g.status }),
    phase: t.field({ type: GenerationPhaseEnum, resolve: (g) => g.phase }),
    prompt: t.exposeString('prompt'),
    sessionId: t.exposeID('sessionId', { description: 'Pass it to startGeneration to continue this conversation.' }),
    attempt: t.exposeInt('attempt'),
    provider: t.exposeString('provider'),
    model: t.exposeString('model'),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    startedAt: t.expose('startedAt', { type: 'DateTime', nullable: true }),
    finishedAt: t.expose('finishedAt', { type: 'DateTime', nullable: true }),
    cancelRequestedAt: t.expose('cancelRequestedAt', { type: 'DateTime', nullable: true }),
    error: t.field({
      type: GenerationErrorRef,
      nullable: true,
      resolve: (g) => (g.errorCode ? { code: g.errorCode, message: g.errorMessage ?? '' } : null),
    }),
    usage: t.field({
      type: UsageRef,
      description:
        "What the model was paid for: the provider's count where it gave one, else an estimate of what streamed. While the generation runs, what it has spent so far as of its last heartbeat (about a second ago), which Project.usage counts only once it ends; a generation whose worker died keeps that last figure.",
      resolve: (g) => (g.status === 'RUNNING' ? { inputTokens: g.spentInputTokens, outputTokens: g.spentOutputTokens } : g),
    }),
    parent: t.field({ type: GenerationRef, nullable: true, resolve: (g) => g.parentId }),
    retryOf: t.field({ type: GenerationRef, nullable: true, resolve: (g) => g.retryOf }),
    output: t.loadable({
      type: 'String',
      description: 'The model output so far: exactly the concatenation of its chunks.',
      load: (ids: string[], ctx) => generationReads.outputs(ctx.db, ids),
      resolve: (g) => g.id,
    }),
    files: t.loadableList({
      type: GeneratedFileRef,
      load: async (ids: string[], ctx) =>
        (await generationReads.files(ctx.db, ids, false)).map((files) => files.map(({ content: _, ...file }) => file)),
      resolve: (g) => g.id,
    }),
    file: t.loadable({
      type: GeneratedFileRef,
      nullable: true,
      args: { path: t.arg.string({ required: true }) },
      load: async (keys: { generationId: string; path: string }[], ctx) => (await generationReads.filesAt(ctx.db, keys)).map((file) => file ?? null),
      loaderOptions: { cacheKeyFn: (key) => JSON.stringify([key.generationId, key.path]) },
      resolve: (g, args) => ({ generationId: g.id, path: args.path }),
    }),
    buildSteps: t.loadableList({
      type: BuildStepRef,
      load: async (ids: string[], ctx) => {
        const rows = await generationReads.steps(ctx.db, ids);
        return ids.map((id) => rows.filter((row) => row.generationId === id));
      },
      resolve: (g) => g.id,
    }),
    buildLog: t.loadableList({
      type: LogLineRef,
      description: 'The last `tail` lines of the build (at most 1000).',
      args: { tail: t.arg.int({ defaultValue: 200, validate: z.number().int().min(1).max(1000) }) },
      load: (tails: { generationId: string; count: number }[], ctx) => generationReads.logTails(ctx.db, tails),
      loaderOptions: { cacheKeyFn: (tail) => JSON.stringify([tail.generationId, tail.count]) },
      resolve: (g, args) => ({ generationId: g.id, count: args.tail ?? 200 }),
    }),
  }),
});

const ProjectUsageRef = builder.objectRef<{ inputTokens: number; outputTokens: number; generationCount: number }>('ProjectUsage').implement({
  description: "This calendar month's usage (UTC).",
  fields: (t) => ({
    inputTokens: t.exposeInt('inputTokens'),
    outputTokens: t.exposeInt('outputTokens'),
    generationCount: t.exposeInt('generationCount'),
  }),
});

const BudgetRef = builder.objectRef<{ monthlyTokenLimit: number | null }>('ProjectBudget').implement({
  fields: (t) => ({
    monthlyTokenLimit: t.exposeInt('monthlyTokenLimit', { nullable: true, description: 'Input plus output tokens a month; null means no limit.' }),
  }),
});

/** Pages of Project.generations: the projects of a list, one read per batch (generationReads.pages). */
const generationPages = createContextCache(
  (ctx: Context) => new DataLoader<GenerationPageRequest, GenerationPage>((requests) => generationReads.pages(ctx.db, requests)),
);

/** A session's id as Generation.sessionId gives it and startGeneration takes it: the uuid of the generation that started the session. */
const sessionIdShape = z.uuid('Not a valid session id.');

builder.objectFields(ProjectRef, (t) => ({
  generations: t.connection({
    type: GenerationRef,
    description: 'Newest first, of every session or of one (sessionId); totalCount counts the generations the arguments select.',
    args: {
      status: t.arg({ type: [GenerationStatusEnum], required: false }),
      sessionId: t.arg.id({
        required: false,
        description: "Only this session's generations: a Generation.sessionId (not a global id). One that is not a uuid is a validation error; one of no session of the project, an empty list.",
        validate: sessionIdShape.nullish(),
      }),
    },
    resolve: (project, args, ctx) =>
      keysetConnection(args, ({ limit, after }) =>
        generationPages(ctx).load({
          projectId: project.id,
          limit,
          after,
          status: args.status ?? undefined,
          sessionId: args.sessionId == null ? undefined : String(args.sessionId).toLowerCase(),
        }),
      ),
  }),
  usage: t.loadable({
    type: ProjectUsageRef,
    load: async (ids: string[], ctx) => {
      const rows = await generationReads.usage(ctx.db, ids);
      return ids.map((id) => rows.find((row) => row.projectId === id) ?? { inputTokens: 0, outputTokens: 0, generationCount: 0 });
    },
    resolve: (project) => project.id,
  }),
  budget: t.field({ type: BudgetRef, resolve: (project) => ({ monthlyTokenLimit: project.monthlyTokenLimit }) }),
  conversation: t.field({
    type: [MessageRef],
    description:
      "A session's latest messages in order: per generation the USER prompt, then the MODEL reply. " +
      `At most ${CONVERSATION_MAX_MESSAGES} messages whose contents add up to at most ${CONVERSATION_MAX_CHARS.toLocaleString('en')} characters ` +
      '(the latest turn always fits); older ones are left out.',
    args: { sessionId: t.arg.id({ required: true }) },
    resolve: (project, args, ctx) => {
      const sessionId = String(args.sessionId);
      return uuid.safeParse(sessionId).success ? generationReads.conversation(ctx.db, project.id, sessionId) : [];
    },
  }),
}));

const uuid = z.uuid();

const StartGenerationInput = builder.inputType('StartGenerationInput', {
  description: 'Without sessionId a new session starts; Generation.sessionId tells which.\nmaxFixRounds: 0 turns self-healing off; null takes the server default; at most 5.',
  fields: (t) => ({
    projectId: t.globalID({ required: true }).validate(idFor('Project')),
    prompt: t.string({ required: true, validate: generationPrompt }),
    sessionId: t.id({ validate: sessionIdShape.nullish() }),
    parentGenerationId: t.globalID().validate(idFor('Generation')),
    maxFixRounds: t.int({ validate: maxFixRounds.nullish() }),
  }),
});

const SetProjectBudgetInput = builder.inputType('SetProjectBudgetInput', {
  description: 'monthlyTokenLimit null removes the limit.',
  fields: (t) => ({
    projectId: t.globalID({ required: true }).validate(idFor('Project')),
    monthlyTokenLimit: t.int({ validate: monthlyTokenLimit.optional() }),
  }),
});

builder.queryField('generation', (t) =>
  t.field({
    type: GenerationRef,
    nullable: true,
    authScopes: { signedIn: true },
    args: { id: t.arg.globalID({ required: true }).validate(idOrNullFor('Generation')) },
    resolve: (_root, args) => args.id,
  }),
);

builder.mutationFields((t) => ({
  startGeneration: t.field({
    type: GenerationRef,
    errors: { types: [BudgetExceededError] },
    description:
      'Queues a generation and returns it at once (QUEUED); follow it with the subscriptions. A session runs one generation at a time: joining one (sessionId, or a parent of it) while another of it is queued or running is an InvalidStateError; a sessionId that names no generation of the project is a NotFoundError.',
    args: { input: t.arg({ type: StartGenerationInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      startGeneration(ctx.db, startLimits(ctx), {
        projectId: input.projectId,
        prompt: input.prompt,
        sessionId: input.sessionId == null ? null : String(input.sessionId).toLowerCase(),
        parentGenerationId: input.parentGenerationId ?? null,
        maxFixRounds: input.maxFixRounds ?? null,
      }),
  }),
  cancelGeneration: t.field({
    type: GenerationRef,
    errors: {},
    description: 'A QUEUED generation ends at once; a RUNNING one stops within a second.',
    args: { id: t.arg.globalID({ required: true }).validate(idFor('Generation')) },
    resolve: (_root, args, ctx) => cancelGeneration(ctx.db, ctx.useCases.generations, args.id),
  }),
  retryGeneration: t.field({
    type: GenerationRef,
    errors: { types: [BudgetExceededError] },
    description: `Starts a new generation with the same prompt, session and parent (retryOf points back); a restore's retry restores the same files again. Refused while another generation of the session is queued or running, and after a prompt's ${MAX_ATTEMPTS}th attempt.`,
    args: { id: t.arg.globalID({ required: true }).validate(idFor('Generation')) },
    resolve: (_root, args, ctx) => retryGeneration(ctx.db, startLimits(ctx), args.id),
  }),
  setProjectBudget: t.field({
    type: ProjectRef,
    errors: {},
    args: { input: t.arg({ type: SetProjectBudgetInput, required: true }) },
    resolve: (_root, { input }, ctx) => setProjectBudget(ctx.db, { projectId: input.projectId, monthlyTokenLimit: input.monthlyTokenLimit }),
  }),
}));

// ---------------------------------------------------------------- live streams

builder.subscriptionFields((t) => ({
  generationChunks: t.field({
    type: ChunkRef,
    authScopes: { signedIn: true },
    description: 'Replays chunks after afterSeq (all without it), then goes on live; completes when the generation has ended (a fix round may add output after a build).',
    args: { generationId: t.arg.globalID({ required: true }).validate(idOrNullFor('Generation')), afterSeq: t.arg.int() },
    subscribe: (_root, args, ctx) =>
      watched(ctx, args.generationId, (generationId) =>
        generationChunks({ ...streamOptions(ctx, generationId), afterSeq: args.afterSeq }),
      ),
    resolve: (chunk) => chunk,
  }),
  buildLogs: t.field({
    type: LogLineRef,
    authScopes: { signedIn: true },
    description: 'Replays build-log lines after afterSeq, then goes on live; completes when the generation has ended.',
    args: { generationId: t.arg.globalID({ required: true }).validate(idOrNullFor('Generation')), afterSeq: t.arg.int() },
    subscribe: (_root, args, ctx) =>
      watched(ctx, args.generationId, (generationId) =>
        buildLogs({ ...streamOptions(ctx, generationId), afterSeq: args.afterSeq }),
      ),
    resolve: (line) => line,
  }),
  generationUpdated: t.field({
    type: GenerationRef,
    authScopes: { signedIn: true },
    description: 'The current state first, then every status or phase change; completes after the final state.',
    args: { generationId: t.arg.globalID({ required: true }).validate(idOrNullFor('Generation')) },
    subscribe: (_root, args, ctx) =>
      watched(ctx, args.generationId, (generationId) => generationUpdates(streamOptions(ctx, generationId))),
    resolve: (generation) => generation,
  }),
}));

/** What every live stream of a request is opened with: the viewer's scope and the server's bus and settings. */
function streamOptions(ctx: Context, generationId: string): StreamOptions {
  const { bus, maxQueued, pollMs } = ctx.useCases.streams;
  return { scope: ctx.db, bus, generationId, maxQueued, pollMs };
}

/**
 * The stream, ended with a typed error once the viewer's access ends (token, session,
 * membership, archive). It takes one of the viewer's LIVE_STREAMS_PER_USER and one of the
 * client address's LIVE_STREAMS_PER_ADDRESS slots until it is over, over SSE and graphql-ws
 * alike (on a socket, besides the socket's own): beyond either it is refused with
 * TOO_MANY_STREAMS. A malformed id, or one of another type, is not found, like an unknown one.
 */
function watched<T>(ctx: Context, generationId: string | null | undefined, open: (generationId: string) => Promise<LiveStream<T>>): Promise<LiveStream<T>> {
  if (!generationId) throw new NotFoundError('Generation not found.');
  const viewer = ctx.viewer!; // authScopes signedIn
  const sse = ctx.transport === 'http';
  // A socket closes itself when its token expires (4403, the client refreshes and reconnects); an SSE stream ends at `exp`.
  const exp = sse ? viewer.claims.exp : undefined;
  return ctx.useCases.streams.access.watch({ id: viewer.id, accessToken: viewer.accessToken, exp, address: addressBlock(ctx.clientIp) }, generationId, () => open(generationId));
}
