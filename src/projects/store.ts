import { and, count, desc, eq, getTableColumns, inArray, lt, ne, or, sql } from 'drizzle-orm';
import { advisoryLock, tryAdvisoryLockShared } from '../db/advisory-locks.js';
import { rowsOf, type Tx } from '../db/client.js';
import { projectMembers, projectSecrets, projects, users } from '../db/schema.js';

// Named queries of the projects domain. They run inside a caller's scope, so RLS
// decides which rows exist for the viewer.

export type ProjectRole = 'owner' | 'editor' | 'viewer';
export type ProjectRow = typeof projects.$inferSelect & { viewerRole: ProjectRole | null };
export type MemberRow = typeof projectMembers.$inferSelect;
/** A member with its user, read in the same statement. */
export type MemberWithUser = MemberRow & { user: Pick<UserRow, 'id' | 'email'> };
export type UserRow = typeof users.$inferSelect;
export type SecretName = (typeof projectSecrets.$inferSelect)['name'];

const withViewerRole = { ...getColumns(), viewerRole: sql<ProjectRole | null>`kiln.project_role(${projects.id})` };

function getColumns() {
  const { id, ownerId, name, description, target, createdAt, updatedAt, archivedAt, monthlyTokenLimit } = projects;
  return { id, ownerId, name, description, target, createdAt, updatedAt, archivedAt, monthlyTokenLimit };
}

const archiveLockName = (projectId: string) => `kiln.project-archive:${projectId}`;

export interface PageCursor {
  createdAt: Date;
  id: string;
}

export const projectStore = {
  async insert(tx: Tx, values: typeof projects.$inferInsert): Promise<ProjectRow> {
    const [row] = await tx.insert(projects).values(values).returning(getColumns());
    await tx.insert(projectMembers).values({ projectId: row!.id, userId: values.ownerId, role: 'owner' });
    return { ...row!, viewerRole: 'owner' };
  },

  /**
   * Starts (shared) and archiving or removing a member (exclusive) of one project take turns
   * until their transactions end: a start that read the project before an archive committed is
   * over before the archive looks for what to stop, and a later one finds it archived.
   */
  async lockAgainstArchive(tx: Tx, projectId: string, as: 'start' | 'archive'): Promise<void> {
    await tx.execute(sql`select ${advisoryLock(archiveLockName(projectId), as === 'archive' ? 'exclusive' : 'shared')}`);
  },

  /**
   * lockAgainstArchive's shared lock, taken only if no archive of the project holds it or
   * waits for it; false otherwise, at once. For a start made while the caller already holds
   * rows of the project's generations, which an archive under way waits for: waiting for the
   * archive in turn would deadlock.
   */
  async tryLockAgainstArchive(tx: Tx, projectId: string): Promise<boolean> {
    const [row] = rowsOf<{ locked: boolean }>(await tx.execute(sql`select ${tryAdvisoryLockShared(archiveLockName(projectId))} as locked`));
    return row?.locked === true;
  },

  async find(tx: Tx, id: string): Promise<ProjectRow | undefined> {
    const [row] = await tx.select(withViewerRole).from(projects).where(eq(projects.id, id));
    return row;
  },

  async findMany(tx: Tx, ids: readonly string[]): Promise<ProjectRow[]> {
    return tx.select(withViewerRole).from(projects).where(inArray(projects.id, [...ids]));
  },

  /** Newest first; keyset pagination on (created_at, id). */
  async page(tx: Tx, limit: number, after?: PageCursor): Promise<ProjectRow[]> {
    const before = after
      ? or(lt(projects.createdAt, after.createdAt), and(eq(projects.createdAt, after.createdAt), lt(projects.id, after.id)))
      : undefined;
    return tx.select(withViewerRole).from(projects).where(before).orderBy(desc(projects.createdAt), desc(projects.id)).limit(limit);
  },

  async count(tx: Tx): Promise<number> {
    const [row] = await tx.select({ total: count() }).from(projects);
    return row?.total ?? 0;
  },

  /** The project's monthly token limit as it stands; null: none (read under the budget lock: generations/budget.ts). */
  async limitOf(tx: Tx, id: string): Promise<number | null> {
    const [row] = await tx.select({ limit: projects.monthlyTokenLimit }).from(projects).where(eq(projects.id, id));
    return row?.limit ?? null;
  },

  async update(tx: Tx, id: string, values: Partial<Pick<typeof projects.$inferInsert, 'name' | 'description' | 'archivedAt' | 'monthlyTokenLimit'>>) {
    const [row] = await tx.update(projects).set({ ...values, updatedAt: new Date() }).where(eq(projects.id, id)).returning(getColumns());
    return row;
  },

  /**
   * Members with their users, in one statement: read apart, a member removed in between left
   * a member whose user the viewer no longer sees (a null where the schema promises a user).
   */
  async membersOf(tx: Tx, projectIds: readonly string[]): Promise<MemberWithUser[]> {
    return tx
      .select({ ...getTableColumns(projectMembers), user: { id: users.id, email: users.email } })
      .from(projectMembers)
      .innerJoin(users, eq(users.id, projectMembers.userId))
      .where(inArray(projectMembers.projectId, [...projectIds]))
      .orderBy(projectMembers.createdAt);
  },

  /** Members of the project besides `userId`, counted under a lock that holds until the transaction ends, so a cap checked on it stays true. */
  async lockedMemberCountBesides(tx: Tx, projectId: string, userId: string): Promise<number> {
    await tx.execute(sql`select ${advisoryLock(`kiln.project-members:${projectId}`)}`);
    const [row] = await tx
      .select({ total: count() })
      .from(projectMembers)
      .where(and(eq(projectMembers.projectId, projectId), ne(projectMembers.userId, userId)));
    return row?.total ?? 0;
  },

  async upsertMember(tx: Tx, member: typeof projectMembers.$inferInsert): Promise<MemberRow> {
    const [row] = await tx
      .insert(projectMembers)
      .values(member)
      .onConflictDoUpdate({ target: [projectMembers.projectId, projectMembers.userId], set: { role: member.role } })
      .returning();
    return row!;
  },

  async removeMember(tx: Tx, projectId: string, userId: string): Promise<boolean> {
    const removed = await tx
      .delete(projectMembers)
      .where(and(eq(projectMembers.projectId, projectId), eq(projectMembers.userId, userId)))
      .returning({ userId: projectMembers.userId });
    return removed.length > 0;
  },
};

export const userStore = {
  async findMany(tx: Tx, ids: readonly string[]): Promise<UserRow[]> {
    return tx.select().from(users).where(inArray(users.id, [...ids]));
  },

  /** A user's id by email, for adding them to a project: answered to the project's owner only (a SECURITY DEFINER lookup). */
  async memberCandidateId(tx: Tx, projectId: string, email: string): Promise<string | undefined> {
    const [row] = await tx.execute<{ id: string | null }>(sql`select kiln.member_candidate_id(${projectId}, ${email}) as id`).then(rowsOf<{ id: string | null }>);
    return row?.id ?? undefined;
  },
};

export const secretStore = {
  async namesOf(tx: Tx, projectIds: readonly string[]) {
    return tx
      .select({ projectId: projectSecrets.projectId, name: projectSecrets.name, updatedAt: projectSecrets.updatedAt })
      .from(projectSecrets)
      .where(inArray(projectSecrets.projectId, [...projectIds]))
      .orderBy(projectSecrets.name);
  },

  async put(tx: Tx, projectId: string, name: SecretName, ciphertext: string) {
    await tx
      .insert(projectSecrets)
      .values({ projectId, name, ciphertext })
      .onConflictDoUpdate({ target: [projectSecrets.projectId, projectSecrets.name], set: { ciphertext, updatedAt: new Date() } });
  },

  /** Whether a key was removed. */
  async remove(tx: Tx, projectId: string, name: SecretName): Promise<boolean> {
    const removed = await tx
      .delete(projectSecrets)
      .where(and(eq(projectSecrets.projectId, projectId), eq(projectSecrets.name, name)))
      .returning({ name: projectSecrets.name });
    return removed.length > 0;
  },

  /** Service scope only: any one stored secret, for checking the encryption key at start-up. */
  async anyStored(tx: Tx) {
    const [stored] = await tx
      .select({ projectId: projectSecrets.projectId, name: projectSecrets.name, ciphertext: projectSecrets.ciphertext })
      .from(projectSecrets)
      .limit(1);
    return stored;
  },

  /** Service scope only: the worker decrypts this for a run. */
  async ciphertextOf(tx: Tx, projectId: string, name: SecretName): Promise<string | undefined> {
    const [row] = await tx
      .select({ ciphertext: projectSecrets.ciphertext })
      .from(projectSecrets)
      .where(and(eq(projectSecrets.projectId, projectId), eq(projectSecrets.name, name)));
    return row?.ciphertext;
  },
};
