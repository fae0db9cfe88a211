import { pathToFileURL } from 'node:url';
import { sql } from 'drizzle-orm';
import { loadManifest } from './api/persisted-operations.js';
import { createRateLimits, rateLimitStoreFor } from './api/rate-limit.js';
import { buildApp } from './api/server.js';
import { loadTracingPlugin } from './api/tracing-plugin.js';
import { createOutputs } from './artifacts/outputs.js';
import { createAuthProvider } from './auth/index.js';
import { type Config, ConfigError, configWarnings, loadConfigOrExit, ownDatabaseProblems } from './config.js';
import { type Database, openDatabase } from './db/client.js';
import { migrateDatabase } from './db/migrate.js';
import { DatabaseUnreachableError, isDatabaseUnreachable } from './db/unreachable.js';
import type { EventBus } from './events/bus.js';
import { createEventBus } from './events/index.js';
import { createJobQueue } from './jobs/queue.js';
import { startWorker, type Worker } from './jobs/worker.js';
import { createLlmProvider } from './llm/index.js';
import { type Logger, createLogger } from './observability/logger.js';
import { createMetrics } from './observability/metrics.js';
import { startTracing } from './observability/tracing.js';
import { verifyEncryptionKey } from './projects/key-check.js';
import { createSecretBox, loadEncryptionKey, type SecretBox } from './projects/secret-box.js';
import { serviceScope } from './db/scope.js';
import { createStreamAccess } from './generations/stream-access.js';
import { generationStore } from './generations/store.js';
import { createBuildSandbox } from './toolchain/sandbox.js';

export interface Kiln {
  url: string;
  /** The event bus of this process (benchmarks publish synthetic events through it). */
  bus: EventBus;
  /**
   * Stops the API and the worker together: running generations get `graceMs` (default 0) to
   * finish before they are handed back (INTERRUPTED, retried elsewhere). Calling it again
   * while a grace period runs cuts it short.
   */
  stop(options?: { graceMs?: number }): Promise<void>;
}

/** The project secrets' box: undefined when they are disabled, refused when the key does not open what it sealed. */
async function openSecretBox(config: Config, database: Database): Promise<SecretBox | undefined> {
  const encryptionKey = await loadEncryptionKey({ configured: config.encryptionKey, dataDir: config.dataDir, embedded: !config.database.url });
  if (!encryptionKey) return undefined;
  const secretBox = createSecretBox(encryptionKey);
  await verifyEncryptionKey(database.db, secretBox);
  return secretBox;
}

/** Why HOST and PORT cannot be listened on, for the operator to fix (a ConfigError: one line, no stack), or undefined for any other failure. */
function listenProblem(error: unknown, host: string, port: number): ConfigError | undefined {
  const { code, syscall } = (error ?? {}) as NodeJS.ErrnoException;
  if (typeof code !== 'string' || (syscall !== 'listen' && syscall !== 'getaddrinfo')) return undefined;
  const hints: Record<string, string> = {
    EADDRINUSE: 'something else listens there: choose another PORT, or stop it',
    EADDRNOTAVAIL: 'HOST is no address of this machine',
    EACCES: 'a PORT below 1024 needs privileges: choose another',
    ENOTFOUND: 'HOST names no address',
    EAI_AGAIN: 'HOST could not be resolved (DNS)',
  };
  const where = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  return new ConfigError([`Cannot listen on ${where} (${code}): ${hints[code] ?? 'check HOST and PORT'}`]);
}

/** How long a shutdown may take beyond WORKER_SHUTDOWN_GRACE_SECONDS (handing runs back, closing connections). */
const SHUTDOWN_MARGIN_MS = 30_000;

/** The composition root: config → database → auth → API. */
export async function startKiln(config: Config, options: { logger?: Logger; database?: Database; port?: number } = {}): Promise<Kiln> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const started = performance.now();
  // Read first: an unreadable manifest is refused (a ConfigError) before the database opens.
  const persistedOperations = config.limits.persistedOperations.only ? loadManifest(config.limits.persistedOperations.manifest!) : undefined;
  // Probed while the database opens (and migrates): a production worker that cannot
  // sandbox builds must not run any, so nothing below starts the worker or listens before
  // it decides. An API-only instance builds nothing.
  const sandboxProbe = config.role === 'api' ? Promise.resolve(undefined) : createBuildSandbox(config.buildSandbox, logger);
  sandboxProbe.catch(() => {}); // awaited below; this only keeps its failure from counting as unhandled meanwhile
  const database =
    options.database ??
    (await openDatabase({
      url: config.database.url,
      dataDir: config.dataDir,
      maxConnections: config.database.poolMax,
      // A Kiln still shutting down on this DATA_DIR may take as long as runMain lets it to let go.
      dataDirWaitMs: config.generations.shutdownGraceMs + SHUTDOWN_MARGIN_MS + 10_000,
      onDataDirBusy: (holder) => logger.warn({ source: 'main', holder, dataDir: config.dataDir }, `waiting for process ${holder} to let go of DATA_DIR (a Kiln still shutting down?)`),
    }));
  // Without migrations, one statement all the same: an unreachable database is told here, not by the first part to query it.
  const reach = () => (config.database.migrateOnStart ? migrateDatabase(database) : database.db.execute(sql`select 1`));
  const [migration, probe] = await Promise.allSettled([reach(), sandboxProbe]);
  if (migration.status === 'rejected' || probe.status === 'rejected') {
    // Closed, an embedded DATA_DIR is let go of too, for the next start.
    if (!options.database) await database.close();
    if (migration.status === 'rejected' && probe.status === 'rejected') logger.error({ source: 'main', err: probe.reason }, 'the build sandbox probe failed too');
    if (migration.status === 'rejected' && database.url && isDatabaseUnreachable(migration.reason)) throw new DatabaseUnreachableError(database.url, migration.reason);
    throw migration.status === 'rejected' ? migration.reason : (probe as PromiseRejectedResult).reason;
  }
  const buildSandbox = probe.value;
  // Not through serviceScope: a scrape must answer within Prometheus' timeout, not ride out an outage.
  const metrics = createMetrics({ activeGenerations: () => database.db.transaction((tx) => generationStore.countActive(tx)), logger });
  const rateLimits = createRateLimits(config.rateLimits, rateLimitStoreFor(database), metrics.observeRefusal);
  // Independent of one another once the schema is there: keys, connections and SDKs load together.
  const opened: { close(): Promise<void> }[] = [];
  const kept = <T extends { close(): Promise<void> }>(part: Promise<T>) => part.then((value) => (opened.push(value), value));
  const parts = [
    kept(createAuthProvider(config.auth, database.db, logger)),
    openSecretBox(config, database),
    kept(createEventBus(config, database, logger)),
    kept(createJobQueue(config, database, logger)),
    createLlmProvider(config.llm),
    kept(createOutputs({ config, db: database.db, logger, metrics, collectPeriodically: config.role !== 'api' })),
    config.tracing.enabled ? loadTracingPlugin() : undefined,
  ] as const;
  await Promise.allSettled(parts);
  const closeOpened = async () => {
    await Promise.allSettled(opened.map((part) => part.close()));
    if (!options.database) await database.close();
  };
  const [auth, secretBox, events, queue, llm, outputs] = await Promise.all(parts).catch(async (error: unknown) => {
    // One failed (a bad key, an unreachable Redis): what did open is closed, so a caller that survives the error holds nothing.
    await closeOpened();
    throw error;
  });
  const bus = events.bus;
  const provider = { name: llm.name, model: llm.model };
  // Started once the API listens (below): a start that fails to listen (the port is taken)
  // must not leave a worker claiming generations behind it. Until then a wake-up finds no
  // worker, and the worker's first scan finds what was queued meanwhile.
  let worker: Worker | undefined;
  const generations = {
    bus,
    provider,
    maxActivePerUser: config.generations.maxActivePerUser,
    budgetReservationTokens: config.generations.budgetReservationTokens,
    defaultMaxFixRounds: config.generations.defaultMaxFixRounds,
    wakeWorkers: (generationId: string) => worker?.wake(generationId),
    enqueue: queue.enqueue,
    onRefused: metrics.observeRefusal,
  };
  const streamAccess = createStreamAccess({
    stillValid: (tokens) => auth.stillValid(tokens),
    accessOf: (userIds, generationIds) => serviceScope(database.db).run((tx) => generationStore.accessOf(tx, userIds, generationIds)),
    intervalMs: config.subscriptions.accessRecheckMs,
    maxPerUser: config.subscriptions.maxLivePerUser,
    maxPerAddress: config.subscriptions.maxLivePerAddress,
    onRefused: (per) => metrics.observeRefusal(per === 'user' ? 'live_streams_per_user' : 'live_streams_per_address'),
    logger,
  });
  let app: ReturnType<typeof buildApp> | undefined;
  let url: string;
  try {
    app = buildApp({ config, database, auth, logger, bus, generations, secretBox, rateLimits, metrics, streamAccess, outputs, buildSandbox, persistedOperations });
    url = await app.start(options.port);
  } catch (error) {
    // Not built or not listening (EADDRINUSE): what was opened is closed, as above.
    await app?.stop().catch(() => {});
    streamAccess.close();
    await closeOpened();
    throw listenProblem(error, config.http.host, options.port ?? config.http.port) ?? error;
  }
  const api = app;
  if (config.role !== 'api') {
    worker = startWorker({
      provider,
      concurrency: config.generations.workerConcurrency,
      queue,
      // Only over a PGlite it opened itself: a database handed in may be shared by other instances.
      soleWorker: !options.database && database.kind === 'pglite',
      pipeline: { db: database.db, bus, llm, logger, secretBox, metrics, workspaces: config.workspaces, toolchain: { ...config.toolchain, sandbox: buildSandbox }, leaseMs: config.generations.leaseMs, budgetReservationTokens: config.generations.budgetReservationTokens, outputs },
    });
  }
  outputs.listening(url);
  logger.info({ source: 'main', startupMs: Math.round(performance.now() - started), database: database.kind }, `Kiln is listening on ${url}/graphql`);
  for (const warning of configWarnings(config)) logger.warn({ source: 'main' }, warning);
  let stopping: Promise<void> | undefined;
  return {
    url,
    bus,
    stop: (stopOptions = {}) => {
      if (stopping) {
        void worker?.stop({ graceMs: 0 });
        return stopping;
      }
      stopping = (async () => {
        // Together: the worker stops taking jobs at once, whatever the API's connections wait for.
        const halves = await Promise.allSettled([api.stop().finally(() => streamAccess.close()), worker?.stop({ graceMs: stopOptions.graceMs ?? 0 })]);
        const failures = halves.flatMap((half) => (half.status === 'rejected' ? [half.reason as unknown] : []));
        // Each closed whatever the others did, and only once both halves are done: a worker still handing runs back needs them.
        const parts = [queue, events, auth, outputs, ...(options.database ? [] : [database])];
        for (const part of parts) await part.close().catch((error: unknown) => failures.push(error));
        if (failures.length === 1) throw failures[0];
        if (failures.length > 1) throw new AggregateError(failures, 'Stopping Kiln failed');
      })();
      return stopping;
    },
  };
}

/** Kiln as a process: config from the environment, tracing, the server, and shutdown on SIGTERM/SIGINT. */
export async function runMain(): Promise<void> {
  const config = loadConfigOrExit();
  // Refused like a bad variable, before anything opens: the process opens its own database.
  const problems = ownDatabaseProblems(config);
  if (problems.length > 0) {
    process.stderr.write(`${new ConfigError(problems).message}\n`);
    process.exit(1);
  }
  const logger = createLogger(config.logLevel);
  // Process-wide, like the logger, and before anything is traced; undefined when OTEL_* leaves tracing off.
  const tracing = await startTracing(config.tracing);
  const kiln = await startKiln(config, { logger }).catch((error: unknown) => {
    // Problems found once the database is open (e.g. a KILN_ENCRYPTION_KEY that does not fit) read like config errors;
    // a database out of reach is one line too. Anything else is a bug, with its stack.
    if (!(error instanceof ConfigError) && !(error instanceof DatabaseUnreachableError)) throw error;
    process.stderr.write(`${error.message}\n`);
    process.exit(1);
  });
  // Graceful shutdown: stop taking requests and jobs, let running generations finish
  // within WORKER_SHUTDOWN_GRACE_SECONDS, hand the rest back, close connections, exit.
  // A second signal hands them back at once.
  let signals = 0;
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      const first = signals++ === 0;
      const graceMs = first ? config.generations.shutdownGraceMs : 0;
      logger.info({ source: 'main', signal, graceMs }, 'shutting down');
      if (first) {
        // A database that keeps its connections open but never answers holds queries, and the
        // runs waiting on them, forever: the process ends anyway, a margin after the grace.
        const boundMs = config.generations.shutdownGraceMs + SHUTDOWN_MARGIN_MS;
        setTimeout(() => {
          logger.error({ source: 'main', boundMs }, 'shutdown did not finish in time; exiting');
          process.exit(1);
        }, boundMs).unref();
      }
      // Spans still buffered are exported before the process goes.
      kiln.stop({ graceMs }).then(() => tracing?.shutdown()).then(
        () => process.exit(0),
        (error: unknown) => {
          logger.error({ source: 'main', err: error }, 'shutdown failed');
          process.exit(1);
        },
      );
    });
  }
}

// `npm run dev` runs this file; `npm start` calls runMain from scripts/start.mjs.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await runMain();
