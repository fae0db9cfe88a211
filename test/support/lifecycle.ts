import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';

type Stop<T> = (started: T) => Promise<unknown>;
const ownStop: Stop<object> = (started) => (started as { stop(): Promise<void> }).stop();

/**
 * What `start` makes, started before the suite's (or file's) tests and ended by `stop`
 * after them (its own `stop()` unless told otherwise: a fake's `close()`). The object is
 * returned at once and stands for what `start` made once the tests run; reading it
 * before then throws.
 */
export function useStarted<T extends { stop(): Promise<void> }>(start: () => Promise<T>): T;
export function useStarted<T extends object>(start: () => Promise<T>, stop: Stop<T>): T;
export function useStarted<T extends object>(start: () => Promise<T>, stop: Stop<T> = ownStop): T {
  return use(beforeAll, afterAll, start, stop);
}

/** Like useStarted, but afresh for each test: started before it, ended by `stop` after it. */
export function useEach<T extends object>(start: () => Promise<T>, stop: Stop<T>): T {
  return use(beforeEach, afterEach, start, stop);
}

function use<T extends object>(before: typeof beforeAll, after: typeof afterAll, start: () => Promise<T>, stop: Stop<T>): T {
  let started: T | undefined;
  before(async () => {
    started = await start();
  });
  after(async () => {
    const ending = started;
    started = undefined;
    if (ending) await stop(ending);
  });
  // A proxy rather than a copy, so that getters (a fake's request count) stay live.
  return new Proxy({} as T, {
    get: (_, key) => {
      if (!started) throw new Error(`${String(key)} was read before the suite started it (in beforeAll or beforeEach)`);
      return Reflect.get(started, key);
    },
  });
}
