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
// The same registry caps what one user keeps open (LIVE_STREAMS_PER_USER): SSE
// streams, counted here, and WebSocket connections, counted by the transport.

export interface StreamAccessOptions {
  /** The auth provider's stillValid: the tokens among these that are unexpired and whose session is live. */
  stillValid: (accessTokens: string[]) => Promise<Set<string>>;
  /** The (user, generation) pairs among these where the user is a member of the generation's project. */
  accessOf: (userIds: string[], generationIds: string[]) => Promise<{ userId: string; generationId: string; archivedAt: Date | null }[]>;
  intervalMs: number;
  /** Open SSE streams plus WebSocket connections of one user. */
  maxPerUser: number;
  logger: Logger;
  /** The wall clock, in milliseconds (tests may shift it); token expiries fall due by it. */
  now?: () => number;
}

export interface StreamViewer {
  id: string;
  accessToken: string;
  /** The token's `exp` claim, in seconds since the epoch. */
  exp?: number;
}

export interface StreamAccess {
  /**
   * The stream, ended with a typed error once the viewer's access ends. `countsAsConnection`
   * (SSE, where a stream is a connection of its own) counts it against the per-user cap:
   * beyond it the stream is refused with TooManyStreamsError.
   */
  watch<T>(viewer: StreamViewer, generationId: string, open: () => Promise<LiveStream<T>>, options?: { countsAsConnection?: boolean }): Promise<LiveStream<T>>;
  /** A live connection of a user (a WebSocket): the release function, or null when over the cap. */
  acquireConnection(userId: string): (() => void) | null;
  close(): void;
}

/** Beyond LIVE_STREAMS_PER_USER: close a stream or a socket first (code TOO_MANY_STREAMS). */
export class TooManyStreamsError extends AppError {
  readonly kind = 'TooManyStreamsError';
  constructor(readonly limit: number) {
    super(`Too many live streams and connections open at once for this user (at most ${limit}); close one first.`);
  }
}

const accessKey = (userId: string, generationId: string) => `${userId}:${generationId}`;

interface Watched {
  viewer: StreamViewer;
  generationId: string;
  stream: LiveStream<unknown>;
}

export function createStreamAccess(options: StreamAccessOptions): StreamAccess {
  const { stillValid, accessOf, maxPerUser } = options;
  const now = options.now ?? Date.now;
  const log = options.logger.child({ source: 'StreamAccess' });
  const watched = new Set<Watched>();
  const expiries = new Deadlines(now);
  const connections = new Map<string, number>();

  const acquireConnection = (userId: string) => {
    const open = connections.get(userId) ?? 0;
    if (open >= maxPerUser) return null;
    connections.set(userId, open + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (connections.get(userId) ?? 1) - 1;
      if (left <= 0) connections.delete(userId);
      else connections.set(userId, left);
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
    async watch<T>(viewer: StreamViewer, generationId: string, open: () => Promise<LiveStream<T>>, watchOptions: { countsAsConnection?: boolean } = {}) {
      const release = watchOptions.countsAsConnection ? acquireConnection(viewer.id) : () => {};
      if (!release) throw new TooManyStreamsError(maxPerUser);
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
    acquireConnection,
    close: () => clearInterval(timer),
  };
}

function sessionEnded() {
  return new AuthError('The session has ended or its token expired; sign in (or refresh) and subscribe again.');
}
