import { createHash, randomUUID } from 'node:crypto';
import { type SQL, sql } from 'drizzle-orm';
import { type Db, rowsOf, type Tx } from '../../src/db/client.js';
import {
  authSessions,
  buildLogLines,
  buildSteps,
  conversationMessages,
  generationChunks,
  generationFiles,
  generations,
  localCredentials,
  projectMembers,
  projects,
  refreshTokens,
  serverSecrets,
  users,
} from '../../src/db/schema.js';
import { type Claims, type Scope, serviceScope, userScope } from '../../src/db/scope.js';

// Fixtures and helpers for the RLS suite: rows are made through the service scope
// (as the worker and auth provider do), then probed with direct SQL as a user.

/** SQLSTATEs the suite expects. */
export const SqlState = {
  insufficientPrivilege: '42501',
  checkViolation: '23514',
  foreignKeyViolation: '23503',
} as const;

export type GenerationStatus = (typeof generations.$inferSelect)['status'];
export const generationStatuses: GenerationStatus[] = ['QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED'];

/**
 * The SQLSTATE of a failed statement, whichever driver raised it: PGlite and
 * postgres.js put `code` on their error, drizzle wraps that error as `cause`.
 */
export function sqlStateOf(error: unknown): { code: string; message: string } | undefined {
  let current: unknown = error;
  for (let depth = 0; current && depth < 10; depth++) {
    const { code, message, cause } = current as { code?: unknown; message?: unknown; cause?: unknown };
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return { code, message: String(message ?? '') };
    current = cause;
  }
  return undefined;
}

export type Outcome<T> = { ok: true; rows: T[] } | { ok: false; code: string; message: string };

/**
 * Runs one statement inside a savepoint of `tx`, so a refused statement does not
 * abort the caller's transaction. Errors without a SQLSTATE are rethrown.
 */
export async function attempt<T = Record<string, unknown>>(tx: Tx, query: SQL): Promise<Outcome<T>> {
  try {
    const rows = await tx.transaction(async (savepoint) => rowsOf<T>(await savepoint.execute(query)));
    return { ok: true, rows };
  } catch (error) {
    const state = sqlStateOf(error);
    if (!state) throw error;
    return { ok: false, ...state };
  }
}

/** Rows of a statement that must succeed. */
export async function rows<T = Record<string, unknown>>(tx: Tx, query: SQL): Promise<T[]> {
  return rowsOf<T>(await tx.execute(query));
}

/** How an attempt ended, in a form that reads well in `toEqual` and in a failure diff. */
export function verdict(outcome: Outcome<unknown>): string {
  return outcome.ok ? `accepted (${outcome.rows.length} rows)` : `refused ${outcome.code}`;
}

/** The row count of a read, or 'denied' when the role may not read the table at all. */
export function visibleRows(outcome: Outcome<unknown>): number | 'denied' {
  if (outcome.ok) return outcome.rows.length;
  if (outcome.code === SqlState.insufficientPrivilege) return 'denied';
  throw new Error(`unexpected ${outcome.code}: ${outcome.message}`);
}

export function claimsFor(userId: string, extra: Partial<Claims> = {}): Claims {
  return { sub: userId, role: 'authenticated', email: emailOf(userId), session_id: randomUUID(), ...extra };
}

/** A request's scope for `userId`, exactly as the API builds it. */
export function as(db: Db, userId: string, extra: Partial<Claims> = {}): Scope {
  return userScope(db, claimsFor(userId, extra));
}

function emailOf(userId: string): string {
  return `user-${userId}@kiln.test`;
}

export interface Team {
  owner: string;
  editor: string;
  viewer: string;
  /** A signed-in user with no membership in the project. */
  stranger: string;
  projectId: string;
  projectName: string;
  sessionId: string;
  /** A finished generation with chunks, build steps, log lines, files and messages. */
  generationId: string;
  /** A local auth session of the owner, with one refresh token. */
  authSessionId: string;
  refreshTokenHash: string;
  serverSecretName: string;
}

/**
 * A fresh project with an owner, an editor and a viewer, a stranger, one finished
 * generation with everything the worker writes, and the auth rows of the local
 * provider. Every id and name is new, so tests that mutate never meet each other.
 */
export async function createTeam(db: Db): Promise<Team> {
  const team: Team = {
    owner: randomUUID(),
    editor: randomUUID(),
    viewer: randomUUID(),
    stranger: randomUUID(),
    projectId: randomUUID(),
    projectName: `Project ${randomUUID().slice(0, 8)}`,
    sessionId: randomUUID(),
    generationId: randomUUID(),
    authSessionId: randomUUID(),
    refreshTokenHash: sha256(randomUUID()),
    serverSecretName: `secret-${randomUUID()}`,
  };
  await serviceScope(db).run(async (tx) => {
    await tx.insert(users).values([team.owner, team.editor, team.viewer, team.stranger].map((id) => ({ id, email: emailOf(id) })));
    await tx.insert(projects).values({ id: team.projectId, ownerId: team.owner, name: team.projectName, target: 'WEB' });
    await tx.insert(projectMembers).values([
      { projectId: team.projectId, userId: team.owner, role: 'owner' },
      { projectId: team.projectId, userId: team.editor, role: 'editor' },
      { projectId: team.projectId, userId: team.viewer, role: 'viewer' },
    ]);
    await tx.insert(generations).values({
      id: team.generationId,
      projectId: team.projectId,
      createdBy: team.owner,
      sessionId: team.sessionId,
      prompt: 'a todo app',
      status: 'SUCCEEDED',
      phase: 'DONE',
      provider: 'offline',
      model: 'offline',
      inputTokens: 10,
      outputTokens: 20,
      finishedAt: new Date(),
    });
    await tx.insert(generationChunks).values([
      { generationId: team.generationId, seq: 0, text: '<file path="src/App.tsx">' },
      { generationId: team.generationId, seq: 1, text: 'export default 1;</file>' },
    ]);
    await tx.insert(buildSteps).values({ generationId: team.generationId, ordinal: 0, name: 'install', command: 'npm install', status: 'SUCCEEDED', exitCode: 0 });
    await tx.insert(buildLogLines).values({ generationId: team.generationId, seq: 0, step: 'install', stream: 'STDOUT', text: 'added 1 package' });
    const content = 'export default 1;';
    await tx.insert(generationFiles).values({ generationId: team.generationId, path: 'src/App.tsx', content, size: Buffer.byteLength(content), sha256: sha256(content) });
    await tx.insert(conversationMessages).values([
      { projectId: team.projectId, sessionId: team.sessionId, role: 'USER', content: 'a todo app', generationId: team.generationId },
      { projectId: team.projectId, sessionId: team.sessionId, role: 'MODEL', content: 'Here it is.', generationId: team.generationId },
    ]);
    await tx.insert(localCredentials).values({ userId: team.owner, passwordHash: '$scrypt$not-a-real-hash' });
    await tx.insert(authSessions).values({ id: team.authSessionId, userId: team.owner });
    await tx.insert(refreshTokens).values({ tokenHash: team.refreshTokenHash, sessionId: team.authSessionId });
    await tx.insert(serverSecrets).values({ name: team.serverSecretName, value: 'signing-key' });
  });
  return team;
}

/** A new generation of the team's project in `status`, made by the worker's scope. */
export async function createGeneration(db: Db, team: Team, status: GenerationStatus, createdBy = team.owner): Promise<string> {
  const id = randomUUID();
  const terminal = status === 'SUCCEEDED' || status === 'FAILED' || status === 'CANCELLED';
  await serviceScope(db).run((tx) =>
    tx.insert(generations).values({
      id,
      projectId: team.projectId,
      createdBy,
      sessionId: team.sessionId,
      prompt: `prompt for a ${status} generation`,
      status,
      phase: terminal ? 'DONE' : status === 'RUNNING' ? 'GENERATING' : 'QUEUED',
      provider: 'offline',
      model: 'offline',
      errorCode: status === 'FAILED' ? 'BUILD_FAILED' : null,
      finishedAt: terminal ? new Date() : null,
    }),
  );
  return id;
}

/** `values` as one SQL array of `type`, each element a bound parameter. */
export function sqlArray(values: readonly string[], type: 'text' | 'uuid'): SQL {
  return sql`array[${sql.join(values.map((value) => sql`${value}`), sql`, `)}]::${sql.raw(type)}[]`;
}

/** Whether anon and authenticated may execute each of `functions` (given with their argument types). */
export function executePrivileges(db: Db, functions: readonly string[]) {
  return serviceRows<{ fn: string; anon: boolean; authenticated: boolean }>(
    db,
    sql`select fn, has_function_privilege('anon', fn, 'execute') as anon, has_function_privilege('authenticated', fn, 'execute') as authenticated
          from unnest(${sqlArray(functions, 'text')}) as fn`,
  );
}

/** What the server (no RLS) sees: the ground truth a test compares against. */
export async function serviceRows<T = Record<string, unknown>>(db: Db, query: SQL): Promise<T[]> {
  return serviceScope(db).run((tx) => rows<T>(tx, query));
}

export async function statusOf(db: Db, generationId: string): Promise<GenerationStatus | undefined> {
  const [row] = await serviceRows<{ status: GenerationStatus }>(db, sql`select status from generations where id = ${generationId}`);
  return row?.status;
}

function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}
