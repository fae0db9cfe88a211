import { and, asc, eq, inArray, sql } from 'drizzle-orm';
import type { Tx } from '../db/client.js';
import { fixRounds, generationDiagnostics, generationFiles } from '../db/schema.js';
import type { LlmUsage } from '../llm/provider.js';
import type { Diagnostic } from '../toolchain/diagnostics.js';
import type { GeneratedFile } from '../workspace/workspace.js';

// Named queries of self-healing builds: diagnostics per round, fix rounds, and the
// files a fix round rewrites. Request code reads them in the viewer's RLS scope.

export type DiagnosticRow = typeof generationDiagnostics.$inferSelect;
export type FixRoundRow = typeof fixRounds.$inferSelect;
export type FixRoundStatus = FixRoundRow['status'];

export const fixStore = {
  async insertDiagnostics(tx: Tx, generationId: string, round: number, diagnostics: readonly Diagnostic[]) {
    if (diagnostics.length === 0) return;
    await tx.insert(generationDiagnostics).values(diagnostics.map((d, ordinal) => ({ generationId, round, ordinal, ...d }))).onConflictDoNothing();
  },

  async diagnosticsOf(tx: Tx, generationIds: readonly string[]): Promise<DiagnosticRow[]> {
    return tx
      .select()
      .from(generationDiagnostics)
      .where(inArray(generationDiagnostics.generationId, [...generationIds]))
      .orderBy(asc(generationDiagnostics.round), asc(generationDiagnostics.ordinal));
  },

  async startRound(tx: Tx, generationId: string, round: number): Promise<void> {
    await tx.insert(fixRounds).values({ generationId, round, status: 'RUNNING', startedAt: sql`now()` }).onConflictDoNothing();
  },

  /** Ends a RUNNING round; a finished one never changes again. */
  async finishRound(tx: Tx, generationId: string, round: number, values: LlmUsage & { status: Exclude<FixRoundStatus, 'RUNNING'> }) {
    await tx
      .update(fixRounds)
      .set({ ...values, finishedAt: sql`now()` })
      .where(and(eq(fixRounds.generationId, generationId), eq(fixRounds.round, round), eq(fixRounds.status, 'RUNNING')));
  },

  /** Records a round's usage as it becomes known, so an interrupted round still shows what it spent. */
  async setRoundUsage(tx: Tx, generationId: string, round: number, usage: LlmUsage) {
    await tx.update(fixRounds).set(usage).where(and(eq(fixRounds.generationId, generationId), eq(fixRounds.round, round)));
  },

  /** Rounds left RUNNING when the run ended another way (cancel, lost lease, an error). */
  async closeRunningRounds(tx: Tx, generationId: string, status: Exclude<FixRoundStatus, 'RUNNING'>) {
    await tx
      .update(fixRounds)
      .set({ status, finishedAt: sql`now()` })
      .where(and(eq(fixRounds.generationId, generationId), eq(fixRounds.status, 'RUNNING')));
  },

  async roundsOf(tx: Tx, generationIds: readonly string[]): Promise<FixRoundRow[]> {
    return tx.select().from(fixRounds).where(inArray(fixRounds.generationId, [...generationIds])).orderBy(asc(fixRounds.round));
  },

  /** A fix round's rewrite of the generation's files: changed ones replaced, deleted ones removed. */
  async replaceFiles(tx: Tx, generationId: string, changed: readonly GeneratedFile[], deleted: readonly string[]) {
    const paths = [...changed.map((file) => file.path), ...deleted];
    if (paths.length === 0) return;
    await tx.delete(generationFiles).where(and(eq(generationFiles.generationId, generationId), inArray(generationFiles.path, paths)));
    for (let i = 0; i < changed.length; i += 500) {
      await tx.insert(generationFiles).values(changed.slice(i, i + 500).map((file) => ({ generationId, ...file })));
    }
  },
};
