import { ConfigError, loadConfigOrExit } from '../config.js';
import { openDatabase } from './client.js';
import { migrateDatabase } from './migrate.js';
import { DatabaseUnreachableError, isDatabaseUnreachable } from './unreachable.js';

// `npm run db:migrate`: the same migrations `npm start` applies.
const config = loadConfigOrExit();
const database = await openDatabase({
  url: config.database.url,
  dataDir: config.dataDir,
  onDataDirBusy: (holder) => process.stderr.write(`Waiting for process ${holder} to let go of DATA_DIR (a Kiln running on it?)\n`),
}).catch((error: unknown) => {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`${error.message}\n`);
  process.exit(1);
});
await migrateDatabase(database).catch(async (error: unknown) => {
  await database.close().catch(() => {});
  // A database out of reach is told as `npm start` tells it: one line; anything else is a bug, with its stack.
  if (!database.url || !isDatabaseUnreachable(error)) throw error;
  process.stderr.write(`${new DatabaseUnreachableError(database.url, error).message}\n`);
  process.exit(1);
});
await database.close();
process.stdout.write(`Migrated the ${database.kind} database.\n`);
