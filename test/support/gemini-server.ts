import type { Environment } from '../../src/config.js';
import { type FakeGemini, startFakeGemini } from './fake-gemini.js';
import { signUp, type TestUser } from './fixtures.js';
import { useStarted } from './lifecycle.js';
import { fakeFlutter, type GenerationServer, startGenerationServer } from './generation-helpers.js';

// The set-up of the suites about model output: Kiln on a fake Gemini (scripted per
// request) whose FLUTTER builds run the fake flutter that succeeds, and an owner.

export interface GeminiServer {
  gemini: FakeGemini;
  server: GenerationServer;
  owner: TestUser;
  /** Stops the server, then the fakes. */
  stop(): Promise<void>;
}

export async function startGeminiServer(env: Environment = {}): Promise<GeminiServer> {
  const cleanups: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  };
  try {
    const gemini = await startFakeGemini();
    cleanups.push(() => gemini.close());
    const flutter = await fakeFlutter('ok');
    cleanups.push(() => flutter.remove());
    const server = await startGenerationServer({
      LLM_PROVIDER: 'gemini',
      GEMINI_API_KEY: 'x',
      GEMINI_BASE_URL: gemini.baseUrl,
      FLUTTER_BIN: flutter.bin,
      // One at a time, so each scripted answer goes to the generation meant to get it.
      WORKER_CONCURRENCY: '1',
      ...env,
    });
    cleanups.push(() => server.stop());
    return { gemini, server, owner: await signUp(server), stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** The suite's GeminiServer: started before its tests, stopped after them (its fields are set once they run). */
export function useGeminiServer(env: Environment = {}): GeminiServer {
  return useStarted(() => startGeminiServer(env));
}
