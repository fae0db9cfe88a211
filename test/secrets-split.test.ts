import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { RestoreGenerationDocument, SetProjectSecretDocument } from './gql/graphql.js';
import { createTestDatabase, testDatabaseUrl } from './support/db.js';
import { startFakeGemini } from './support/fake-gemini.js';
import { createProject, expectTypename, signUp } from './support/fixtures.js';
import { fakeFlutter, startAccepted, startInstance, tempDir, waitForEnd } from './support/generation-helpers.js';

// Split deployments: the instance that stores a project's own API key and the one that
// runs its generations may be configured apart. A worker that cannot open the key must
// say so, never run on the server's key instead (its owner would pay for the project).

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** An API instance that can seal project keys, and a worker that cannot open them, on one database. */
async function splitDeployment() {
  const database = await createTestDatabase();
  cleanups.push(() => database.close());
  const data = await tempDir('secrets-split');
  cleanups.push(() => data.remove());
  const gemini = await startFakeGemini();
  cleanups.push(() => gemini.close());
  const flutter = await fakeFlutter('ok');
  cleanups.push(() => flutter.remove());
  const shared = { DATABASE_URL: database.url!, LLM_PROVIDER: 'gemini', GEMINI_API_KEY: 'server-key', GEMINI_BASE_URL: gemini.baseUrl, DATA_DIR: data.path };
  const api = await startInstance(database, { ...shared, ROLE: 'api', KILN_ENCRYPTION_KEY: randomBytes(32).toString('base64') });
  cleanups.push(() => api.stop());
  const worker = await startInstance(database, { ...shared, ROLE: 'worker', FLUTTER_BIN: flutter.bin });
  cleanups.push(() => worker.stop());
  const owner = await signUp(api);
  const project = await createProject(owner.client, { target: 'FLUTTER' });
  const storeKey = async () => {
    const { setProjectSecret } = await owner.client.expectNoErrors(SetProjectSecretDocument, {
      input: { projectId: project.id, name: 'GEMINI_API_KEY', value: 'the-projects-own-key' },
    });
    expectTypename(setProjectSecret, 'Project');
  };
  return { gemini, worker, owner, project, storeKey };
}

describe.skipIf(!testDatabaseUrl)('a worker without KILN_ENCRYPTION_KEY (PostgreSQL: set TEST_DATABASE_URL to run)', () => {
  it("fails a project's run that has its own key stored, and sends nothing on the server's key", async () => {
    const { gemini, worker, owner, project, storeKey } = await splitDeployment();
    await storeKey();
    const started = await startAccepted(owner.client, { projectId: project.id, prompt: 'A counter' });

    const ended = await waitForEnd(worker, owner.client, owner.accessToken, started.id);
    expect(ended).toMatchObject({ status: 'FAILED', error: { code: 'LLM_ERROR', message: expect.stringContaining('no KILN_ENCRYPTION_KEY') } });
    expect(gemini.requests).toEqual([]);
  });

  it('still restores a version of that project: a restore calls no model, so it opens no key', async () => {
    const { gemini, worker, owner, project, storeKey } = await splitDeployment();
    // Made before the project had a key of its own: on the server's.
    gemini.script({ kind: 'stream', chunks: ['Here.\n', '<file path="lib/counter.dart">\nint counter = 0;\n</file>\n'] });
    const started = await startAccepted(owner.client, { projectId: project.id, prompt: 'A counter' });
    const first = await waitForEnd(worker, owner.client, owner.accessToken, started.id);
    expect(first.status).toBe('SUCCEEDED');
    expect(gemini.requests.map((request) => request.apiKey)).toEqual(['server-key']);
    await storeKey();

    const restore = expectTypename((await owner.client.expectNoErrors(RestoreGenerationDocument, { id: first.id })).restoreGeneration, 'Generation');
    expect(restore.restoredFrom).toEqual({ id: first.id });
    const restored = await waitForEnd(worker, owner.client, owner.accessToken, restore.id);
    expect(restored).toMatchObject({ status: 'SUCCEEDED', error: null });
    expect(restored.files.map(({ path, sha256 }) => ({ path, sha256 }))).toEqual(first.files.map(({ path, sha256 }) => ({ path, sha256 })));
    expect(gemini.requests).toHaveLength(1);
  });
});
