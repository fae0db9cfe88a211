// Replays (history on subscribe, repairs after a gap), and the first read of each
// stream that opens, share one slice of each event-loop turn. A replay is a chain of
// microtasks (a page from the cache, then one item after another through execution and
// the socket); left alone, 500 viewers joining with history would hold every live batch
// behind their whole replays. Past the slice, each replay waits for the next turn, so
// timers and sockets (live batches) go first.

/** Replay work per event-loop turn, across every stream of this process. */
const SLICE_MS = 2;

let turn: { started: number; next?: Promise<void> } | undefined;

/** Nothing while this turn's replay slice lasts; past it, a promise of the next turn's slice. */
export function replayPause(): Promise<void> | undefined {
  const now = performance.now();
  if (!turn) {
    turn = { started: now };
    setImmediate(() => (turn = undefined));
    return undefined;
  }
  if (now - turn.started < SLICE_MS) return undefined;
  turn.next ??= new Promise((resolve) => setImmediate(resolve));
  return turn.next;
}
