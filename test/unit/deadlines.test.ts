import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Deadlines } from '../../src/deadlines.js';

// Many deadlines on one timer (token expiries, stream polls): each fires once its moment
// has come, never before, in order; cancelled ones never; moved ones at their new moment.
// On fake timers, checked on the fake clock.

describe('Deadlines', () => {
  beforeEach(() => void vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] }));
  afterEach(() => void vi.useRealTimers());

  const open = () => {
    const fired: string[] = [];
    const deadlines = new Deadlines(Date.now);
    const at = (ms: number, name: string) => deadlines.schedule(Date.now() + ms, () => fired.push(name));
    return { deadlines, fired, at };
  };

  it('fires each deadline at its moment, in order, with one timer for all of them', async () => {
    const { fired, at } = open();
    for (const ms of [500, 100, 300, 100, 200, 400]) at(ms, `${ms}`);
    expect(vi.getTimerCount()).toBe(1);
    await vi.advanceTimersByTimeAsync(99);
    expect(fired).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(fired).toEqual(['100', '100']);
    await vi.advanceTimersByTimeAsync(400);
    expect(fired).toEqual(['100', '100', '200', '300', '400', '500']);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('never fires a cancelled deadline, and leaves no timer once none is left', async () => {
    const { deadlines, fired, at } = open();
    const first = at(100, 'first');
    const middle = at(200, 'middle');
    at(300, 'last');
    deadlines.cancel(first);
    deadlines.cancel(middle);
    deadlines.cancel(middle); // twice: nothing more happens
    await vi.advanceTimersByTimeAsync(299);
    expect(fired).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(fired).toEqual(['last']);
    const alone = at(100, 'alone');
    deadlines.cancel(alone);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('fires a moved deadline at its new moment, earlier or later, and again once moved after firing', async () => {
    const { deadlines, fired, at } = open();
    const later = at(100, 'later');
    const earlier = at(1000, 'earlier');
    deadlines.move(later, Date.now() + 500);
    deadlines.move(earlier, Date.now() + 50);
    await vi.advanceTimersByTimeAsync(50);
    expect(fired).toEqual(['earlier']);
    await vi.advanceTimersByTimeAsync(449);
    expect(fired).toEqual(['earlier']);
    await vi.advanceTimersByTimeAsync(1);
    expect(fired).toEqual(['earlier', 'later']);
    deadlines.move(later, Date.now() + 10);
    await vi.advanceTimersByTimeAsync(10);
    expect(fired).toEqual(['earlier', 'later', 'later']);
  });

  it('serves what a firing deadline schedules, moves and cancels, and a deadline already past', async () => {
    const { deadlines, fired, at } = open();
    const started = Date.now();
    const firedAt = (name: string) => () => fired.push(`${name}@${Date.now() - started}`);
    const cancelled = deadlines.schedule(started + 200, firedAt('cancelled'));
    const moved = deadlines.schedule(started + 300, firedAt('moved'));
    deadlines.schedule(started + 100, () => {
      firedAt('first')();
      deadlines.schedule(started + 150, firedAt('scheduled'));
      deadlines.schedule(started + 50, firedAt('already past'));
      deadlines.cancel(cancelled);
      deadlines.move(moved, started + 120);
    });
    at(400, 'last');
    await vi.advanceTimersByTimeAsync(400);
    expect(fired).toEqual(['first@100', 'already past@100', 'moved@120', 'scheduled@150', 'last']);
  });

  it('reaches a deadline beyond the longest timer delay', async () => {
    const { fired, at } = open();
    const month = 30 * 24 * 3600 * 1000;
    at(month, 'in a month');
    await vi.advanceTimersByTimeAsync(month - 1);
    expect(fired).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(fired).toEqual(['in a month']);
  });

  it('still fires the others when one of them throws, and reports the error', async () => {
    const { deadlines, fired, at } = open();
    const reported: unknown[] = [];
    vi.stubGlobal('queueMicrotask', (task: () => void) => {
      try {
        task();
      } catch (error) {
        reported.push(error);
      }
    });
    try {
      at(100, 'before');
      deadlines.schedule(Date.now() + 100, () => {
        throw new Error('boom');
      });
      at(100, 'after');
      await vi.advanceTimersByTimeAsync(100);
      expect(fired).toEqual(['before', 'after']);
      expect(reported).toEqual([new Error('boom')]);
    } finally {
      vi.unstubAllGlobals();
    }
  });

  it('fires every deadline at its own moment among many scheduled, moved and cancelled at random', async () => {
    const deadlines = new Deadlines(Date.now);
    const started = Date.now();
    let seed = 7;
    const random = (below: number) => Math.floor(((seed = (seed * 48271) % 2147483647) / 2147483647) * below);
    const expected = new Map<number, number>();
    const firedAt = new Map<number, number>();
    const entries = Array.from({ length: 2000 }, (_, i) => {
      const ms = 1 + random(5000);
      expected.set(i, ms);
      return deadlines.schedule(started + ms, () => firedAt.set(i, Date.now() - started));
    });
    for (let round = 0; round < 3000; round++) {
      const i = random(entries.length);
      if (random(3) === 0) {
        deadlines.cancel(entries[i]);
        expected.delete(i);
      } else {
        const ms = 1 + random(5000);
        deadlines.move(entries[i]!, started + ms);
        expected.set(i, ms);
      }
    }
    await vi.advanceTimersByTimeAsync(5000);
    expect(firedAt).toEqual(expected);
  });
});
