import type { Environment } from '../../src/config.js';
import { answerInPieces, type ChunkGate, chunkGate, type FakeGemini, startFakeGemini } from './fake-gemini.js';
import { useStarted } from './lifecycle.js';
import { envOf, type SuiteEnv, type SuiteServer, startSuiteServer } from './suite-server.js';

// The set-up of the suites about model output: the suite server (fake flutter that
// succeeds, an owner) on a fake Gemini scripted per request.

export interface GeminiServer extends SuiteServer {
  gemini: FakeGemini;
  /** Stops the server, then the fakes. */
  stop(): Promise<void>;
}

export async function startGeminiServer(env: Environment = {}): Promise<GeminiServer> {
  const gemini = await startFakeGemini();
  try {
    // One at a time, so each scripted answer goes to the generation meant to get it.
    const suite = await startSuiteServer({ ...gemini.kilnEnv, WORKER_CONCURRENCY: '1', ...env });
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
export function useGeminiServer(env: SuiteEnv = {}): GeminiServer {
  return useStarted(() => startGeminiServer(envOf(env)));
}

/**
 * Scripts the next answer: a small app titled `title` (its lib/main.dart) in `count` pieces,
 * held by a gate until the test lets them out. Open the gate in a `finally`: a held answer
 * holds the suite's one worker.
 */
export function scriptGatedAnswer(gemini: FakeGemini, title: string, count: number): { gate: ChunkGate; pieces: string[] } {
  const main = `import 'package:flutter/material.dart';\n\nvoid main() => runApp(const MaterialApp(title: '${title}', home: Scaffold(body: Center(child: Text('${title}')))));\n`;
  const gate = chunkGate();
  const pieces = answerInPieces({ 'lib/main.dart': main }, count);
  gemini.script({ kind: 'stream', chunks: pieces, gate });
  return { gate, pieces };
}

/** A generationChunks subscriber: `collect` over graphql-ws, `sseSubscribe` over SSE. */
export interface ChunkSubscriber {
  items: { generationChunks: { text: string } }[];
  atLeast(count: number): Promise<void>;
}

/**
 * Lets `pieces`, the next ones of a gated answer, out one at a time, each once `subscriber`
 * has received its text (call it when the subscriber has everything let out before). Kiln
 * batches the model's text, so a piece let out alone comes as chunks of its own: the
 * subscriber gets at least one chunk per piece, and the rest of the answer waits.
 */
export async function releaseOneByOne(gate: ChunkGate, pieces: string[], subscriber: ChunkSubscriber): Promise<void> {
  const received = () => subscriber.items.reduce((sum, item) => sum + item.generationChunks.text.length, 0);
  let length = received();
  for (const piece of pieces) {
    gate.release();
    length += piece.length;
    while (received() < length) await subscriber.atLeast(subscriber.items.length + 1);
  }
}
