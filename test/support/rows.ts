import { randomUUID } from 'node:crypto';
import type { Tx } from '../../src/db/client.js';
import { generations, projects, users } from '../../src/db/schema.js';

/**
 * A user, their WEB project `name` and one generation of it, written with `tx` (the service
 * scope's): the least a test of a store, a bus or the outputs needs to hang its rows on.
 */
export async function insertGenerationRow(tx: Tx, name: string) {
  const userId = randomUUID();
  await tx.insert(users).values({ id: userId, email: `${userId}@example.com` });
  const [project] = await tx.insert(projects).values({ ownerId: userId, name, target: 'WEB' }).returning();
  const [generation] = await tx
    .insert(generations)
    .values({ projectId: project!.id, createdBy: userId, sessionId: randomUUID(), prompt: 'p', provider: 'offline', model: 'offline' })
    .returning();
  return { userId, project: project!, generation: generation! };
}
