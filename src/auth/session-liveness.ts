// Whether a Supabase session is still live, asked of GoTrue and remembered briefly:
// a live answer for ttlMs (another instance's sign-out is seen within that), an ended
// one until the token expires (a session never comes back).

const MAX_ENTRIES = 10_000;

interface Entry {
  live: boolean;
  userId: string;
  until: number;
}

export interface SessionToCheck {
  sessionId: string;
  userId: string;
  /** When the token expires, in milliseconds since the epoch. */
  expiresAtMs: number;
  accessToken: string;
}

export interface SessionLivenessOptions {
  ttlMs: number;
  now: () => number;
  /** Asks the authority with the token; true for live, false for ended, throws when it cannot tell. */
  ask: (accessToken: string) => Promise<boolean>;
}

export interface SessionLiveness {
  /**
   * With `askAgain`, a remembered live answer is not enough: the authority is asked (or a
   * question already on its way is joined), e.g. because the caller wants what `ask` learns
   * from a fresh answer. A remembered ended session is still refused at once.
   */
  isLive(session: SessionToCheck, options?: { askAgain?: boolean }): Promise<boolean>;
  /** This instance signed the session out: refuse it at once. */
  ended(sessionId: string, userId: string, untilMs: number): void;
  /** Another of the user's sessions may have ended: ask again next time. */
  forgetUser(userId: string, exceptSessionId?: string): void;
}

export function createSessionLiveness({ ttlMs, now, ask }: SessionLivenessOptions): SessionLiveness {
  const entries = new Map<string, Entry>();
  // Concurrent requests of one session share a single question, until a sign-out of its user.
  const pending = new Map<string, { userId: string; answer: Promise<boolean> }>();
  // Bumped by every sign-out here, so an answer asked before it is not remembered after it.
  let signOuts = 0;

  function remember(sessionId: string, entry: Entry) {
    entries.delete(sessionId);
    entries.set(sessionId, entry);
    if (entries.size <= MAX_ENTRIES) return;
    const time = now();
    for (const [id, { until }] of entries) if (until <= time) entries.delete(id);
    // Still full: drop the oldest answers (a Map iterates in insertion order).
    for (const id of entries.keys()) {
      if (entries.size <= MAX_ENTRIES) break;
      entries.delete(id);
    }
  }

  async function askOnce(session: SessionToCheck): Promise<boolean> {
    const signOutsBefore = signOuts;
    const live = await ask(session.accessToken);
    if (live && signOuts !== signOutsBefore) return entries.get(session.sessionId)?.live ?? live;
    remember(session.sessionId, { live, userId: session.userId, until: live ? now() + ttlMs : session.expiresAtMs });
    return live;
  }

  return {
    async isLive(session, { askAgain = false } = {}) {
      const known = entries.get(session.sessionId);
      if (known && known.until > now() && !(askAgain && known.live)) return known.live;
      const asking = pending.get(session.sessionId);
      if (asking) return asking.answer;
      const question = {
        userId: session.userId,
        answer: askOnce(session).finally(() => {
          if (pending.get(session.sessionId) === question) pending.delete(session.sessionId);
        }),
      };
      pending.set(session.sessionId, question);
      return question.answer;
    },
    ended(sessionId, userId, untilMs) {
      signOuts += 1;
      remember(sessionId, { live: false, userId, until: untilMs });
    },
    forgetUser(userId, exceptSessionId) {
      signOuts += 1;
      for (const [id, entry] of entries) {
        if (entry.userId === userId && entry.live && id !== exceptSessionId) entries.delete(id);
      }
      // A question asked before the sign-out may be answered live: a request after it asks anew.
      for (const [id, question] of pending) if (question.userId === userId && id !== exceptSessionId) pending.delete(id);
    },
  };
}
