import type { Scope } from '../db/scope.js';
import { fixStore } from './fix-store.js';

// What a member reads about self-healing builds; RLS decides what exists.

export const fixReads = {
  diagnostics: (scope: Scope, generationIds: readonly string[]) => scope.run((tx) => fixStore.diagnosticsOf(tx, generationIds)),
  rounds: (scope: Scope, generationIds: readonly string[]) => scope.run((tx) => fixStore.roundsOf(tx, generationIds)),
};
