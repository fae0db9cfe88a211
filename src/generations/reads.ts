import type { Scope } from '../db/scope.js';
import type { LogLineEvent } from '../events/bus.js';
import { type GenerationPageOptions, type GenerationRow, type GenerationStatus, generationStore, MONTH_OF_NOW } from './store.js';

// What a member reads about generations; RLS decides what exists.

export const generationReads = {
  /**
   * A page of generations of each of several projects, for each request (its project, size,
   * keyset, statuses and session), with each list's totalCount: one transaction, two statements
   * for each kind of page asked for (requests alike in all but their project share them).
   */
  pages: (scope: Scope, requests: readonly GenerationPageRequest[]) =>
    scope.run(async (tx) => {
      const answers = new Map<GenerationPageRequest, GenerationPage>();
      const kindOf = (request: GenerationPageRequest) => JSON.stringify([request.limit, request.after, distinct(request.status), request.sessionId]);
      for (const alike of groupBy(requests, kindOf).values()) {
        const { limit, after, sessionId } = alike[0]!;
        // Each status once: a list of 70,000 repeats, a parameter each, is past what one statement may take.
        const status = distinct(alike[0]!.status);
        const projectIds = [...new Set(alike.map((request) => request.projectId))];
        const rows = groupBy(await generationStore.pageOfProjects(tx, projectIds, limit, { after, status, sessionId }), (row) => row.projectId);
        const counts = new Map((await generationStore.countOfProjects(tx, projectIds, { status, sessionId })).map((row) => [row.projectId, row.total]));
        for (const request of alike) answers.set(request, { rows: rows.get(request.projectId) ?? [], totalCount: counts.get(request.projectId) ?? 0 });
      }
      return requests.map((request): GenerationPage => answers.get(request)!);
    }),
  many: (scope: Scope, ids: readonly string[]) => scope.run((tx) => generationStore.findMany(tx, ids)),
  /** Each generation's output, in the order of `ids` ('' for one the viewer cannot see). */
  outputs: (scope: Scope, ids: readonly string[]) =>
    scope.run(async (tx) => {
      const outputs = new Map((await generationStore.outputsOfMember(tx, ids)).map((row) => [row.generationId, row.output]));
      return ids.map((id) => outputs.get(id) ?? '');
    }),
  /** Each version's files in path order, in the order of `ids`; contents only `withContent` (else ''). */
  files: (scope: Scope, ids: readonly string[], withContent: boolean) =>
    scope.run(async (tx) => {
      const files = groupBy(await generationStore.filesOfMembers(tx, ids, withContent), (file) => file.generationId);
      return ids.map((id) => files.get(id) ?? []);
    }),
  /** The file at each (generation, path), in the order of `keys`; undefined where there is none. */
  filesAt: (scope: Scope, keys: readonly { generationId: string; path: string }[]) =>
    scope.run(async (tx) => {
      const rows = await generationStore.filesAt(tx, keys);
      const byKey = new Map(rows.map((row) => [fileKey(row), row]));
      return keys.map((key) => byKey.get(fileKey(key)));
    }),
  steps: (scope: Scope, ids: readonly string[]) => scope.run((tx) => generationStore.stepsOf(tx, ids)),
  /** The last `count` log lines of each generation, oldest first, in the order of `tails`. */
  logTails: (scope: Scope, tails: readonly { generationId: string; count: number }[]) =>
    scope.run(async (tx) => {
      const lines = groupBy(await generationStore.logTailsOfMember(tx, tails), (line) => JSON.stringify([line.generationId, line.count]));
      return tails.map((tail) =>
        (lines.get(JSON.stringify([tail.generationId, tail.count])) ?? []).map(({ seq, step, stream, text, round }): LogLineEvent => ({ seq, step, stream, text, round })),
      );
    }),
  conversation: (scope: Scope, projectId: string, sessionId: string) =>
    scope.run((tx) => generationStore.conversation(tx, projectId, sessionId)),
  /** This calendar month's usage of each project (UTC, by the database's clock, as budgets count it). */
  usage: (scope: Scope, projectIds: readonly string[]) =>
    scope.run((tx) => generationStore.usageOfProjects(tx, projectIds, MONTH_OF_NOW)),
};

/** A page of one project's generations (generationReads.pages): `limit` rows, newest first, after the keyset `after`; of `status` and of one session, if given. */
export interface GenerationPageRequest extends GenerationPageOptions {
  projectId: string;
  limit: number;
}

/** The rows of a GenerationPageRequest, and how many generations its list holds in all. */
export interface GenerationPage {
  rows: GenerationRow[];
  totalCount: number;
}

/** The items of `items` by key, each group in the order of `items`. */
function groupBy<T>(items: readonly T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const group = groups.get(k);
    if (group) group.push(item);
    else groups.set(k, [item]);
  }
  return groups;
}

const distinct = (status: GenerationStatus[] | undefined) => status && [...new Set(status)];
const fileKey = (file: { generationId: string; path: string }) => JSON.stringify([file.generationId, file.path]);
