import { type Client, createClient } from 'graphql-ws';
import type { TypedDocumentString } from '../gql/graphql';
import { auth } from './auth';

// Live streams over graphql-ws (one socket for every stream of the page). The client
// does not retry by itself: `follow` resubscribes each stream after a lost connection
// with the last seq it saw as `afterSeq`, so nothing is missed and nothing repeats,
// and refreshes the access token first when the server closed with 4403 (expired or
// revoked token). A stream the server ended with a code a client may retry (SLOW_CONSUMER:
// this page fell behind; DATABASE_UNAVAILABLE: see src/api/stream-errors.ts) resumes the
// same way instead of ending with an error. The page hears (`onRetrying`) when a reconnect
// failed as well or the database is out, so it can say it is reconnecting.

const FORBIDDEN = 4403;
const MAX_BACKOFF_MS = 8_000;
/** Codes of a stream's last result that mean "subscribe again"; any other error is shown. */
const RETRYABLE = new Set(['SLOW_CONSUMER', 'DATABASE_UNAVAILABLE']);

let client: Client | null = null;

function socket(): Client {
  client ??= createClient({
    url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql`,
    connectionParams: async () => ({ authorization: `Bearer ${(await auth.accessToken()) ?? ''}` }),
    lazy: true,
    retryAttempts: 0,
  });
  return client;
}

/** Closes the socket (on sign-out: its token must not keep streaming). */
export function disconnect() {
  void client?.dispose();
  client = null;
}

export interface FollowOptions<T, V> {
  document: TypedDocumentString<T, V>;
  /** The variables for a (re)subscription, given the last seq seen (undefined at first). */
  variables: (afterSeq: number | undefined) => V;
  /** The seq of an event, for streams that resume by `afterSeq`. */
  seqOf?: (data: T) => number | undefined;
  onData: (data: T) => void;
  onComplete?: () => void;
  onError?: (message: string) => void;
  /**
   * The stream waits to resubscribe after a reconnect failed too, or after the server ended
   * it with a retryable error other than SLOW_CONSUMER; with the reason when it is known.
   */
  onRetrying?: (reason: string | undefined) => void;
  /** The stream got a result again, or ended, after `onRetrying`. */
  onResumed?: () => void;
}

type Errors = readonly { message?: string; extensions?: Record<string, unknown> }[] | undefined;

/** The retryable error among a result's errors, if any. */
const retryable = (errors: Errors) => errors?.find((error) => RETRYABLE.has(String(error.extensions?.code)));

const isCloseEvent = (value: unknown): value is CloseEvent =>
  typeof value === 'object' && value !== null && 'code' in value && 'reason' in value;

/** Follows a subscription until it completes or `stop()` is called. */
export function follow<T, V>(options: FollowOptions<T, V>): () => void {
  let stopped = false;
  let lastSeq: number | undefined;
  let failures = 0;
  /** Retryable ends so far: the first resumes at once, later ones after a growing pause. */
  let retries = 0;
  let unsubscribe = () => {};
  let timer: ReturnType<typeof setTimeout> | undefined;

  const start = () => {
    if (stopped) return;
    // The server's last result before it completes this subscription said to subscribe again.
    let resume = false;
    unsubscribe = socket().subscribe<T>(
      { query: options.document.toString(), variables: options.variables(lastSeq) as Record<string, unknown> },
      {
        next: (event) => {
          failures = 0;
          const retry = retryable(event.errors);
          if (retry) {
            resume = true;
            // Falling behind is this page's own doing and passes unnoticed; an outage is worth a word.
            if (retry.extensions?.code !== 'SLOW_CONSUMER') options.onRetrying?.(retry.message);
            return;
          }
          options.onResumed?.();
          if (event.errors?.length || !event.data) return options.onError?.(event.errors?.[0]?.message ?? 'Stream error');
          const seq = options.seqOf?.(event.data);
          if (seq !== undefined) {
            if (lastSeq !== undefined && seq <= lastSeq) return;
            lastSeq = seq;
          }
          options.onData(event.data);
        },
        complete: () => {
          if (stopped) return;
          if (!resume) {
            options.onResumed?.();
            return options.onComplete?.();
          }
          // Not reset by data: a page that is always too slow gets some each time, and must not loop hot.
          const delay = retries === 0 ? 0 : Math.min(MAX_BACKOFF_MS, 250 * 2 ** (retries - 1));
          retries++;
          timer = setTimeout(start, delay);
        },
        error: (error) => {
          if (stopped) return;
          if (!isCloseEvent(error) && !(error instanceof Event)) {
            // GraphQL errors of this operation: resubscribing would fail the same way.
            const list = Array.isArray(error) ? error : [error];
            return options.onError?.(String((list[0] as { message?: string })?.message ?? 'Stream error'));
          }
          // The first loss may be a blip; once a reconnect failed as well, the page says so.
          if (failures > 0) options.onRetrying?.((isCloseEvent(error) && error.reason) || undefined);
          void reconnect(isCloseEvent(error) && error.code === FORBIDDEN);
        },
      },
    );
  };

  const reconnect = async (forbidden: boolean) => {
    if (forbidden) await auth.refresh();
    if (stopped || !auth.signedIn()) return;
    const delay = Math.min(MAX_BACKOFF_MS, 250 * 2 ** failures++);
    timer = setTimeout(start, forbidden ? 0 : delay);
  };

  start();
  return () => {
    stopped = true;
    clearTimeout(timer);
    unsubscribe();
  };
}
