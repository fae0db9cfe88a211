/**
 * Many deadlines on one timer. A live subscription holds a few deadlines for hours (its
 * token's expiry, its stream's next poll) and almost never reaches them; a node timer
 * each, with its timer list per distinct delay, was a good part of what an idle
 * subscription held. Here a deadline is an entry in a binary min-heap, and one timer is
 * armed at the earliest. Deadlines that move later leave the timer where it is: it fires
 * early, finds nothing due and is armed again, so moving a deadline costs no timer.
 */
export class Deadlines {
  private readonly heap: Deadline[] = [];
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;

  /** `now` is the clock the deadlines are given in (e.g. Date.now, or performance.now). */
  constructor(private readonly now: () => number) {}

  /** Calls `fire` once `at` has come, unless cancelled or moved first. */
  schedule(at: number, fire: () => void): Deadline {
    const deadline: Deadline = { at, fire, slot: -1 };
    this.push(deadline);
    return deadline;
  }

  /** Moves a deadline (scheduled, fired or cancelled) to `at`. */
  move(deadline: Deadline, at: number) {
    if (deadline.slot < 0) {
      deadline.at = at;
      return this.push(deadline);
    }
    const earlier = at < deadline.at;
    deadline.at = at;
    if (earlier) this.up(deadline.slot);
    else this.down(deadline.slot);
    this.arm();
  }

  /** Moves a deadline to `at` when it would otherwise come later or not at all: one that only ever comes earlier costs nothing per call. */
  bringForward(deadline: Deadline, at: number) {
    if (deadline.slot < 0 || deadline.at > at) this.move(deadline, at);
  }

  cancel(deadline: Deadline | undefined) {
    if (!deadline || deadline.slot < 0) return;
    const last = this.heap.pop()!;
    if (last !== deadline) {
      this.place(last, deadline.slot);
      this.down(last.slot);
      this.up(last.slot);
    }
    deadline.slot = -1;
    if (this.heap.length === 0) this.disarm();
  }

  private push(deadline: Deadline) {
    this.place(deadline, this.heap.length);
    this.up(deadline.slot);
    this.arm();
  }

  private readonly due = () => {
    this.timer = undefined;
    this.timerAt = Infinity;
    // A timer may fire a moment before the clock reads its deadline: that one waits on.
    const now = this.now();
    while (this.heap.length > 0 && this.heap[0]!.at <= now) {
      const deadline = this.heap[0]!;
      this.cancel(deadline);
      try {
        deadline.fire();
      } catch (error) {
        // As a throwing timer callback would: reported, and the other deadlines still fire.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
    this.arm();
  };

  /** The timer at the earliest deadline, unless one is armed earlier already. */
  private arm() {
    const first = this.heap[0];
    if (!first || first.at >= this.timerAt) return;
    clearTimeout(this.timer);
    this.timerAt = first.at;
    this.timer = setTimeout(this.due, Math.min(Math.max(Math.ceil(first.at - this.now()), 0), MAX_TIMER_MS));
    // Deadlines never keep the process alive: what they guard (a socket, a stream) does.
    this.timer.unref?.();
  }

  private disarm() {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }

  private place(deadline: Deadline, slot: number) {
    this.heap[slot] = deadline;
    deadline.slot = slot;
  }

  private up(slot: number) {
    const deadline = this.heap[slot]!;
    while (slot > 0) {
      const parent = this.heap[(slot - 1) >> 1]!;
      if (parent.at <= deadline.at) break;
      this.place(parent, slot);
      slot = (slot - 1) >> 1;
    }
    this.place(deadline, slot);
  }

  private down(slot: number) {
    const deadline = this.heap[slot]!;
    const size = this.heap.length;
    for (;;) {
      let child = 2 * slot + 1;
      if (child >= size) break;
      if (child + 1 < size && this.heap[child + 1]!.at < this.heap[child]!.at) child++;
      if (this.heap[child]!.at >= deadline.at) break;
      this.place(this.heap[child]!, slot);
      slot = child;
    }
    this.place(deadline, slot);
  }
}

export interface Deadline {
  at: number;
  readonly fire: () => void;
  /** Its place in the heap; -1 when not scheduled. */
  slot: number;
}

/** setTimeout's longest delay (24.8 days; past it Node fires at once); a later deadline is reached by arming again. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** What `within` resolves to when time ran out first (a wait, not a deadline of the heap above). */
export const TIMED_OUT = Symbol('timed out');

/** What `promise` resolves to (or its rejection), or TIMED_OUT when it has not settled after `ms`. */
export async function within<T>(promise: PromiseLike<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<typeof TIMED_OUT>((resolve) => (timer = setTimeout(() => resolve(TIMED_OUT), ms)));
  try {
    return await Promise.race([promise, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}
