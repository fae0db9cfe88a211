import { and, asc, eq, inArray, sql } from 'drizzle-orm';
import { rowsOf, type Tx } from '../db/client.js';
import { generationArtifacts, generationFiles, generations, projects } from '../db/schema.js';

// Named queries about which blobs make up a generation's outputs (generation_artifacts).
// Requests read them in the viewer's RLS scope; the worker and the signed-URL handlers
// in the service scope.

export type ArtifactKind = (typeof generationArtifacts.$inferSelect)['kind'];
export type ArtifactRow = typeof generationArtifacts.$inferInsert;
export interface ArtifactEntry {
  path: string;
  sha256: string;
  size: number;
}

export const manifestStore = {
  async insert(tx: Tx, rows: ArtifactRow[]) {
    for (let i = 0; i < rows.length; i += 500) {
      await tx.insert(generationArtifacts).values(rows.slice(i, i + 500)).onConflictDoNothing();
    }
  },

  async entriesOf(tx: Tx, generationId: string, kind: ArtifactKind): Promise<ArtifactEntry[]> {
    return tx
      .select({ path: generationArtifacts.path, sha256: generationArtifacts.sha256, size: generationArtifacts.size })
      .from(generationArtifacts)
      .where(and(eq(generationArtifacts.generationId, generationId), eq(generationArtifacts.kind, kind)))
      .orderBy(asc(generationArtifacts.path));
  },

  /** Which of these generations have a web bundle. */
  async withBundle(tx: Tx, generationIds: readonly string[]): Promise<Set<string>> {
    const rows = await tx
      .selectDistinct({ generationId: generationArtifacts.generationId })
      .from(generationArtifacts)
      .where(and(inArray(generationArtifacts.generationId, [...generationIds]), eq(generationArtifacts.kind, 'BUNDLE')));
    return new Set(rows.map((row) => row.generationId));
  },

  /** Which of these blobs some generation still uses. */
  async referenced(tx: Tx, sha256s: readonly string[]): Promise<Set<string>> {
    if (sha256s.length === 0) return new Set();
    const rows = await tx
      .selectDistinct({ sha256: generationArtifacts.sha256 })
      .from(generationArtifacts)
      .where(inArray(generationArtifacts.sha256, [...sha256s]));
    return new Set(rows.map((row) => row.sha256));
  },

  /**
   * Generation.files for an archive, in path order, with whether the source is in the
   * store (a SUCCEEDED generation) or only in generation_files (any other).
   */
  async sourcesOf(tx: Tx, generationId: string) {
    return tx
      .select({
        path: generationFiles.path,
        size: generationFiles.size,
        sha256: generationFiles.sha256,
        stored: sql<boolean>`${generationArtifacts.sha256} is not null`,
      })
      .from(generationFiles)
      .leftJoin(
        generationArtifacts,
        and(
          eq(generationArtifacts.generationId, generationFiles.generationId),
          eq(generationArtifacts.kind, 'SOURCE'),
          eq(generationArtifacts.path, generationFiles.path),
        ),
      )
      .where(eq(generationFiles.generationId, generationId))
      .orderBy(asc(generationFiles.path));
  },

  async fileContent(tx: Tx, generationId: string, path: string): Promise<string | undefined> {
    const [row] = await tx
      .select({ content: generationFiles.content })
      .from(generationFiles)
      .where(and(eq(generationFiles.generationId, generationId), eq(generationFiles.path, path)));
    return row?.content;
  },

  /** What an archive is named after and stamped with, and whether its files are final (the generation's status). */
  async archiveFacts(tx: Tx, generationId: string) {
    const [row] = await tx
      .select({ projectName: projects.name, status: generations.status, createdAt: generations.createdAt, finishedAt: generations.finishedAt })
      .from(generations)
      .innerJoin(projects, eq(projects.id, generations.projectId))
      .where(eq(generations.id, generationId));
    return row;
  },

  /** Per generation: its project's name, its status and whether it has files (an archive needs files that are final). */
  async archivable(tx: Tx, generationIds: readonly string[]) {
    return tx
      .select({
        generationId: generations.id,
        projectName: projects.name,
        status: generations.status,
        hasFiles: sql<boolean>`exists (select 1 from ${generationFiles} where ${generationFiles.generationId} = ${generations.id})`,
      })
      .from(generations)
      .innerJoin(projects, eq(projects.id, generations.projectId))
      .where(inArray(generations.id, [...generationIds]));
  },

  /** Bytes the generations refer to, against bytes stored once per distinct blob. */
  async totals(tx: Tx): Promise<{ logicalBytes: number; storedBytes: number }> {
    const [row] = rowsOf<{ logical: string | number | null; stored: string | number | null }>(
      await tx.execute(sql`
        select (select coalesce(sum(size), 0) from ${generationArtifacts}) as logical,
               (select coalesce(sum(size), 0) from (select distinct on (sha256) size from ${generationArtifacts} order by sha256) blobs) as stored`),
    );
    return { logicalBytes: Number(row?.logical ?? 0), storedBytes: Number(row?.stored ?? 0) };
  },
};
