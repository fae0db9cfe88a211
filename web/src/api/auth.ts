import { RefreshSessionDocument, type SessionFieldsFragment } from '../gql/graphql';
import { anonymousRequest } from './graphql';

// The signed-in session. The access token lives in memory only; the refresh token in
// sessionStorage (this tab, this origin: a preview runs sandboxed in an opaque origin
// and can read neither). A reload refreshes once to get a new access token.

const REFRESH_KEY = 'kiln.refreshToken';
/** Refresh this long before the access token expires. */
const EARLY_MS = 30_000;

export interface User {
  id: string;
  email: string;
}

type State = { status: 'loading' } | { status: 'signedOut' } | { status: 'signedIn'; user: User };

let state: State = { status: sessionStorage.getItem(REFRESH_KEY) ? 'loading' : 'signedOut' };
let access: { token: string; expiresAt: number } | null = null;
let refreshing: Promise<void> | null = null;
const listeners = new Set<() => void>();

function setState(next: State) {
  state = next;
  for (const listener of listeners) listener();
}

function accept(session: SessionFieldsFragment) {
  access = { token: session.accessToken, expiresAt: Date.parse(session.expiresAt) };
  sessionStorage.setItem(REFRESH_KEY, session.refreshToken);
  setState({ status: 'signedIn', user: session.user });
}

function clear() {
  access = null;
  sessionStorage.removeItem(REFRESH_KEY);
  setState({ status: 'signedOut' });
}

async function refreshOnce(): Promise<void> {
  const refreshToken = sessionStorage.getItem(REFRESH_KEY);
  if (!refreshToken) return clear();
  try {
    const { refreshSession } = await anonymousRequest(RefreshSessionDocument, { refreshToken });
    if (refreshSession.__typename === 'AuthSession') accept(refreshSession);
    else clear();
  } catch {
    // The server is unreachable: keep the refresh token for the next attempt.
    access = null;
    if (state.status === 'loading') setState({ status: 'signedOut' });
  }
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
    refreshing ??= refreshOnce().finally(() => {
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
  /** Forgets both tokens; the server-side sign-out is the caller's. */
  clear,
};
