import type { Environment } from '../../src/config.js';
import { answerInPieces, type ChunkGate, type FakeGemini, flutterApp, type HeldAnswer, heldAnswer, startFakeGemini } from './fake-gemini.js';
import { useStarted } from './lifecycle.js';
import type { Collected } from './live.js';
import type { TestServerOptions } from './server.js';
import { envOf, type SuiteEnv, type SuiteServer, startSuiteServer } from './suite-server.js';

// The set-up of the suites about model output: the suite server (fake flutter that
// succeeds, an owner) on a fake Gemini scripted per request, and the model's answer held
// until the test lets it out (heldAnswer), with ways to wait for it on a subscriber.

export interface GeminiServer extends SuiteServer {
  gemini: FakeGemini;
  /** Stops the server, then the fakes. */
  stop(): Promise<void>;
}

/** The set-up of useGeminiServer, for a test that starts a server of its own; always `stop()` it. */
export async function startGeminiServer(env: Environment = {}, options: TestServerOptions = {}): Promise<GeminiServer> {
  const gemini = await startFakeGemini();
  try {
    // One at a time, so each scripted answer goes to the generation meant to get it.
    const suite = await startSuiteServer({ ...gemini.kilnEnv, WORKER_CONCURRENCY: '1', ...env }, 'ok', options);
    return {
      ...suite,
      gemini,
      stop: async () => {
        await suite.stop();
        await gemini.close();
      },
    };
  } catch (error) {
    await gemini.close();
    throw error;
  }
}

/** The suite's GeminiServer: started before its tests, stopped after them (its fields are set once they run). */
export function useGeminiServer(env: SuiteEnv = {}, options: TestServerOptions = {}): GeminiServer {
  return useStarted(() => startGeminiServer(envOf(env), options));
}

/**
 * Scripts the next answer: a small app titled `title` (flutterApp) in `count` pieces, held
 * (heldAnswer: call it inside a test, and its gate opens when the test ends) with the first
 * `released` let out at once. A later request (a retry, a leftover run) gets it ungated.
 */
export function scriptHeldAnswer(gemini: FakeGemini, title: string, count: number, released = 0): HeldAnswer {
  const held = heldAnswer(answerInPieces(flutterApp(title), count), { released });
  gemini.script(...held.behaviours);
  return held;
}

/** A generationChunks subscriber: `collect` over graphql-ws, `sseSubscribe` over SSE. */
export type ChunkSubscriber = Pick<Collected<{ generationChunks: { text: string } }>, 'items' | 'atLeast'>;

const textOf = (subscriber: ChunkSubscriber) => subscriber.items.map((item) => item.generationChunks.text).join('');

/**
 * Resolves once the chunk texts `subscriber` has received, joined, begin with `text`, one
 * more chunk at a time; rejects if they turn out otherwise, or if the stream ends first.
 */
export async function untilText(subscriber: ChunkSubscriber, text: string): Promise<void> {
  for (;;) {
    const received = textOf(subscriber);
    if (received.length >= text.length) {
      if (received.startsWith(text)) return;
      throw new Error(`the stream's text went another way: ${JSON.stringify(received)} does not begin with ${JSON.stringify(text)}`);
    }
    await subscriber.atLeast(subscriber.items.length + 1);
  }
}

/**
 * Lets `pieces`, the next ones of a held answer, out one at a time, each once `subscriber`
 * has received its text (call it when the subscriber has everything let out before). Kiln
 * batches the model's text, so a piece let out alone comes as chunks of its own: the
 * subscriber gets at least one chunk per piece, and the rest of the answer waits.
 */
export async function releaseOneByOne(gate: ChunkGate, pieces: string[], subscriber: ChunkSubscriber): Promise<void> {
  let expected = textOf(subscriber);
  for (const piece of pieces) {
    gate.release();
    expected += piece;
    await untilText(subscriber, expected);
  }
}
