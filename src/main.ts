import { pathToFileURL } from 'node:url';
import { buildApp } from './api/server.js';
import { createAuthProvider } from './auth/index.js';
import { type Config, ConfigError, parseConfig } from './config.js';
import { type Database, openDatabase } from './db/client.js';
import { migrateDatabase } from './db/migrate.js';
import { createMemoryEventBus } from './events/bus.js';
import { startWorker, type Worker } from './jobs/worker.js';
import { createLlmProvider } from './llm/index.js';
import { type Logger, createLogger } from './observability/logger.js';
import { createSecretBox, loadEncryptionKey } from './projects/secret-box.js';

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
  const encryptionKey = await loadEncryptionKey({ configured: config.encryptionKey, dataDir: config.dataDir, embedded: !config.database.url });
  const secretBox = encryptionKey ? createSecretBox(encryptionKey) : undefined;
  const bus = createMemoryEventBus();
  const llm = createLlmProvider(config.llm);
  const provider = { name: llm.name, model: llm.model };
  const worker: Worker | undefined =
    config.role === 'api'
      ? undefined
      : startWorker({
          provider,
          concurrency: config.generations.workerConcurrency,
          pipeline: { db: database.db, bus, llm, logger, secretBox, workspaces: config.workspaces, toolchain: config.toolchain, leaseMs: config.generations.leaseMs },
        });
  const generations = {
    bus,
    provider,
    maxActivePerUser: config.generations.maxActivePerUser,
    wakeWorkers: () => worker?.wake(),
  };
  const app = buildApp({ config, database, auth, logger, bus, generations, secretBox });
  const url = await app.start(options.port);
  logger.info({ source: 'main', startupMs: Math.round(performance.now() - started), database: database.kind }, `Kiln is listening on ${url}/graphql`);
  return {
    url,
    stop: async () => {
      await app.stop();
      await worker?.stop();
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
