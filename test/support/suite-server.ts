import { afterAll, beforeAll } from 'vitest';
import type { Environment } from '../../src/config.js';
import { signUp, type TestUser } from './fixtures.js';
import { type FakeFlutter, type FakeFlutterMode, fakeFlutter, type GenerationServer, startGenerationServer } from './generation-helpers.js';

// The set-up most suites about generations share: Kiln on a DATA_DIR of its own, its
// FLUTTER builds run by the fake flutter in one mode, and a signed-up owner.

export interface SuiteServer {
  server: GenerationServer;
  owner: TestUser;
  flutter: FakeFlutter;
}

/** The suite's server: started before its tests, stopped after them (its fields are set once they run). */
export function useGenerationServer(env: Environment = {}, flutterMode: FakeFlutterMode = 'ok'): SuiteServer {
  const suite = {} as SuiteServer;
  beforeAll(async () => {
    suite.flutter = await fakeFlutter(flutterMode);
    suite.server = await startGenerationServer({ FLUTTER_BIN: suite.flutter.bin, ...env });
    suite.owner = await signUp(suite.server);
  });
  afterAll(async () => {
    await suite.server?.stop();
    await suite.flutter?.remove();
  });
  return suite;
}
