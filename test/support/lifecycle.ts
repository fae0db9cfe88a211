import { afterAll, beforeAll } from 'vitest';

/**
 * What `start` makes, started before the suite's (or file's) tests and stopped after
 * them. The object is returned at once and its fields are set once the tests run.
 */
export function useStarted<T extends { stop(): Promise<void> }>(start: () => Promise<T>): T {
  const started = {} as T;
  beforeAll(async () => {
    Object.assign(started, await start());
  });
  afterAll(async () => {
    await started.stop?.();
  });
  return started;
}
