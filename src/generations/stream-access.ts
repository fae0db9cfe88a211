import { Deadlines } from '../deadlines.js';
import { AppError, AuthError, InvalidStateError, NotFoundError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { LiveStream } from './streams.js';

// Live streams end when access ends, whatever the transport (SSE or graphql-ws): every
// open stream is put under watch here, and one timer per process re-checks all of them
// together every `intervalMs`: the distinct tokens in one question to the auth provider
// (expiry, sign-out of any scope, refresh-token reuse; the local provider answers with
// one query), then every (user, generation) pair in one query (removal from
// the project, the project archived while the generation is not finished: its
// history stays readable). A stream whose access ended gets a typed error
// as its last result (see api/stream-errors.ts), then completes. An SSE stream also
// ends at its token's `exp` (src/deadlines.ts; a socket closes itself then, 4403). No
// query, check or wrapper runs per message: the stream itself can be ended from here
// (LiveStream.end), and says when it is over (LiveStream.closed).
//
// The same registry caps what one user keeps open (LIVE_STREAMS_PER_USER), and what one
// client address keeps open across its users (LIVE_STREAMS_PER_ADDRESS; accounts are
// free, addresses are not): every stream watched here, whatever its transport (an SSE
// stream, a subscription on a graphql-ws socket), and every WebSocket connection,
// acquired by the transport. Each held subscription keeps its subscribe message and its
// context in memory, so counting sockets alone would let one user hold
// WS_MAX_SUBSCRIPTIONS of them per socket. A slot is given back when its stream is over
// (completed, ended, or returned by its consumer: an SSE client gone, a graphql-ws
// `complete` or socket close) or its socket closes.

export interface StreamAccessOptions {
  /** The auth provider's stillValid: the tokens among these that are unexpired and whose session is live. */
  stillValid: (accessTokens: string[]) => Promise<Set<string>>;
  /** The (user, generation) pairs among these where the user is a member of the generation's project. */
  accessOf: (userIds: string[], generationIds: string[]) => Promise<{ userId: string; generationId: string; archivedAt: Date | null }[]>;
  intervalMs: number;
  /** Live streams (SSE streams, graphql-ws subscriptions) plus WebSocket connections of one user. */
  maxPerUser: number;
  /** The same, of one client address (`StreamViewer.address`) across all its users. */
  maxPerAddress: number;
  /** Hears of each stream or connection a cap turned away (the metrics count them). */
  onRefused?: (per: TooManyStreamsError['per']) => void;
  logger: Logger;
  /** The wall clock, in milliseconds (tests may shift it); token expiries fall due by it. */
  now?: () => number;
}

export interface StreamViewer {
  id: string;
  accessToken: string;
  /** The token's `exp` claim, in seconds since the epoch. */
  exp?: number;
  /** The client's address as the per-address rate limits count it (an IPv4 address, an IPv6 /64: api/rate-limit.ts addressBlock). */
  address: string;
}

export interface StreamAccess {
  /**
   * The stream, ended with a typed error once the viewer's access ends. It counts against the
   * viewer's and the address's caps until it is over: beyond either it is refused, before it
   * opens, with TooManyStreamsError.
   */
  watch<T>(viewer: StreamViewer, generationId: string, open: () => Promise<LiveStream<T>>): Promise<LiveStream<T>>;
  /** A live connection (a WebSocket) of a user from an address: its release; throws TooManyStreamsError beyond either cap. */
  acquireConnection(userId: string, address: string): () => void;
  close(): void;
}

/**
 * Beyond LIVE_STREAMS_PER_USER (`per: 'user'`) or LIVE_STREAMS_PER_ADDRESS (`per: 'address'`):
 * complete a subscription or close a stream or a socket first (code TOO_MANY_STREAMS).
 */
export class TooManyStreamsError extends AppError {
  readonly kind = 'TooManyStreamsError';
  constructor(
    readonly per: 'user' | 'address',
    readonly limit: number,
  ) {
    super(
      per === 'user'
        ? `Too many live streams open at once for this user (at most ${limit}, counting sockets, SSE streams and subscriptions together); complete or close one first.`
        : `Too many live streams open at once from this address (at most ${limit} across all its users, counting sockets, SSE streams and subscriptions together); complete or close one first.`,
    );
  }
}

const accessKey = (userId: string, generationId: string) => `${userId}:${generationId}`;

interface Watched {
  viewer: StreamViewer;
  generationId: string;
  stream: LiveStream<unknown>;
}

export function createStreamAccess(options: StreamAccessOptions): StreamAccess {
  const { stillValid, accessOf, maxPerUser, maxPerAddress } = options;
  const now = options.now ?? Date.now;
  const log = options.logger.child({ source: 'StreamAccess' });
  const watched = new Set<Watched>();
  const expiries = new Deadlines(now);
  /** Slots held, by user id and by address. */
  const perUser = new Map<string, number>();
  const perAddress = new Map<string, number>();

  /** One slot of the user's and one of the address's, or TooManyStreamsError (the user's cap first). */
  const acquire = (userId: string, address: string): (() => void) => {
    const user = perUser.get(userId) ?? 0;
    const fromAddress = perAddress.get(address) ?? 0;
    const refused = user >= maxPerUser ? new TooManyStreamsError('user', maxPerUser) : fromAddress >= maxPerAddress ? new TooManyStreamsError('address', maxPerAddress) : undefined;
    if (refused) {
      options.onRefused?.(refused.per);
      throw refused;
    }
    perUser.set(userId, user + 1);
    perAddress.set(address, fromAddress + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      giveBack(perUser, userId);
      giveBack(perAddress, address);
    };
  };

  let checking = false;
  const recheck = async () => {
    if (checking || watched.size === 0) return;
    checking = true;
    try {
      await recheckTokens();
      await recheckMembership();
    } catch (error) {
      // The database or the authority could not answer: keep the streams, ask again next time.
      log.warn({ err: error }, 'stream access re-check failed');
    } finally {
      checking = false;
    }
  };

  const recheckTokens = async () => {
    const byToken = new Map<string, Watched[]>();
    for (const stream of watched) {
      const same = byToken.get(stream.viewer.accessToken);
      if (same) same.push(stream);
      else byToken.set(stream.viewer.accessToken, [stream]);
    }
    const valid = await stillValid([...byToken.keys()]);
    for (const [token, streams] of byToken) {
      if (valid.has(token)) continue;
      log.info({ streams: streams.length }, 'session ended or token expired: ending its streams');
      for (const { stream } of streams) stream.end(sessionEnded());
    }
  };

  const recheckMembership = async () => {
    const streams = [...watched];
    if (streams.length === 0) return;
    const rows = await accessOf([...new Set(streams.map((s) => s.viewer.id))], [...new Set(streams.map((s) => s.generationId))]);
    const states = new Map(rows.map((row) => [accessKey(row.userId, row.generationId), row.archivedAt ? 'archived' : 'member']));
    for (const stream of streams) {
      const state = states.get(accessKey(stream.viewer.id, stream.generationId));
      if (state === 'member') continue;
      // An archived project's history stays readable: a stream of a finished generation completes on its own.
      if (state === 'archived' && stream.stream.finishing) continue;
      log.info({ generationId: stream.generationId, userId: stream.viewer.id, state: state ?? 'removed' }, 'access to the generation ended: ending the stream');
      stream.stream.end(state === 'archived' ? new InvalidStateError('The project was archived; its live streams have ended.') : new NotFoundError('Generation not found.'));
    }
  };

  const timer = setInterval(() => void recheck(), options.intervalMs).unref();

  return {
    async watch<T>(viewer: StreamViewer, generationId: string, open: () => Promise<LiveStream<T>>) {
      const release = acquire(viewer.id, viewer.address);
      let stream: LiveStream<T>;
      try {
        stream = await open();
      } catch (error) {
        release();
        throw error;
      }
      const record: Watched = { viewer, generationId, stream };
      watched.add(record);
      const expiry = viewer.exp === undefined ? undefined : expiries.schedule(viewer.exp * 1000, () => stream.end(sessionEnded()));
      void stream.closed.then(() => {
        expiries.cancel(expiry);
        watched.delete(record);
        release();
      });
      return stream;
    },
    acquireConnection: acquire,
    close: () => clearInterval(timer),
  };
}

function giveBack(counts: Map<string, number>, key: string) {
  const left = (counts.get(key) ?? 1) - 1;
  if (left <= 0) counts.delete(key);
  else counts.set(key, left);
}

function sessionEnded() {
  return new AuthError('The session has ended or its token expired; sign in (or refresh) and subscribe again.');
}
