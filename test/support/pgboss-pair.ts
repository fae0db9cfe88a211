import type { Environment } from '../../src/config.js';
import { createTestDatabase, type TestDatabase } from './db.js';
import { signUp, type TestUser } from './fixtures.js';
import { type FakeFlutter, fakeFlutter, type Instance, startInstance, tempDir } from './generation-helpers.js';

export interface PgBossPair {
  database: TestDatabase;
  api: Instance;
  worker: Instance;
  owner: TestUser;
  flutter: FakeFlutter;
  stop(): Promise<void>;
}

/**
 * A ROLE=api and a ROLE=worker instance on a fresh PostgreSQL database with QUEUE=pgboss and
 * EVENTS=postgres, the fake flutter, and a signed-up owner: a job sent by one is run by the other.
 */
export async function startPgBossPair(label: string, env: Environment = {}): Promise<PgBossPair> {
  const database = await createTestDatabase();
  const data = await tempDir(label);
  const flutter = await fakeFlutter('ok');
  const shared = { ...env, DATABASE_URL: database.url!, QUEUE: 'pgboss', EVENTS: 'postgres', DATA_DIR: data.path, FLUTTER_BIN: flutter.bin };
  // API first: it creates pg-boss's schema and queue; then a worker in "another process".
  const api = await startInstance(database, { ...shared, ROLE: 'api' });
  const worker = await startInstance(database, { ...shared, ROLE: 'worker' });
  const owner = await signUp(api);
  return {
    database,
    api,
    worker,
    owner,
    flutter,
    stop: async () => {
      await api.stop();
      await worker.stop();
      await database.close();
      await data.remove();
      await flutter.remove();
    },
  };
}
