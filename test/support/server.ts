import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { print } from 'graphql';
import { type Environment, parseConfig } from '../../src/config.js';
import { type Kiln, startKiln } from '../../src/main.js';
import { createLogger } from '../../src/observability/logger.js';
import { type TestDatabase, createTestDatabase } from './db.js';

export interface TestServer {
  url: string;
  database: TestDatabase;
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

/** Kiln on port 0 over a fresh database of its own; always `stop()` it. */
export async function startTestServer(env: Environment = {}): Promise<TestServer> {
  const database = await createTestDatabase();
  const config = parseConfig({ DATA_DIR: '.kiln-test', LOG_LEVEL: 'silent', OFFLINE_CHUNK_DELAY_MS: '0', ...env });
  let kiln: Kiln;
  try {
    kiln = await startKiln(config, { database, port: 0, logger: createLogger(config.logLevel) });
  } catch (error) {
    await database.close();
    throw error;
  }
  const endpoint = `${kiln.url}/graphql`;
  const client = (token?: string): GraphQLClient => {
    const post = (body: unknown, headers: Record<string, string> = {}) =>
      fetch(endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
        body: typeof body === 'string' ? body : JSON.stringify(body),
      });
    const request = async <T, V>(document: TypedDocumentNode<T, V>, variables?: V) =>
      (await (await post({ query: print(document), variables })).json()) as GraphQLResponse<T>;
    return {
      post,
      request,
      expectNoErrors: async (document, variables) => {
        const response = await request(document, variables);
        if (response.errors?.length || !response.data) {
          throw new Error(`GraphQL errors: ${JSON.stringify(response.errors)}`);
        }
        return response.data;
      },
    };
  };
  return {
    url: kiln.url,
    database,
    client,
    stop: async () => {
      await kiln.stop();
      await database.close();
    },
  };
}
