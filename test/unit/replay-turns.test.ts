import { describe, expect, it } from 'vitest';
import { replayPause } from '../../src/generations/replay-turns.js';

// Replays (history on subscribe) give way to live batches: a timer or a socket event
// that is due runs before a long replay has finished, instead of after all of it.

const row = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`field${i}`, `value ${i}`]));

/** A replay of `items` rows, each costing real work, as the streams run them; calls `onItem` after each. */
async function replay(items: number, onItem: (index: number) => void = () => undefined): Promise<number> {
  let bytes = 0;
  for (let index = 0; index < items; index++) {
    const pause = replayPause();
    if (pause) await pause;
    bytes += JSON.stringify({ ...row, seq: index }).length;
    onItem(index);
  }
  return bytes;
}

describe('replays share each event-loop turn', () => {
  it('runs a due timer before a long replay ends', async () => {
    const items = 50_000;
    let timerRan = false;
    let itemsBeforeTimer = -1;
    setTimeout(() => (timerRan = true), 0);
    await replay(items, (index) => {
      if (timerRan && itemsBeforeTimer < 0) itemsBeforeTimer = index;
    });
    expect(timerRan).toBe(true);
    expect(itemsBeforeTimer).toBeGreaterThan(0);
    expect(itemsBeforeTimer).toBeLessThan(items - 1);
  });

  it('lets concurrent replays all finish, each with every item', async () => {
    const lengths = await Promise.all([replay(20_000), replay(30_000), replay(10)]);
    const single = (items: number) => Array.from({ length: items }, (_, seq) => JSON.stringify({ ...row, seq }).length).reduce((a, b) => a + b, 0);
    expect(lengths).toEqual([single(20_000), single(30_000), single(10)]);
  });
});
