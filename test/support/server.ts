import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import type { DestinationStream } from 'pino';
import { type Environment, parseConfig } from '../../src/config.js';
import { type Kiln, startKiln } from '../../src/main.js';
import { createLogger } from '../../src/observability/logger.js';
import { type TestDatabase, createTestDatabase } from './db.js';
import { graphqlClient } from './fixtures.js';
import { useStarted } from './lifecycle.js';

export interface TestServer {
  url: string;
  database: TestDatabase;
  /** DATA_DIR of this server: a temporary directory of its own unless `env` names one. */
  dataDir: string;
  /** A GraphQL client; `token` goes into `Authorization: Bearer`. */
  client(token?: string): GraphQLClient;
  stop(): Promise<void>;
}

export interface GraphQLResponse<T> {
  data?: T;
  errors?: { message: string; extensions?: Record<string, unknown>; path?: (string | number)[] }[];
}

export interface GraphQLClient {
  request<T, V>(document: TypedDocumentNode<T, V>, variables?: V): Promise<GraphQLResponse<T>>;
  /** The data of a response that must have no errors. */
  expectNoErrors<T, V>(document: TypedDocumentNode<T, V>, variables?: V): Promise<T>;
  post(body: unknown, headers?: Record<string, string>): Promise<Response>;
}

/**
 * Builds in suites about the pipeline itself run unsandboxed: their fake tools report host
 * pids and write beside themselves. The sandbox suites pass BUILD_SANDBOX=bwrap.
 */
export const unsandboxedBuilds = { BUILD_SANDBOX: 'none', ALLOW_UNSANDBOXED_BUILDS: 'true' };

export interface TestServerOptions {
  /** A database the caller made (e.g. shared with another instance) and closes; a fresh one otherwise. */
  database?: TestDatabase;
  /** Sees every SQL statement sent to the fresh database (counting them, or failing one). */
  onQuery?: (query: string) => void;
  /** Where the server's log lines go (at LOG_LEVEL); stdout otherwise. */
  logTo?: DestinationStream;
}

/** Kiln on port 0 over a fresh database of its own; always `stop()` it. */
export async function startTestServer(env: Environment = {}, options: TestServerOptions = {}): Promise<TestServer> {
  const database = options.database ?? (await createTestDatabase({ onQuery: options.onQuery }));
  const closeDatabase = () => (options.database ? Promise.resolve() : database.close());
  // Workspaces and generated keys go to a directory of this server's own, unless `env` shares one.
  const ownDataDir = env.DATA_DIR ? undefined : await mkdtemp(path.join(tmpdir(), 'kiln-test-'));
  const removeDataDir = () => (ownDataDir ? rm(ownDataDir, { recursive: true, force: true }) : Promise.resolve());
  const config = parseConfig({ DATA_DIR: ownDataDir, LOG_LEVEL: 'silent', OFFLINE_CHUNK_DELAY_MS: '0', ...unsandboxedBuilds, ...env });
  let kiln: Kiln;
  try {
    kiln = await startKiln(config, { database, port: 0, logger: createLogger(config.logLevel, options.logTo) });
  } catch (error) {
    await closeDatabase();
    await removeDataDir();
    throw error;
  }
  return {
    url: kiln.url,
    database,
    dataDir: config.dataDir,
    client: (token) => graphqlClient(kiln.url, token),
    stop: async () => {
      await kiln.stop();
      await closeDatabase();
      await removeDataDir();
    },
  };
}

/** The file's or suite's server: started before its tests, stopped after them (its fields are set once they run). */
export function useTestServer(env: Environment = {}, options: TestServerOptions = {}): TestServer {
  return useStarted(() => startTestServer(env, options));
}
