import type { AuthProvider } from '../auth/provider.js';
import type { Config } from '../config.js';
import type { Database } from '../db/client.js';
import { type Claims, type Scope, anonymousScope, userScope } from '../db/scope.js';
import { AuthError } from '../errors.js';
import type { EventBus } from '../events/bus.js';
import type { GenerationDeps } from '../generations/generations.js';
import type { StreamAccess } from '../generations/stream-access.js';
import type { Outputs } from '../artifacts/outputs.js';
import type { Logger } from '../observability/logger.js';
import type { SecretBox } from '../projects/secret-box.js';
import type { Metrics } from '../observability/metrics.js';
import type { RateLimits } from './rate-limit.js';
import type { BuildSandbox } from '../toolchain/sandbox.js';

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
  buildSandbox?: Pick<BuildSandbox, 'kind' | 'enforcement'>;
}

export interface Viewer {
  id: string;
  email: string;
  claims: Claims;
  accessToken: string;
}

/** New per operation, the same for HTTP, SSE and graphql-ws (STYLE 4). */
export interface Context {
  requestId: string;
  /** The client's address (the socket's peer, or X-Forwarded-For from trusted proxies), for rate limits. */
  clientIp: string;
  /** How the operation arrived: an HTTP request (an SSE stream is one) or a graphql-ws socket. */
  transport: 'http' | 'websocket';
  viewer: Viewer | null;
  /** The RLS-bound database scope of this viewer (STYLE 5). */
  db: Scope;
  bus: EventBus;
  services: Services;
  logger: Logger;
}

export async function createContext(
  services: Services,
  request: { authorization?: string | null; requestId: string; clientIp?: string; transport?: Context['transport'] },
): Promise<Context> {
  const token = bearerToken(request.authorization);
  let viewer: Viewer | null = null;
  let problem: string | undefined;
  if (token) {
    try {
      const claims = await services.auth.verify(token);
      viewer = { id: claims.sub, email: claims.email ?? '', claims, accessToken: token };
    } catch (error) {
      if (!(error instanceof AuthError)) throw error;
      problem = error.message;
    }
  }
  return {
    requestId: request.requestId,
    clientIp: request.clientIp ?? 'unknown',
    transport: request.transport ?? 'http',
    viewer,
    db: viewer ? userScope(services.database.db, viewer.claims) : anonymousScope(problem),
    bus: services.bus,
    services,
    // One child, not two: a live subscription keeps its context (and logger) for as long as it runs.
    logger: services.logger.child(viewer ? { requestId: request.requestId, userId: viewer.id } : { requestId: request.requestId }),
  };
}

export function bearerToken(header: string | null | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)$/i.exec(header?.trim() ?? '');
  return match?.[1];
}
