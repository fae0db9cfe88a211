import { setTimeout as delay } from 'node:timers/promises';

// There is no event for "the last member of a group is gone", so we poll briefly.
const POLL_MS = 20;
// After SIGKILL only reaping remains; give up rather than hang if nothing reaps orphans.
const REAP_LIMIT_MS = 5_000;

/**
 * A child spawned with `detached: true` leads its own process group, so signalling
 * `-pgid` reaches its whole tree, grandchildren included.
 */
export class ProcessGroup {
  private ending: Promise<void> | undefined;

  constructor(
    private readonly pgid: number,
    private readonly graceMs: number,
  ) {}

  /** SIGTERM, SIGKILL after the grace period, and resolve once no member is left. Idempotent. */
  terminate(): Promise<void> {
    this.ending ??= this.end();
    return this.ending;
  }

  private async end(): Promise<void> {
    if (!this.signal('SIGTERM')) return;
    if (await this.vanishesWithin(this.graceMs)) return;
    this.signal('SIGKILL');
    await this.vanishesWithin(REAP_LIMIT_MS);
  }

  /** False when the group no longer exists (ESRCH) or cannot be signalled. */
  private signal(signal: NodeJS.Signals | 0): boolean {
    try {
      process.kill(-this.pgid, signal);
      return true;
    } catch {
      return false;
    }
  }

  private async vanishesWithin(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (this.signal(0)) {
      if (Date.now() >= deadline) return false;
      await delay(POLL_MS);
    }
    return true;
  }
}
