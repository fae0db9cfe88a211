import { loadConfigOrExit } from '../config.js';
import { openDatabase } from './client.js';
import { migrateDatabase } from './migrate.js';

// `npm run db:migrate`: the same migrations `npm start` applies.
const config = loadConfigOrExit();
const database = await openDatabase({ url: config.database.url, dataDir: config.dataDir });
await migrateDatabase(database);
await database.close();
process.stdout.write(`Migrated the ${database.kind} database.\n`);
