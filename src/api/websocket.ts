import type { IncomingMessage, Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { type ExecutionArgs, GraphQLError } from 'graphql';
import { CloseCode, type ServerOptions, type SubscribePayload, type Context as WsContext } from 'graphql-ws';
import { useServer } from 'graphql-ws/use/ws';
import { isAsyncIterable, type YogaServerInstance } from 'graphql-yoga';
import { WebSocket, WebSocketServer } from 'ws';
import type { AuthProvider } from '../auth/provider.js';
import { DatabaseUnavailableError } from '../db/outage.js';
import type { Claims } from '../db/scope.js';
import { type Deadline, Deadlines } from '../deadlines.js';
import { AuthError } from '../errors.js';
import { TooManyStreamsError } from '../generations/stream-access.js';
import type { Logger } from '../observability/logger.js';
import { bearerToken } from './context.js';
import { MAX_SUBSCRIPTION_BYTES } from './limits.js';
import { publicError, publicResult } from './public-result.js';
import { addressBlock } from './rate-limit.js';

// graphql-ws (the graphql-transport-ws protocol) on the HTTP server's port and path.
// Every operation goes through Yoga's envelop (the same plugins, masking and context
// factory as HTTP, STYLE 4).
//
// Close codes: 4403 'Forbidden' for a missing or bad token at connection_init, and
// later when the token expires (a deadline at `exp`) or its session is revoked (every
// socket's token is verified again every WS_AUTH_RECHECK_MS); 4408 when no
// connection_init arrives within WS_CONNECTION_INIT_TIMEOUT_MS; 4429 'Too many open
// connections' at connection_init when the user already holds LIVE_STREAMS_PER_USER live
// streams (sockets, SSE streams and the subscriptions on sockets together), and 4429 'Too
// many open connections from this address' when the client's address holds
// LIVE_STREAMS_PER_ADDRESS across its users (generations/stream-access.ts); 1013
// 'Try again later' when the token cannot be verified because the database is still
// unreachable after the outage window (db/outage.ts: until then connection_init waits),
// which graphql-ws clients retry, where they give up at 4500; the protocol's own codes
// otherwise (4400, 4401, 4406, 4409, 4429, 4500 for any other failure at connect). An
// upgrade from a browser Origin that is not in CORS_ORIGINS (when set) is refused with
// HTTP 403 before any socket exists, and one to PREVIEW_ORIGIN (no API there) with 404.
// Beyond WS_MAX_SUBSCRIPTIONS operations at once, one more fails on its own with
// TOO_MANY_SUBSCRIPTIONS and the socket stays open; so does a subscription beyond either
// live-stream cap, with TOO_MANY_STREAMS (a last result, then complete: its resolver is refused).
// Pings every WS_KEEPALIVE_MS drop peers that stop answering (a peer that stops
// reading stops answering too).

export interface WebSocketOptions {
  server: Server;
  path: string;
  yoga: YogaServerInstance<Record<string, unknown>, Record<string, unknown>>;
  auth: AuthProvider;
  logger: Logger;
  corsOrigins: string[];
  connectionInitTimeoutMs: number;
  maxSubscriptions: number;
  keepAliveMs: number;
  authRecheckMs: number;
  /**
   * Counts a socket against LIVE_STREAMS_PER_USER and LIVE_STREAMS_PER_ADDRESS (the address as
   * `addressBlock` gives it): its release; throws TooManyStreamsError at either cap.
   */
  acquireConnection: (userId: string, address: string) => () => void;
  /** The largest message a client may send (default 1 MiB); the same limit as an HTTP body. */
  maxMessageBytes?: number;
  /** The client's address, from the upgrade request (rate limits). */
  clientIpOf: (request: IncomingMessage) => string;
  /** Upgrades to refuse with 404 before any socket exists, as for another path: those on PREVIEW_ORIGIN. */
  notServedTo?: (request: IncomingMessage) => boolean;
  /** Hears of each operation WS_MAX_SUBSCRIPTIONS turned away (the metrics count them). */
  onRefused?: (limit: 'ws_max_subscriptions') => void;
}

export interface WebSocketTransport {
  /** Open sockets that passed connection_init. */
  connections(): number;
  dispose(): Promise<void>;
}

/**
 * What a socket keeps of its upgrade request: the client's address. The request itself
 * (headers, raw headers, stream state) would stay alive as long as the socket.
 */
type Peer = { clientIp: string };
type Extra = { socket: BatchingWebSocket; request: Peer };
type Ctx = WsContext<Record<string, unknown> | undefined, Extra>;

/** An accepted socket and the token it authenticated with. */
interface Connection {
  socket: WebSocket;
  token: string;
  expiry?: Deadline;
  release: () => void;
}

/** A graphql-ws message is a document and its variables; nothing legitimate comes near this. */
const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024;
/** WebSocket's "Try Again Later": graphql-ws clients reconnect after it (with retryAttempts), not after 4500. */
const TRY_AGAIN_LATER = 1013;
/** Tokens verified at once by the periodic re-check. */
const RECHECK_CONCURRENCY = 8;
const MAX_OPERATION_ID_CHARS = 128;
/** How long a shutdown waits for a peer to answer its close frame before the socket is dropped. */
const CLOSE_HANDSHAKE_MS = 1_000;

export function attachWebSocket(options: WebSocketOptions): WebSocketTransport {
  const { server, path, yoga, auth } = options;
  const log = options.logger.child({ source: 'WebSocket' });
  const connections = new Map<Ctx, Connection>();
  // Token expiries are instants (`exp`); the init wait is a duration, on the clock timers run on.
  const expiries = new Deadlines(Date.now);
  const initWaits = new Deadlines(() => performance.now());

  const forbid = (socket: WebSocket) => socket.close(CloseCode.Forbidden, 'Forbidden');
  const initTimeout = (socket: WebSocket) => socket.close(CloseCode.ConnectionInitialisationTimeout, 'Connection initialisation timeout');

  // A bigger message closes the socket with 1009 (ws's own check, before any parsing).
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
    WebSocket: BatchingWebSocket,
  });
  const onUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (request.url?.split('?')[0] !== path || options.notServedTo?.(request)) return refuse(socket, 404, 'Not Found');
    if (!originAllowed(request.headers.origin, options.corsOrigins)) return refuse(socket, 403, 'Forbidden');
    const peer: Peer = { clientIp: options.clientIpOf(request) };
    wss.handleUpgrade(request, socket, head, (ws) => wss.emit('connection', ws, peer));
  };
  server.on('upgrade', onUpgrade);

  // The wait for connection_init and the pings are Kiln's, not graphql-ws's: graphql-ws
  // holds two timers per socket for as long as it is open, where a deadline until the
  // init and one interval for every socket do.
  wss.on('connection', (socket: BatchingWebSocket, peer: Peer) => {
    socket.initWait = initWaits.schedule(performance.now() + options.connectionInitTimeoutMs, () => initTimeout(socket));
    // A frame the protocol refuses (1007 invalid UTF-8, 1009 too big, 1002 malformed) or a
    // failed write: ws has closed the socket already. Any client can send one, before any
    // token, so it is a line at debug level, not graphql-ws's stack trace on stderr.
    socket.onError = (error) =>
      log.debug({ clientIp: peer.clientIp, code: (error as { code?: unknown }).code, reason: error.message }, 'socket error: the socket is closed');
  });
  const keepAlive = options.keepAliveMs > 0 ? setInterval(() => ping(wss.clients as Set<BatchingWebSocket>), options.keepAliveMs).unref() : undefined;

  const graphqlWs = useServer<Record<string, unknown> | undefined, Extra>(
    {
      connectionInitWaitTimeout: Infinity,
      onConnect: async (ctx) => {
        const { socket } = ctx.extra;
        initWaits.cancel(socket.initWait);
        socket.initWait = undefined;
        const authorization = typeof ctx.connectionParams?.authorization === 'string' ? ctx.connectionParams.authorization : undefined;
        // Kept for the socket's life (each operation's context reads it): only what Kiln reads of it.
        (ctx as { connectionParams?: Record<string, unknown> }).connectionParams = { authorization };
        const token = bearerToken(authorization);
        if (!token) return false;
        let claims: Claims;
        try {
          claims = await auth.verify(token);
        } catch (error) {
          if (error instanceof AuthError) return false; // 4403, without saying why
          if (error instanceof DatabaseUnavailableError) {
            log.warn({ err: error }, 'the database is unreachable: the token could not be verified');
            socket.close(TRY_AGAIN_LATER, 'Try again later: the database is unreachable');
            return false;
          }
          log.error({ err: error }, 'token verification failed');
          socket.close(CloseCode.InternalServerError, 'Internal server error');
          return false;
        }
        if (socket.readyState !== socket.OPEN) return false; // gone while we verified
        const { exp, sub: userId } = claims;
        let release: () => void;
        try {
          release = options.acquireConnection(userId, addressBlock(ctx.extra.request.clientIp));
        } catch (error) {
          if (!(error instanceof TooManyStreamsError)) throw error;
          socket.close(CloseCode.TooManyInitialisationRequests, error.per === 'address' ? 'Too many open connections from this address' : 'Too many open connections');
          return false;
        }
        const connection: Connection = { socket, token, release };
        if (exp !== undefined) {
          // Expiry ends the connection on time, whatever the re-check interval.
          connection.expiry = expiries.schedule(exp * 1000, () => forbid(socket));
        }
        connections.set(ctx, connection);
        return true;
      },
      onClose: (ctx) => {
        // Closed before its connection_init (or refused before any message): the wait would hold the socket until it fired.
        initWaits.cancel(ctx.extra.socket.initWait);
        const connection = connections.get(ctx);
        if (!connection) return;
        expiries.cancel(connection.expiry);
        connection.release();
        connections.delete(ctx);
      },
      // Refused before it runs (limits, parse, validation, the persisted-operations rule, the context): as the client sees it over HTTP.
      onSubscribe: async (ctx, id, params) => {
        // Kept as long as the operation runs (graphql-ws's key for it): the clients' ids are UUIDs or counters.
        if (id.length > MAX_OPERATION_ID_CHARS) {
          return [new GraphQLError(`An operation id takes at most ${MAX_OPERATION_ID_CHARS} characters.`, { extensions: { code: 'BAD_REQUEST' } })];
        }
        const prepared = await prepare(ctx, params);
        return Array.isArray(prepared) ? prepared.map(publicError) : prepared;
      },
      execute: (args) => publicOnce((args.rootValue as Engine).execute(args)),
      subscribe: (args) => publicOnce((args.rootValue as Engine).subscribe(args)),
    },
    wss,
    0,
  );

  /** An operation's execution arguments, or why it is refused. */
  async function prepare(ctx: WsContext<Record<string, unknown> | undefined, Extra>, params: SubscribePayload): Promise<ExecutionArgs | readonly GraphQLError[]> {
    // graphql-ws has already registered this operation, so it counts itself.
    if (Object.keys(ctx.subscriptions).length > options.maxSubscriptions) {
      options.onRefused?.('ws_max_subscriptions');
      return [
        new GraphQLError(`Too many operations at once on this connection (at most ${options.maxSubscriptions}); complete one first.`, {
          extensions: { code: 'TOO_MANY_SUBSCRIPTIONS', limit: options.maxSubscriptions },
        }),
      ];
    }
    const enveloped = yoga.getEnveloped({
      clientIp: ctx.extra.request.clientIp,
      connectionParams: ctx.connectionParams,
      params,
    });
    let document;
    try {
      document = enveloped.parse(params.query);
    } catch (error) {
      // A syntax error fails this operation, not the socket.
      return [error instanceof GraphQLError ? error : new GraphQLError('The document could not be parsed.')];
    }
    const errors = enveloped.validate(enveloped.schema, document);
    if (errors.length > 0) return errors;
    // Every operation verifies the socket's token again, as an HTTP request does (a JWT check and
    // a session read; Supabase's from its short cache): once when it starts, never per event. So a
    // sign-out refuses the next operation at once with UNAUTHENTICATED, a subscription too; the
    // ones already running end at the re-check below, which closes the socket.
    let contextValue;
    try {
      contextValue = await enveloped.contextFactory();
    } catch (error) {
      // A context that could not be built (masked and logged by the factory) fails this operation, not the socket.
      if (error instanceof GraphQLError) return [error];
      throw error;
    }
    const args: ExecutionArgs = {
      schema: enveloped.schema,
      operationName: params.operationName,
      document,
      variableValues: params.variables,
      contextValue,
      rootValue: { execute: enveloped.execute, subscribe: enveloped.subscribe },
    };
    return args;
  }

  // Revocation is checked, not assumed: every token in use is verified again
  // periodically (auth.verify re-reads the session), once per distinct token.
  let rechecking = false;
  const recheck = async () => {
    if (rechecking || connections.size === 0) return;
    rechecking = true;
    try {
      const byToken = new Map<string, Connection[]>();
      for (const connection of connections.values()) {
        const same = byToken.get(connection.token);
        if (same) same.push(connection);
        else byToken.set(connection.token, [connection]);
      }
      const queue = [...byToken];
      const worker = async () => {
        for (let next = queue.shift(); next; next = queue.shift()) {
          const [token, sockets] = next;
          try {
            await auth.verify(token);
          } catch (error) {
            if (error instanceof AuthError) {
              log.info({ sockets: sockets.length }, 'session ended or token expired: closing its sockets');
              for (const { socket } of sockets) forbid(socket);
            } else {
              // The authority could not answer: keep the sockets, ask again next time.
              log.warn({ err: error }, 'token re-check failed');
            }
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(RECHECK_CONCURRENCY, queue.length) }, worker));
    } finally {
      rechecking = false;
    }
  };
  const recheckTimer = setInterval(() => void recheck(), options.authRecheckMs).unref();

  return {
    connections: () => connections.size,
    dispose: async () => {
      clearInterval(recheckTimer);
      clearInterval(keepAlive);
      server.off('upgrade', onUpgrade);
      for (const connection of connections.values()) expiries.cancel(connection.expiry);
      // Each socket is sent 1001 and waited for; a peer that never answers the close would hold
      // the shutdown for ws's own close timeout (30 s), past a worker's grace.
      const cut = setTimeout(() => {
        for (const socket of wss.clients) socket.terminate();
      }, CLOSE_HANDSHAKE_MS);
      try {
        await graphqlWs.dispose();
      } finally {
        clearTimeout(cut);
      }
    },
  };
}

/**
 * A large message as graphql-ws should keep it, for as long as its operation runs: without the
 * whitespace around its values, which no limit measures, and undefined for a subscribe message
 * with more than the protocol's id, type and payload (graphql-ws lets other keys through). The
 * payload is held to its own limit (useSubscriptionSizeLimit). Text that is no JSON is passed
 * on for graphql-ws to refuse.
 */
function compacted(text: string): string | undefined {
  let message: unknown;
  try {
    message = JSON.parse(text);
  } catch {
    return text;
  }
  if (message === null || typeof message !== 'object') return text;
  if ((message as { type?: unknown }).type === 'subscribe' && Object.keys(message).some((key) => key !== 'id' && key !== 'type' && key !== 'payload')) return undefined;
  try {
    return JSON.stringify(message);
  } catch {
    return text; // nested past the stack: the payload's own limit refuses it
  }
}

/**
 * A server socket whose messages sent within one tick leave in one write, and whose
 * sender is called back at once while little is buffered. graphql-ws waits for each
 * send's callback before it pulls the next result, so a replay of hundreds of chunks
 * would otherwise cost one write (and one wait) per message. Past the socket's
 * high-water mark the callback waits for the write again: a peer that stops reading
 * still holds its streams back. It also carries its wait for connection_init, its
 * keep-alive state and its error handling, so that none needs a timer or a listener of its own.
 */
class BatchingWebSocket extends WebSocket {
  #corked = false;
  /** Until connection_init arrives: the socket closes with 4408 at it. */
  initWait: Deadline | undefined;
  /** Pinged, and no pong since: at the next ping it is terminated. */
  awaitingPong = false;
  /**
   * Takes the socket's 'error' events in place of any listener: graphql-ws's would print
   * each to stderr with console.error and close a socket that ws has closed already.
   */
  onError: ((error: Error) => void) | undefined;

  /**
   * A message is handed on as a string, binary frames too (graphql-ws reads either as text,
   * and is the only listener): graphql-ws keeps the message it is handling for as long as that
   * operation runs (a subscription: hours), and as a string it is the one graphql-ws parses and
   * keeps anyway, not a Buffer besides.
   */
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'error') {
      this.onError?.(args[0] as Error);
      return true;
    }
    // A pong is taken here rather than by a listener on every socket.
    if (event === 'pong') this.awaitingPong = false;
    // Binary frames too: graphql-ws reads either as text.
    if (event === 'message' && Buffer.isBuffer(args[0])) {
      const text = args[0].toString();
      args[0] = text.length > MAX_SUBSCRIPTION_BYTES ? compacted(text) : text;
      args[1] = false;
      if (args[0] === undefined) {
        this.close(CloseCode.BadRequest, 'Invalid message: a subscribe message carries only id, type and payload');
        return true;
      }
    }
    return super.emit(event, ...args);
  }

  override send(data: Parameters<WebSocket['send']>[0], options?: SendOptions | SendCallback, cb?: SendCallback): void {
    const callback = typeof options === 'function' ? options : cb;
    const sendOptions = typeof options === 'function' || options === undefined ? {} : options;
    // ws keeps the TCP socket on `_socket`; its typings leave it out.
    const socket = (this as unknown as { _socket?: Socket })._socket;
    if (this.readyState !== WebSocket.OPEN || !socket || this.bufferedAmount >= socket.writableHighWaterMark) {
      super.send(data, sendOptions, callback);
      return;
    }
    if (!this.#corked) {
      this.#corked = true;
      socket.cork();
      process.nextTick(() => {
        this.#corked = false;
        socket.uncork();
      });
    }
    // A failed write errors and closes the socket, which ends its operations.
    super.send(data, sendOptions);
    callback?.();
  }
}

/** A ping to every open socket; one still silent since the last is presumed gone (no close frame: it would not read one). */
function ping(sockets: Set<BatchingWebSocket>) {
  for (const socket of sockets) {
    if (socket.readyState !== WebSocket.OPEN) continue;
    if (socket.awaitingPong) {
      socket.terminate();
      continue;
    }
    socket.awaitingPong = true;
    socket.ping();
  }
}

type SendOptions = Parameters<WebSocket['send']>[1];
type SendCallback = (error?: Error) => void;

type OperationResult = ReturnType<NonNullable<ServerOptions['execute']>>;
type Engine = { execute: (args: ExecutionArgs) => OperationResult; subscribe: (args: ExecutionArgs) => OperationResult };

/** A single result as the client sees it (publicResult); a stream's results are the shared execution's, public already. */
async function publicOnce(result: OperationResult): Promise<Awaited<OperationResult>> {
  const settled = await result;
  return isAsyncIterable(settled) ? settled : publicResult(settled);
}

/**
 * Browsers always send Origin on a WebSocket upgrade, and CORS does not apply to
 * WebSockets, so this is the cross-site check. No Origin (a server or CLI client) is
 * allowed: such a client does not carry a victim's cookies or ambient credentials.
 */
export function originAllowed(origin: string | undefined, allowed: string[]): boolean {
  if (allowed.length === 0 || origin === undefined || allowed.includes('*')) return true;
  const normalised = origin.trim().replace(/\/+$/, '').toLowerCase();
  return allowed.some((candidate) => candidate.trim().replace(/\/+$/, '').toLowerCase() === normalised);
}

function refuse(socket: Duplex, status: number, message: string) {
  socket.once('finish', () => socket.destroy());
  socket.end(`HTTP/1.1 ${status} ${message}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${message.length}\r\n\r\n${message}`);
}
