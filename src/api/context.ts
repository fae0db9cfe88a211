import type { GraphQLError } from 'graphql';
import type { Outputs } from '../artifacts/outputs.js';
import type { AuthProvider } from '../auth/provider.js';
import type { Config } from '../config.js';
import type { Database } from '../db/client.js';
import { DatabaseUnavailableError } from '../db/outage.js';
import { type Claims, type Scope, anonymousScope, userScope } from '../db/scope.js';
import { AuthError } from '../errors.js';
import type { EventBus } from '../events/bus.js';
import type { GenerationDeps } from '../generations/generations.js';
import type { StreamAccess } from '../generations/stream-access.js';
import { type Logger, OperationLog } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { SecretBox } from '../projects/secret-box.js';
import type { BuildSandbox } from '../toolchain/sandbox.js';
import { unexpectedError } from './errors-plugin.js';
import type { RateLimits } from './rate-limit.js';
import { databaseUnavailableError } from './stream-errors.js';

/** What the API needs from the composition root. */
export interface Services {
  config: Config;
  database: Database;
  auth: AuthProvider;
  logger: Logger;
  bus: EventBus;
  generations: GenerationDeps;
  /** Undefined when project secrets are disabled (no KILN_ENCRYPTION_KEY). */
  secretBox?: SecretBox;
  rateLimits: RateLimits;
  metrics: Metrics;
  /** Previews, archives and the artefact store: signed URLs for fields, blobs for the HTTP handlers. */
  outputs: Outputs;
  /** Ends live streams whose viewer lost access; caps what one user holds open. */
  streamAccess: StreamAccess;
  /** How builds are isolated here (reported by /ready); undefined where none run (ROLE=api). */
  buildSandbox?: Pick<BuildSandbox, 'kind' | 'enforcement' | 'hostUid'>;
  /** The only operations clients may run (PERSISTED_OPERATIONS_ONLY), by id; undefined runs any. */
  persistedOperations?: ReadonlyMap<string, string>;
}

/**
 * What resolvers hand to the use-cases, by name: built once per app and shared by every
 * operation. Never the database itself: a resolver reaches it only through `ctx.db`.
 */
export interface UseCaseDeps {
  /** Start, cancel, retry and restore. */
  generations: GenerationDeps;
  /** Live streams: the events, how many one subscriber may have queued, how long a quiet one waits before it reads the database, and who may still watch. */
  streams: { bus: EventBus; maxQueued: number; pollMs: number; access: Pick<StreamAccess, 'watch'> };
  /** Undefined when project secrets are disabled (no KILN_ENCRYPTION_KEY). */
  secretBox?: SecretBox;
  rateLimits: Pick<RateLimits, 'authAttempt' | 'memberAdd' | 'generationStart' | 'refresh'>;
  /** Sign-up, sign-in, refresh and sign-out; tokens are verified in the context factory, for every operation. */
  sessions: Pick<AuthProvider, 'signUp' | 'signIn' | 'refresh' | 'signOut'>;
  /** Short-lived signed URLs of previews and archives. */
  outputs: Pick<Outputs, 'previewUrl' | 'archiveUrl'>;
}

/** The generation use-cases for this operation: a start counts against the user's limit and the client address's (RATE_LIMIT_GENERATIONS_*). */
export function startLimits(ctx: Context): GenerationDeps {
  return { ...ctx.useCases.generations, rateLimit: (userId) => ctx.useCases.rateLimits.generationStart(userId, ctx.clientIp) };
}

export interface Viewer {
  id: string;
  claims: Claims;
  accessToken: string;
}

/**
 * The request scope, new per operation and the same for HTTP, SSE and graphql-ws
 * (STYLE 4). Small on purpose: a live subscription keeps its context as long as it runs.
 */
export interface Context {
  requestId: string;
  /** The client's address (the socket's peer, or X-Forwarded-For from trusted proxies), for rate limits. */
  clientIp: string;
  /** How the operation arrived: an HTTP request (an SSE stream is one) or a graphql-ws socket. */
  transport: 'http' | 'websocket';
  viewer: Viewer | null;
  /** The RLS-bound database scope of this viewer (STYLE 5). */
  db: Scope;
  /** This operation's log lines, with its request id and user. */
  log: OperationLog;
  /** Shared by every operation of the app. */
  useCases: UseCaseDeps;
}

export interface OperationRequest {
  authorization?: string | null;
  requestId: string;
  clientIp?: string;
  transport?: Context['transport'];
}

/** The context of each operation, over what the composition root provides. */
export function contextFactory(services: Services): (request: OperationRequest) => Promise<Context> {
  const useCases: UseCaseDeps = {
    generations: services.generations,
    streams: { bus: services.bus, maxQueued: services.config.subscriptions.bufferLimit, pollMs: services.config.subscriptions.pollMs, access: services.streamAccess },
    secretBox: services.secretBox,
    rateLimits: services.rateLimits,
    sessions: services.auth,
    outputs: services.outputs,
  };
  return async (request) => {
    const token = bearerToken(request.authorization);
    let viewer: Viewer | null = null;
    let problem: string | undefined;
    if (token) {
      try {
        const claims = await services.auth.verify(token);
        viewer = { id: claims.sub, claims, accessToken: token };
      } catch (error) {
        if (!(error instanceof AuthError)) throw contextFailed(services.logger, request, error);
        problem = error.message;
      }
    }
    return {
      requestId: request.requestId,
      clientIp: request.clientIp ?? 'unknown',
      transport: request.transport ?? 'http',
      viewer,
      db: viewer ? userScope(services.database.db, viewer.claims) : anonymousScope(problem),
      log: new OperationLog(services.logger, viewer ? { requestId: request.requestId, userId: viewer.id } : { requestId: request.requestId }),
      useCases,
    };
  };
}

/** Seconds an HTTP client is told to wait (Retry-After) when the database is unreachable. */
const RETRY_AFTER_SECONDS = '5';

/**
 * A token that could not be verified fails this operation only. When the database is
 * still unreachable after the outage window (local auth's session read rides out an
 * outage as transactions do, db/outage.ts), the client gets DATABASE_UNAVAILABLE, over
 * HTTP with 503 and Retry-After, logged at warn. Anything else (GoTrue did not answer, a
 * bug) is masked like any unexpected error, its cause logged under the request id. Yoga
 * passes a GraphQLError of ours through and answers HTTP with the status and headers in
 * `extensions.http`, which it does not send; over graphql-ws a status means nothing.
 */
function contextFailed(logger: Logger, request: OperationRequest, cause: unknown): GraphQLError {
  const overHttp = (request.transport ?? 'http') === 'http';
  if (cause instanceof DatabaseUnavailableError) {
    logger.warn({ requestId: request.requestId, err: cause }, 'the database is unreachable: the token could not be verified');
    return databaseUnavailableError(overHttp ? { extensions: { http: { status: 503, headers: { 'Retry-After': RETRY_AFTER_SECONDS } } } } : {});
  }
  new OperationLog(logger, { requestId: request.requestId }).error({ err: cause }, 'unexpected error');
  return unexpectedError(request.requestId, { extensions: overHttp ? { http: { status: 500 } } : {} });
}

export function bearerToken(header: string | null | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)$/i.exec(header?.trim() ?? '');
  return match?.[1];
}
