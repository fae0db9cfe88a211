import { randomUUID } from 'node:crypto';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLRUCache, createYoga } from 'graphql-yoga';
import { isMigrated } from '../db/migrate.js';
import { observeRequest, routeOf, serveMetrics } from '../observability/metrics.js';
import { type Context, type Services, contextFactory } from './context.js';
import { useRequestIdErrors } from './errors-plugin.js';
import { graphiqlExample } from './graphiql-example.js';
import { renderGraphiQLPage, serveGraphiQLAsset, useGraphiQLHeaders } from './graphiql.js';
import { refuseOversizedBody, useChunkedBodyLimit, useQueryLimits, useSubscriptionSizeLimit } from './limits.js';
import { useOperationLog } from './operation-log.js';
import { usePersistedOperationsOnly } from './persisted-operations.js';
import { useSchemaPrivacy } from './production.js';
import { clientAddress } from './rate-limit.js';
import { useRequestPolicy } from './request-policy.js';
import { useUnstorableTextRefusal } from './input-guard.js';
import { schema } from './schema/index.js';
import { useSharedSubscriptionExecution } from './shared-execution.js';
import { useSseSubscriptions } from './sse.js';
import { useStreamErrors } from './stream-errors.js';
import { useTracing } from './tracing-plugin.js';
import { serveWebClient } from './web-client.js';
import { type WebSocketOptions, attachWebSocket } from './websocket.js';

export interface App {
  /** Listens on the given port (0 for any); resolves to the base URL. */
  start(port?: number, host?: string): Promise<string>;
  stop(): Promise<void>;
}

/** HTTP requests come with node's `req`; graphql-ws operations with the socket's client address and connection params. */
type ServerContext = { req?: IncomingMessage; clientIp?: string; connectionParams?: Record<string, unknown> };

export function buildApp(services: Services): App {
  const { config } = services;
  const createContext = contextFactory(services);
  const manifest = services.persistedOperations;
  // Never open to every operation because a caller left the manifest out.
  if (config.limits.persistedOperations.only && !manifest) throw new Error('PERSISTED_OPERATIONS_ONLY needs the manifest in services.persistedOperations');
  // A subscription's SSE events written straight to node's response, each result encoded once.
  const sse = useSseSubscriptions(services.logger, config.websocket.keepAliveMs);
  const yoga = createYoga<ServerContext, Context>({
    schema,
    graphqlEndpoint: '/graphql',
    landingPage: false,
    // Yoga's default keeps 1024 parsed documents and 1024 parse errors for an hour, keyed by their
    // text: 1 MiB documents (a 3-token query and a comment) held ~2 GiB, sent by any client.
    // Longer texts than MAX_CACHED_DOCUMENT_CHARS are parsed each time instead.
    parserAndValidationCache: { documentCache: shortDocumentsOnly(createLRUCache()), errorCache: shortDocumentsOnly(createLRUCache()) },
    logging: yogaLogger(services.logger),
    // Headers typed in GraphiQL (a bearer token) are not kept in localStorage.
    graphiql: config.exposeSchema ? { title: 'Kiln', defaultQuery: graphiqlExample, shouldPersistHeaders: false } : false,
    // GraphiQL's scripts, styles, workers and favicon come from Kiln (/graphiql/…), never from a CDN.
    renderGraphiQL: renderGraphiQLPage,
    // Masked errors never carry the original message or stack, whatever NODE_ENV says; the log has them.
    maskedErrors: { isDev: false },
    // Bodies are held to MAX_REQUEST_BODY_BYTES before Yoga (refuseOversizedBody) and by useChunkedBodyLimit.
    maxRequestBodySize: false,
    // batching stays off (Yoga's default): a JSON array of operations is refused with 400.
    cors: config.http.corsOrigins.length > 0 ? { origin: config.http.corsOrigins, credentials: true } : false,
    plugins: [
      // First, so every later line of an operation carries its name and ids.
      useOperationLog(),
      useGraphiQLHeaders(),
      // An OpenTelemetry span per operation, when OTEL_* turns tracing on.
      ...(config.tracing.enabled ? [useTracing()] : []),
      // Operations are counted by name when Kiln knows the name (the contract, the web client, the manifest).
      services.metrics.graphqlPlugin({ documents: manifest?.values() }),
      // JSON POSTs only; GETs carry a header a cross-site simple request cannot.
      ...useRequestPolicy(),
      useChunkedBodyLimit(config.limits.maxBodyBytes),
      ...(manifest ? usePersistedOperationsOnly(manifest) : []),
      ...useQueryLimits(config.limits),
      useSubscriptionSizeLimit(),
      useUnstorableTextRefusal(),
      ...(config.exposeSchema ? [] : useSchemaPrivacy()),
      // useStreamErrors before useRequestIdErrors: it turns expected stream failures into results before masking.
      useStreamErrors(),
      useRequestIdErrors(),
      // One execution per live event for every subscriber of the same document and variables,
      // and the one step that maps a stream's events to results. Last to hook onSubscribe: it stops
      // the plugins after it (Yoga's masking) from wrapping every stream again.
      useSharedSubscriptionExecution(),
      sse.plugin,
    ],
    context: ({ request, connectionParams, req, clientIp }) =>
      createContext({
        requestId: newRequestId(),
        clientIp: clientIp ?? clientAddress(req, config.trustedProxyHops),
        transport: connectionParams ? 'websocket' : 'http',
        authorization: connectionParams ? String(connectionParams.authorization ?? '') : request.headers.get('authorization'),
      }),
  });

  /** Requests on their way, until their answer is sent: a stop asks each to close its connection after it. */
  const answering = new Set<ServerResponse>();
  let stopping = false;
  const server: Server = createServer(HTTP_SERVER_OPTIONS, (req, res) => {
    answering.add(res);
    res.once('close', () => answering.delete(res));
    if (stopping) res.shouldKeepAlive = false;
    const path = req.url?.split('?')[0];
    observeRequest(services.metrics, req, res, routeOf(path));
    // Previews and archives behind signed URLs (src/artifacts/); on PREVIEW_ORIGIN nothing else is served.
    if (services.outputs.route(req, res)) return;
    for (const [name, value] of BASE_HEADERS) res.setHeader(name, value);
    if (path === '/metrics' && req.method === 'GET') return void serveMetrics(services.metrics, config.metrics.token, req, res);
    if (refuseOversizedBody(req, res, config.limits.maxBodyBytes)) return;
    if (path === '/health') return sendJson(res, 200, { status: 'ok' });
    if (path === '/ready') {
      // null: this instance runs no builds (ROLE=api).
      // hostUid: the host user a build step's processes and files are (never 0 where a root server could switch).
      const { buildSandbox: built } = services;
      const sandbox = built ? { kind: built.kind, limits: built.enforcement, ...(built.hostUid !== undefined && { hostUid: built.hostUid }) } : null;
      return void ready(services).then((ok) => sendJson(res, ok ? 200 : 503, { ready: ok, sandbox }));
    }
    if (config.exposeSchema && path !== undefined && serveGraphiQLAsset(req, res, path)) return;
    if (path !== '/graphql' && path !== undefined && serveWebClient(req, res, path)) return;
    return yoga(req, res);
  });
  // Beyond it node closes new connections at once, rather than accept() failing with EMFILE for every client.
  server.maxConnections = MAX_CONNECTIONS;

  // graphql-ws on the same port and path, through the same Yoga plugins and context (STYLE 4).
  // SSE needs nothing more: a subscription sent with `Accept: text/event-stream` (POST, or
  // GET with query/variables in the URL) is answered by Yoga as a GraphQL-over-SSE
  // "distinct connections" stream (`event: next` per result, `event: complete` at the end),
  // whose events useSseSubscriptions (sse.ts) writes.
  const websocket = attachWebSocket({
    server,
    path: '/graphql',
    yoga: yoga as unknown as WebSocketOptions['yoga'],
    auth: services.auth,
    logger: services.logger,
    corsOrigins: config.http.corsOrigins,
    maxMessageBytes: config.limits.maxBodyBytes,
    clientIpOf: (request) => clientAddress(request, config.trustedProxyHops),
    // PREVIEW_ORIGIN serves previews only: no API over WebSocket either.
    notServedTo: (request) => services.outputs.onPreviewOrigin(request),
    acquireConnection: services.streamAccess.acquireConnection,
    onRefused: services.metrics.observeRefusal,
    ...config.websocket,
  });

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
      // No new connection, and idle keep-alive ones close now (close() does that). A request on
      // its way gets its answer, within HTTP_DRAIN_MS (a mutation that committed is not reported
      // to its client as a lost connection), and its connection closes after it.
      stopping = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const res of answering) {
        if (!res.headersSent) res.shouldKeepAlive = false;
        else res.once('finish', () => server.closeIdleConnections());
      }
      const cut = setTimeout(() => server.closeAllConnections(), HTTP_DRAIN_MS);
      try {
        // Streams never end by themselves: their clients resume from where they were.
        sse.cutAll();
        await websocket.dispose();
      } finally {
        await closed;
        clearTimeout(cut);
      }
    },
  };
}

/** How long a stopping server lets requests on their way finish before it cuts them. */
const HTTP_DRAIN_MS = 10_000;

/**
 * A request's headers within 10 s, and the whole request within 30 s (node's defaults: 60 s and
 * 300 s), checked every second. Node applies them only until a request is fully received: an SSE
 * response or an upgraded WebSocket lasts as long as it needs.
 */
const HTTP_SERVER_OPTIONS = { headersTimeout: 10_000, requestTimeout: 30_000, connectionsCheckingInterval: 1_000 };
/**
 * Open connections at most, idle ones included: well under the process's file descriptors, which
 * the database, blob files and build steps need too, and above the 5,000+ WebSockets benchmarks open.
 */
const MAX_CONNECTIONS = 10_000;
/** Parsed documents (and parse errors) are kept only for texts this long at most: the contract's are under 2 KiB. */
const MAX_CACHED_DOCUMENT_CHARS = 16 * 1024;

/** Yoga's cache for documents or parse errors, which keeps none whose text is longer than MAX_CACHED_DOCUMENT_CHARS. */
function shortDocumentsOnly<T extends {}>(cache: ReturnType<typeof createLRUCache<T>>) {
  return {
    get: (text: string) => cache.get(text),
    set: (text: string, value: T) => {
      if (text.length <= MAX_CACHED_DOCUMENT_CHARS) cache.set(text, value);
    },
  };
}

/**
 * On every answer of the API's origin (GraphQL results, errors, health, the web client's
 * 404s): no body is sniffed into HTML or script, framed, or told where it was linked from.
 * Pages (the web client, GraphiQL) add their own CSP; previews have headers of their own.
 */
const BASE_HEADERS = [
  ['X-Content-Type-Options', 'nosniff'],
  ['X-Frame-Options', 'DENY'],
  ['Referrer-Policy', 'no-referrer'],
] as const;

/** Reachable and fully migrated: the migrations query fails (false) when the database is not reachable. */
async function ready(services: Services): Promise<boolean> {
  return isMigrated(services.database).catch(() => false);
}

function sendJson(res: ServerResponse, status: number, body: unknown) {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

/**
 * A request id: a UUID as one flat string. randomUUID's is a rope of some twenty pieces
 * (about 480 bytes), kept as long as the operation runs, for hours in a live subscription.
 */
function newRequestId(): string {
  return Buffer.from(randomUUID(), 'latin1').toString('latin1');
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
