import { fixReads } from '../../generations/fix-reads.js';
import type { DiagnosticRow, FixRoundRow } from '../../generations/fix-store.js';
import { FIX_ROUND_STATUSES } from '../../generations/status.js';
import type { Scope } from '../../db/scope.js';
import { builder } from '../builder.js';
import type { Context } from '../context.js';
import { BuildStepRef, ChunkRef, GenerationRef, LogLineRef, UsageRef } from './generations.js';

// Self-healing builds (DESIGN "Self-healing builds"): diagnostics per round, the fix
// rounds of a generation, and the round of every chunk, build step and log line.

const DiagnosticSeverityEnum = builder.enumType('DiagnosticSeverity', { values: ['ERROR', 'WARNING', 'INFO'] as const });
const FixRoundStatusEnum = builder.enumType('FixRoundStatus', { values: FIX_ROUND_STATUSES });

const DiagnosticRef = builder.objectRef<DiagnosticRow>('Diagnostic').implement({
  description: 'A problem a build tool reported, parsed from its output.',
  fields: (t) => ({
    round: t.exposeInt('round', { description: 'The build it came from: 0 after the first answer, N after fix round N.' }),
    tool: t.exposeString('tool', { description: 'tsc, vite or flutter.' }),
    severity: t.field({ type: DiagnosticSeverityEnum, resolve: (d) => d.severity }),
    path: t.exposeString('path', { nullable: true, description: 'Relative to the workspace; null when the tool named no file of the project.' }),
    line: t.exposeInt('line', { nullable: true }),
    column: t.exposeInt('column', { nullable: true }),
    code: t.exposeString('code', { nullable: true }),
    message: t.exposeString('message'),
  }),
});

const FixRoundRef = builder.objectRef<FixRoundRow>('FixRound').implement({
  description: "One self-healing round: the build's diagnostics sent back to the model, its answer written, the build run again.",
  fields: (t) => ({
    round: t.exposeInt('round'),
    status: t.field({ type: FixRoundStatusEnum, resolve: (r) => r.status }),
    startedAt: t.expose('startedAt', { type: 'DateTime' }),
    finishedAt: t.expose('finishedAt', { type: 'DateTime', nullable: true }),
    usage: t.field({
      type: UsageRef,
      description: "This round's model usage, part of its generation's.",
      resolve: (r) => r,
    }),
  }),
});

/** A list loader: one batched read for every generation asked for, its rows grouped by generation. */
function byGeneration<Row extends { generationId: string }>(read: (scope: Scope, generationIds: readonly string[]) => Promise<Row[]>) {
  return async (ids: string[], ctx: Context): Promise<Row[][]> => {
    const rows = await read(ctx.db, ids);
    return ids.map((id) => rows.filter((row) => row.generationId === id));
  };
}

builder.objectFields(GenerationRef, (t) => ({
  diagnostics: t.loadableList({
    type: DiagnosticRef,
    description: 'What the build tools reported, every round, in order.',
    load: byGeneration(fixReads.diagnostics),
    resolve: (g) => g.id,
  }),
  fixRounds: t.loadableList({
    type: FixRoundRef,
    description: 'The self-healing rounds this generation took, in order (none when the first build succeeded).',
    load: byGeneration(fixReads.rounds),
    resolve: (g) => g.id,
  }),
  maxFixRounds: t.exposeInt('maxFixRounds', { description: 'Self-healing rounds this generation may take (0: off).' }),
}));

const roundDescription = '0 for the first answer, N for fix round N.';

builder.objectFields(ChunkRef, (t) => ({
  round: t.int({ description: roundDescription, resolve: (chunk) => chunk.round ?? 0 }),
}));

builder.objectFields(LogLineRef, (t) => ({
  round: t.int({ description: 'The build it belongs to: 0 after the first answer, N after fix round N.', resolve: (line) => line.round ?? 0 }),
}));

builder.objectFields(BuildStepRef, (t) => ({
  round: t.exposeInt('round', { description: 'The build it belongs to; ordinals go on across rounds.' }),
}));
