import { type MouseEvent, useSyncExternalStore } from 'react';

// Two routes need no router library: `/` (projects) and `/projects/<id>`.

const listeners = new Set<() => void>();
window.addEventListener('popstate', () => listeners.forEach((listener) => listener()));

export function navigate(path: string) {
  if (path === location.pathname) return;
  history.pushState(null, '', path);
  listeners.forEach((listener) => listener());
}

/** A link of the app followed in place; a modified or middle click is the browser's (new tab, new window). */
export function followLink(event: MouseEvent<HTMLAnchorElement>, path: string) {
  if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  navigate(path);
}

export function usePath(): string {
  return useSyncExternalStore(
    (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    () => location.pathname,
  );
}

/** A project page's path. Global ids are URL-safe base64 but may hold `=`. */
export const projectPath = (id: string) => `/projects/${encodeURIComponent(id)}`;

/** The project id in a project page's path; null for any other path, a malformed one (`/projects/%E0`) included. */
export function projectIdOf(path: string): string | null {
  const match = /^\/projects\/([^/]+)\/?$/.exec(path);
  if (!match?.[1]) return null;
  try {
    return decodeURIComponent(match[1]);
  } catch {
    return null;
  }
}
