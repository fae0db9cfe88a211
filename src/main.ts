import { pathToFileURL } from 'node:url';
import { buildApp } from './api/server.js';
import { createAuthProvider } from './auth/index.js';
import { type Config, ConfigError, parseConfig } from './config.js';
import { type Database, openDatabase } from './db/client.js';
import { migrateDatabase } from './db/migrate.js';
import { type Logger, createLogger } from './observability/logger.js';

export interface Kiln {
  url: string;
  stop(): Promise<void>;
}

/** The composition root: config → database → auth → API. */
export async function startKiln(config: Config, options: { logger?: Logger; database?: Database; port?: number } = {}): Promise<Kiln> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const started = performance.now();
  const database = options.database ?? (await openDatabase({ url: config.database.url, dataDir: config.dataDir }));
  if (config.database.migrateOnStart) await migrateDatabase(database);
  const auth = await createAuthProvider(config.auth, database.db);
  const app = buildApp({ config, database, auth, logger });
  const url = await app.start(options.port);
  logger.info({ source: 'main', startupMs: Math.round(performance.now() - started), database: database.kind }, `Kiln is listening on ${url}/graphql`);
  return {
    url,
    stop: async () => {
      await app.stop();
      await auth.close();
      if (!options.database) await database.close();
    },
  };
}

export function loadConfigOrExit(env: Record<string, string | undefined> = process.env): Config {
  try {
    return parseConfig(env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`${error.message}\n`);
    process.exit(1);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const config = loadConfigOrExit();
  const logger = createLogger(config.logLevel);
  const kiln = await startKiln(config, { logger });
  // Graceful shutdown: stop taking requests, close connections, then exit.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      logger.info({ source: 'main', signal }, 'shutting down');
      kiln.stop().then(
        () => process.exit(0),
        (error: unknown) => {
          logger.error({ source: 'main', err: error }, 'shutdown failed');
          process.exit(1);
        },
      );
    });
  }
}
