import { randomUUID } from 'node:crypto';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql } from 'drizzle-orm';
import { createYoga } from 'graphql-yoga';
import { useServer } from 'graphql-ws/use/ws';
import { WebSocketServer } from 'ws';
import { isMigrated } from '../db/migrate.js';
import { type Context, type Services, createContext } from './context.js';
import { useRequestIdErrors } from './errors-plugin.js';
import { graphiqlExample } from './graphiql-example.js';
import { schema } from './schema/index.js';

export interface App {
  /** Listens on the given port (0 for any); resolves to the base URL. */
  start(port?: number, host?: string): Promise<string>;
  stop(): Promise<void>;
}

type ServerContext = { req?: IncomingMessage; connectionParams?: Record<string, unknown> };

export function buildApp(services: Services): App {
  const { config } = services;
  const yoga = createYoga<ServerContext, Context>({
    schema,
    graphqlEndpoint: '/graphql',
    landingPage: false,
    logging: yogaLogger(services.logger),
    graphiql: { title: 'Kiln', defaultQuery: graphiqlExample },
    cors: config.http.corsOrigins.length > 0 ? { origin: config.http.corsOrigins, credentials: true } : false,
    plugins: [useRequestIdErrors()],
    context: ({ request, connectionParams }) =>
      createContext(services, {
        requestId: randomUUID(),
        authorization: connectionParams ? String(connectionParams.authorization ?? '') : request.headers.get('authorization'),
      }),
  });

  const server: Server = createServer((req, res) => {
    const path = req.url?.split('?')[0];
    if (path === '/health') return sendJson(res, 200, { status: 'ok' });
    if (path === '/ready') return void ready(services).then((ok) => sendJson(res, ok ? 200 : 503, { ready: ok }));
    return yoga(req, res);
  });

  // graphql-ws on the same port and path, through the same Yoga plugins and context (STYLE 4).
  const wsServer = new WebSocketServer({ server, path: '/graphql' });
  const wsCleanup = useServer<Record<string, unknown>, { request: IncomingMessage }>(
    {
      onConnect: async (ctx) => {
        const authorization = ctx.connectionParams?.authorization;
        if (typeof authorization !== 'string') return false;
        try {
          await services.auth.verify(authorization.replace(/^Bearer\s+/i, ''));
          return true;
        } catch {
          return false; // 4403 Forbidden, without saying why
        }
      },
      execute: (args) => (args.rootValue as Enveloped).execute(args),
      subscribe: (args) => (args.rootValue as Enveloped).subscribe(args),
      onSubscribe: async (ctx, _id, params) => {
        const enveloped = yoga.getEnveloped({ req: ctx.extra.request, connectionParams: ctx.connectionParams, params });
        const args = {
          schema: enveloped.schema,
          operationName: params.operationName,
          document: enveloped.parse(params.query),
          variableValues: params.variables,
          contextValue: await enveloped.contextFactory(),
          rootValue: { execute: enveloped.execute, subscribe: enveloped.subscribe },
        };
        const errors = enveloped.validate(args.schema, args.document);
        return errors.length > 0 ? errors : args;
      },
    },
    wsServer,
  );

  return {
    start: (port = config.http.port, host = config.http.host) =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          const { port: bound } = server.address() as AddressInfo;
          resolve(`http://${host.includes(':') ? `[${host}]` : host}:${bound}`);
        });
      }),
    stop: async () => {
      await wsCleanup.dispose();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

type Enveloped = ReturnType<ReturnType<typeof createYoga>['getEnveloped']>;

async function ready(services: Services): Promise<boolean> {
  try {
    await services.database.db.execute(sql`select 1`);
    return await isMigrated(services.database);
  } catch {
    return false;
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown) {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

/** Yoga's own messages (schema or transport failures) through pino. */
function yogaLogger(logger: Services['logger']) {
  const log = logger.child({ source: 'yoga' });
  return {
    debug: (...args: unknown[]) => log.trace({ args }, 'yoga'),
    info: (...args: unknown[]) => log.info({ args }, 'yoga'),
    warn: (...args: unknown[]) => log.warn({ args }, 'yoga'),
    error: (...args: unknown[]) => log.error({ err: args[0] }, 'yoga error'),
  };
}
