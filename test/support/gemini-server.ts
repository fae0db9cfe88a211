import type { Environment } from '../../src/config.js';
import { type FakeGemini, startFakeGemini } from './fake-gemini.js';
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
