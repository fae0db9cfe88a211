import type { Environment } from '../../src/config.js';
import { signUp, type TestUser } from './fixtures.js';
import { type FakeFlutter, type FakeFlutterMode, fakeFlutter, type GenerationServer, startGenerationServer } from './generation-helpers.js';
import { useStarted } from './lifecycle.js';

// The set-up most suites about generations share: Kiln on a DATA_DIR of its own, its
// FLUTTER builds run by the fake flutter in one mode, and a signed-up owner.

export interface SuiteServer {
  server: GenerationServer;
  owner: TestUser;
  flutter: FakeFlutter;
  /** Stops the server, then removes the fake flutter. */
  stop(): Promise<void>;
}

/** The suite's server: started before its tests, stopped after them (its fields are set once they run). */
export function useGenerationServer(env: Environment = {}, flutterMode: FakeFlutterMode = 'ok'): SuiteServer {
  return useStarted(async () => {
    const flutter = await fakeFlutter(flutterMode);
    let server: GenerationServer | undefined;
    const stop = async () => {
      await server?.stop();
      await flutter.remove();
    };
    try {
      server = await startGenerationServer({ FLUTTER_BIN: flutter.bin, ...env });
      return { server, owner: await signUp(server), flutter, stop };
    } catch (error) {
      await stop();
      throw error;
    }
  });
}
