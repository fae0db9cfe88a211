import { describe, expect, it } from 'vitest';
import { createKdfLimiter, KDF_BUSY_MESSAGE } from '../../src/auth/kdf-limiter.js';
import { RateLimitedError } from '../../src/errors.js';

// The limiter in front of password hashing, with small numbers: jobs the test finishes or
// fails by hand stand for scrypt runs, so nothing here depends on how fast the machine is.

interface Job {
  /** Settles when the limiter has started the job's work. */
  started: Promise<void>;
  hasStarted(): boolean;
  finish(): void;
  fail(error: Error): void;
  /** What `run` answered. */
  result: Promise<string>;
}

function submit(limiter: ReturnType<typeof createKdfLimiter>, name: string, log: string[] = []): Job {
  let markStarted!: () => void;
  let finish!: () => void;
  let fail!: (error: Error) => void;
  let begun = false;
  const started = new Promise<void>((resolve) => (markStarted = resolve));
  const done = new Promise<string>((resolve, reject) => {
    finish = () => resolve(name);
    fail = reject;
  });
  const result = limiter.run(() => {
    begun = true;
    log.push(name);
    markStarted();
    return done;
  });
  result.catch(() => {}); // Inspected by the tests that expect a failure.
  return { started, hasStarted: () => begun, finish, fail, result };
}

describe('KDF limiter', () => {
  it('runs N at once, queues M in arrival order, and refuses the rest at once without running them', async () => {
    const limiter = createKdfLimiter({ concurrency: 2, maxWaiting: 3 });
    const log: string[] = [];
    const jobs = ['a', 'b', 'c', 'd', 'e'].map((name) => submit(limiter, name, log));
    await Promise.all(jobs.slice(0, 2).map((job) => job.started));

    let ran = false;
    const refused = await limiter.run(async () => (ran = true)).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(RateLimitedError);
    expect(refused).toMatchObject({ message: KDF_BUSY_MESSAGE, retryAfterSeconds: 1 });
    expect(ran).toBe(false);
    expect(log).toEqual(['a', 'b']);

    // A finished run hands its slot to the first in the queue, and only to it.
    jobs[1]!.finish();
    await jobs[2]!.started;
    expect(log).toEqual(['a', 'b', 'c']);
    expect(jobs[3]!.hasStarted()).toBe(false);
    // With a place free in the queue, a newcomer waits (behind d and e) rather than being refused.
    const late = submit(limiter, 'f', log);
    jobs[0]!.finish();
    await jobs[3]!.started;
    jobs[2]!.finish();
    jobs[3]!.finish();
    await jobs[4]!.started;
    jobs[4]!.finish();
    await late.started;
    late.finish();
    expect(await Promise.all([...jobs, late].map((job) => job.result))).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
    expect(log).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
  });

  it('gives the slot back when the work rejects or throws, and admits N and queues M again afterwards', async () => {
    const limiter = createKdfLimiter({ concurrency: 1, maxWaiting: 1 });
    const failing = submit(limiter, 'fails');
    await failing.started;
    failing.fail(new Error('scrypt failed'));
    await expect(failing.result).rejects.toThrow('scrypt failed');
    // The slot is free again: the next run starts at once.
    const probe = submit(limiter, 'probe');
    expect(probe.hasStarted()).toBe(true);
    probe.finish();
    expect(await probe.result).toBe('probe');

    const throwing = limiter.run(() => {
      throw new Error('thrown before any promise');
    });
    await expect(throwing).rejects.toThrow('thrown before any promise');

    // Nothing is held: one runs at once, one waits, the next is refused, as at the start.
    const running = submit(limiter, 'runs');
    expect(running.hasStarted()).toBe(true);
    const waiting = submit(limiter, 'waits');
    await expect(limiter.run(async () => 'refused')).rejects.toBeInstanceOf(RateLimitedError);
    expect(waiting.hasStarted()).toBe(false);
    running.finish();
    await waiting.started;
    waiting.finish();
    expect(await Promise.all([running.result, waiting.result])).toEqual(['runs', 'waits']);
  });
});
