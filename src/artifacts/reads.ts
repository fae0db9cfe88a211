import type { Scope } from '../db/scope.js';
import { manifestStore } from './manifest-store.js';

// What a member reads about outputs, batched for DataLoaders; RLS decides what exists.

export const outputReads = {
  withBundle: (scope: Scope, generationIds: readonly string[]) => scope.run((tx) => manifestStore.withBundle(tx, generationIds)),
  archivable: (scope: Scope, generationIds: readonly string[]) => scope.run((tx) => manifestStore.archivable(tx, generationIds)),
};
