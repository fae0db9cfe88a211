import type { Scope } from '../db/scope.js';
import { type GenerationStatus, generationStore, MONTH_OF_NOW } from './store.js';

// What a member reads about generations; RLS decides what exists.

export const generationReads = {
  page: (scope: Scope, projectId: string, limit: number, options: { after?: { createdAt: Date; id: string }; status?: GenerationStatus[] }) => {
    // Each status once: a list of 70,000 repeats, a parameter each, is past what one statement may take.
    const filter = { ...options, status: options.status && [...new Set(options.status)] };
    return scope.run(async (tx) => ({
      rows: await generationStore.pageOfProject(tx, projectId, limit, filter),
      totalCount: await generationStore.countOfProject(tx, projectId, filter.status),
    }));
  },
  many: (scope: Scope, ids: readonly string[]) => scope.run((tx) => generationStore.findMany(tx, ids)),
  output: (scope: Scope, id: string) => scope.run((tx) => generationStore.outputOfMember(tx, id)),
  files: (scope: Scope, id: string) => scope.run((tx) => generationStore.filesOfMember(tx, id, false)),
  file: (scope: Scope, id: string, path: string) => scope.run((tx) => generationStore.fileOf(tx, id, path)),
  steps: (scope: Scope, ids: readonly string[]) => scope.run((tx) => generationStore.stepsOf(tx, ids)),
  logTail: (scope: Scope, id: string, count: number) => scope.run((tx) => generationStore.logTailOfMember(tx, id, count)),
  conversation: (scope: Scope, projectId: string, sessionId: string) =>
    scope.run((tx) => generationStore.conversation(tx, projectId, sessionId)),
  /** This calendar month's usage of each project (UTC, by the database's clock, as budgets count it). */
  usage: (scope: Scope, projectIds: readonly string[]) =>
    scope.run((tx) => generationStore.usageOfProjects(tx, projectIds, MONTH_OF_NOW)),
};
