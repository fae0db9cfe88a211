import type { Db } from '../db/client.js';
import { type Scope, serviceScope } from '../db/scope.js';
import { InvalidStateError, NotFoundError } from '../errors.js';
import { requireRole } from '../projects/projects.js';
import { projectStore } from '../projects/store.js';
import { startingVersion, withoutRefusedPaths } from '../workspace/workspace.js';
import { type GenerationDeps, announce, claimSession, countedStart, insertGeneration, refuseArchived } from './generations.js';
import type { OutputEvent } from './output-parser.js';
import { isTerminal } from './status.js';
import { type GenerationRow, generationStore } from './store.js';

// Restore: going back to a version that worked without rewriting history. A new
// generation joins the session with exactly the files of the restored one
// (`restored_from`), is built again, and never calls the model.

export async function restoreGeneration(scope: Scope, deps: GenerationDeps, id: string): Promise<GenerationRow> {
  const generation = await countedStart(scope, deps, () =>
    scope.run(async (tx) => {
      const source = await generationStore.find(tx, id);
      if (!source) throw new NotFoundError('Generation not found.');
      await projectStore.lockAgainstArchive(tx, source.projectId, 'start');
      const project = requireRole(await projectStore.find(tx, source.projectId), ['owner', 'editor']);
      refuseArchived(project);
      if (!isTerminal(source.status)) throw new InvalidStateError('This generation is still queued or running; it can be restored once it has ended.');
      if ((await generationStore.filesOfMember(tx, source.id, false)).length === 0) {
        throw new InvalidStateError('This generation wrote no files, so there is nothing to restore.');
      }
      await claimSession(tx, project.id, source.sessionId);
      // It follows the session's latest version, like a follow-up: the version list stays linear.
      const latest = await generationStore.latestSucceededOfSession(tx, project.id, source.sessionId);
      const values = { projectId: project.id, createdBy: scope.userId!, sessionId: source.sessionId, parentId: latest?.id ?? null, prompt: source.prompt };
      // No model call, so no fix rounds either.
      return insertGeneration(tx, deps, { ...values, restoredFrom: source.id, maxFixRounds: 0 }, project);
    }),
  );
  announce(deps, generation);
  return generation;
}

/**
 * The pipeline's stand-in for the model's answer on a restore: changes that turn the
 * workspace it would start from (startingVersion) into exactly the restored files, but
 * for those whose paths Kiln now refuses (`refused`).
 */
export async function restoredAnswer(
  db: Db,
  generation: GenerationRow,
  startsFrom: { template: Record<string, string>; parentFiles: { path: string; content: string }[] },
): Promise<{ changes: OutputEvent[]; refused: string[] }> {
  const { kept: files, refused } = withoutRefusedPaths(await serviceScope(db).run((tx) => generationStore.filesOf(tx, generation.restoredFrom!)));
  const kept = new Set(files.map((file) => file.path));
  const dropped = [...startingVersion(startsFrom.template, startsFrom.parentFiles).keys()].filter((path) => !kept.has(path));
  return {
    changes: [
      ...dropped.map((path): OutputEvent => ({ type: 'delete', path })),
      ...files.map(({ path, content }): OutputEvent => ({ type: 'file', path, content })),
    ],
    refused,
  };
}
