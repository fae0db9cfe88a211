import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Deadlines } from '../../src/deadlines.js';
import { createMemoryEventBus } from '../../src/events/bus.js';
import { Inbox } from '../../src/generations/inbox.js';

// A stream's inbox: events as they are published, and the poll that makes a quiet stream
// read the database (what a bus may have lost is there). Its timer outlives the waits,
// so these run on fake timers and check when a wait ends, on the fake clock.

const ID = 'a-generation';
const status = { status: 'RUNNING', phase: 'BUILDING' } as const;

describe('Inbox', () => {
  beforeEach(() => void vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] }));
  afterEach(() => void vi.useRealTimers());

  const open = () => {
    const bus = createMemoryEventBus();
    const inbox = new Inbox<unknown>(bus, ID, ['generationUpdated'], { capacity: 32, weight: () => 1, polls: new Deadlines(() => performance.now()) });
    return { inbox, publish: () => bus.publish('generationUpdated', ID, status) };
  };

  /** The wait's outcome once it ended; undefined while it waits. */
  const watch = <T>(promise: Promise<T>) => {
    const outcome: { value?: T } = {};
    void promise.then((value) => (outcome.value = value));
    return outcome;
  };

  /** A wait of a second that nothing ends: still waiting a moment before its second is up, timed out then. */
  const timesOutAfterASecond = async (inbox: Inbox<unknown>) => {
    const quiet = watch(inbox.wait(1000));
    await vi.advanceTimersByTimeAsync(999);
    expect(quiet.value).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(quiet.value).toEqual({ items: [], timedOut: true });
  };

  it('hands over what was published, and times out a wait that nothing ends', async () => {
    const { inbox, publish } = open();
    publish();
    expect(await inbox.wait(1000)).toEqual({ items: [status], timedOut: false });
    await timesOutAfterASecond(inbox);
  });

  it('still times out on time after events ended the earlier waits early', async () => {
    const { inbox, publish } = open();
    for (let i = 0; i < 5; i++) {
      const woken = watch(inbox.wait(1000));
      await vi.advanceTimersByTimeAsync(300);
      publish();
      await vi.advanceTimersByTimeAsync(0);
      expect(woken.value).toEqual({ items: [status], timedOut: false });
    }
    // The timer armed by the first wait is long past; this wait's own second counts.
    await timesOutAfterASecond(inbox);
  });

  it('does not wait out a long poll when a short one follows it', async () => {
    const { inbox, publish } = open();
    const long = watch(inbox.wait(60_000));
    publish();
    await vi.advanceTimersByTimeAsync(0);
    expect(long.value?.timedOut).toBe(false);
    const short = watch(inbox.wait(2000));
    await vi.advanceTimersByTimeAsync(2000);
    expect(short.value).toEqual({ items: [], timedOut: true });
  });

  it('times out again after a timeout, and after a poll that fell due while no wait was pending', async () => {
    const { inbox, publish } = open();
    await timesOutAfterASecond(inbox);
    await timesOutAfterASecond(inbox);
    const woken = watch(inbox.wait(1000));
    publish();
    await vi.advanceTimersByTimeAsync(0);
    expect(woken.value?.timedOut).toBe(false);
    // Nobody waits while that wait's poll falls due; the next wait still gets its own second.
    await vi.advanceTimersByTimeAsync(5000);
    await timesOutAfterASecond(inbox);
  });

  it('wakes its waiter when closed and leaves no timer behind', async () => {
    const { inbox, publish } = open();
    const waiting = watch(inbox.wait(60_000));
    inbox.close();
    await vi.advanceTimersByTimeAsync(0);
    expect(waiting.value).toEqual({ items: [], timedOut: false });
    publish(); // closed: nothing more arrives
    expect(await inbox.wait(1000)).toEqual({ items: [], timedOut: false });
    expect(vi.getTimerCount()).toBe(0);
  });
});
