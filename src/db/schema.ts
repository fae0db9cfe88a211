import { sql } from 'drizzle-orm';
import {
  bigint,
  boolean,
  check,
  customType,
  index,
  integer,
  pgEnum,
  pgPolicy,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core';
import { anonRole, authenticatedRole, authUid } from 'drizzle-orm/supabase';

// The whole data model of DESIGN.md. Policies stand beside their tables; the
// SECURITY DEFINER helpers they call (kiln.project_role, kiln.generation_role,
// kiln.shares_project) live in drizzle/0000_helpers.sql, kiln.viewer_project_ids in
// drizzle/0014_viewer_projects_once.sql.

export const projectTarget = pgEnum('project_target', ['FLUTTER', 'WEB']);
export const projectRole = pgEnum('project_role', ['owner', 'editor', 'viewer']);
export const generationStatus = pgEnum('generation_status', ['QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED']);
export const generationPhase = pgEnum('generation_phase', ['QUEUED', 'GENERATING', 'WRITING', 'BUILDING', 'FIXING', 'DONE']);
export const buildStepStatus = pgEnum('build_step_status', ['PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED', 'SKIPPED']);
export const projectSecretName = pgEnum('project_secret_name', ['GEMINI_API_KEY', 'OPENAI_API_KEY']);
export const messageRole = pgEnum('message_role', ['USER', 'MODEL']);
export const logStream = pgEnum('log_stream', ['STDOUT', 'STDERR']);
export const diagnosticSeverity = pgEnum('diagnostic_severity', ['ERROR', 'WARNING', 'INFO']);
export const fixRoundStatus = pgEnum('fix_round_status', ['RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED']);
/** SOURCE: the generation's files (Generation.files); BUNDLE: the web bundle its build produced. */
export const artifactKind = pgEnum('artifact_kind', ['SOURCE', 'BUNDLE']);

const bytea = customType<{ data: Buffer; driverData: Buffer }>({ dataType: () => 'bytea' });

export const generationErrorCodes = [
  'LLM_ERROR', 'BUILD_FAILED', 'TIMEOUT', 'UNSAFE_OUTPUT', 'INVALID_OUTPUT', 'INTERRUPTED', 'TOOLCHAIN_MISSING', 'BUDGET_EXCEEDED', 'INTERNAL',
] as const;

// Millisecond precision: a JavaScript Date round-trips exactly, so keyset cursors are exact.
const createdAt = () => timestamp('created_at', { withTimezone: true, precision: 3 }).notNull().defaultNow();
// The viewer's projects with one of the roles (kiln.project_role's answer), built once per
// statement for each policy: an uncorrelated IN subquery is a hashed set, where
// kiln.project_role in the policy ran for every row (drizzle/0014_viewer_projects_once.sql).
const inViewerProjects = (projectId: unknown, roles: string) => sql`${projectId} in (select kiln.viewer_project_ids(${sql.raw(`'{${roles}}'`)}))`;
const isMember = (projectId: unknown) => inViewerProjects(projectId, 'owner,editor,viewer');
const canEdit = (projectId: unknown) => inViewerProjects(projectId, 'owner,editor');
const isOwner = (projectId: unknown) => inViewerProjects(projectId, 'owner');
// Beside another test in an OR (projects_select_member): `= any (array(...))` hands an index
// scan the viewer's projects as one array, so the OR is a BitmapOr over two indexes, where an
// IN subquery under an OR is a hashed filter over every row of the table: each list of
// projects read all of them (drizzle/0017_projects_by_index_member_role.sql).
const anyViewerProject = (projectId: unknown, roles: string) =>
  sql`${projectId} = any (array(select kiln.viewer_project_ids(${sql.raw(`'{${roles}}'`)})))`;
const canReadGeneration = (generationId: unknown) => sql`kiln.generation_role(${generationId}) is not null`;
/**
 * A user's writes count only through Kiln's request scope, which sets `kiln.request`
 * (src/db/scope.ts). On Supabase the Data API reaches these tables with the user's own
 * token, and a write there would skip what only the use-cases check: an archived project,
 * rate limits, the budget's reservation, one run at a time per session.
 */
const writesThroughKiln = (table: string, commands: ('insert' | 'update' | 'delete')[]) =>
  commands.map((command) =>
    pgPolicy(`${table}_${command}_through_kiln`, {
      as: 'restrictive',
      for: command,
      to: authenticatedRole,
      ...(command === 'insert' ? {} : { using: throughKiln }),
      ...(command === 'delete' ? {} : { withCheck: throughKiln }),
    }),
  );
const throughKiln = sql`current_setting('kiln.request', true) = 'api'`;
/** Tables only the server (service scope) touches: requests never read them. */
const serverOnly = (table: string) =>
  pgPolicy(`${table}_server_only`, { as: 'restrictive', for: 'all', to: [anonRole, authenticatedRole], using: sql`false`, withCheck: sql`false` });

/** Profiles of every user either auth provider knows: the directory for membership by email. */
export const users = pgTable(
  'users',
  {
    id: uuid('id').primaryKey(),
    email: text('email').notNull(),
    createdAt: createdAt(),
  },
  (t) => [
    uniqueIndex('users_email_key').on(t.email),
    check('users_email_lowercase', sql`${t.email} = lower(${t.email})`),
    pgPolicy('users_select_self_or_teammate', {
      for: 'select',
      to: authenticatedRole,
      using: sql`${t.id} = ${authUid} or kiln.shares_project(${t.id})`,
    }),
  ],
).enableRLS();

export const projects = pgTable(
  'projects',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    ownerId: uuid('owner_id').notNull().references(() => users.id),
    name: text('name').notNull(),
    description: text('description'),
    target: projectTarget('target').notNull(),
    createdAt: createdAt(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
    archivedAt: timestamp('archived_at', { withTimezone: true }),
    monthlyTokenLimit: bigint('monthly_token_limit', { mode: 'number' }),
  },
  (t) => [
    index('projects_owner_id_idx').on(t.ownerId),
    index('projects_created_at_idx').on(t.createdAt.desc(), t.id.desc()),
    check('projects_name_length', sql`char_length(${t.name}) between 1 and 100`),
    check('projects_description_length', sql`char_length(${t.description}) <= 2000`),
    check('projects_budget_positive', sql`${t.monthlyTokenLimit} > 0`),
    // The owner sees the row before its membership exists (INSERT … RETURNING).
    pgPolicy('projects_select_member', { for: 'select', to: authenticatedRole, using: sql`${t.ownerId} = ${authUid} or ${anyViewerProject(t.id, 'owner,editor,viewer')}` }),
    pgPolicy('projects_insert_self', { for: 'insert', to: authenticatedRole, withCheck: sql`${t.ownerId} = ${authUid}` }),
    pgPolicy('projects_update_editor', { for: 'update', to: authenticatedRole, using: canEdit(t.id), withCheck: canEdit(t.id) }),
    ...writesThroughKiln('projects', ['insert', 'update']),
  ],
).enableRLS();

export const projectMembers = pgTable(
  'project_members',
  {
    projectId: uuid('project_id').notNull().references(() => projects.id, { onDelete: 'cascade' }),
    userId: uuid('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
    role: projectRole('role').notNull(),
    createdAt: createdAt(),
  },
  (t) => [
    primaryKey({ columns: [t.projectId, t.userId] }),
    index('project_members_user_id_idx').on(t.userId),
    pgPolicy('project_members_select_member', { for: 'select', to: authenticatedRole, using: isMember(t.projectId) }),
    // kiln.viewer_project_ids counts the project's owner_id as owner (as kiln.project_role does), so the creator can add itself.
    pgPolicy('project_members_insert_owner', { for: 'insert', to: authenticatedRole, withCheck: isOwner(t.projectId) }),
    pgPolicy('project_members_update_owner', { for: 'update', to: authenticatedRole, using: isOwner(t.projectId), withCheck: isOwner(t.projectId) }),
    pgPolicy('project_members_delete_owner', { for: 'delete', to: authenticatedRole, using: isOwner(t.projectId) }),
    ...writesThroughKiln('project_members', ['insert', 'update', 'delete']),
  ],
).enableRLS();

/** Bring-your-own keys, AES-256-GCM under KILN_ENCRYPTION_KEY; requests never read `ciphertext`. */
export const projectSecrets = pgTable(
  'project_secrets',
  {
    projectId: uuid('project_id').notNull().references(() => projects.id, { onDelete: 'cascade' }),
    name: projectSecretName('name').notNull(),
    ciphertext: text('ciphertext').notNull(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ columns: [t.projectId, t.name] }),
    pgPolicy('project_secrets_select_member', { for: 'select', to: authenticatedRole, using: isMember(t.projectId) }),
    pgPolicy('project_secrets_insert_owner', { for: 'insert', to: authenticatedRole, withCheck: isOwner(t.projectId) }),
    pgPolicy('project_secrets_update_owner', { for: 'update', to: authenticatedRole, using: isOwner(t.projectId), withCheck: isOwner(t.projectId) }),
    pgPolicy('project_secrets_delete_owner', { for: 'delete', to: authenticatedRole, using: isOwner(t.projectId) }),
    ...writesThroughKiln('project_secrets', ['insert', 'update', 'delete']),
  ],
).enableRLS();

export const generations = pgTable(
  'generations',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    projectId: uuid('project_id').notNull().references(() => projects.id, { onDelete: 'cascade' }),
    createdBy: uuid('created_by').notNull().references(() => users.id),
    sessionId: uuid('session_id').notNull(),
    parentId: uuid('parent_id').references((): any => generations.id),
    retryOf: uuid('retry_of').references((): any => generations.id),
    /** A restore: this generation's files are exactly those of `restored_from`, built again with no LLM call. */
    restoredFrom: uuid('restored_from').references((): any => generations.id),
    /** Self-healing rounds this run may take, resolved at start (AUTO_FIX_MAX_ROUNDS when the client gave none). */
    maxFixRounds: integer('max_fix_rounds').notNull().default(0),
    prompt: text('prompt').notNull(),
    status: generationStatus('status').notNull().default('QUEUED'),
    phase: generationPhase('phase').notNull().default('QUEUED'),
    provider: text('provider').notNull(),
    model: text('model').notNull(),
    attempt: integer('attempt').notNull().default(1),
    /**
     * Whether an unplanned end (a worker that died, a lease that lapsed, a database away too
     * long) would still get an automatic retry: a chain of runs gets one, a user's retry none,
     * and a run handed back by its worker's planned stop (a restart) spends none. Null (rows
     * from before, or written by an older instance during a deploy): spent for a retry, not
     * for a first run (retrySpent in worker.ts).
     */
    retrySpent: boolean('retry_spent'),
    errorCode: text('error_code').$type<(typeof generationErrorCodes)[number]>(),
    errorMessage: text('error_message'),
    inputTokens: integer('input_tokens').notNull().default(0),
    outputTokens: integer('output_tokens').notNull().default(0),
    /**
     * Tokens held against the project's monthly budget while the run is QUEUED or RUNNING
     * (an estimate at start, grown while it streams); its usage replaces them when it ends.
     */
    reservedTokens: integer('reserved_tokens').notNull().default(0),
    /**
     * What a RUNNING generation has spent so far (estimated as it streams), as its last
     * heartbeat recorded it: its usage when it ends with its worker, which took the exact count along.
     */
    spentInputTokens: integer('spent_input_tokens').notNull().default(0),
    spentOutputTokens: integer('spent_output_tokens').notNull().default(0),
    cancelRequestedAt: timestamp('cancel_requested_at', { withTimezone: true }),
    leaseExpiresAt: timestamp('lease_expires_at', { withTimezone: true }),
    createdAt: createdAt(),
    startedAt: timestamp('started_at', { withTimezone: true }),
    finishedAt: timestamp('finished_at', { withTimezone: true }),
  },
  (t) => [
    index('generations_project_created_idx').on(t.projectId, t.createdAt.desc(), t.id.desc()),
    index('generations_created_by_idx').on(t.createdBy),
    index('generations_parent_id_idx').on(t.parentId),
    index('generations_retry_of_idx').on(t.retryOf),
    index('generations_restored_from_idx').on(t.restoredFrom),
    // A session's generations newest first, in the order a page asks for (generationStore.pageOfProjects),
    // so Project.generations(sessionId:) reads a page and stops; its prefix serves the session's other
    // reads (a run in progress, the latest success).
    index('generations_session_created_idx').on(t.projectId, t.sessionId, t.createdAt.desc(), t.id.desc()),
    index('generations_active_idx').on(t.status).where(sql`${t.status} in ('QUEUED', 'RUNNING')`),
    check('generations_prompt_length', sql`char_length(${t.prompt}) between 1 and 20000`),
    check('generations_tokens_positive', sql`${t.inputTokens} >= 0 and ${t.outputTokens} >= 0`),
    check('generations_reserved_tokens_positive', sql`${t.reservedTokens} >= 0`),
    check('generations_spent_tokens_positive', sql`${t.spentInputTokens} >= 0 and ${t.spentOutputTokens} >= 0`),
    // MAX_ATTEMPTS (generations.ts): retryGeneration refuses to go past it.
    check('generations_attempt_range', sql`${t.attempt} between 1 and 100`),
    check('generations_max_fix_rounds_range', sql`${t.maxFixRounds} between 0 and 5`),
    check(
      'generations_error_code',
      sql`${t.errorCode} in ('LLM_ERROR', 'BUILD_FAILED', 'TIMEOUT', 'UNSAFE_OUTPUT', 'INVALID_OUTPUT', 'INTERRUPTED', 'TOOLCHAIN_MISSING', 'BUDGET_EXCEEDED', 'INTERNAL')`,
    ),
    pgPolicy('generations_select_member', { for: 'select', to: authenticatedRole, using: isMember(t.projectId) }),
    pgPolicy('generations_insert_editor', {
      for: 'insert',
      to: authenticatedRole,
      withCheck: sql`${t.createdBy} = ${authUid} and ${canEdit(t.projectId)}`,
    }),
    pgPolicy('generations_update_editor', { for: 'update', to: authenticatedRole, using: canEdit(t.projectId), withCheck: canEdit(t.projectId) }),
    ...writesThroughKiln('generations', ['insert', 'update']),
  ],
).enableRLS();

const generationId = () => uuid('generation_id').notNull().references(() => generations.id, { onDelete: 'cascade' });
const round = () => integer('round').notNull().default(0);
const memberReads = (table: string, t: { generationId: unknown }) =>
  pgPolicy(`${table}_select_member`, { for: 'select', to: authenticatedRole, using: canReadGeneration(t.generationId) });

export const generationChunks = pgTable(
  'generation_chunks',
  // round: 0 for the first answer, N for fix round N.
  { generationId: generationId(), seq: integer('seq').notNull(), text: text('text').notNull(), round: round() },
  (t) => [primaryKey({ columns: [t.generationId, t.seq] }), memberReads('generation_chunks', t)],
).enableRLS();

export const buildSteps = pgTable(
  'build_steps',
  {
    generationId: generationId(),
    ordinal: integer('ordinal').notNull(),
    name: text('name').notNull(),
    command: text('command').notNull(),
    status: buildStepStatus('status').notNull().default('PENDING'),
    exitCode: integer('exit_code'),
    // Ordinals go on across rounds: a fix round's build steps follow the previous round's.
    round: round(),
    startedAt: timestamp('started_at', { withTimezone: true }),
    finishedAt: timestamp('finished_at', { withTimezone: true }),
  },
  (t) => [primaryKey({ columns: [t.generationId, t.ordinal] }), memberReads('build_steps', t)],
).enableRLS();

export const buildLogLines = pgTable(
  'build_log_lines',
  {
    generationId: generationId(),
    seq: integer('seq').notNull(),
    step: text('step').notNull(),
    stream: logStream('stream').notNull(),
    text: text('text').notNull(),
    round: round(),
    createdAt: createdAt(),
  },
  (t) => [primaryKey({ columns: [t.generationId, t.seq] }), memberReads('build_log_lines', t)],
).enableRLS();

export const generationFiles = pgTable(
  'generation_files',
  {
    generationId: generationId(),
    path: text('path').notNull(),
    content: text('content').notNull(),
    size: integer('size').notNull(),
    sha256: text('sha256').notNull(),
  },
  (t) => [primaryKey({ columns: [t.generationId, t.path] }), memberReads('generation_files', t)],
).enableRLS();

/** What a build tool reported, parsed per round (src/toolchain/diagnostics.ts). */
export const generationDiagnostics = pgTable(
  'generation_diagnostics',
  {
    generationId: generationId(),
    round: round(),
    ordinal: integer('ordinal').notNull(),
    tool: text('tool').notNull(),
    severity: diagnosticSeverity('severity').notNull(),
    path: text('path'),
    line: integer('line'),
    column: integer('column'),
    code: text('code'),
    message: text('message').notNull(),
  },
  (t) => [primaryKey({ columns: [t.generationId, t.round, t.ordinal] }), memberReads('generation_diagnostics', t)],
).enableRLS();

/** Self-healing rounds (1…max_fix_rounds) of a generation, with their own usage. */
export const fixRounds = pgTable(
  'fix_rounds',
  {
    generationId: generationId(),
    round: integer('round').notNull(),
    status: fixRoundStatus('status').notNull().default('RUNNING'),
    inputTokens: integer('input_tokens').notNull().default(0),
    outputTokens: integer('output_tokens').notNull().default(0),
    startedAt: timestamp('started_at', { withTimezone: true, precision: 3 }).notNull().defaultNow(),
    finishedAt: timestamp('finished_at', { withTimezone: true, precision: 3 }),
  },
  (t) => [primaryKey({ columns: [t.generationId, t.round] }), check('fix_rounds_round_range', sql`${t.round} between 1 and 5`), memberReads('fix_rounds', t)],
).enableRLS();

/** Which content-addressed blobs make up a generation's sources and web bundle (src/artifacts/). */
export const generationArtifacts = pgTable(
  'generation_artifacts',
  {
    generationId: generationId(),
    kind: artifactKind('kind').notNull(),
    path: text('path').notNull(),
    sha256: text('sha256').notNull(),
    size: bigint('size', { mode: 'number' }).notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.generationId, t.kind, t.path] }),
    index('generation_artifacts_sha256_idx').on(t.sha256),
    memberReads('generation_artifacts', t),
  ],
).enableRLS();

/** Blob bytes when the artefact store is the database (ARTIFACT_STORE=postgres); keyed by sha256, shared across generations. */
export const artifactBlobs = pgTable(
  'artifact_blobs',
  {
    sha256: text('sha256').primaryKey(),
    size: bigint('size', { mode: 'number' }).notNull(),
    content: bytea('content').notNull(),
    createdAt: createdAt(),
  },
  () => [serverOnly('artifact_blobs')],
).enableRLS();

export const conversationMessages = pgTable(
  'conversation_messages',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    projectId: uuid('project_id').notNull().references(() => projects.id, { onDelete: 'cascade' }),
    sessionId: uuid('session_id').notNull(),
    role: messageRole('role').notNull(),
    content: text('content').notNull(),
    generationId: uuid('generation_id').references(() => generations.id, { onDelete: 'cascade' }),
    createdAt: createdAt(),
  },
  (t) => [
    index('conversation_messages_session_idx').on(t.projectId, t.sessionId, t.createdAt),
    index('conversation_messages_generation_id_idx').on(t.generationId),
    pgPolicy('conversation_messages_select_member', { for: 'select', to: authenticatedRole, using: isMember(t.projectId) }),
    pgPolicy('conversation_messages_insert_editor', { for: 'insert', to: authenticatedRole, withCheck: sql`${t.role} = 'USER' and ${canEdit(t.projectId)}` }),
    ...writesThroughKiln('conversation_messages', ['insert']),
  ],
).enableRLS();

// ---------------------------------------------------------------- local auth provider (server only)

export const localCredentials = pgTable(
  'local_credentials',
  {
    userId: uuid('user_id').primaryKey().references(() => users.id, { onDelete: 'cascade' }),
    passwordHash: text('password_hash').notNull(),
    createdAt: createdAt(),
  },
  () => [serverOnly('local_credentials')],
).enableRLS();

export const authSessions = pgTable(
  'auth_sessions',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: uuid('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
    createdAt: createdAt(),
    refreshedAt: timestamp('refreshed_at', { withTimezone: true }),
    revokedAt: timestamp('revoked_at', { withTimezone: true }),
    revokedReason: text('revoked_reason'),
  },
  (t) => [
    index('auth_sessions_user_id_idx').on(t.userId),
    // The hourly pruning's two ways a session ends (src/auth/local-store.ts, ended): without them it reads every session.
    index('auth_sessions_created_at_idx').on(t.createdAt),
    index('auth_sessions_revoked_at_idx').on(t.revokedAt).where(sql`revoked_at is not null`),
    serverOnly('auth_sessions'),
  ],
).enableRLS();

export const refreshTokens = pgTable(
  'refresh_tokens',
  {
    tokenHash: text('token_hash').primaryKey(),
    sessionId: uuid('session_id').notNull().references(() => authSessions.id, { onDelete: 'cascade' }),
    createdAt: createdAt(),
    usedAt: timestamp('used_at', { withTimezone: true }),
  },
  (t) => [index('refresh_tokens_session_id_idx').on(t.sessionId), serverOnly('refresh_tokens')],
).enableRLS();

/** Secrets the server generates once and shares through the database (the local signing key). */
export const serverSecrets = pgTable(
  'server_secrets',
  { name: text('name').primaryKey(), value: text('value').notNull(), createdAt: createdAt() },
  () => [serverOnly('server_secrets')],
).enableRLS();

/** Fixed-window counters of the rate limits, shared by every instance on one database (src/api/rate-limit.ts). */
export const rateLimits = pgTable(
  'rate_limits',
  {
    key: text('key').primaryKey(),
    windowStart: timestamp('window_start', { withTimezone: true }).notNull(),
    hits: integer('hits').notNull(),
  },
  (t) => [index('rate_limits_window_start_idx').on(t.windowStart), serverOnly('rate_limits')],
).enableRLS();
