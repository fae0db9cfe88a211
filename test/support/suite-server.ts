import type { Environment } from '../../src/config.js';
import { signUp, type TestUser } from './fixtures.js';
import { type FakeFlutter, type FakeFlutterMode, fakeFlutter, type GenerationServer, startGenerationServer } from './generation-helpers.js';
import { useStarted } from './lifecycle.js';
import type { TestServerOptions } from './server.js';

// The set-up most suites about generations share: Kiln on a DATA_DIR of its own, its
// FLUTTER builds run by the fake flutter in one mode, and a signed-up owner.

export interface SuiteServer {
  server: GenerationServer;
  owner: TestUser;
  flutter: FakeFlutter;
  /** Stops the server, then removes the fake flutter. */
  stop(): Promise<void>;
}

/**
 * A suite's environment, or what makes it once the suite's earlier `beforeAll`s have run
 * (e.g. the URL of a fake the suite started with `useStarted`).
 */
export type SuiteEnv = Environment | (() => Environment);

export const envOf = (env: SuiteEnv): Environment => (typeof env === 'function' ? env() : env);

/** The set-up of useGenerationServer, for a test that starts a server of its own; always `stop()` it. */
export async function startSuiteServer(env: Environment = {}, flutterMode: FakeFlutterMode = 'ok', options: TestServerOptions = {}): Promise<SuiteServer> {
  const flutter = await fakeFlutter(flutterMode);
  let server: GenerationServer | undefined;
  const stop = async () => {
    await server?.stop();
    await flutter.remove();
  };
  try {
    server = await startGenerationServer({ FLUTTER_BIN: flutter.bin, ...env }, options);
    return { server, owner: await signUp(server), flutter, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** The suite's server: started before its tests, stopped after them (its fields are set once they run). */
export function useGenerationServer(env: SuiteEnv = {}, flutterMode: FakeFlutterMode = 'ok', options: TestServerOptions = {}): SuiteServer {
  return useStarted(() => startSuiteServer(envOf(env), flutterMode, options));
}
