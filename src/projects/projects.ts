import { z } from 'zod';
import { API_KEY_CHARACTERS, API_KEY_CHARACTERS_MESSAGE } from '../config.js';
import type { projectTarget } from '../db/schema.js';
import type { Tx } from '../db/client.js';
import type { Scope } from '../db/scope.js';
import { AuthError, ForbiddenError, InvalidStateError, NotFoundError, ValidationError } from '../errors.js';
import { generationStore } from '../generations/store.js';
import type { SecretBox } from './secret-box.js';
import { type PageCursor, type ProjectRole, type ProjectRow, projectStore, type SecretName, secretStore, userStore } from './store.js';

// Project and membership use-cases: they decide; the store queries; RLS guards.

/**
 * Control characters, line and paragraph separators, and bidi overrides: invisible, they break
 * a line, or they make text read otherwise than it is (a name shown in lists, a file name for archives).
 */
const CONTROL_OR_BIDI = /[\p{Cc}\u2028\u2029\u202A-\u202E\u2066-\u2069]/u;
/** The same, except line breaks and tabs, which a description may have. */
const CONTROL_OR_BIDI_EXCEPT_LINES = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]/u;

/**
 * What shows as nothing on its own: blanks, format characters (zero-width spaces and joiners),
 * marks (combining marks, variation selectors, the grapheme joiner: a name of marks alone
 * has no letter for them to sit on, though a few would draw a dotted circle) and the fillers
 * that render blank.
 */
const SHOWS_AS_NOTHING = /[\s\p{Cf}\p{M}\u115F\u1160\u2800\u3164\uFFA0]/gu;

/** Whether text would show as nothing at all: a name, a prompt. */
export const showsAsNothing = (text: string): boolean => text.replace(SHOWS_AS_NOTHING, '') === '';

export const projectName = z
  .string()
  .trim()
  .max(100, 'Name must be at most 100 characters')
  .refine((name) => !showsAsNothing(name), 'Name must not be empty')
  .refine((name) => !CONTROL_OR_BIDI.test(name), 'Name must not contain control characters, line separators or bidirectional overrides');
export const projectDescription = z
  .string()
  .trim()
  .max(2000, 'Description must be at most 2000 characters')
  .refine((text) => !CONTROL_OR_BIDI_EXCEPT_LINES.test(text), 'Description must not contain control or bidirectional-override characters');
/**
 * An address to look an account up by, as its provider kept it: one `@` with something on
 * either side, no spaces or control characters. No stricter, since a lookup writes nothing:
 * GoTrue keeps addresses (`pat&sam!@…`) that z.email() would refuse.
 */
export const email = z
  .string()
  .trim()
  .toLowerCase()
  .max(254, 'Email is too long')
  .regex(/^[^@\s\p{Cc}]+@[^@\s\p{Cc}]+$/u, 'Not a valid email address');

export type ProjectTarget = (typeof projectTarget.enumValues)[number];

export async function createProject(
  scope: Scope,
  input: { name: string; description?: string | null; target: ProjectTarget },
): Promise<ProjectRow> {
  const ownerId = requireUser(scope);
  return scope.run((tx) =>
    projectStore.insert(tx, { ownerId, name: input.name, description: input.description || null, target: input.target }),
  );
}

export async function getProject(scope: Scope, id: string): Promise<ProjectRow | null> {
  return (await scope.run((tx) => projectStore.find(tx, id))) ?? null;
}

/**
 * An archived project is kept as it is: its settings, keys and members stay as they were.
 * Checked on a project read under lockAgainstArchive(tx, id, 'start'), taken before the read: an
 * archive under way is waited for and then seen, and one that comes later waits for the
 * change to commit (the same turns as a start: startGeneration).
 */
function refuseChangeWhenArchived(project: Pick<ProjectRow, 'archivedAt'>): void {
  if (project.archivedAt) throw new InvalidStateError('An archived project cannot be changed.');
}

export async function updateProject(
  scope: Scope,
  input: { id: string; name?: string | null; description?: string | null },
): Promise<ProjectRow> {
  return scope.run(async (tx) => {
    await projectStore.lockAgainstArchive(tx, input.id, 'start');
    const project = requireRole(await projectStore.find(tx, input.id), ['owner', 'editor']);
    refuseChangeWhenArchived(project);
    const changes: { name?: string; description?: string | null } = {};
    if (input.name != null) changes.name = input.name;
    if (input.description !== undefined) changes.description = input.description || null;
    if (Object.keys(changes).length === 0) return project;
    const row = await projectStore.update(tx, project.id, changes);
    return { ...(row ?? (await refusedWrite(tx, project.id, ['owner', 'editor']))), viewerRole: project.viewerRole };
  });
}

/**
 * Owners archive a project, in the caller's transaction (which also stops its work:
 * archiveProjectAndStop). The lock comes before the read, so of two archives at once the
 * second sees the first one's archivedAt and keeps it.
 */
export async function archiveProjectIn(tx: Tx, id: string): Promise<ProjectRow> {
  await projectStore.lockAgainstArchive(tx, id, 'archive');
  const project = requireRole(await projectStore.find(tx, id), ['owner']);
  if (project.archivedAt) return project;
  const row = await projectStore.update(tx, id, { archivedAt: new Date() });
  return { ...(row ?? (await refusedWrite(tx, id, ['owner']))), viewerRole: project.viewerRole };
}

export const monthlyTokenLimit = z.number().int().positive('The limit must be a positive number of tokens').nullable();

/** Owners set or remove (null) the project's monthly token limit. */
export async function setProjectBudget(scope: Scope, input: { projectId: string; monthlyTokenLimit?: number | null }): Promise<ProjectRow> {
  const { monthlyTokenLimit } = input;
  // Only an explicit null removes the limit: a client that left the field out (JSON drops an undefined) must not lose its cap.
  if (monthlyTokenLimit === undefined) throw new ValidationError([{ path: ['monthlyTokenLimit'], message: 'Give the limit, or null to remove it' }]);
  return scope.run(async (tx) => {
    await projectStore.lockAgainstArchive(tx, input.projectId, 'start');
    const project = requireRole(await projectStore.find(tx, input.projectId), ['owner']);
    refuseChangeWhenArchived(project);
    // Taken after the archive lock, as starts do: a run growing its reservation decides on the
    // limit before this change or after it, and once this returns every decision uses the new one.
    await generationStore.lockBudgetOfProject(tx, project.id);
    const row = await projectStore.update(tx, project.id, { monthlyTokenLimit });
    return { ...(row ?? (await refusedWrite(tx, project.id, ['owner']))), viewerRole: project.viewerRole };
  });
}

export const secretValue = z
  .string()
  .trim()
  .min(1, 'The value must not be empty')
  .max(4096, 'The value is too long')
  .regex(API_KEY_CHARACTERS, API_KEY_CHARACTERS_MESSAGE)
  .nullable();

/** Owners store (or with null, delete) a write-only project secret. */
export async function setProjectSecret(
  scope: Scope,
  box: SecretBox | undefined,
  input: { projectId: string; name: SecretName; value: string | null | undefined },
): Promise<ProjectRow> {
  // Only an explicit null deletes: a client that forgot the value must not lose the key.
  const { value } = input;
  if (value === undefined) throw new ValidationError([{ path: ['value'], message: 'Give the key, or null to delete it' }]);
  return scope.run(async (tx) => {
    await projectStore.lockAgainstArchive(tx, input.projectId, 'start');
    const project = requireRole(await projectStore.find(tx, input.projectId), ['owner']);
    // An archived project takes no new key; deleting one stays possible (archiving is final).
    if (value === null) {
      // Nothing removed: there was no such key, or the viewer is no longer an owner.
      if (!(await secretStore.remove(tx, project.id, input.name))) requireRole(await projectStore.find(tx, project.id), ['owner']);
    } else {
      refuseChangeWhenArchived(project);
      if (!box) throw new InvalidStateError('Project secrets are disabled: the server has no KILN_ENCRYPTION_KEY.');
      await secretStore.put(tx, project.id, input.name, box.seal(value, secretContext(project.id, input.name)));
    }
    return project;
  });
}

/** Binds a ciphertext to its project and name, so it cannot be moved to another. */
export const secretContext = (projectId: string, name: SecretName) => `${projectId}/${name}`;

/** A team, not an audience: it bounds the member list every project query may return. */
export const MAX_PROJECT_MEMBERS = 100;

export async function addProjectMember(
  scope: Scope,
  input: { projectId: string; email: string; role: ProjectRole },
  /** Throws RateLimitedError when the user (or their address) added too many members recently. */
  deps: { rateLimit?(userId: string): Promise<void> } = {},
) {
  // Counted per user before anything else: the answers must not let anyone test many emails for accounts.
  if (scope.userId) await deps.rateLimit?.(scope.userId);
  return scope.run(async (tx) => {
    await projectStore.lockAgainstArchive(tx, input.projectId, 'start');
    const project = requireRole(await projectStore.find(tx, input.projectId), ['owner']);
    // No one joins an archived project, nor changes role there. Before the lookup, which
    // would tell whether the email has an account.
    refuseChangeWhenArchived(project);
    const userId = await userStore.memberCandidateId(tx, project.id, input.email);
    if (!userId) throw new NotFoundError('No user has that email address.');
    if (userId === project.ownerId && input.role !== 'owner') {
      throw new InvalidStateError("The project's creator always stays an owner.");
    }
    if ((await projectStore.lockedMemberCountBesides(tx, project.id, userId)) >= MAX_PROJECT_MEMBERS) {
      throw new InvalidStateError(`A project has at most ${MAX_PROJECT_MEMBERS} members; remove one to add another.`);
    }
    return projectStore.upsertMember(tx, { projectId: project.id, userId, role: input.role });
  });
}

/**
 * Allowed in an archived project too, as deleting a key is: archiving is final, and a former
 * teammate must still lose access. In the caller's transaction: removeMemberAndStop stops the
 * member's work in the same one.
 */
export async function removeProjectMemberIn(tx: Tx, input: { projectId: string; userId: string }): Promise<ProjectRow> {
  // As an archive does: a start of the member's that read their role before this commits is
  // over before their work is stopped, and a later one finds them gone.
  await projectStore.lockAgainstArchive(tx, input.projectId, 'archive');
  const project = requireRole(await projectStore.find(tx, input.projectId), ['owner']);
  if (input.userId === project.ownerId) throw new InvalidStateError("The project's creator cannot be removed.");
  if (!(await projectStore.removeMember(tx, project.id, input.userId))) {
    // Not a member, or the viewer is no longer an owner: the row policies say so only by removing nothing.
    requireRole(await projectStore.find(tx, project.id), ['owner']);
    throw new NotFoundError('That user is not a member of this project.');
  }
  return project;
}

export async function listProjects(scope: Scope, page: { limit: number; after?: PageCursor }) {
  return scope.run(async (tx) => ({
    rows: await projectStore.page(tx, page.limit, page.after),
    totalCount: await projectStore.count(tx),
  }));
}

/** Batch loaders for DataLoaders (one query per batch). */
export const projectLoaders = {
  projects: (scope: Scope, ids: readonly string[]) => scope.run((tx) => projectStore.findMany(tx, ids)),
  members: (scope: Scope, projectIds: readonly string[]) => scope.run((tx) => projectStore.membersOf(tx, projectIds)),
  users: (scope: Scope, ids: readonly string[]) => scope.run((tx) => userStore.findMany(tx, ids)),
  secrets: (scope: Scope, projectIds: readonly string[]) => scope.run((tx) => secretStore.namesOf(tx, projectIds)),
};

/**
 * A write the row policies refused: PostgreSQL refuses an UPDATE or DELETE by matching no
 * row, without an error. The viewer's role changed after the use-case read it (each statement
 * sees the latest commits), so it is read again to say why: gone, or no longer allowed.
 */
async function refusedWrite(tx: Tx, projectId: string, roles: ProjectRole[]): Promise<never> {
  requireRole(await projectStore.find(tx, projectId), roles);
  throw new ForbiddenError(`Only a project ${roles.join(' or ')} can do that.`);
}

function requireUser(scope: Scope): string {
  if (!scope.userId) throw new AuthError();
  return scope.userId;
}

/** A project the viewer cannot see does not exist for them (DESIGN "API contract"). */
export function requireRole(project: ProjectRow | undefined, roles: ProjectRole[]): ProjectRow {
  if (!project || !project.viewerRole) throw new NotFoundError('Project not found.');
  if (!roles.includes(project.viewerRole)) {
    throw new ForbiddenError(`Only a project ${roles.join(' or ')} can do that.`);
  }
  return project;
}
