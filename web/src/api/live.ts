import { type Client, createClient } from 'graphql-ws';
import type { TypedDocumentString } from '../gql/graphql';
import { auth } from './auth';

// Live streams over graphql-ws (one socket for every stream of the page). The client
// does not retry by itself: `follow` resubscribes each stream after a lost connection
// with the last seq it saw as `afterSeq`, so nothing is missed and nothing repeats,
// and refreshes the access token first when the server closed with 4403 (expired or
// revoked token). A stream the server ended because this page fell behind
// (SLOW_CONSUMER) resumes the same way, without showing an error.

const FORBIDDEN = 4403;
const MAX_BACKOFF_MS = 8_000;

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
}

const isSlowConsumer = (errors: readonly { extensions?: Record<string, unknown> }[] | undefined) =>
  errors?.some((error) => error.extensions?.code === 'SLOW_CONSUMER') ?? false;

const isCloseEvent = (value: unknown): value is CloseEvent =>
  typeof value === 'object' && value !== null && 'code' in value && 'reason' in value;

/** Follows a subscription until it completes or `stop()` is called. */
export function follow<T, V>(options: FollowOptions<T, V>): () => void {
  let stopped = false;
  let lastSeq: number | undefined;
  let failures = 0;
  /** SLOW_CONSUMER ends so far: the first resumes at once, later ones after a growing pause. */
  let slowEnds = 0;
  let unsubscribe = () => {};
  let timer: ReturnType<typeof setTimeout> | undefined;

  const start = () => {
    if (stopped) return;
    // The server's last result before it completes this subscription said it fell behind.
    let behind = false;
    unsubscribe = socket().subscribe<T>(
      { query: options.document.toString(), variables: options.variables(lastSeq) as Record<string, unknown> },
      {
        next: (event) => {
          failures = 0;
          if (isSlowConsumer(event.errors)) {
            behind = true;
            return;
          }
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
          if (!behind) return options.onComplete?.();
          // Not reset by data: a page that is always too slow gets some each time, and must not loop hot.
          const delay = slowEnds === 0 ? 0 : Math.min(MAX_BACKOFF_MS, 250 * 2 ** (slowEnds - 1));
          slowEnds++;
          timer = setTimeout(start, delay);
        },
        error: (error) => {
          if (stopped) return;
          if (!isCloseEvent(error) && !(error instanceof Event)) {
            // GraphQL errors of this operation: resubscribing would fail the same way.
            const list = Array.isArray(error) ? error : [error];
            return options.onError?.(String((list[0] as { message?: string })?.message ?? 'Stream error'));
          }
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
