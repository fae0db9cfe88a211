import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';

// `follow()` of the reference web client (web/src/api/live.ts) against a fake graphql-ws
// server that ends a stream as Kiln does with a slow consumer: a last result whose error
// carries `extensions.code: "SLOW_CONSUMER"` and `lastSeq`, then `complete`. The client
// must resubscribe from the last seq it has, without an error, and not loop hot.

type Chunk = { generationChunks: { seq: number; text: string } };

/** What the test uses of web/src/api/live.ts: imported by path, since web/ is typechecked on its own (DOM, bundler resolution). */
interface LiveModule {
  follow<T, V>(options: {
    document: { toString(): string };
    variables: (afterSeq: number | undefined) => V;
    seqOf?: (data: T) => number | undefined;
    onData: (data: T) => void;
    onComplete?: () => void;
    onError?: (message: string) => void;
  }): () => void;
  disconnect(): void;
}
const LIVE_MODULE = '../web/src/api/live.ts';
type Reply = (subscription: number, afterSeq: number | undefined) => (Record<string, unknown> | 'complete')[];

const slowConsumer = (lastSeq: number) => ({
  data: null,
  errors: [{ message: 'Too far behind; resubscribe with afterSeq set to the last seq you received.', extensions: { code: 'SLOW_CONSUMER', lastSeq } }],
});
const chunk = (seq: number) => ({ data: { generationChunks: { seq, text: `<${seq}>` } } });

/** A graphql-ws server that answers the n-th subscribe to generationChunks with `reply(n, afterSeq)`. */
async function fakeServer(reply: Reply) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => 'graphql-transport-ws' });
  const subscribes: (number | undefined)[] = [];
  wss.on('connection', (socket) => {
    socket.on('message', (raw) => {
      const message = JSON.parse(String(raw)) as { id?: string; type: string; payload?: { query: string; variables?: { afterSeq?: number } } };
      if (message.type === 'connection_init') socket.send(JSON.stringify({ type: 'connection_ack' }));
      // Any other subscription stays open and silent.
      if (message.type !== 'subscribe' || !message.payload?.query.includes('generationChunks')) return;
      const afterSeq = message.payload?.variables?.afterSeq;
      subscribes.push(afterSeq);
      for (const result of reply(subscribes.length, afterSeq)) {
        socket.send(JSON.stringify(result === 'complete' ? { id: message.id, type: 'complete' } : { id: message.id, type: 'next', payload: result }));
      }
    });
  });
  await new Promise((resolve) => wss.once('listening', resolve));
  return { host: `127.0.0.1:${(wss.address() as AddressInfo).port}`, subscribes, close: () => new Promise((resolve) => wss.close(resolve)) };
}

/** Turns of the event loop (no timers) until `condition` holds. */
async function until(condition: () => boolean, what: string) {
  for (let turn = 0; turn < 100_000; turn++) {
    if (condition()) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(`never happened: ${what}`);
}

describe('follow() of the web client after SLOW_CONSUMER', () => {
  let server: Awaited<ReturnType<typeof fakeServer>> | undefined;
  let live: LiveModule | undefined;

  /** The client module as a page loads it, with the page's globals, talking to `host`. */
  async function load(host: string) {
    vi.stubGlobal('location', { protocol: 'http:', host });
    vi.stubGlobal('sessionStorage', { getItem: () => null, setItem: () => {}, removeItem: () => {} });
    vi.stubGlobal('WebSocket', WebSocket);
    vi.resetModules();
    live = (await import(/* @vite-ignore */ LIVE_MODULE)) as LiveModule;
  }

  beforeEach(() => {
    server = undefined;
  });
  afterEach(async () => {
    vi.useRealTimers();
    live?.disconnect();
    vi.unstubAllGlobals();
    await server?.close();
  });

  function follow() {
    const data: string[] = [];
    const errors: string[] = [];
    let completed = 0;
    const stop = live!.follow<Chunk, { id: string; afterSeq?: number }>({
      document: { toString: () => 'subscription { generationChunks(id: "g") { seq text } }' },
      variables: (afterSeq) => ({ id: 'g', afterSeq }),
      seqOf: (item) => item.generationChunks.seq,
      onData: (item) => data.push(item.generationChunks.text),
      onError: (message) => errors.push(message),
      onComplete: () => completed++,
    });
    return { data, errors, completed: () => completed, stop };
  }

  it('resubscribes from the last seq it received and shows the whole output with no error', async () => {
    server = await fakeServer((n, afterSeq) =>
      n === 1
        ? [chunk(0), chunk(1), chunk(2), slowConsumer(2), 'complete']
        : [...Array.from({ length: 5 - afterSeq! }, (_, i) => chunk(afterSeq! + 1 + i)), 'complete'],
    );
    await load(server.host);
    const followed = follow();
    try {
      await until(() => followed.completed() > 0 || followed.errors.length > 0, 'the stream ended');
      expect(followed.errors).toEqual([]);
      expect(server.subscribes).toEqual([undefined, 2]);
      expect(followed.data.join('')).toBe('<0><1><2><3><4><5>');
      expect(followed.completed()).toBe(1);
    } finally {
      followed.stop();
    }
  });

  it('resubscribes at once the first time, then after a growing pause, for a client that is always too slow', async () => {
    // Each subscription hands over one more chunk, then ends with SLOW_CONSUMER.
    server = await fakeServer((_, afterSeq) => {
      const seq = (afterSeq ?? -1) + 1;
      return [chunk(seq), slowConsumer(seq), 'complete'];
    });
    await load(server.host);
    // The client's timers are faked (sockets run on the real event loop), so the pauses are
    // read off the fake clock, never waited for. Another stream keeps the socket open, as
    // on the page, so the only timers are the resubscriptions' (ws sets one when it closes).
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const stopKeeper = live!.follow({ document: { toString: () => 'subscription { generationUpdated(id: "g") { id } }' }, variables: () => ({}), onData: () => {} });
    const followed = follow();
    const pauses: number[] = [];
    try {
      for (let resumed = 1; resumed <= 6; resumed++) {
        await until(() => vi.getTimerCount() === 1, `resubscription ${resumed} scheduled`);
        expect(server.subscribes).toHaveLength(resumed);
        const before = Date.now();
        vi.advanceTimersToNextTimer();
        pauses.push(Date.now() - before);
        await until(() => server!.subscribes.length === resumed + 1, `resubscription ${resumed} sent`);
        expect(server.subscribes.at(-1)).toBe(resumed - 1);
      }
      expect(pauses[0]).toBe(0);
      for (let i = 1; i < pauses.length; i++) expect(pauses[i]).toBeGreaterThan(pauses[i - 1]!);
      expect(followed.errors).toEqual([]);
      expect(followed.data.slice(0, 6)).toEqual(['<0>', '<1>', '<2>', '<3>', '<4>', '<5>']);
    } finally {
      followed.stop();
      stopKeeper();
    }
  });
});
