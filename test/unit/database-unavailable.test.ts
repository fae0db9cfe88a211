import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { GraphQLObjectType, GraphQLSchema, GraphQLString, parse } from 'graphql';
import { createClient } from 'graphql-ws';
import { createYoga } from 'graphql-yoga';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { type Context, contextFactory, type Services } from '../../src/api/context.js';
import { useRequestIdErrors } from '../../src/api/errors-plugin.js';
import { useStreamErrors } from '../../src/api/stream-errors.js';
import { attachWebSocket, type WebSocketOptions } from '../../src/api/websocket.js';
import type { AuthProvider } from '../../src/auth/provider.js';
import { DatabaseUnavailableError, isConnectionError, retryThroughOutage } from '../../src/db/outage.js';
import type { Claims } from '../../src/db/scope.js';
import { createLogger } from '../../src/observability/logger.js';
import { collect, liveClient, wsUrl } from '../support/live.js';
import { LogCapture } from '../support/log-capture.js';

// A database still unreachable after the outage window (OUTAGE_RETRY_MS) gives the client
// a typed, retryable answer rather than a masked 500 or a fatal close: DATABASE_UNAVAILABLE
// (HTTP 503 with Retry-After when the token could not be verified), and over graphql-ws a
// 1013 close, which graphql-ws clients retry. The 45 s wait itself is database-outage.test.ts's;
// here the token check and the resolvers fail at once with a connection error's code.

const UNAVAILABLE = { message: 'The database is unreachable for the moment; try again shortly.', extensions: { code: 'DATABASE_UNAVAILABLE' } };
const WARN = 40;
const ERROR = 50;

/** What a database call throws once the outage window has passed: postgres.js's refused connection, wrapped as drizzle wraps it, at the end of retryThroughOutage. */
function connectionRefused(): Error {
  const driver = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
  return new DatabaseUnavailableError(new Error('Failed query: select 1', { cause: driver }));
}

/** What a refused fetch throws (undici, through jose when Supabase's signing keys cannot be fetched): not the database. */
function fetchRefused(): Error {
  return new TypeError('fetch failed', { cause: Object.assign(new Error('connect ECONNREFUSED 10.0.0.9:443'), { code: 'ECONNREFUSED' }) });
}

const claims: Claims = { sub: 'user-1', role: 'authenticated', email: 'a@example.com' };

/** Kiln's context factory, error plugins and graphql-ws transport over a small schema, with an auth provider the test steers. */
async function startApp() {
  const logs = new LogCapture();
  const logger = createLogger('trace', logs);
  /** What the next verifications fail with, one each; verified when empty. */
  const verifyFailures: Error[] = [];
  const auth = {
    verify: (token: string) => {
      const failure = verifyFailures.shift();
      return failure ? Promise.reject(failure) : Promise.resolve({ ...claims, token });
    },
  } as unknown as AuthProvider;
  // The factory reads these of the composition root; nothing here reaches the database.
  const services = { config: { subscriptions: { bufferLimit: 10 } }, auth, logger, database: { db: undefined } } as unknown as Services;
  const createContext = contextFactory(services);
  const schema = new GraphQLSchema({
    query: new GraphQLObjectType<unknown, Context>({
      name: 'Query',
      fields: {
        viewer: { type: GraphQLString, resolve: (_root, _args, ctx) => ctx.viewer?.id },
        broken: {
          type: GraphQLString,
          resolve: () => {
            throw connectionRefused();
          },
        },
      },
    }),
    subscription: new GraphQLObjectType({
      name: 'Subscription',
      fields: {
        ticks: {
          type: GraphQLString,
          // Fails before it returns its stream, as the authorising read of a real one would.
          subscribe: () => Promise.reject(connectionRefused()),
        },
      },
    }),
  });
  let requests = 0;
  const yoga = createYoga<{ connectionParams?: Record<string, unknown> }, Context>({
    schema,
    logging: false,
    maskedErrors: { isDev: false },
    plugins: [useStreamErrors(), useRequestIdErrors()],
    context: ({ request, connectionParams }) =>
      createContext({
        requestId: `request-${++requests}`,
        transport: connectionParams ? 'websocket' : 'http',
        authorization: connectionParams ? String(connectionParams.authorization ?? '') : request.headers.get('authorization'),
      }),
  });
  const server: Server = createServer(yoga);
  const websocket = attachWebSocket({
    server,
    path: '/graphql',
    yoga: yoga as unknown as WebSocketOptions['yoga'],
    auth,
    logger,
    corsOrigins: [],
    connectionInitTimeoutMs: 5000,
    maxSubscriptions: 10,
    keepAliveMs: 0,
    authRecheckMs: 60_000,
    acquireConnection: () => () => {},
    clientIpOf: () => '127.0.0.1',
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const post = (query: string, headers: Record<string, string> = { authorization: 'Bearer token-1' }) =>
    fetch(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ query }) });
  return {
    url,
    logs,
    verifyFailures,
    post,
    stop: async () => {
      await websocket.dispose();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('a database still unreachable after the outage window', () => {
  let app: Awaited<ReturnType<typeof startApp>>;
  afterEach(async () => app?.stop());

  it('fails a request whose token cannot be verified with DATABASE_UNAVAILABLE, HTTP 503 and Retry-After, logged at warn under its request id', async () => {
    app = await startApp();
    app.verifyFailures.push(connectionRefused());
    const response = await app.post('{ viewer }');
    expect(response.status).toBe(503);
    expect(response.headers.get('retry-after')).toBe('5');
    expect(await response.json()).toEqual({ errors: [UNAVAILABLE] });
    const records = app.logs.records();
    expect(records.filter((record) => record.requestId === 'request-1' && record.level === WARN && JSON.stringify(record).includes('ECONNREFUSED'))).toHaveLength(1);
    expect(records.filter((record) => Number(record.level) >= ERROR)).toEqual([]);
    // The next request is verified and answered.
    expect(await (await app.post('{ viewer }')).json()).toEqual({ data: { viewer: 'user-1' } });
  });

  it.each([
    ['GoTrue answered 502', () => new Error('GoTrue answered 502')],
    ["a refused connection that is not the database's", fetchRefused],
  ])('still masks any other verification failure (%s) as "Unexpected error." with HTTP 500', async (_label, failure) => {
    app = await startApp();
    app.verifyFailures.push(failure());
    const response = await app.post('{ viewer }');
    expect(response.status).toBe(500);
    expect(await response.json()).toEqual({ errors: [{ message: 'Unexpected error.', extensions: { code: 'INTERNAL_SERVER_ERROR', requestId: 'request-1' } }] });
  });

  it('fails a resolver and a subscription that cannot start with DATABASE_UNAVAILABLE, not as an unexpected error', async () => {
    app = await startApp();
    const query = await app.post('{ broken }');
    expect(query.status).toBe(200);
    expect(await query.json()).toEqual({ data: { broken: null }, errors: [{ ...UNAVAILABLE, locations: [{ line: 1, column: 3 }], path: ['broken'] }] });

    const subscription = await app.post('subscription { ticks }', { authorization: 'Bearer token-1', accept: 'text/event-stream' });
    const body = await subscription.text();
    const next = body.split('\n\n').find((frame) => frame.startsWith('event: next'));
    expect(JSON.parse(next!.slice(next!.indexOf('data: ') + 6))).toMatchObject({ errors: [UNAVAILABLE] });
    expect(body).toContain('event: complete');
    expect(app.logs.records().filter((record) => record.msg === 'unexpected error')).toEqual([]);
    // The resolver's cause is in the log, under its request id.
    expect(app.logs.records().filter((record) => record.msg === 'the database is unreachable' && record.level === WARN && record.requestId === 'request-1')).toHaveLength(1);
  });

  it.each([
    ['closes a socket whose token cannot be verified with 1013, which graphql-ws clients retry', connectionRefused, { code: 1013, reason: 'Try again later: the database is unreachable' }],
    ['closes with 4500 for any other verification failure', () => new Error('GoTrue answered 502'), { code: 4500, reason: 'Internal server error' }],
    ["closes with 4500 for a refused connection that is not the database's", fetchRefused, { code: 4500, reason: 'Internal server error' }],
  ])('%s', async (_label, failure, closed) => {
    app = await startApp();
    app.verifyFailures.push(failure());
    const live = liveClient(app.url, 'token-1');
    try {
      expect(await live.closed).toEqual(closed);
    } finally {
      await live.dispose();
    }
  });

  it('lets a graphql-ws client that retries connect once the database answers again', async () => {
    app = await startApp();
    app.verifyFailures.push(connectionRefused());
    const closes: number[] = [];
    const client = createClient({
      url: wsUrl(app.url),
      webSocketImpl: WebSocket,
      connectionParams: { authorization: 'Bearer token-1' },
      retryAttempts: 1,
      retryWait: () => Promise.resolve(),
      on: { closed: (event) => void closes.push((event as { code: number }).code) },
    });
    try {
      const viewer = collect(client, parse('{ viewer }') as TypedDocumentNode<{ viewer: string | null }, Record<string, never>>, {});
      expect(await viewer.ended).toEqual({ errors: undefined });
      expect(viewer.items).toEqual([{ viewer: 'user-1' }]);
      expect(closes).toEqual([1013]);
    } finally {
      await client.dispose();
    }
  });
});

describe('retryThroughOutage', () => {
  it('gives up after its window with a DatabaseUnavailableError around the last connection error, and throws anything else as it is', async () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    let attempts = 0;
    const outage = retryThroughOutage(
      () => {
        attempts++;
        return Promise.reject(refused);
      },
      isConnectionError,
      { windowMs: 150 },
    );
    const failure = await outage.catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(DatabaseUnavailableError);
    expect((failure as Error).cause).toBe(refused);
    expect(attempts).toBeGreaterThan(1);
    // The pipeline still tells a lost connection by its cause (INTERRUPTED).
    expect(isConnectionError(failure)).toBe(true);

    const bug = new Error('column "nope" does not exist');
    await expect(retryThroughOutage(() => Promise.reject(bug), isConnectionError, { windowMs: 150 })).rejects.toBe(bug);
  });
});
