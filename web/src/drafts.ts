import { auth } from './api/auth';

// The prompt being written in a project, kept in sessionStorage (this tab, like the refresh
// token) per user and project: a session ended elsewhere signs the tab out, and the prompt is
// there again once the same user signs back in. Sent, or a sign-out the user chose, forgets it.

const PREFIX = 'kiln.prompt.';

function keyOf(projectId: string): string | null {
  const state = auth.state();
  return state.status === 'signedIn' ? `${PREFIX}${state.user.id}.${projectId}` : null;
}

export const promptDraft = {
  get: (projectId: string) => {
    const key = keyOf(projectId);
    return (key && sessionStorage.getItem(key)) ?? '';
  },
  set(projectId: string, text: string) {
    const key = keyOf(projectId);
    if (!key) return;
    if (text) sessionStorage.setItem(key, text);
    else sessionStorage.removeItem(key);
  },
  /** Every project's draft: after a sign-out the user chose, the next one to sign in here finds none. */
  clearAll() {
    for (const key of Object.keys(sessionStorage)) if (key.startsWith(PREFIX)) sessionStorage.removeItem(key);
  },
};
