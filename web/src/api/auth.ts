import { RefreshSessionOrWaitDocument, type RefreshSessionOrWaitMutation, type SessionFieldsFragment } from '../gql/graphql';
import { anonymousRequest, ServerUnavailableError } from './graphql';

// The signed-in session. The access token lives in memory only; the refresh token in
// sessionStorage (this tab, this origin: a preview runs sandboxed in an opaque origin
// and can read neither). A reload refreshes once to get a new access token.
//
// A duplicated tab starts with a copy of the refresh token, and refresh tokens rotate with
// reuse detection: a tab that presents a token another tab already spent ends the session
// of both. So the tabs of the origin refresh one at a time (a Web Lock), and the tab that
// rotated a token tells the others the new pair (a BroadcastChannel); those that kept the
// spent token take it. A tab that missed that message (opened as a copy meanwhile, or
// reopened with its sessionStorage restored, however much later) finds a lock named after
// its token, held by the tab that spent it for as long as that tab lives, and asks that tab
// for the pair instead of presenting the token. The pairs stay in the memory of live tabs:
// nothing outlives the tabs that hold the session. Without these APIs (an insecure
// context has no Web Locks) each tab refreshes on its own.

const REFRESH_KEY = 'kiln.refreshToken';
/** Refresh this long before the access token expires. */
const EARLY_MS = 30_000;
const REFRESH_LOCK = 'kiln.refresh';
/** How long a tab waits for the tab that spent its token to answer (a frozen tab may never). */
const HANDOVER_MS = 10_000;
/** Spent tokens whose pairs this tab hands over, the latest: a day's with hourly access tokens. */
const MAX_SPENT_HELD = 32;
/** The shortest pause before trying again after a rate-limited refresh, whatever the answer names. */
const MIN_RETRY_MS = 1_000;
/** The longest pause between two refreshes tried while the server cannot be reached (they start at MIN_RETRY_MS and double). */
const MAX_UNREACHABLE_RETRY_MS = 30_000;
/** What a reload says while the refresh that would restore its session gets no answer. */
const UNREACHABLE = "Can't reach the server, retrying…";

const coordinated = 'locks' in navigator && typeof BroadcastChannel === 'function';
const channel = coordinated ? new BroadcastChannel('kiln.auth') : null;

/** Over the channel: a pair and the refresh token it replaced, or a request for the pair that replaced `ask`. */
type Message = { spent: string; session: SessionFieldsFragment } | { ask: string };

export interface User {
  id: string;
  email: string;
}

/**
 * `notice`: why loading takes longer (a refresh refused for a while, or unanswered), in a sentence or two; tried again by itself.
 * `ended`: the server refused the session (ended elsewhere, or expired), not a sign-out the user chose.
 */
type State = { status: 'loading'; notice?: string } | { status: 'signedOut'; ended?: boolean } | { status: 'signedIn'; user: User };

let state: State = { status: sessionStorage.getItem(REFRESH_KEY) ? 'loading' : 'signedOut' };
let access: { token: string; expiresAt: number } | null = null;
/** The pair this tab holds, to hand to a tab that still keeps a token this tab spent. */
let current: SessionFieldsFragment | null = null;
/** The refresh tokens this tab spent, each with a lock named after it, and how to release that lock. */
const spent = new Map<string, () => void>();
/** No refresh before this time (ms): the server refused one for a while (RateLimitedError). */
let retryAt = 0;
/** Refreshes in a row that got no answer while loading: the next one waits twice as long. */
let unreachableAttempts = 0;
/** Settles a tab's request for the pair that replaced its token, answered or not. */
let awaiting: { token: string; done: () => void } | null = null;
let refreshing: Promise<void> | null = null;
const listeners = new Set<() => void>();

function setState(next: State) {
  state = next;
  for (const listener of listeners) listener();
}

function accept(session: SessionFieldsFragment) {
  access = { token: session.accessToken, expiresAt: Date.parse(session.expiresAt) };
  current = session;
  sessionStorage.setItem(REFRESH_KEY, session.refreshToken);
  setState({ status: 'signedIn', user: session.user });
}

function clear(ended = false) {
  access = null;
  current = null;
  for (const release of spent.values()) release();
  spent.clear();
  sessionStorage.removeItem(REFRESH_KEY);
  setState({ status: 'signedOut', ended });
}

/** The lock that says a live tab spent `token`: named by a short hash (FNV-1a), not the token itself. */
function spentLock(token: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < token.length; i++) hash = Math.imul(hash ^ token.charCodeAt(i), 0x01000193);
  return `kiln.spent.${(hash >>> 0).toString(16)}`;
}

function markSpent(token: string) {
  // Released through a promise made now, so a release before the grant still lets go of it.
  let release = () => {};
  const released = new Promise<void>((resolve) => (release = resolve));
  void navigator.locks.request(spentLock(token), () => released);
  // Held until sign-out or until the tab closes: a copy of this tab may be reopened any time later,
  // with one of the last tokens it saw (each lock is looked through at every refresh).
  spent.set(token, release);
  for (const [oldest, letGo] of spent) {
    if (spent.size <= MAX_SPENT_HELD) break;
    letGo();
    spent.delete(oldest);
  }
}

channel?.addEventListener('message', ({ data }: MessageEvent<Message>) => {
  if ('ask' in data) {
    if (spent.has(data.ask) && current) channel.postMessage({ spent: data.ask, session: current } satisfies Message);
    return;
  }
  // Only a tab that still keeps the spent token takes the new pair: a tab signed in as
  // someone else, or already past that token, ignores it.
  if (sessionStorage.getItem(REFRESH_KEY) === data.spent) accept(data.session);
  if (awaiting?.token === data.spent) awaiting.done();
});

/** Asks the tab that spent `token` for the new pair; settles once it answered or after HANDOVER_MS. */
function askFor(token: string): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => awaiting?.done(), HANDOVER_MS);
    awaiting = {
      token,
      done: () => {
        clearTimeout(timer);
        awaiting = null;
        resolve();
      },
    };
    channel?.postMessage({ ask: token } satisfies Message);
  });
}

async function refreshOnce(): Promise<void> {
  if (!coordinated) return rotate(sessionStorage.getItem(REFRESH_KEY));
  const presented = sessionStorage.getItem(REFRESH_KEY);
  await navigator.locks.request(REFRESH_LOCK, async () => {
    const token = sessionStorage.getItem(REFRESH_KEY);
    // Another tab rotated it while this one waited, and handed over the new pair.
    if (token !== presented && access) return;
    if (token && (await navigator.locks.query()).held?.some((lock) => lock.name === spentLock(token))) {
      await askFor(token);
      if (sessionStorage.getItem(REFRESH_KEY) !== token) return;
    }
    await rotate(token);
  });
}

/** Spends `refreshToken` for a new pair (under the refresh lock when there is one) and tells the other tabs. */
async function rotate(refreshToken: string | null): Promise<void> {
  if (!refreshToken) return clear();
  let answer: RefreshSessionOrWaitMutation['refreshSession'];
  try {
    answer = (await anonymousRequest(RefreshSessionOrWaitDocument, { refreshToken })).refreshSession;
  } catch (error) {
    // The token may well be good, so it is kept either way. With no answer at all (the server
    // or the network is down), a reload waits for the server, trying again after a growing
    // pause, instead of showing a sign-in form the session does not need; an answer that is an
    // error (one that may not go away) shows the form, and the next reload tries the token again.
    access = null;
    if (state.status === 'loading' && !(error instanceof ServerUnavailableError)) {
      setState({ status: 'signedOut' });
    } else if (state.status === 'loading') {
      const waitMs = Math.min(MAX_UNREACHABLE_RETRY_MS, MIN_RETRY_MS * 2 ** unreachableAttempts++);
      setState({ status: 'loading', notice: UNREACHABLE });
      setTimeout(() => void auth.refresh(), waitMs);
    }
    return;
  }
  unreachableAttempts = 0;
  if (answer.__typename === 'RateLimitedError') {
    // Refused for now: the token is still good, so keep it and try again when the server says.
    const waitMs = Math.max(MIN_RETRY_MS, answer.retryAfterSeconds * 1000);
    access = null;
    retryAt = Date.now() + waitMs;
    if (state.status === 'loading') {
      setState({ status: 'loading', notice: `${answer.message} Trying again by itself.` });
      setTimeout(() => void auth.refresh(), waitMs);
    }
    return;
  }
  // Any other refusal is for good (an ended session, not a token at all).
  if (answer.__typename !== 'AuthSession') return clear(true);
  accept(answer);
  if (!channel) return;
  markSpent(refreshToken);
  channel.postMessage({ spent: refreshToken, session: answer } satisfies Message);
}

/** Settles once a refresh may be tried again (at once unless the server asked to wait). */
function untilRetryAllowed(): Promise<void> {
  const waitMs = retryAt - Date.now();
  return waitMs > 0 ? new Promise((resolve) => setTimeout(resolve, waitMs)) : Promise.resolve();
}

export const auth = {
  subscribe(listener: () => void) {
    listeners.add(listener);
    return () => listeners.delete(listener);
  },
  state: () => state,
  signedIn: () => state.status === 'signedIn',
  accept,
  /** Rotates the refresh token; concurrent callers share one request (a reused token ends the session). */
  refresh(): Promise<void> {
    refreshing ??= untilRetryAllowed().then(refreshOnce).finally(() => {
      refreshing = null;
    });
    return refreshing;
  },
  /** A valid access token, refreshed first when it is about to expire; null when signed out. */
  async accessToken(): Promise<string | null> {
    if (refreshing) await refreshing;
    if (!access && !sessionStorage.getItem(REFRESH_KEY)) return null;
    if (!access || access.expiresAt - Date.now() < EARLY_MS) await auth.refresh();
    return access?.token ?? null;
  },
  /** Forgets both tokens (a sign-out the user chose); the server-side sign-out is the caller's. */
  clear: () => clear(),
};
